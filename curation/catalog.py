"""Versioned datasets with row-level lineage: DuckDB for the catalog, Parquet for the data.

    <catalog>/catalog.duckdb          datasets, versions, runs, lineage, models, evaluations
    <catalog>/artifacts/<stage>/<fp>.parquet
    <catalog>/datasets/<name>/v<N>/   data/train.parquet, data/test.parquet (VERSION_ROWS, one file
                                      per split), pool, prompts, candidates, scores, decisions,
                                      quarantine parquet, plots/*.png, manifest.json, README.md

A version folder is a Hub dataset repository as it stands: README.md is its dataset card, whose
YAML header names the split files (`configs`), so `datasets.load_dataset(<folder>)` gives the
train and test splits and `curate push` uploads the folder as it is. Versions published before
the split layout hold one pairs.parquet with a split column; they load, verify and diff alike.
The fingerprint is a hash of the rows' content (RowsHasher), not of the files' bytes, so the same
rows give the same fingerprint however they are written; older versions keep the file hash they
were published with.

Publishing is atomic: the files are written into a temporary folder, renamed to `v<N>` and
only then is the version row committed in one DuckDB transaction; the manifest says
`"committed": false` until that transaction is done. The database is the record of what exists,
and files are never deleted on a guess: a version folder missing from the database is cleaned
only when its own manifest says it was never committed. Any other version folder the database
does not list (the database was lost or restored from an older backup) stops every write until
`curate doctor --fix` has rebuilt the database from the manifests (curation/doctor.py).

Reads are verified: loading a table checks its Parquet footer, row count, size and footer
digest against the manifest (cheap); `verify_version` hashes every file (full). DuckDB allows
one writer process, so every write opens the database under an exclusive file lock, writes
and closes; readers take a shared lock for the moment they read the small tables.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curation import schema
from curation.export import check_export, export_version
from curation.report import draw_plots, version_card
from curation.rows import RowsError, plan_version_rows
from curation.store import ArtifactStore, fsync_dir, pid_alive

# Crash-testing hook: seconds to sleep after the version folder is in place and before the
# catalog transaction (tests kill the process there and check that nothing became visible).
PAUSE_ENV = "CURATE_PUBLISH_PAUSE_S"
log = logging.getLogger(__name__)
DEFAULT_CATALOG_ENV = "CURATE_CATALOG"
DEFAULT_CATALOG = "catalogs/default"

LINEAGE_TABLES = ("prompts", "candidates", "scores", "decisions", "quarantine")
LOADABLE_TABLES = ("pairs", "pool") + LINEAGE_TABLES
_REF = re.compile(r"^(?P<name>[^@:]+)(?:@v?(?P<version>\d+))?(?::(?P<split>train|test))?$")

_DDL = """
CREATE TABLE IF NOT EXISTS datasets (
    name VARCHAR PRIMARY KEY, created_at TIMESTAMP, description VARCHAR);
