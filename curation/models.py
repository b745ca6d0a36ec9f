"""Model folders in one place: what counts as one, what a hub id looks like, and the one
fingerprint of a folder's files that generation, scoring, embedding and training all key on.

The fingerprint hashes every file's bytes (files over 64 MiB by their size and three 1 MiB
samples), so the same model copied elsewhere hashes the same and weights saved in place hash
differently. Hidden files and the training run's own bookkeeping (`curate_run.json`, TRL
`checkpoint-*` folders) are not the model and are left out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from curation import schema

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RUN_FILE = "curate_run.json"  # what `curate train` writes beside the model (curation.train.models)
SAMPLE_OVER = 64 * 2**20  # hash files up to this size whole; larger ones by size and samples
_hashes: dict[tuple[str, int, int], str] = {}


class ModelError(ValueError):
    """A model folder is missing or unfit; the message names the folder and the fix."""


def is_hub_id(value: str) -> bool:
    """`org/name` and not a path (no leading '.', '/' or '~')."""
    return HUB_ID.fullmatch(value) is not None and not value.startswith((".", "/", "~"))


def context_length(config: dict) -> int | None:
    """The context window a model's config.json (as a dict) names, when it names one: the one
    reading of it that generation, reward scoring and training share (configs spell it five ways,
    multimodal ones inside `text_config`)."""
    config = {**config, **(config.get("text_config") or {})}
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def check_model_dir(path: str | os.PathLike, *, role: str = "model") -> Path:
    """`path` as a model folder (config.json, or a LoRA adapter's adapter_config.json), else ModelError."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{role} path {str(p)!r} does not exist; pass a local model folder (config.json + weights)")
    if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        raise ModelError(f"{role} folder {str(p)!r} has no config.json or adapter_config.json: not a model folder")
    return p


def _file_hash(path: Path) -> str:
    """A model file's hash, memoised by (path, size, mtime) for the process."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _hashes:
        _hashes[memo] = schema.file_hash(path, sample_over=SAMPLE_OVER)
    return _hashes[memo]


def _is_model_file(rel: str) -> bool:
    parts = rel.split("/")
    return not (any(p.startswith(".") for p in parts) or rel == RUN_FILE or parts[0].startswith("checkpoint-"))


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """Hash of a model folder's config, tokenizer and weights; the same model copied elsewhere hashes the same."""
    root = Path(model_dir)
    parts = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if _is_model_file(rel):
            parts.append([rel, _file_hash(path)])
    return schema.content_hash("model", parts)
