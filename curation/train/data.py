"""Training and evaluation data: a catalog version (or a frame, or a file) as rows TRL reads.

Everything here works on frames of `schema.VERSION_ROWS` (one row per pair, prompt messages,
chosen and rejected text, margin, weight, epsilon, ...), so a published version, an in-memory
frame and a file of held-out pairs all go through the same checks and the same conversion.
Checks run before any model loads and name the data and the rows that fail.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from curation import schema
from curation.rows import tie_mask

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from datasets import Dataset


class TrainDataError(ValueError):
    """The data cannot feed the asked method; the message names the data, the rows and the fix."""


@dataclass
class PairData:
    """Rows to train or evaluate on, and where they came from."""

    rows: pl.DataFrame  # VERSION_ROWS columns
    label: str  # "name@v3:train", a file path, or "<frame>"
    version: Any = None  # catalog VersionInfo when the rows are a catalog version
    fingerprint: str = ""  # content fingerprint of the rows (for evaluation records and ref log-prob files)


def rows_fingerprint(rows: pl.DataFrame) -> str:
    """Stable fingerprint of a set of pairs: their ids, labels and training-relevant columns."""
    h = hashlib.sha256()
    cols = ("pair_id", "chosen", "rejected", "weight", "epsilon", "margin")
    for row in rows.select(cols).sort("pair_id").iter_rows():
        h.update(json.dumps(row, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def looks_like_file(ref: str) -> bool:
    return Path(ref).exists() or any(ref.endswith(s) for s in (".jsonl", ".jsonl.gz", ".json", ".parquet", ".csv"))


def load_pairs(source: str | pl.DataFrame, catalog: Any = None, *, split: str | None = None) -> PairData:
    """Pairs from a catalog ref ("name@v3", "name@v3:test"), a pairs file, or a VERSION_ROWS frame.

    `split` applies when the ref has no ":train"/":test" suffix and the rows carry a split column.
    """
    if isinstance(source, pl.DataFrame):
        rows = schema.conform(source, "version_rows")
        label, version = "<frame>", None
    elif looks_like_file(source):
        rows, label, version = _pairs_from_file(source), source, None
    else:
        if catalog is None:
            from curation.catalog import open_catalog

            catalog = open_catalog()
        version = catalog.resolve(source)  # raises CatalogError naming the missing version
        rows = schema.conform(catalog.load(version), "version_rows")
        split = version.split or split
        label = f"{version.ref}:{split}" if split else version.ref
    if split is not None and "split" in rows.columns and rows.height:
        available = sorted(set(rows["split"].drop_nulls().to_list()))
        rows = rows.filter(pl.col("split") == split)
        if rows.height == 0:
            raise TrainDataError(f"{label}: no pairs in split {split!r} (splits present: {available or 'none'})")
    if rows.height == 0:
        raise TrainDataError(f"{label}: no pairs; publish a version with pairs or pick another version")
    return PairData(rows=rows, label=label, version=version, fingerprint=rows_fingerprint(rows))


def _pairs_from_file(path: str) -> pl.DataFrame:
    """A held-out pairs file through curation.sources, denormalised to VERSION_ROWS (ties kept:
    `check_for_method` drops and counts them)."""
    from curation.sources import read_pair_rows

    return read_pair_rows(path, ties=True)


def drop_ties(rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Pairs without a preference direction (curation.rows' tie rule) leave; their count is kept."""
    tie = tie_mask(rows)
    return rows.filter(~tie), int(tie.sum())


