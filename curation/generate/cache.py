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

from curation.generate.base import Completion, Request

CACHE_FILE = "generations.sqlite"
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
