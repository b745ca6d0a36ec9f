"""The shared vocabulary: Arrow schemas of every table, id functions, message/text conversion.

Every stage reads and writes these tables. Ids are content hashes, so the same prompt or
response gets the same id in every run and every import: deduplication, caching and joins
come for free.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import unicodedata
from typing import Any, Iterable, Mapping, Sequence

import polars as pl
import pyarrow as pa

ID_HEX_CHARS = 16

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
ROLES = ("system", "user", "assistant", "tool")

PROMPTS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("messages", MESSAGES),
        ("source", pa.string()),
        ("meta", pa.string()),  # JSON object: reference answers, tests, upstream fields
    ]
)

CANDIDATES = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("prompt_id", pa.string()),
        ("text", pa.string()),
        ("generator", pa.string()),  # "dataset:<source>" for imported responses ("dataset:<source>/<model>" when the row names its model)
        ("seed", pa.int64()),
        ("sample_index", pa.int32()),
        ("n_tokens", pa.int32()),
        ("logprob", pa.float64()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),  # per-row generation failure; text is null then
        ("meta", pa.string()),  # JSON: sampling strategy details (temperature, perturbation, verbalized probability)
    ]
)

SCORES = pa.schema(
    [
        ("target_id", pa.string()),  # a candidate_id (pointwise) or a pair_id (pairwise)
        ("scorer", pa.string()),  # the name given in the recipe
        ("scorer_fingerprint", pa.string()),
        ("value", pa.float64()),  # null when the scorer failed on this row
        ("detail", pa.string()),  # JSON: rationale, per-criterion scores, both-order verdicts
        ("error", pa.string()),
    ]
)

PAIRS = pa.schema(
    [
        ("pair_id", pa.string()),
        ("prompt_id", pa.string()),
        ("chosen_id", pa.string()),
        ("rejected_id", pa.string()),
        ("margin", pa.float64()),  # score(chosen) - score(rejected) under `score`; null if unknown
        ("score", pa.string()),  # the scorer whose values built the pair; null for human labels
        ("builder", pa.string()),
        ("label_source", pa.string()),
        ("confidence", pa.float64()),  # P(chosen is better) when the labeller gives one
        ("meta", pa.string()),  # JSON: upstream fields (tie, subset, annotator votes, ...)
    ]
)

DECISIONS = pa.schema(
    [
        ("target_id", pa.string()),
        ("stage", pa.string()),  # e.g. "select.0:noise"
        ("kept", pa.bool_()),
        ("rank", pa.int64()),  # order of selection, null when unordered or dropped
        ("weight", pa.float64()),  # importance weight (sensitivity sampling), else 1.0
        ("flip", pa.bool_()),  # noise filter: swap chosen and rejected
        ("epsilon", pa.float64()),  # noise filter: label-smoothing for a cDPO-style loss
        ("reason", pa.string()),  # a code: kept, duplicate, low_margin, noisy_label, budget, ...
        ("detail", pa.string()),  # JSON
    ]
)

QUARANTINE = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),  # 1-based line (JSONL) or row number (other readers)
        ("field", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),  # the offending row, truncated
    ]
)

# A published version: one denormalised row per pair, what consumers and exporters read.
VERSION_ROWS = pa.schema(
    [
        ("pair_id", pa.string()),
        ("prompt_id", pa.string()),
        ("chosen_id", pa.string()),
        ("rejected_id", pa.string()),
        ("prompt", MESSAGES),  # the conversation before the final assistant turn
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
        ("margin", pa.float64()),
        ("score", pa.string()),
        ("builder", pa.string()),
        ("label_source", pa.string()),
        ("confidence", pa.float64()),
        ("weight", pa.float64()),
        ("epsilon", pa.float64()),
        ("split", pa.string()),  # "train" unless a split was asked for
        ("source", pa.string()),
        ("scores", pa.string()),  # JSON {scorer: {"chosen": v, "rejected": v, "detail": ...}}
        ("meta", pa.string()),  # JSON: upstream fields kept for provenance
    ]
)

TABLES: dict[str, pa.Schema] = {
    "prompts": PROMPTS,
    "candidates": CANDIDATES,
    "scores": SCORES,
    "pairs": PAIRS,
    "decisions": DECISIONS,
    "quarantine": QUARANTINE,
    "version_rows": VERSION_ROWS,
}


class SchemaError(ValueError):
    """A frame does not match the table it claims to be."""


# ---------------------------------------------------------------- dataset names

DATASET_NAME_MAX = 128
_NAME_PUNCTUATION = frozenset("-_.")
_NAME_CATEGORIES = frozenset(("Lu", "Ll", "Lt", "Lm", "Lo", "Nd"))


def dataset_name(name: Any) -> str:
    """The one rule for dataset names (import, recipes, refs); returns the NFC form.

    A name is a folder name, a SQL value and something people read in `curate ls`, so look-alikes
    must not sit side by side: NFC-normalised, then letters, digits, '-', '_' and '.' only (no
    spaces, quotes, '/', '@', ':', zero-width or bidi-control characters), not starting with '-'
    (it would read as an option) or '.' (hidden; '..'), at most 128 characters.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("invalid dataset name: it must be a non-empty string")
    norm = unicodedata.normalize("NFC", name)
    bad = next((c for c in norm if c not in _NAME_PUNCTUATION and unicodedata.category(c) not in _NAME_CATEGORIES), None)
    if bad is not None:
        what = f"character {bad!r} (U+{ord(bad):04X} {unicodedata.name(bad, 'unnamed')})"
    elif norm[0] in "-.":
        what = f"a leading {norm[0]!r}"
    elif ".." in norm:
        what = "'..'"
    elif len(norm) > DATASET_NAME_MAX:
        what = f"{len(norm)} characters (at most {DATASET_NAME_MAX})"
    else:
        return norm
    raise ValueError(
        f"invalid dataset name {name!r}: it has {what}; use letters, digits, '-', '_' and '.', "
        "not starting with '-' or '.'"
    )


