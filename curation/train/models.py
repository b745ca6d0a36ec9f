"""Model folders: checks before loading weights, fingerprints, and the run folder's metadata.

A run folder written by `curate train` holds the final model (or LoRA adapter), its tokenizer,
TRL checkpoints, and `curate_run.json` (method, base model, data, config, metrics), which is how
`curate eval` knows what it evaluates and which model was the reference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

RUN_FILE = "curate_run.json"


class ModelError(ValueError):
    """A model folder is missing or unfit; the message names the folder and the fix."""


def check_model_dir(path: str | Path, *, role: str = "model") -> Path:
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{role} path {str(p)!r} does not exist; pass a local model folder (config.json + weights)")
    if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        raise ModelError(f"{role} folder {str(p)!r} has no config.json or adapter_config.json: not a model folder")
    return p


def check_tokenizer(path: str | Path, *, need_chat_template: bool = True) -> Any:
    """Load only the tokenizer (no weights) and check what training needs from it."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises many kinds here; all mean "no usable tokenizer"
        raise ModelError(f"{path}: cannot load a tokenizer ({type(exc).__name__}: {exc})") from exc
    if need_chat_template and not getattr(tok, "chat_template", None):
        raise ModelError(
            f"{path}: the tokenizer has no chat template; conversational pairs cannot be rendered. "
            "Add chat_template.jinja to the folder (or use a chat model)"
        )
    if tok.pad_token is None:
        raise ModelError(
            f"{path}: the tokenizer has no pad token; set `pad_token` in tokenizer_config.json "
            "(for example to the end-of-text token)"
        )
    return tok


def model_fingerprint(path: str | Path) -> str:
    """Cheap content fingerprint of a model folder: configs in full, weight files by size and edges."""
    p = Path(path)
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if not f.is_file() or f.name == RUN_FILE:
            continue
        h.update(f.name.encode())
        if f.suffix in (".json", ".jinja", ".txt", ".model"):
            h.update(f.read_bytes())
        else:
            size = f.stat().st_size
            h.update(str(size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 1 << 20:
                    fh.seek(max(size - (1 << 20), 0))
                    h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def write_run_info(out: Path, info: dict[str, Any]) -> None:
    (out / RUN_FILE).write_text(json.dumps(info, indent=2, default=str))


def read_run_info(path: str | Path) -> dict[str, Any]:
    f = Path(path) / RUN_FILE
    if not f.is_file():
        return {}
    return json.loads(f.read_text())


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()
