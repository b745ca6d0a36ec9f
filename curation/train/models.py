"""Training run folders: tokenizer checks before loading weights, and the run folder's metadata
(folder checks and fingerprints are curation.models').

A run folder written by `curate train` holds the final model (or LoRA adapter), its tokenizer,
TRL checkpoints, and `curate_run.json` (method, base model, data, config, metrics), which is how
`curate eval` knows what it evaluates and which model was the reference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curation.models import RUN_FILE, ModelError


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


def write_run_info(out: Path, info: dict[str, Any]) -> None:
    (out / RUN_FILE).write_text(json.dumps(info, indent=2, default=str))


def read_run_info(path: str | Path) -> dict[str, Any]:
    f = Path(path) / RUN_FILE
    if not f.is_file():
        return {}
    return json.loads(f.read_text())


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()