# ---------------------------------------------------------------- ids


def content_hash(*parts: Any) -> str:
    """Stable hex hash of JSON-serialisable parts (order matters, dict keys do not)."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:ID_HEX_CHARS]


_JSON_ESCAPES = {chr(c): f"\\u{c:04x}" for c in range(0x20)} | {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                                                               "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def json_strings(col: pl.Expr) -> pl.Expr:
    """Each string as `json.dumps(s, ensure_ascii=False)` writes it (quotes included; null: null)."""
    escaped = col.str.replace_many(list(_JSON_ESCAPES), list(_JSON_ESCAPES.values()))
    return pl.when(col.is_null()).then(pl.lit("null")).otherwise(pl.concat_str([pl.lit('"'), escaped, pl.lit('"')]))


@functools.cache
def python_regex_class(cls: str) -> str:
    """Python `re`'s class `cls` (e.g. `\\w`, `\\s`) spelled as code point ranges for polars' (Rust)
    regex, whose own Unicode classes differ (combining marks, \\x1c-\\x1f, ...)."""
    runs = [(m.start(), m.end() - 1) for m in re.finditer(cls + "+", "".join(map(chr, range(0x110000))))]
    return "".join(f"\\x{{{a:X}}}" + (f"-\\x{{{b:X}}}" if b > a else "") for a, b in runs)


def content_hashes(frame: pl.DataFrame, *parts: str | pl.Expr, chars: int = ID_HEX_CHARS) -> pl.Series:
    """`content_hash(*parts)` of every row of `frame`, where a part is a literal string or a string
    column: the same JSON payload written by polars, its sha256 by DuckDB (no Python loop)."""
    import duckdb

    pieces = [json_strings(p) if isinstance(p, pl.Expr) else pl.lit(json.dumps(p, ensure_ascii=False)) for p in parts]
    joined = [pl.lit("[")] + [x for i, piece in enumerate(pieces) for x in ((pl.lit(","),) if i else ()) + (piece,)]
    payload = frame.select(pl.concat_str(joined + [pl.lit("]")]).alias("payload"))
    with duckdb.default_connection().cursor() as con:  # the process's DuckDB, started once
        con.register("payload", payload.to_arrow())
        return con.sql(f"SELECT left(sha256(payload), {int(chars)}) AS h FROM payload").pl()["h"]


def file_hash(path: str | os.PathLike, *, sample_over: int | None = None) -> str:
    """sha256 (hex) of a file's bytes, streamed. Past `sample_over` bytes: of its size and three
    1 MiB samples (head, middle, tail) instead, cheap for model weights and still changed by any
    retraining. The one file-hashing rule (sources, manifests, model folders)."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if sample_over is None or size <= sample_over:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        else:
            h.update(str(size).encode())
            for offset in (0, size // 2, size - (1 << 20)):
                f.seek(offset)
                h.update(f.read(1 << 20))
    return h.hexdigest()


def prompt_id(messages: Sequence[Mapping[str, str]]) -> str:
    return content_hash("prompt", [[m["role"], m["content"]] for m in messages])


def candidate_id(prompt_id_: str, generator: str, seed: int | None, sample_index: int) -> str:
    """Id of a generated candidate: who generated it, with which seed, which sample."""
    return content_hash("candidate", prompt_id_, generator, seed, sample_index)


def response_id(prompt_id_: str, text: str) -> str:
    """Id of a response that came with a dataset: its content, whatever file it came from.

    Content-only, so import -> export -> import gives the same ids.
    """
    return content_hash("response", prompt_id_, text)


def pair_id(prompt_id_: str, chosen_id: str, rejected_id: str) -> str:
    return content_hash("pair", prompt_id_, chosen_id, rejected_id)


def fingerprint(name: str, config: Mapping[str, Any] | None = None, version: str = "1") -> str:
    """Fingerprint of a component: its name, configuration and implementation version."""
    return content_hash("component", name, dict(config or {}), version)


# ---------------------------------------------------------------- messages and text

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|System):[ \t]?")
_ROLE_OF_SPEAKER = {"Human": "user", "Assistant": "assistant", "System": "system"}
_SPEAKER_OF_ROLE = {v: k for k, v in _ROLE_OF_SPEAKER.items()}


