"""Reference log-probabilities stored next to a dataset version, computed once and reused.

<version folder>/ref_logps/<key>.parquet holds pair_id, ref_chosen_logps, ref_rejected_logps for
one reference model, keyed by the model's content fingerprint and the truncation settings that
change the numbers. Every later DPO run on that version with that reference skips the reference
forward passes entirely.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from curation import schema
from curation.models import model_fingerprint

COLUMNS = ("pair_id", "ref_chosen_logps", "ref_rejected_logps")


def ref_logps_path(version_path: str | Path, reference_model: str | Path, max_length: int) -> Path:
    key = schema.content_hash("ref_logps", model_fingerprint(reference_model), max_length, "keep_start")
    return Path(version_path) / "ref_logps" / f"{key}.parquet"


def load_ref_logps(path: Path, pair_ids: list[str]) -> pl.DataFrame | None:
    """Stored log-probs for exactly these pairs (in this order), or None when any is missing."""
    if not path.is_file():
        return None
    stored = pl.read_parquet(path).unique("pair_id", keep="first")
    wanted = pl.DataFrame({"pair_id": pair_ids})
    got = wanted.join(stored, on="pair_id", how="left", maintain_order="left")
    if got["ref_chosen_logps"].null_count():
        return None
    return got


def save_ref_logps(path: Path, dataset: Any) -> Path:
    """Write the pair_id and reference columns of a TRL dataset (temp name, then rename)."""
    frame = pl.DataFrame({c: dataset[c] for c in COLUMNS}).with_columns(
        pl.col("ref_chosen_logps").cast(pl.Float64), pl.col("ref_rejected_logps").cast(pl.Float64)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    frame.write_parquet(tmp)
    tmp.replace(path)
    return path
