"""Content-addressed artifact store: each stage output is one Parquet file named by its fingerprint.

A stage whose fingerprint already has a file is skipped, so an interrupted or changed run
recomputes only what changed. Files are written under a temporary name in the same folder,
fsynced and renamed into place, so a crash never leaves a half file under a real fingerprint.
Resume still checks before it trusts: an artifact whose Parquet footer is unreadable (truncated,
overwritten) is set aside as `<fp>.parquet.damaged` and reported missing, so the stage recomputes it.
"""

from __future__ import annotations

import logging
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
DAMAGED_SUFFIX = ".damaged"
log = logging.getLogger(__name__)


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a leftover temporary file of a live writer is not debris)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_pid(tmp: Path) -> int | None:
    """The process that writes a temporary file of write_parquet_atomic (from its name)."""
    parts = tmp.name.split(".")
    return int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None


def artifact_problem(path: Path) -> str | None:
    """Why `path` cannot be a complete Parquet file (None when its footer and metadata read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() < 12:
                return f"{path} is truncated ({fh.tell()} bytes)"
            fh.seek(-4, os.SEEK_END)
            if fh.read(4) != b"PAR1":
                return f"{path} is truncated or not Parquet (no footer)"
        pq.ParquetFile(path).metadata  # noqa: B018 - parses the footer
    except Exception as exc:  # OSError, ArrowInvalid
        return f"{path} is unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return None


class ArtifactStore:
    """Parquet artifacts at `<root>/<stage>/<fingerprint>.parquet`.

    A catalog keeps its store at `<catalog>/artifacts` (`Catalog.store`).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, stage: str, fp: str) -> Path:
        return self.root / _check_part("stage", stage) / f"{_check_part('fingerprint', fp)}.parquet"

    def exists(self, stage: str, fp: str) -> bool:
        """A complete artifact is there; a damaged one is set aside (and so does not exist)."""
        path = self.path(stage, fp)
        if not path.is_file():
            return False
        why = artifact_problem(path)
        if why is None:
            return True
        self._set_aside(path, why)
        return False

    @staticmethod
    def _set_aside(path: Path, why: str) -> None:
        log.warning("%s; set aside as %s%s, the stage recomputes it", why, path.name, DAMAGED_SUFFIX)
        os.replace(path, path.with_name(path.name + DAMAGED_SUFFIX))

    def ref(self, stage: str, fp: str) -> ArtifactRef:
        """The reference of an existing artifact (rows read from the Parquet footer)."""
        path = self.path(stage, fp)
        if not self.exists(stage, fp):
            raise StoreError(f"no artifact for stage {stage!r} with fingerprint {fp!r} at {path}")
        return ArtifactRef(stage, fp, str(path), pq.ParquetFile(path).metadata.num_rows)

    def write(self, stage: str, fp: str, frame: pl.DataFrame, *, table: str | None = None) -> ArtifactRef:
        """Write `frame` (conformed to schema `table` when given) under its fingerprint."""
        path = self.path(stage, fp)
        rows = write_parquet_atomic(frame, path, table=table)
        return ArtifactRef(stage, fp, str(path), rows)

    def scan(self, ref: ArtifactRef | Mapping[str, Any]) -> pl.LazyFrame:
        """An artifact as a lazy scan, for a reader that streams it; its footer is checked first
        (a damaged file is set aside, as by `read`)."""
        if not isinstance(ref, ArtifactRef):
            ref = ArtifactRef.from_dict(ref)
        path = Path(ref.path)
        if not path.is_file():
            raise StoreError(f"artifact {ref.stage}/{ref.fingerprint} is missing: {path} does not exist")
        why = artifact_problem(path)
        if why is not None:
            self._set_aside(path, why)
            raise StoreError(f"artifact {ref.stage}/{ref.fingerprint}: {why}; it was set aside: run again to recompute it")
        return pl.scan_parquet(path)

    def read(self, ref: ArtifactRef | Mapping[str, Any]) -> pl.DataFrame:
        if not isinstance(ref, ArtifactRef):
            ref = ArtifactRef.from_dict(ref)
        path = Path(ref.path)
        if not path.is_file():
            raise StoreError(f"artifact {ref.stage}/{ref.fingerprint} is missing: {path} does not exist")
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # a footer that reads over damaged pages: polars / arrow errors
            why = f"{path} is unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            self._set_aside(path, why)
            raise StoreError(f"artifact {ref.stage}/{ref.fingerprint}: {why}; it was set aside: run again to "
                             "recompute it") from exc