CREATE TABLE IF NOT EXISTS versions (
    name VARCHAR, version INTEGER, ref VARCHAR, path VARCHAR, rows BIGINT, n_train BIGINT,
    n_test BIGINT, created_at TIMESTAMP, fingerprint VARCHAR, run_id VARCHAR, parents VARCHAR,
    counts VARCHAR, recipe VARCHAR, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, name VARCHAR, status VARCHAR, started_at TIMESTAMP,
    ended_at TIMESTAMP, recipe VARCHAR, stats VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS lineage (
    child VARCHAR, parent VARCHAR, relation VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS models (
    model_id VARCHAR PRIMARY KEY, version_ref VARCHAR, method VARCHAR, config VARCHAR,
    metrics VARCHAR, path VARCHAR, base_model VARCHAR, started_at TIMESTAMP, ended_at TIMESTAMP,
    created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS evaluations (
    eval_id VARCHAR PRIMARY KEY, model_id VARCHAR, data_ref VARCHAR, data_fingerprint VARCHAR,
    metrics VARCHAR, judge VARCHAR, created_at TIMESTAMP);
"""


class CatalogError(ValueError):
    """A catalog operation that cannot be done; the message says what to do instead."""


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    ref: str  # "name@vN"
    path: Path  # the version folder
    rows: int
    created_at: datetime
    split: str | None = None  # set when the ref asked for ":train" or ":test"
    parents: tuple[str, ...] = ()
    fingerprint: str = ""
    run_id: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)

    def file(self, table: str) -> Path:
        """The one file of a lineage table (pairs have one file per split: `files`)."""
        return self.path / f"{table}.parquet"

    def files(self, table: str = "pairs") -> list[Path]:
        """A table's Parquet files: the pairs' one per split (train first; only the ref's split when it
        names one), or the one pairs.parquet (both splits) of a version published before that layout."""
        if table != "pairs":
            return [self.file(table)]
        return [p for p, _ in pair_files(self.path, read_manifest(self.path), self.split)]


# ---------------------------------------------------------------- names and refs


def validate_name(name: str) -> str:
    """The dataset name in NFC form (schema.dataset_name: one rule for import, recipes and refs)."""
    try:
        return schema.dataset_name(name)
    except ValueError as exc:
        raise CatalogError(str(exc)) from None


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """'name' | 'name@v3' | 'name@3', each with an optional ':train' / ':test' suffix."""
    m = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if not m:
        raise CatalogError(f"bad dataset reference {ref!r}: write NAME, NAME@vN, or either with :train / :test")
    version = int(m.group("version")) if m.group("version") else None
    return validate_name(m.group("name")), version, m.group("split")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None) if value and value.tzinfo else value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None)
    return _timestamp(datetime.fromisoformat(str(value)))


COPY_ROWS = 65_536  # rows per slice of a lazy scan copied into a version (46 MB of 700-character texts)


def _write_file(df: pl.DataFrame | pl.LazyFrame, path: Path, table: str) -> None:
    """Conform to the table's schema, write, fsync. A frame: polars' writer (the fast one). A lazy
    scan: a slice of COPY_ROWS rows at a time through one Parquet writer, so a copy holds a slice
    (polars' streaming sink held 1.2-1.5 GB in flight copying 2M 650-character texts)."""
    if isinstance(df, pl.LazyFrame):
        scan = schema.conform_lazy(df, table)
        with pq.ParquetWriter(path, schema.empty(table).to_arrow().schema, compression="zstd") as writer:
            for start in range(0, scan.select(pl.len()).collect().item(), COPY_ROWS):
                writer.write_table(scan.slice(start, COPY_ROWS).collect().to_arrow())
    else:
        schema.conform(df, table).write_parquet(path, compression="zstd")
    _fsync(path)


def _card_frame(tables: Mapping[str, pl.DataFrame | pl.LazyFrame], table: str) -> pl.DataFrame:
    """A lineage table as the card reads it (of a lazy scan, only the columns the card counts)."""
    df = tables.get(table)
    if isinstance(df, pl.LazyFrame):
        return schema.conform_lazy(df, table).select(["stage", "kept", "reason"] if table == "decisions" else ["reason"]).collect()
    return schema.empty(table) if df is None else schema.conform(df, table)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _sha256(path: Path, full: bool = False) -> str:
    digest = schema.file_hash(path)
    return digest if full else digest[: schema.ID_HEX_CHARS]


MANIFEST = "manifest.json"
VERSION_DIR = re.compile(r"^v(\d+)$")
TMP_DIR = re.compile(r"^\.tmp-(\d+)-")
FOOTER_TAIL = 8  # a Parquet file ends with the footer's length (4 bytes) and b"PAR1"


PAIR_SPLITS = ("train", "test")
LEGACY_PAIRS = "pairs.parquet"  # the one pairs file of versions published before the split layout


def split_path(split: str) -> str:
    """Where a split's pairs live inside a version folder (the Hub's data/<split> convention)."""
    return f"data/{split}.parquet"


class RowsHasher:
    """sha256 of rows' content, one stream per column (validity, lengths and values kept apart), so
    the same rows in the same order give the same digest however they are batched, chunked or stored
    (file layout, row groups, compression)."""

    def __init__(self) -> None:
        self._streams: dict[str, Any] = {}

    def update(self, table: pa.Table) -> None:
        for name in table.column_names:
            for chunk in table.column(name).chunks:
                self._feed(name, chunk)

    def hexdigest(self) -> str:
        return schema.content_hash("rows", {k: h.hexdigest() for k, h in self._streams.items()})

    def _put(self, key: str, data: Any) -> None:
        self._streams.setdefault(key, hashlib.sha256()).update(data)

    def _feed(self, key: str, arr: pa.Array) -> None:
        self._put(key + "#valid", arr.is_valid().to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())
        kind = arr.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            if pa.types.is_string_view(kind):
                arr = arr.cast(pa.large_string())
            arr = arr.fill_null("") if arr.null_count else arr  # a null's slot may hold bytes
            width = np.int64 if pa.types.is_large_string(arr.type) else np.int32  # read in place: texts are big
            offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1]
            self._put(key + "#len", np.diff(offsets).astype(np.int64).tobytes())
            if len(arr) and offsets[-1] > offsets[0]:
                self._put(key, memoryview(arr.buffers()[2])[offsets[0] : offsets[-1]])
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            self._put(key + "#len", arr.value_lengths().fill_null(0).cast(pa.int64()).to_numpy().tobytes())
            self._feed(key + "[]", arr.flatten())
        elif pa.types.is_null(kind):
            return
        elif pa.types.is_struct(kind):
            for field_, child in zip(kind, arr.flatten()):
                self._feed(f"{key}.{field_.name}", child)
        else:
            values = arr.fill_null(pa.scalar(0, kind)) if arr.null_count else arr
            self._put(key, values.to_numpy(zero_copy_only=False).tobytes())


def rows_fingerprint(splits: Mapping[str, str]) -> str:
    """A version's fingerprint from its splits' content digests (RowsHasher.hexdigest per split)."""
    return schema.content_hash("version_rows", dict(sorted(splits.items())))[: schema.ID_HEX_CHARS]


_ARROW_ROWS = schema.empty("version_rows").to_arrow().schema  # VERSION_ROWS as polars hands it to Arrow
WRITE_BATCH_ROWS = 65_536  # rows per write (and per Parquet row group at most)


class PairSplitsWriter:
    """Writes VERSION_ROWS frames, batch by batch, into one Parquet file per split and hashes their
    content as it goes: `close` returns each split's file and rows, and the version's fingerprint."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "data").mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._hashers = {s: RowsHasher() for s in PAIR_SPLITS}
        self._rows = dict.fromkeys(PAIR_SPLITS, 0)
        self._nbytes = dict.fromkeys(PAIR_SPLITS, 0)  # in memory (Arrow): the card's dataset_size

    def _writer(self, split: str) -> pq.ParquetWriter:
        if split not in self._writers:
            # content-defined chunking: pages cut by content, so a new version that shares rows with an
            # older one uploads only what changed to Hub storage that deduplicates chunks (Xet)
            # polars' Arrow types as they come (large strings: no copy of the texts); without the Arrow
            # schema in the file, readers see plain Parquet strings and lists, as the card's features say
            self._writers[split] = pq.ParquetWriter(self.folder / split_path(split), _ARROW_ROWS, compression="zstd",
                                                    use_content_defined_chunking=True, store_schema=False)
        return self._writers[split]

    def write(self, rows: pl.DataFrame) -> None:
        unknown = set(rows["split"].unique().to_list()) - set(PAIR_SPLITS)
        if unknown:
            raise CatalogError(f"publish: rows with split {sorted(map(str, unknown))}; a split is train or test")
        for start in range(0, rows.height, WRITE_BATCH_ROWS):  # a split's copy is one batch's, not the version's
            batch = rows.slice(start, WRITE_BATCH_ROWS)
            for split in PAIR_SPLITS:
                part = batch.filter(pl.col("split") == split)
                if part.height:
                    table = schema.conform(part, "version_rows").to_arrow()
                    self._writer(split).write_table(table)
                    self._hashers[split].update(table)
                    self._rows[split] += part.height
                    self._nbytes[split] += table.nbytes

    def close(self) -> tuple[dict[str, dict[str, Any]], str]:
        """Each split's {"path", "rows", "nbytes"} (an empty split is written too, so every version has
        both files) and the fingerprint; the files are fsynced."""
        for split in PAIR_SPLITS:
            self._writer(split).close()
            _fsync(self.folder / split_path(split))
        fsync_dir(self.folder / "data")
        splits = {s: {"path": split_path(s), "rows": self._rows[s], "nbytes": self._nbytes[s]} for s in PAIR_SPLITS}
        return splits, rows_fingerprint({s: h.hexdigest() for s, h in self._hashers.items()})


def pairs_fingerprint(folder: Path, manifest: Mapping[str, Any]) -> str:
    """Recompute a version's fingerprint from its files (the split files' content, or the legacy
    pairs.parquet's bytes), to compare with the one recorded."""
    if not manifest.get("splits"):
        return _sha256(folder / LEGACY_PAIRS)
    digests = {}
    for split, entry in manifest["splits"].items():
        hasher = RowsHasher()
        for batch in pq.ParquetFile(folder / entry["path"]).iter_batches(batch_size=65536):
            hasher.update(pa.Table.from_batches([batch]))
        digests[split] = hasher.hexdigest()
    return rows_fingerprint(digests)


def fingerprint_problem(folder: Path, manifest: Mapping[str, Any], expected: str) -> str | None:
    """Why the pairs' content does not give the recorded fingerprint (None when it does)."""
    try:
        found = pairs_fingerprint(folder, manifest)
    except Exception as exc:  # ArrowInvalid, OSError: a file whose footer is intact but not its pages
        return f"damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return None if found == expected else "its content hash differs from the recorded fingerprint (edited)"


def pair_files(folder: Path, manifest: Mapping[str, Any], split: str | None = None) -> list[tuple[Path, int | None]]:
    """The files holding a version's pairs with the rows each must hold (train before test), or
    the legacy pairs.parquet (rows: the version's, whatever the split)."""
    if not manifest.get("splits"):
        return [(folder / LEGACY_PAIRS, None)]
    return [(folder / e["path"], int(e["rows"])) for s, e in manifest["splits"].items() if split in (None, s)]


def file_digest(path: Path) -> dict[str, Any]:
    """What a version's manifest stores per file: size, sha256, footer digest (and rows for Parquet)."""
    out: dict[str, Any] = {"bytes": path.stat().st_size, "sha256": _sha256(path, full=True)}
    if path.suffix == ".parquet":
        out["footer"] = _footer_digest(path)
        import pyarrow.parquet as pq

        out["rows"] = pq.ParquetFile(path).metadata.num_rows
    return out


def _footer_digest(path: Path) -> str:
    """sha256 of the Parquet footer: it holds every column chunk's offsets, sizes and statistics,
    so a replaced or edited file changes it; reading it costs a few kilobytes, not the file."""
    with open(path, "rb") as fh:
        fh.seek(-FOOTER_TAIL, os.SEEK_END)
        tail = fh.read(FOOTER_TAIL)
        if tail[4:] != b"PAR1":
            raise ValueError("no Parquet footer (the file is truncated or not Parquet)")
        length = int.from_bytes(tail[:4], "little")
        fh.seek(-(FOOTER_TAIL + length), os.SEEK_END)
        return hashlib.sha256(fh.read(length + FOOTER_TAIL)).hexdigest()[: schema.ID_HEX_CHARS]


def read_manifest(folder: Path) -> dict[str, Any]:
    """A version folder's manifest; CatalogError when it is missing or not JSON."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: unreadable manifest ({exc}); `curate doctor` checks the catalog") from exc
    if not isinstance(manifest, dict):
        raise CatalogError(f"{path}: a manifest is a JSON object; `curate doctor` checks the catalog")
    return manifest


def manifest_state(folder: Path) -> str:
    """'pending' (its manifest says it was never committed), 'committed', or 'unknown' (no readable
    manifest, or one written before manifests recorded the commit): only 'pending' may be cleaned."""
    try:
        manifest = read_manifest(folder)
    except CatalogError:
        return "unknown"
    committed = manifest.get("committed")
    return "pending" if committed is False else "committed" if committed is True else "unknown"


def mark_committed(folder: Path) -> None:
    """After the catalog transaction: the manifest says so (replaced atomically, fsynced)."""
    manifest = read_manifest(folder)
    manifest["committed"] = True
    tmp = folder / f".{MANIFEST}.tmp"
    _write_text(tmp, json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, folder / MANIFEST)
    fsync_dir(folder)


def verify_file(path: Path, expected: Mapping[str, Any] | None, *, rows: int | None = None, full: bool = False) -> str | None:
    """Why `path` is not the file the manifest recorded (None when it is). Cheap: Parquet footer,
    row count, size and footer digest; full: the sha256 of every byte as well."""
    if path.is_symlink() or not path.is_file():
        return "missing" if not path.exists() else "not a plain file"
    try:
        import pyarrow.parquet as pq

        meta_rows = pq.ParquetFile(path).metadata.num_rows if path.suffix == ".parquet" else None
        footer = _footer_digest(path) if path.suffix == ".parquet" else None
    except Exception as exc:  # ArrowInvalid, OSError: truncated or not Parquet
        return f"damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    want_rows = rows if rows is not None else (expected or {}).get("rows")
    if want_rows is not None and meta_rows is not None and meta_rows != want_rows:
        return f"holds {meta_rows} rows where the catalog recorded {want_rows} (replaced or edited)"
    if expected:
        if expected.get("bytes") is not None and path.stat().st_size != expected["bytes"]:
            return f"is {path.stat().st_size} bytes where the manifest recorded {expected['bytes']} (replaced or edited)"
        if expected.get("footer") and footer != expected["footer"]:
            return "its Parquet footer differs from the one recorded (replaced or edited)"
        if full and expected.get("sha256") and _sha256(path, full=True) != expected["sha256"]:
            return "its content hash differs from the one recorded (edited)"
    return None


# ---------------------------------------------------------------- the catalog


class Catalog:
    """One catalog folder. Every method opens DuckDB for the moment it needs it and closes it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise CatalogError(f"catalog path {self.root} exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "catalog.duckdb"
        self.lock_path = self.root / ".catalog.lock"
        self.datasets_dir = self.root / "datasets"
        self.store = ArtifactStore(self.root / "artifacts")
        if not self.db_path.exists():
            with self._write(check=False):
                pass

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    # -- locking and connections

    @contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        # fcntl.flock, not the filelock package: readers share the lock (filelock's FileLock is
        # exclusive only, its ReadWriteLock a SQLite file that polls), the kernel queues waiters
        # without polling, and a killed process's lock goes with it.
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CatalogError(
                f"cannot open the catalog's lock file {self.lock_path}: {exc.strerror or exc}; it must be a plain "
                "file (it holds no data: move away what is there and run again)"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextmanager
    def _write(self, check: bool = True) -> Iterator[Any]:
        """The database under the exclusive lock; `check`: refuse while version folders exist that
        it does not list (it was lost or restored from an older backup)."""
        with self._lock(exclusive=True):
            con = self._connect(read_only=False)
            try:
                con.execute(_DDL)
                if check:
                    self._check_in_step(con)
                yield con
            finally:
                con.close()

    def _connect(self, read_only: bool) -> Any:
        import duckdb

        try:
            return duckdb.connect(str(self.db_path), read_only=read_only)
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CatalogError(
                f"catalog database {self.db_path} is unreadable ({first}); `curate doctor --catalog {self.root}` "
                "checks it, and with --fix moves it aside and rebuilds it from the version manifests"
            ) from exc

    def _query(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        with self._lock(exclusive=False):
            con = self._connect(read_only=True)
            try:
                return con.sql(query, params=list(params) if params else None).pl()
            finally:
                con.close()

    def unlisted_versions(self, con: Any = None) -> list[Path]:
        """Version folders the database does not list, except those never committed."""
        if not self.datasets_dir.is_dir():
            return []
        if con is None:
            with self._lock(exclusive=False):
                con = self._connect(read_only=True)
                try:
                    return self.unlisted_versions(con)
                finally:
                    con.close()
        known = {(n, int(v)) for n, v in con.execute("SELECT name, version FROM versions").fetchall()}
        out = []
        for ds in sorted(self.datasets_dir.iterdir()):
            if not ds.is_dir():
                continue
            for entry in sorted(ds.iterdir()):
                m = VERSION_DIR.match(entry.name)
                if m and (ds.name, int(m.group(1))) not in known and manifest_state(entry) != "pending":
                    out.append(entry)
        return out

    def _check_in_step(self, con: Any) -> None:
        unlisted = self.unlisted_versions(con)
        if unlisted:
            shown = ", ".join(f"{p.parent.name}@{p.name}" for p in unlisted[:5]) + (", ..." if len(unlisted) > 5 else "")
            raise CatalogError(
                f"{self.db_path} does not list {len(unlisted)} published version(s) whose folders exist ({shown}): the "
                "database was lost or restored from an older backup. Nothing was written (it would reuse their "
                f"numbers). Run `curate doctor --catalog {self.root}` to see the state and `curate doctor --fix "
                f"--catalog {self.root}` to rebuild the database from the version manifests"
            )

    # -- versions

    def versions(self, name: str | None = None) -> pl.DataFrame:
        """Committed versions (newest last per dataset), with absolute paths."""
        q = "SELECT * FROM versions" + (" WHERE name = ?" if name else "") + " ORDER BY name, version"
        df = self._query(q, [validate_name(name)] if name else None)
        return df.with_columns(pl.concat_str([pl.lit(str(self.root) + "/"), pl.col("path")]).alias("path"))

    def datasets(self) -> pl.DataFrame:
        return self._query(
            "SELECT d.name, count(v.version) AS versions, max(v.version) AS latest, d.created_at "
            "FROM datasets d LEFT JOIN versions v USING (name) GROUP BY d.name, d.created_at ORDER BY d.name"
        )

    def _info(self, row: Mapping[str, Any], split: str | None = None) -> VersionInfo:
        return VersionInfo(
            name=row["name"],
            version=int(row["version"]),
            ref=row["ref"],
            path=self.root / row["path"],
            rows=int(row["rows"]),
            created_at=row["created_at"],
            split=split,
            parents=tuple(json.loads(row["parents"] or "[]")),
            fingerprint=row["fingerprint"] or "",
            run_id=row["run_id"],
            counts=json.loads(row["counts"] or "{}"),
        )

    def resolve(self, ref: str | VersionInfo) -> VersionInfo:
        """'name' (latest), 'name@vN', optionally with ':train' / ':test'."""
        if isinstance(ref, VersionInfo):
            return ref
        name, version, split = parse_ref(ref)
        found = self._query("SELECT * FROM versions WHERE name = ? ORDER BY version", [name])
        if found.height == 0:
            names = self._query("SELECT DISTINCT name FROM versions ORDER BY name")["name"].to_list()
            have = ", ".join(names) if names else "none yet (publish or `curate import` one)"
            raise CatalogError(f"unknown dataset {name!r} in catalog {self.root}; datasets: {have}")
        if version is None:
            row = found.row(found.height - 1, named=True)
        else:
            match = found.filter(pl.col("version") == version)
            if match.height == 0:
                have = ", ".join(f"v{v}" for v in found["version"].to_list())
                raise CatalogError(f"dataset {name!r} has no version v{version}; versions: {have}")
            row = match.row(0, named=True)
        return self._info(row, split)

    # -- publish

    def publish(
        self,
        name: str,
        tables: Mapping[str, pl.DataFrame | pl.LazyFrame],
        *,
        parents: Sequence[str] = (),
        run: Mapping[str, Any] | None = None,
        recipe: Mapping[str, Any] | None = None,
        card: str | None = None,
        selection: Mapping[str, Any] | None = None,
        test_fraction: float = 0.0,
        seed: int = 0,
        generated_by: str | None = None,
        formats: Sequence[str] = (),
        key: str | None = None,
    ) -> VersionInfo:
        """Publish a new immutable version of `name`: files first, then one catalog transaction.

        `tables` may be lazy scans (a run's Parquet artifacts): the rows are planned from the
        columns they need and written a batch at a time, the other tables copied as they stream.

        `generated_by` names the policy that sampled the version's candidates ("model:<model_id>"
        for a model in this catalog, else its folder), so an on-policy round leads to its checkpoint.
        `formats`: export views checked (curation.export.check_export) before anything is written,
        so a version the run cannot export is never published. `key`: what a run calls this publish
        (its stage fingerprint); `published(name, key)` finds the version again, so a retry after a
        failed export does not publish a second copy. `selection`: the select stage's report (each
        step beside its random control), shown on the card. `card`: markdown that replaces the
        generated card's body (its YAML header is always generated).
        """
        name = validate_name(name)
        started = time.perf_counter()
        unknown = set(tables) - {"pairs", *LINEAGE_TABLES}
        if unknown:
            raise CatalogError(f"publish: unknown tables {sorted(unknown)}; use pairs, {', '.join(LINEAGE_TABLES)}")
        if "pairs" not in tables:
            raise CatalogError("publish: a `pairs` table is required")
        parent_refs = [self.resolve(p).ref for p in parents]
        try:
            plan = plan_version_rows(tables, test_fraction=test_fraction, seed=seed)
        except RowsError as exc:
            raise CatalogError(str(exc)) from exc
        counts = plan.counts
        card_frames = {t: _card_frame(tables, t) for t in ("decisions", "quarantine")}
        counts["quarantined"] = card_frames["quarantine"].height
        run = dict(run or {})
        run_id = str(run.get("run_id") or uuid.uuid4().hex[:16])

        ds_dir = self.datasets_dir / name
        ds_dir.mkdir(parents=True, exist_ok=True)
        tmp = ds_dir / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            writer = PairSplitsWriter(tmp)
            for batch in plan.batches():  # memory holds a batch of rows, not the version
                for fmt in formats:  # a version the run cannot export is never published
                    check_export(batch, fmt)
                writer.write(batch)
            splits, fp = writer.close()
            _write_file(tables["pairs"], tmp / "pool.parquet", "pairs")
            for t in LINEAGE_TABLES:
                _write_file(tables.get(t, schema.empty(t)), tmp / f"{t}.parquet", t)
            stats = plan.stats_frame()  # every column the card and plots read, lengths in place of texts
            digests = {p.relative_to(tmp).as_posix(): file_digest(p) for p in sorted(tmp.rglob("*.parquet"))}
            plots = draw_plots(stats, card_frames, selection, tmp)  # before the lock: it takes a moment
            digests.update({p: file_digest(tmp / p) for p in plots})
            with self._write() as con:
                version = self._next_version(con, name, ds_dir)
                ref = f"{name}@v{version}"
                created = _now()
                manifest = {
                    "name": name,
                    "version": version,
                    "ref": ref,
                    "created_at": created.isoformat() + "Z",
                    "rows": plan.height,
                    "fingerprint": fp,
                    "splits": splits,
                    "counts": counts,
                    "parents": parent_refs,
                    "run_id": run_id,
                    "generated_by": generated_by,
                    "key": key,
                    "test_fraction": test_fraction,
                    "seed": seed,
                    "files": sorted(digests) + ["manifest.json", "README.md"],
                    "digests": digests,
                    "recipe": recipe,
                    "selection": selection,
                    "committed": False,  # until the catalog transaction is done: see mark_committed
                }
                _write_text(tmp / "README.md", version_card(stats, card_frames, manifest, plots, body=card))
                digests["README.md"] = file_digest(tmp / "README.md")  # the card is published content too
                _write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, default=str))
                fsync_dir(tmp)
                final = ds_dir / f"v{version}"
                os.rename(tmp, final)
                fsync_dir(ds_dir)
                pause = float(os.environ.get(PAUSE_ENV) or 0)
                if pause:
                    time.sleep(pause)
                self._commit_version(con, manifest, final, run, recipe, created)
                try:
                    mark_committed(final)
                except OSError as exc:  # the version is committed: the database is the record
                    log.warning("%s: committed, but its manifest could not say so (%s); `curate doctor --fix` "
                                "marks it", ref, exc)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info(
            "published %s: %d pairs (train %d, test %d) from %d, dropped %d, flipped %d, ties %d, quarantined %d in %.1fs",
            ref, plan.height, counts["train"], counts["test"], counts["pairs_in"], counts["dropped"], counts["flipped"],
            counts["ties"], counts["quarantined"], time.perf_counter() - started,
        )
        return VersionInfo(
            name=name, version=version, ref=ref, path=final, rows=plan.height, created_at=created,
            parents=tuple(parent_refs), fingerprint=fp, run_id=run_id, counts=counts,
        )

    @staticmethod
    def _next_version(con: Any, name: str, ds_dir: Path) -> int:
        """Under the exclusive lock (after _check_in_step): the next number, after clearing what
        crashed publishes left: folders whose manifest says never committed, dead processes' temps."""
        committed = {r[0] for r in con.execute("SELECT version FROM versions WHERE name = ?", [name]).fetchall()}
        for entry in ds_dir.iterdir():
            m = VERSION_DIR.match(entry.name)
            if m and int(m.group(1)) not in committed and manifest_state(entry) == "pending":
                shutil.rmtree(entry)  # renamed into place, never committed: nobody ever saw it
            tm = TMP_DIR.match(entry.name)
            if tm and not pid_alive(int(tm.group(1))):
                shutil.rmtree(entry, ignore_errors=True)
        return max(committed, default=0) + 1

    def _commit_version(
        self, con: Any, manifest: Mapping[str, Any], final: Path, run: Mapping[str, Any], recipe: Any, created: datetime
    ) -> None:
        """The one transaction that makes a version visible."""
        name, version, ref = manifest["name"], manifest["version"], manifest["ref"]
        counts = manifest["counts"]
        con.begin()
        try:
            con.execute(
                "INSERT INTO datasets (name, created_at) SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM datasets WHERE name = ?)",
                [name, created, name],
            )
            con.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    name, version, ref, str(final.relative_to(self.root)), manifest["rows"],
                    counts["train"], counts["test"], created, manifest["fingerprint"], manifest["run_id"],
                    json.dumps(manifest["parents"]), json.dumps(counts), json.dumps(recipe, default=str) if recipe else None,
                ],
            )
            for parent in manifest["parents"]:
                con.execute("INSERT INTO lineage VALUES (?, ?, 'parent', ?)", [ref, parent, created])
            if manifest.get("generated_by"):
                con.execute("INSERT INTO lineage VALUES (?, ?, 'generated_by', ?)", [ref, manifest["generated_by"], created])
            if manifest.get("key"):
                con.execute("INSERT INTO lineage VALUES (?, ?, 'publish_key', ?)", [ref, f"key:{manifest['key']}", created])
            if run:
                self._upsert_run(con, {**run, "run_id": manifest["run_id"]}, default_name=name)
                con.execute("INSERT INTO lineage VALUES (?, ?, 'run', ?)", [ref, f"run:{manifest['run_id']}", created])
            con.commit()
        except BaseException:
            con.rollback()
            raise

    # -- runs, models, evaluations

    @staticmethod
    def _upsert_run(con: Any, run: Mapping[str, Any], default_name: str | None = None) -> str:
        run_id = str(run.get("run_id") or uuid.uuid4().hex[:16])
        con.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id, run.get("name", default_name), run.get("status", "completed"),
                _timestamp(run.get("started_at")), _timestamp(run.get("ended_at")),
                json.dumps(run["recipe"], default=str) if run.get("recipe") is not None else None,
                json.dumps(run.get("stats") or {}, default=str), _now(),
            ],
        )
        return run_id

    def record_run(self, run_id: str | None = None, **fields: Any) -> str:
        """Insert or update a run (name, status, started_at, ended_at, recipe, stats)."""
        with self._write() as con:
            return self._upsert_run(con, {"run_id": run_id, **fields})

    def runs(self) -> pl.DataFrame:
        return self._query("SELECT * FROM runs ORDER BY created_at")

    def record_model(
        self,
        version_ref: str,
        method: str,
        config: Mapping[str, Any],
        metrics: Mapping[str, Any],
        path: str | os.PathLike[str],
        base_model: str | None = None,
        started_at: Any = None,
        ended_at: Any = None,
    ) -> str:
        """Record a model trained on a version; returns its model_id."""
        info = self.resolve(version_ref)
        ref = info.ref + (f":{info.split}" if info.split else "")
        model_id = uuid.uuid4().hex[:16]
        with self._write() as con:
            con.begin()
            con.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    model_id, ref, method, json.dumps(dict(config), default=str), json.dumps(dict(metrics), default=str),
                    str(path), base_model, _timestamp(started_at), _timestamp(ended_at), _now(),
                ],
            )
            con.execute("INSERT INTO lineage VALUES (?, ?, 'trained_on', ?)", [f"model:{model_id}", ref, _now()])
            con.commit()
        return model_id

    def models(self) -> pl.DataFrame:
        return self._query("SELECT * FROM models ORDER BY created_at")

    def record_evaluation(
        self,
        model_id: str,
        data_ref: str,
        data_fingerprint: str,
        metrics: Mapping[str, Any],
        judge: str | None = None,
    ) -> str:
        """Record an evaluation of a recorded model on some data; returns its eval_id."""
        if self._query("SELECT 1 FROM models WHERE model_id = ?", [model_id]).height == 0:
            raise CatalogError(f"unknown model {model_id!r}: record it with record_model first (see `curate ls --models`)")
        eval_id = uuid.uuid4().hex[:16]
        with self._write() as con:
            con.execute(
                "INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?)",
                [eval_id, model_id, data_ref, data_fingerprint, json.dumps(dict(metrics), default=str), judge, _now()],
            )
        return eval_id

    def evaluations(self, model_id: str | None = None) -> pl.DataFrame:
        if model_id:
            return self._query("SELECT * FROM evaluations WHERE model_id = ? ORDER BY created_at", [model_id])
        return self._query("SELECT * FROM evaluations ORDER BY created_at")

    def lineage(self, model_id: str) -> pl.DataFrame:
        """Row-level lineage of a model: model -> version -> pairs -> candidates -> prompts."""
        model = self._query("SELECT * FROM models WHERE model_id = ?", [model_id])
        if model.height == 0:
            raise CatalogError(f"unknown model {model_id!r}; see `curate ls --models`")
        ref = model["version_ref"][0]
        info = self.resolve(ref)
        rows = self.load(info)
        cands = self.load(info, table="candidates").unique("candidate_id", keep="first")
        prompts = self.load(info, table="prompts").unique("prompt_id", keep="first")
        gen = cands.select("candidate_id", "generator")
        return (
            rows.select("pair_id", "prompt_id", "chosen_id", "rejected_id", "label_source", "builder", "split", "weight")
            .join(gen.rename({"candidate_id": "chosen_id", "generator": "chosen_generator"}), on="chosen_id", how="left", maintain_order="left")
            .join(gen.rename({"candidate_id": "rejected_id", "generator": "rejected_generator"}), on="rejected_id", how="left", maintain_order="left")
            .join(prompts.select("prompt_id", pl.col("source").alias("prompt_source")), on="prompt_id", how="left", maintain_order="left")
            .select(pl.lit(model_id).alias("model_id"), pl.lit(info.ref).alias("version"), pl.all())
        )

    def parents(self, ref: str) -> list[str]:
        return list(self.resolve(ref).parents)

    def generated_by(self, ref: str) -> str | None:
        """The policy that sampled a version's candidates, as recorded at publish (None: not recorded)."""
        info = self.resolve(ref)
        found = self._query("SELECT parent FROM lineage WHERE child = ? AND relation = 'generated_by'", [info.ref])
        return found["parent"][0] if found.height else None

    def published(self, name: str, key: str) -> VersionInfo | None:
        """The version of `name` an earlier publish with this `key` made (None: there is none)."""
        name = validate_name(name)
        found = self._query(
            "SELECT child FROM lineage WHERE relation = 'publish_key' AND parent = ? ORDER BY created_at", [f"key:{key}"]
        )
        for child in reversed([c for c in found["child"].to_list() if c.rpartition("@v")[0] == name]):
            try:
                return self.resolve(child)
            except CatalogError:
                continue
        return None

    def children(self, ref: str) -> pl.DataFrame:
        """What was derived from a version: newer versions and models trained on it."""
        info = self.resolve(ref)
        return self._query(
            "SELECT child, relation, created_at FROM lineage WHERE parent = ? OR parent LIKE ? ORDER BY created_at",
            [info.ref, info.ref + ":%"],
        )

    # -- reading

    def load(self, ref: str | VersionInfo, table: str = "pairs", as_: str = "polars") -> Any:
        """A version's table as polars (default), arrow, hf (datasets.Dataset) or duckdb (a relation)."""
        if table not in LOADABLE_TABLES:
            raise CatalogError(f"unknown table {table!r}; choose one of {', '.join(LOADABLE_TABLES)}")
        info = self.resolve(ref)
        paths = self._check_file(info, table, full=False)
        split = info.split if table == "pairs" else None
        legacy = split is not None and paths[0].name == LEGACY_PAIRS  # one file: filter its split column
        if as_ == "duckdb":
            import duckdb

            rel = duckdb.connect().read_parquet([str(p) for p in paths])
            return rel.filter(f"split = '{split}'") if legacy else rel  # split is 'train' or 'test'
        df = pl.read_parquet(paths)
        if legacy:
            df = df.filter(pl.col("split") == split)
        if as_ == "polars":
            return df
        if as_ == "arrow":
            return df.to_arrow()
        if as_ == "hf":
            import datasets

            # the version's content hash is the fingerprint: datasets would otherwise hash every row
            return datasets.Dataset(df.to_arrow(), fingerprint=f"{info.fingerprint or info.ref}-{table}-{split or 'all'}")
        raise CatalogError(f"unknown load format {as_!r}; choose polars, arrow, hf or duckdb")

    def _check_file(self, info: VersionInfo, table: str, full: bool) -> list[Path]:
        """The files of a version's table, once checked to be what was published (see verify_file);
        CatalogError when one is not."""
        try:
            manifest = read_manifest(info.path)
        except CatalogError as exc:
            raise CatalogError(f"{info.ref} cannot be served: {exc}") from None
        files = pair_files(info.path, manifest, info.split) if table == "pairs" else [(info.file(table), None)]
        digests = manifest.get("digests") or {}
        why, path = None, files[0][0]
        if table == "pairs" and manifest.get("fingerprint") not in (None, info.fingerprint):
            why = "its manifest names other content than the catalog recorded (the folder was replaced)"
        for path, rows in files:
            rel = path.relative_to(info.path).as_posix()
            legacy_rows = info.rows if path.name == LEGACY_PAIRS else None
            why = why or verify_file(path, digests.get(rel), rows=rows if rows is not None else legacy_rows, full=full)
            if why:
                break
        if why is None and full and table == "pairs" and info.fingerprint:
            path = info.path / (LEGACY_PAIRS if not manifest.get("splits") else "data")
            why = fingerprint_problem(info.path, manifest, info.fingerprint)
        if why:
            raise CatalogError(
                f"{info.ref} cannot be served: {path} {why}. A published version is immutable: restore the file "
                f"from a backup, or see `curate doctor --catalog {self.root}`"
            )
        return [p for p, _ in files]

    def verify_version(self, ref: str | VersionInfo) -> VersionInfo:
        """Full check of every file of a version (sha256 of every byte): its tables, then the card and
        plots its manifest lists; CatalogError on the first bad one."""
        info = self.resolve(ref)
        whole = dataclasses.replace(info, split=None)  # every split, whatever the ref asked for
        for table in LOADABLE_TABLES:
            self._check_file(whole, table, full=True)
        digests = read_manifest(info.path).get("digests") or {}
        for name, digest in digests.items():
            if not name.endswith(".parquet"):
                why = verify_file(info.path / name, digest, full=True)
                if why:
                    raise CatalogError(f"{info.ref} is not what was published: {info.path / name} {why}; restore it "
                                       f"from a backup, or see `curate doctor --catalog {self.root}`")
        return info

    def sql(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
        """Read-only SQL over views of the whole catalog.

        Views: `pairs` (dataset, version, then the VERSION_ROWS columns, every version),
        `versions`, `datasets`, `runs`, `lineage`, `models`, `evaluations`.
        """
        import duckdb

        con = duckdb.connect()
        try:
            statements = con.extract_statements(query)
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise CatalogError("Catalog.sql runs one read-only SELECT statement; publish or record_* to write")
            with self._lock(exclusive=False):
                src = self._connect(read_only=True)
                try:
                    meta = {t: src.sql(f"SELECT * FROM {t}").to_arrow_table() for t in ("datasets", "versions", "runs", "lineage", "models", "evaluations")}
                finally:
                    src.close()
            for t, arrow in meta.items():
                con.register(f"_{t}", arrow)
                con.execute(f"CREATE VIEW {t} AS SELECT * FROM _{t}")
            versions = pl.from_arrow(meta["versions"])
            if versions.height:
                files, names, numbers = [], [], []
                for rel, name, number in versions.select("path", "name", "version").iter_rows():
                    folder = self.root / rel
                    legacy = folder / LEGACY_PAIRS
                    for path in [legacy] if legacy.exists() else [folder / split_path(s) for s in PAIR_SPLITS]:
                        files.append(str(path))
                        names.append(name)
                        numbers.append(number)
                fmap = pa.table({"filename": files, "dataset": names, "version": numbers})
                con.register("_files", fmap)
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(
                    "CREATE VIEW pairs AS SELECT f.dataset, f.version, p.* EXCLUDE (filename) "
                    f"FROM read_parquet([{listing}], filename = true) p JOIN _files f USING (filename)"
                )
            else:
                empty = pa.schema([("dataset", pa.string()), ("version", pa.int32())] + list(schema.VERSION_ROWS)).empty_table()
                con.register("_pairs", empty)
                con.execute("CREATE VIEW pairs AS SELECT * FROM _pairs")
            return con.sql(query, params=params).pl()
        except duckdb.Error as exc:
            raise CatalogError(f"SQL failed: {exc}") from exc
        finally:
            con.close()

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """What changed from version `a` to `b`: rows added / removed / changed, and score shifts."""
        ia, ib = self.resolve(a), self.resolve(b)
        return diff_rows(self.load(ia), self.load(ib), ia.ref + (f":{ia.split}" if ia.split else ""), ib.ref + (f":{ib.split}" if ib.split else ""))

    def export(self, ref: str, format: str, out: str | os.PathLike[str]) -> Path:
        """Write a version in a consumer format (trl_dpo, trl_reward, trl_kto, openrlhf, jsonl, parquet, hf)."""
        return export_version(self, ref, format, out).path


_COMPARED = ("prompt", "chosen", "rejected", "chosen_id", "rejected_id", "margin", "chosen_score", "rejected_score",
             "scores", "confidence", "weight", "epsilon", "label_source", "split")


def _score_means(rows: pl.DataFrame) -> dict[str, dict[str, float | None]]:
    """Mean chosen / rejected / margin per scorer from the scores JSON column."""
    acc: dict[str, dict[str, list[float]]] = {}
    for text in rows["scores"].drop_nulls().to_list():
        for scorer, v in json.loads(text).items():
            d = acc.setdefault(scorer, {"chosen": [], "rejected": [], "margin": []})
            if v.get("chosen") is not None:
                d["chosen"].append(v["chosen"])
            if v.get("rejected") is not None:
                d["rejected"].append(v["rejected"])
            if v.get("chosen") is not None and v.get("rejected") is not None:
                d["margin"].append(v["chosen"] - v["rejected"])
    return {s: {k: (sum(x) / len(x) if x else None) for k, x in d.items()} for s, d in acc.items()}


def _shift(a: float | None, b: float | None) -> dict[str, float | None]:
    return {"a": a, "b": b, "delta": (b - a) if a is not None and b is not None else None}


def diff_rows(a: pl.DataFrame, b: pl.DataFrame, ref_a: str = "a", ref_b: str = "b") -> dict[str, Any]:
    ids_a, ids_b = set(a["pair_id"].to_list()), set(b["pair_id"].to_list())
    common = a.join(b, on="pair_id", how="inner", suffix="_b")
    changed_cols: dict[str, int] = {}
    changed_any = pl.Series([False] * common.height, dtype=pl.Boolean)
    for col in _COMPARED:
        left, right = common[col], common[f"{col}_b"]
        differs = ~((left == right).fill_null(False) | (left.is_null() & right.is_null()))
        if left.dtype == pl.Float64:
            differs = differs & ~((left - right).abs() <= 1e-12).fill_null(False)
        n = int(differs.sum())
        if n:
            changed_cols[col] = n
        changed_any = changed_any | differs
    mean = lambda df: df["margin"].drop_nulls().mean() if df.height else None  # noqa: E731
    sa, sb = _score_means(a), _score_means(b)
    scorers = {
        s: {k: _shift(sa.get(s, {}).get(k), sb.get(s, {}).get(k)) for k in ("chosen", "rejected", "margin")}
        for s in sorted(set(sa) | set(sb))
    }
    return {
        "a": ref_a,
        "b": ref_b,
        "rows_a": a.height,
        "rows_b": b.height,
        "added": len(ids_b - ids_a),
        "removed": len(ids_a - ids_b),
        "changed": int(changed_any.sum()),
        "unchanged": common.height - int(changed_any.sum()),
        "changed_columns": changed_cols,
        "mean_margin": _shift(mean(a), mean(b)),
        "scorers": scorers,
    }


def open_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Open (or create) the catalog at `path`, $CURATE_CATALOG, or ./catalogs/default."""
    return Catalog(path or os.environ.get(DEFAULT_CATALOG_ENV) or DEFAULT_CATALOG)
