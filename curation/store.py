"""Content-addressed artifact store: each stage output is one Parquet file named by its fingerprint.

A stage whose fingerprint already has a file is skipped, so an interrupted or changed run
recomputes only what changed. Files are written under a temporary name in the same folder,
fsynced and renamed into place, so a crash never leaves a half file under a real fingerprint.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import polars as pl
import pyarrow.parquet as pq

from curation import schema

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:=+-]*$")


class StoreError(ValueError):
    """A stage name or fingerprint that cannot name a file, or a missing artifact."""


@dataclass(frozen=True)
class ArtifactRef:
    """Where a stage output lives; small and JSON-friendly so flows pass it between tasks."""

    stage: str
    fingerprint: str
    path: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ArtifactRef":
        return cls(str(data["stage"]), str(data["fingerprint"]), str(data["path"]), int(data["rows"]))


def _check_part(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
        raise StoreError(
            f"artifact {kind} {value!r} cannot name a file: use letters, digits and _ . : = + - "
            "(no '/', no '..', not starting with '.')"
        )
    return value


def fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the folder that holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet_atomic(frame: pl.DataFrame | Any, path: Path, *, table: str | None = None) -> int:
    """Write a polars frame (or Arrow table) to `path` via temp name + fsync + rename; return rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(frame, pl.DataFrame):
        frame = pl.from_arrow(frame)
    if table:
        frame = schema.conform(frame, table)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            frame.write_parquet(fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return frame.height


class ArtifactStore:
    """Parquet artifacts at `<root>/<stage>/<fingerprint>.parquet`.

    A catalog keeps its store at `<catalog>/artifacts` (`Catalog.store`).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, stage: str, fp: str) -> Path:
        return self.root / _check_part("stage", stage) / f"{_check_part('fingerprint', fp)}.parquet"

    def exists(self, stage: str, fp: str) -> bool:
        return self.path(stage, fp).is_file()

    def ref(self, stage: str, fp: str) -> ArtifactRef:
        """The reference of an existing artifact (rows read from the Parquet footer)."""
        path = self.path(stage, fp)
        if not path.is_file():
            raise StoreError(f"no artifact for stage {stage!r} with fingerprint {fp!r} at {path}")
        return ArtifactRef(stage, fp, str(path), pq.ParquetFile(path).metadata.num_rows)

    def write(self, stage: str, fp: str, frame: pl.DataFrame, *, table: str | None = None) -> ArtifactRef:
        """Write `frame` (conformed to schema `table` when given) under its fingerprint."""
        path = self.path(stage, fp)
        rows = write_parquet_atomic(frame, path, table=table)
        return ArtifactRef(stage, fp, str(path), rows)

    def read(self, ref: ArtifactRef | Mapping[str, Any]) -> pl.DataFrame:
        if not isinstance(ref, ArtifactRef):
            ref = ArtifactRef.from_dict(ref)
        path = Path(ref.path)
        if not path.is_file():
            raise StoreError(f"artifact {ref.stage}/{ref.fingerprint} is missing: {path} does not exist")
        return pl.read_parquet(path)
