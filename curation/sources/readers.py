"""Readers: turn a file, a saved HF dataset, a Hub name or a DuckDB query into numbered raw rows.

A reader never judges content. It yields `RawRow(line, value, problem)`: `value` is whatever the
row holds (normally a dict) and `problem` a (field, reason) pair when the row could not even be
parsed (malformed JSON, bytes that are not UTF-8). File-level trouble raises SourceError.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

BATCH_ROWS = 1024
UTF8_BOM = b"\xef\xbb\xbf"  # some editors start UTF-8 files with it; it is not part of the first row
JSON_SPACE = " \t\r\n"  # a blank line holds only these; other control characters are junk
RAW_CHARS = 500  # how much of an offending row the quarantine keeps
HUB_PREFIX = "hf://"
HF_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
DUCKDB_SUFFIXES = (".duckdb", ".ddb", ".db")
DATA_SUFFIXES = {".jsonl", ".json", ".gz", ".parquet", ".pq", ".csv", ".txt", *DUCKDB_SUFFIXES}


class SourceError(ValueError):
    """A file-level problem (missing, unreadable, unknown format, empty); the message names the file."""


@dataclass
class RawRow:
    line: int  # 1-based line (JSONL) or row number (other readers)
    value: Any
    problem: tuple[str, str] | None = None  # (field, reason) when the row could not be parsed
    raw: str | None = None


@dataclass
class Reader:
    """What was opened, how, and an iterator over its rows."""

    name: str  # "jsonl", "jsonl.gz", "json", "parquet", "hf_disk", "hf_hub", "duckdb"
    label: str  # the file (or query) named in messages and in the quarantine
    rows: Iterator[RawRow]


def truncate(text: str) -> str:
    return text if len(text) <= RAW_CHARS else text[:RAW_CHARS] + "..."


def looks_like_hub_name(path: str) -> bool:
    """"hf://owner/name", or "owner/name" that is not a local path and has no data-file suffix."""
    if path.startswith(HUB_PREFIX):
        return True
    parts = path.split("/")
    return (
        len(parts) == 2
        and all(p and not p.startswith(".") and p != ".." for p in parts)
        and Path(parts[1]).suffix.lower() not in DATA_SUFFIXES
        and not Path(path).exists()
    )


def open_reader(
    path: str | os.PathLike | None,
    *,
    query: str | None = None,
    params: Any = None,
    split: str | None = None,
    subset: str | None = None,
) -> Reader:
    """Pick the reader for `path` (and `query`); raise SourceError for file-level problems."""
    if query is not None:
        return _duckdb_reader(path, query, params)
    if path is None:
        raise SourceError("no source given: pass a file path, a saved dataset folder, a Hub name or query=")
    text = str(path)
    if looks_like_hub_name(text):
        return _hub_reader(text.removeprefix(HUB_PREFIX), split, subset)
    p = Path(text)
    if not p.exists():
        raise SourceError(f"{p}: file does not exist")
    if p.is_dir():
        if any((p / m).exists() for m in HF_DISK_MARKERS):
            return _hf_disk_reader(p, split)
        raise SourceError(
            f"{p}: is a folder but not a saved HF dataset (none of {', '.join(HF_DISK_MARKERS)} in it); "
            "pass a file, or a folder written by datasets' save_to_disk"
        )
    if not os.access(p, os.R_OK):
        raise SourceError(f"{p}: unreadable (permission denied)")
    if p.stat().st_size == 0:
        raise SourceError(f"{p}: empty file")
    name = p.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return _parquet_reader(p)
    if name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
        return _csv_reader(p, delimiter="\t" if ".tsv" in name else ",")
    if name.endswith(DUCKDB_SUFFIXES):
        raise SourceError(f"{p}: a DuckDB database needs query= (SQL that selects the rows to import)")
    return _json_reader(p)


# ---------------------------------------------------------------- JSON lines and JSON arrays


def _read_bytes(p: Path) -> bytes:
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SourceError(f"{p}: unreadable: {exc.strerror or exc}") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"{p}: unreadable: broken or truncated gzip ({exc})") from exc
    data = data.removeprefix(UTF8_BOM)
    if not data.strip():
        raise SourceError(f"{p}: empty file (no rows)")
    return data


def _json_reader(p: Path) -> Reader:
    data = _read_bytes(p)
    gz = p.name.lower().endswith(".gz")
    if data.lstrip()[:1] == b"[":
        return Reader("json.gz" if gz else "json", str(p), _json_array_rows(p, data))
    return Reader("jsonl.gz" if gz else "jsonl", str(p), _jsonl_rows(data))


def _jsonl_rows(data: bytes) -> Iterator[RawRow]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for i, raw in enumerate(lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            shown = raw.decode("utf-8", errors="replace")
            yield RawRow(i, None, ("(line)", f"not valid UTF-8: byte {exc.start} is {raw[exc.start]:#04x}"), truncate(shown))
            continue
        if not text.strip(JSON_SPACE):
            yield RawRow(i, _BLANK)
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, and RecursionError-free ValueErrors
            yield RawRow(i, None, ("(line)", f"malformed JSON: {exc}"), truncate(text))
            continue
        except RecursionError:
            yield RawRow(i, None, ("(line)", "malformed JSON: nested too deeply"), truncate(text))
            continue
        bad = _lone_surrogate(value) if b"\\u" in raw else None
        if bad:
            yield RawRow(i, None, bad, truncate(text))
            continue
        yield RawRow(i, value, raw=None)


class _Blank:
    """Marker for a blank line: counted, never imported or quarantined."""


_BLANK = _Blank()


def is_blank(row: RawRow) -> bool:
    return row.value is _BLANK


def _json_array_rows(p: Path, data: bytes) -> Iterator[RawRow]:
    try:
        values = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{p}: unreadable: not valid UTF-8 at byte {exc.start}") from exc
    except ValueError as exc:
        raise SourceError(f"{p}: malformed JSON array: {exc}") from exc
    if not isinstance(values, list):
        raise SourceError(f"{p}: a JSON file must hold a list of rows (or be JSON lines)")
    for i, value in enumerate(values, start=1):
        bad = _lone_surrogate(value)
        yield RawRow(i, None, bad, truncate(json.dumps(value))) if bad else RawRow(i, value)


def _lone_surrogate(value: Any, field: str = "(row)") -> tuple[str, str] | None:
    """(field, reason) when a string holds an unpaired surrogate escape (e.g. "\\ud800"): JSON allows
    it, but it is not Unicode text and cannot be stored as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return field, f"not valid Unicode: lone surrogate {value[exc.start]!r} at character {exc.start}"
        return None
    if isinstance(value, dict):
        items = ((k if field == "(row)" else f"{field}.{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{field}[{j}]", v) for j, v in enumerate(value))
    else:
        return None
    for key, v in items:
        found = _lone_surrogate(key, str(key)) or _lone_surrogate(v, str(key))
        if found:
            return found
    return None