def messages_to_text(messages: Sequence[Mapping[str, str]]) -> str:
    """Flatten a conversation: a lone user turn is its content; otherwise hh-rlhf style turns.

    Matches the `prompt` column of the shared corpus ('Human: ...\\n\\nAssistant: ...').
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(
        f"{_SPEAKER_OF_ROLE.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages
    )


def text_to_messages(text: str) -> list[dict[str, str]]:
    """Parse an hh-rlhf style transcript into messages; plain text becomes one user turn."""
    matches = list(_TURN.finditer(text))
    if not matches or matches[0].start() != 0 and text[: matches[0].start()].strip():
        return [{"role": "user", "content": text.strip()}]
    out = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out.append({"role": _ROLE_OF_SPEAKER[m.group(1)], "content": text[m.end() : end].strip()})
    return out


def user_prompt(content: str, system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": content}]


def check_messages(messages: Any) -> str | None:
    """Why `messages` is not a valid prompt conversation, or None when it is."""
    if not isinstance(messages, list) or not messages:
        return "must be a non-empty list of {role, content}"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            return f"turn {i} must be an object with exactly 'role' and 'content'"
        if m["role"] not in ROLES:
            return f"turn {i} has unknown role {m['role']!r}"
        if not isinstance(m["content"], str):
            return f"turn {i} content must be a string, got {type(m['content']).__name__}"
    if messages[-1]["role"] != "user":
        return "must end with a user turn"
    if not any(m["content"].strip() for m in messages if m["role"] == "user"):
        return "has no non-empty user turn"
    return None


# ---------------------------------------------------------------- frames


def empty(table: str) -> pl.DataFrame:
    return pl.from_arrow(TABLES[table].empty_table())


def conform(df: pl.DataFrame, table: str) -> pl.DataFrame:
    """Return `df` with exactly the table's columns, in order and with its types.

    Missing nullable columns are added as nulls; extra columns are an error, so a typo in a
    column name never silently drops data.
    """
    schema = TABLES[table]
    extra = [c for c in df.columns if c not in schema.names]
    if extra:
        raise SchemaError(f"{table}: unexpected columns {extra}; expected {schema.names}")
    target = pl.from_arrow(schema.empty_table()).schema
    cols = []
    for name, dtype in target.items():
        if name in df.columns:
            try:
                cols.append(df.get_column(name).cast(dtype, strict=True))
            except Exception as exc:  # polars raises several types here
                raise SchemaError(f"{table}.{name}: cannot be read as {dtype}: {exc}") from exc
        else:
            cols.append(pl.repeat(None, df.height, dtype=dtype, eager=True).alias(name))
    return pl.DataFrame(cols)


def conform_lazy(lf: pl.LazyFrame, table: str) -> pl.LazyFrame:
    """`conform` for a lazy scan (a big table read as it streams): the same columns, order and types."""
    have = lf.collect_schema().names()
    extra = [c for c in have if c not in TABLES[table].names]
    if extra:
        raise SchemaError(f"{table}: unexpected columns {extra}; expected {TABLES[table].names}")
    target = pl.from_arrow(TABLES[table].empty_table()).schema
    return lf.select(pl.col(n).cast(t, strict=True) if n in have else pl.lit(None, dtype=t).alias(n) for n, t in target.items())


def to_arrow(df: pl.DataFrame, table: str) -> pa.Table:
    return conform(df, table).to_arrow().cast(TABLES[table])


def frame(rows: Iterable[Mapping[str, Any]], table: str) -> pl.DataFrame:
    """Build a conforming frame from dict rows (missing keys become nulls)."""
    schema = TABLES[table]
    rows = list(rows)
    data = {name: [r.get(name) for r in rows] for name in schema.names}
    return pl.from_arrow(pa.table(data, schema=schema))


def dumps(obj: Any) -> str:
    """JSON for `meta` / `detail` columns: deterministic, UTF-8."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