def check_for_method(data: PairData, config: Any) -> pl.DataFrame:
    """Rows fit for `config.method`, or a TrainDataError naming what is missing. Ties are dropped."""
    rows, ties = drop_ties(data.rows)
    if rows.height == 0:
        raise TrainDataError(f"{data.label}: all {ties} pairs are ties; nothing to learn from")
    for col in ("prompt", "chosen") + (() if config.method == "sft" else ("rejected",)):
        bad = rows.with_row_index("row").filter(pl.col(col).is_null() | (pl.col(col).list.len() == 0 if col == "prompt" else pl.col(col).str.len_chars() == 0))
        if bad.height:
            ids = bad["pair_id"].head(3).to_list()
            raise TrainDataError(
                f"{data.label}: {bad.height} pair(s) have no `{col}` (rows {bad['row'].head(3).to_list()}, "
                f"pair_id {ids}); method {config.method} needs it. Drop them with a selector before publishing."
            )
    if config.method == "reward" and config.use_margin and rows["margin"].null_count():
        n = rows["margin"].null_count()
        raise TrainDataError(
            f"{data.label}: use_margin is on but {n} pair(s) have no `margin`; score the pairs "
            "(pairs builder with a score) or set use_margin: false"
        )
    if config.method in ("dpo", "cdpo") and (config.method == "cdpo" or config.loss == "robust"):
        if config.epsilon is None and (not config.use_pair_epsilon or rows["epsilon"].null_count() == rows.height):
            raise TrainDataError(
                f"{data.label}: {config.method}{'/' + config.loss if config.method == 'dpo' else ''} needs a label-flip "
                "rate: set `epsilon` (e.g. 0.1) or publish pairs with an `epsilon` column (noise selector, soft label)"
            )
        eps = rows["epsilon"].drop_nulls()
        if config.use_pair_epsilon and eps.len() and (eps.min() < 0 or eps.max() >= 0.5):
            raise TrainDataError(f"{data.label}: per-pair epsilon must lie in [0, 0.5); found {eps.min()}..{eps.max()}")
    return rows


def pair_weights(rows: pl.DataFrame, config: Any) -> list[float]:
    if not config.use_weights:
        return [1.0] * rows.height
    return rows["weight"].fill_null(1.0).to_list()


def pair_epsilons(rows: pl.DataFrame, config: Any) -> list[float]:
    """Per-pair ε: the pair's own `epsilon` when present and allowed, else the global one, else 0."""
    default = config.epsilon if config.epsilon is not None else 0.0
    if not config.use_pair_epsilon:
        return [default] * rows.height
    return rows["epsilon"].fill_null(default).to_list()


def to_trl(rows: pl.DataFrame, config: Any) -> tuple[Dataset, int]:
    """The rows as the catalog's TRL view for `config.method` (curation.export.to_view: one conversion),
    and how many pairs that view skipped (curation.export.row_problems: source flags, roles that do
    not alternate, turn markers in answers, ...; logged by reason).

    dpo/cdpo/orpo/simpo: trl_dpo (prompt, chosen, rejected) with `weight` / `epsilon` resolved per
    config; reward: trl_reward (whole conversations, + margin when used); kto: trl_kto (unpaired
    prompt/completion/label); sft: prompt + the chosen response as `completion` (RFT data).
    """
    from datasets import Dataset

    from curation.export import to_view

    m = config.method
    fmt = {"reward": "trl_reward", "kto": "trl_kto"}.get(m, "trl_dpo")
    built = to_view(rows, fmt)
    view, skipped = built.rows, built.skipped
    if skipped:  # KTO's duplicate / contradictory completions are not pairs: say which count is which
        completions = {k: v for k, v in skipped.items() if k in ("duplicate_completion", "contradictory_label")}
        log.warning("%s: the %s view skipped %d of %d pairs the trainer cannot read well%s: %s", config.method, fmt,
                    built.quarantine.height, rows.height,
                    f", and {sum(completions.values())} of the view's completions" if completions else "", skipped)
    if view.height == 0:
        raise TrainDataError(f"no rows left for {m} after the {fmt} view skipped {skipped}")
    if m in ("dpo", "cdpo"):
        view = view.select(
            "pair_id", "prompt", "chosen", "rejected",
            pl.Series("weight", pair_weights(view, config), dtype=pl.Float64),
            pl.Series("epsilon", pair_epsilons(view, config), dtype=pl.Float64),
        )
    elif m in ("orpo", "simpo"):
        view = view.select("pair_id", "prompt", "chosen", "rejected")
    elif m == "reward":
        view = view.select("pair_id", "chosen", "rejected", *(["margin"] if use_margin(rows, config) else []))
    elif m == "kto":
        view = view.select("prompt", "completion", "label")
    else:  # sft
        view = view.select("prompt", pl.col("chosen").alias("completion"))
    return Dataset(view.to_arrow()), built.quarantine.height


def use_margin(rows: pl.DataFrame, config: Any) -> bool:
    if config.use_margin is False:
        return False
    return rows["margin"].null_count() == 0