# ---------------------------------------------------------------- Arrow-backed readers


def _arrow_rows(batches: Iterator[Any], label: str) -> Iterator[RawRow]:
    """Rows of Arrow record batches; a batch that cannot be decoded (a damaged page, a query that
    fails part-way) is a file-level error naming the file and the first row it holds."""
    n = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # ArrowInvalid, OSError, duckdb.Error
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"{label}: unreadable from row {n + 1} on ({first}); the file is damaged or truncated") from exc
        for value in batch.to_pylist():
            n += 1
            yield RawRow(n, value)


def _parquet_reader(p: Path) -> Reader:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise SourceError(f"{p}: unreadable Parquet: {exc}") from exc
    if pf.metadata.num_rows == 0:
        raise SourceError(f"{p}: empty file (0 rows; columns {pf.schema_arrow.names})")
    return Reader("parquet", str(p), _arrow_rows(pf.iter_batches(batch_size=BATCH_ROWS), str(p)))


def _csv_reader(p: Path, delimiter: str) -> Reader:
    """CSV / TSV with a header row; every cell is a string (prompts-only files, mostly).

    Read row by row so that a ragged row (more or fewer cells than the header) or a row that is not
    UTF-8 is quarantined with its line number instead of rejecting the file.
    """
    data = _read_bytes(p)
    text = data.decode("utf-8", errors="surrogateescape")
    lines = io.StringIO(text, newline="")
    try:
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        header = next(reader, None)
    except csv.Error as exc:
        raise SourceError(f"{p}: unreadable CSV header: {exc}") from exc
    if not header or not any(h.strip() for h in header):
        raise SourceError(f"{p}: the first line must be a header naming the columns")
    if _lone_surrogate(header):
        raise SourceError(f"{p}: line 1 (the header) is not valid UTF-8")
    return Reader("csv", str(p), _csv_rows(reader, header))


