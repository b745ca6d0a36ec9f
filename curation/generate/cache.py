"""Content-addressed request cache: a re-run, or a change to a later stage, never regenerates.

A completion is stored under the hash of everything that determines it: the backend, the model's
identity (a hash of its files, or the model a server reports) with the backend's output settings
(structured-output constraints, dtype, context length, quantization), the sampling parameters,
the request seed, the sample index and the prompt conversation as sent. Only successful completions
are stored, so failed calls are retried by the next run. One SQLite file per cache folder (WAL
mode: concurrent readers, short write transactions).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable

from curation import schema
from curation.generate.base import Completion, Request

CACHE_FILE = "generations.sqlite"
_FULL_HASH_LIMIT = 64 * 2**20  # hash files up to this size whole; larger ones by size and samples
_SAMPLE = 2**20
_file_hashes: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _file_hashes:
        h = hashlib.sha256(str(st.st_size).encode())
        with path.open("rb") as f:
            if st.st_size <= _FULL_HASH_LIMIT:
                for block in iter(lambda: f.read(2**22), b""):
                    h.update(block)
            else:  # head, middle and tail: any retrained weights differ there
                for offset in (0, st.st_size // 2, st.st_size - _SAMPLE):
                    f.seek(offset)
                    h.update(f.read(_SAMPLE))
        _file_hashes[memo] = h.hexdigest()
    return _file_hashes[memo]


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """Hash of a model folder's config, tokenizer and weights; the same model copied elsewhere hashes the same."""
    root = Path(model_dir)
    parts = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        parts.append([rel, _file_digest(path)])
    return schema.content_hash("model", parts)


class RequestCache:
    """Completions by request key, in `<cache_dir>/generations.sqlite`."""

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CACHE_FILE
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, completion TEXT NOT NULL, "
            "created_at TEXT DEFAULT CURRENT_TIMESTAMP)"
        )
        self._con.commit()

    @staticmethod
    def key(backend: str, model_identity: str, request: Request) -> str:
        truncated_to = len(request.prompt_token_ids or []) if request.meta.get("truncated_from") else None
        return hashlib.sha256(
            json.dumps(
                [
                    backend,
                    model_identity,
                    request.sampling.model_dump(mode="json"),
                    request.seed,
                    request.sample_index,
                    request.messages,
                    request.responses,
                    truncated_to,
                ],
                sort_keys=True,
                ensure_ascii=False,
            ).encode()
        ).hexdigest()

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._con.execute("SELECT completion FROM completions WHERE key = ?", (key,)).fetchone()
        return Completion.from_json(row[0]) if row else None

    def put_many(self, items: Iterable[tuple[str, Completion]]) -> None:
        data = [(k, c.to_json()) for k, c in items]
        with self._lock:
            self._con.executemany("INSERT OR REPLACE INTO completions (key, completion) VALUES (?, ?)", data)
            self._con.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT count(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