def _csv_rows(reader: Any, header: list[str]) -> Iterator[RawRow]:
    line = reader.line_num
    while True:
        first = line + 1  # a quoted cell may span lines: a row is named by its first line
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            yield RawRow(first, None, ("(line)", f"malformed CSV: {exc}"))
            continue
        line = reader.line_num
        shown = truncate(",".join(cells).encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        if not cells or (len(cells) == 1 and not cells[0].strip(JSON_SPACE)):
            yield RawRow(first, _BLANK)
            continue
        if len(cells) != len(header):
            yield RawRow(first, None, ("(line)", f"ragged row: {len(cells)} cells, the header has {len(header)}"), shown)
            continue
        for name, cell in zip(header, cells):
            try:
                cell.encode("utf-8")
            except UnicodeEncodeError as exc:
                byte = ord(cell[exc.start]) - 0xDC00
                yield RawRow(first, None, (name, f"not valid UTF-8: byte {byte:#04x}"), shown)
                break
        else:
            yield RawRow(first, dict(zip(header, cells)))


def _pick_split(label: str, splits: list[str], split: str | None) -> str:
    if split is not None:
        if split not in splits:
            raise SourceError(f"{label}: no split {split!r}; it has {splits}")
        return split
    if len(splits) == 1:
        return splits[0]
    if "train" in splits:
        return "train"
    raise SourceError(f"{label}: several splits {splits}; pass split=")


def _dataset_rows(ds: Any, label: str) -> Iterator[RawRow]:
    return _arrow_rows(iter(ds.with_format("arrow").iter(batch_size=BATCH_ROWS)), label)


def _hf_disk_reader(p: Path, split: str | None) -> Reader:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as exc:
        raise SourceError(f"{p}: unreadable saved HF dataset: {exc}") from exc
    label = str(p)
    if isinstance(ds, datasets.DatasetDict):
        chosen = _pick_split(label, list(ds), split)
        ds, label = ds[chosen], f"{p}[{chosen}]"
    if len(ds) == 0:
        raise SourceError(f"{label}: empty dataset (0 rows; columns {ds.column_names})")
    return Reader("hf_disk", label, _dataset_rows(ds, label))


def _hub_endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def _hub_reader(name: str, split: str | None, subset: str | None) -> Reader:
    label = f"{HUB_PREFIX}{name}"
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise SourceError(
                f"{label}: the Hugging Face Hub is unreachable: offline mode ({var}=1). Download the "
                "dataset where there is a network and pass its save_to_disk folder or a JSONL/Parquet file"
            )
    host, port = _hub_endpoint()
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise SourceError(
            f"{label}: the Hugging Face Hub is unreachable ({host}:{port}: {exc}); offline? Pass a local "
            "file or a save_to_disk folder instead"
        ) from exc
    import datasets

    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as exc:
        raise SourceError(f"{label}: could not load from the Hub: {exc}") from exc
    if isinstance(ds, datasets.DatasetDict):
        chosen = _pick_split(label, list(ds), split)
        ds, label = ds[chosen], f"{label}[{chosen}]"
    return Reader("hf_hub", label, _dataset_rows(ds, label))


# ---------------------------------------------------------------- DuckDB


def _duckdb_reader(path: str | os.PathLike | None, query: str, params: Any) -> Reader:
    """Run `query`; with a data file as `path` it is visible as the view `source`."""
    import duckdb

    label = f"{path} (query)" if path is not None else "(query)"
    if path is not None and not Path(path).exists():
        raise SourceError(f"{path}: file does not exist")
    try:
        if path is not None and str(path).lower().endswith(DUCKDB_SUFFIXES):
            con = duckdb.connect(str(path), read_only=True)
        else:
            con = duckdb.connect()
            if path is not None:
                lower = str(path).lower()
                fn = "read_parquet" if lower.endswith((".parquet", ".pq")) else "read_json_auto"
                con.execute(f"CREATE VIEW source AS SELECT * FROM {fn}({_sql_str(str(path))})")
        rel = con.sql(query, params=params) if params is not None else con.sql(query)
        if rel is None:
            raise SourceError(f"{label}: the query returned no result set (use a SELECT)")
        reader = rel.fetch_record_batch(BATCH_ROWS)
    except SourceError:
        raise
    except Exception as exc:  # duckdb.Error subclasses
        raise SourceError(f"{label}: query failed: {exc}") from exc
    return Reader("duckdb", label, _arrow_rows(iter(reader), label))


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
