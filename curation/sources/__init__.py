"""Read prompts and preference data from files, saved HF datasets, the Hub or DuckDB queries.

    data = read_source("pairs.jsonl.gz")            # format detected: data.format, data.detection
    data.pairs, data.candidates, data.prompts       # frames conforming to curation.schema
    data.quarantine                                 # bad rows: file, line, field, reason, raw
    data.counts                                     # rows_read = imported + quarantined + duplicates_merged + blank_lines
    rows = read_pair_rows("pairs.jsonl.gz", 400)    # the first 400 non-tie pairs, one row each with their texts

Imported responses become candidates with generator "dataset:<source>", or
"dataset:<source>/<model>" when an upstream pair row names the model that wrote the response
(`generator_chosen`/`generator_rejected` or `chosen_generator`/`rejected_generator`) and every row
holding that text names the same one, and content ids (schema.response_id, not the generator), so
import -> export -> import keeps every id. Rated formats (UltraFeedback,
distilabel) give candidates and scores, and pairs through curation.pairs.build_pairs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curation import schema
from curation.progress import progress
from curation.rows import tie_mask, with_texts
from curation.sources.adapters import (
    ADAPTERS,
    DETECT_ROWS,
    FORMATS,
    Detection,
    PairRecord,
    PromptRecord,
    RatedRecord,
    RowError,
    detect,
)
from curation.sources.readers import RawRow, SourceError, is_blank, open_reader, truncate

__all__ = ["FORMATS", "SourceData", "SourceError", "read_pair_rows", "read_source"]

log = logging.getLogger(__name__)

# counts that partition the rows read; every other count is a detail of one of them
PARTITION = ("imported", "quarantined", "duplicates_merged", "blank_lines")


@dataclass
class SourceData:
    path: str
    format: str
    detected: bool
    detection: str
    prompts: pl.DataFrame
    candidates: pl.DataFrame
    pairs: pl.DataFrame
    scores: pl.DataFrame
    quarantine: pl.DataFrame
    rows_read: int
    counts: dict[str, int]
    reader: str = ""
    lines: dict[str, list[int]] = field(default_factory=dict)  # imported / duplicates_merged / blank_lines -> lines

    def summary(self) -> str:
        c = self.counts
        extra = ", ".join(f"{k} {v}" for k, v in c.items() if k not in PARTITION and k != "rows_read" and v)
        return (
            f"{self.path}: {self.format} ({self.reader}); rows {self.rows_read}: imported {c['imported']}, "
            f"quarantined {c['quarantined']}, duplicates merged {c['duplicates_merged']}"
            + (f", blank lines {c['blank_lines']}" if c["blank_lines"] else "")
            + f" -> {self.prompts.height} prompts, {self.candidates.height} candidates, {self.pairs.height} pairs"
            + (f", {self.scores.height} scores" if self.scores.height else "")
            + (f" ({extra})" if extra else "")
        )


def read_source(
    path: str | os.PathLike | None,
    format: str = "auto",
    limit: int | None = None,
    *,
    query: str | None = None,
    split: str | None = None,
    name: str | None = None,
    params: Any = None,
    subset: str | None = None,
) -> SourceData:
    """Read one source into schema tables.

    `format`: "auto" or one of FORMATS. `limit`: stop after this many imported rows. `query`: DuckDB
    SQL (with `params`); a data file given as `path` is the view `source`, a .duckdb file is opened
    read-only. `split` / `subset`: for saved or Hub datasets. `name`: the source tag (default: the
    rows' `source` field, else the file name).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    started = time.perf_counter()
    reader = open_reader(path, query=query, params=params, split=split, subset=subset)
    rows = reader.rows
    head: list[RawRow] = []
    sample: list[dict] = []
    for raw in rows:
        head.append(raw)
        if isinstance(raw.value, dict) and raw.problem is None:
            sample.append(raw.value)
            if len(sample) >= DETECT_ROWS:
                break
    if not sample:
        if head and all(is_blank(r) for r in head):
            raise SourceError(f"{reader.label}: empty file (only blank lines)")
        bad = [r for r in head if not is_blank(r)]
        why = bad[0].problem[1] if bad and bad[0].problem else f"rows are {type(bad[0].value).__name__}, not objects"
        raise SourceError(f"{reader.label}: format not detected: no readable row among {len(bad)} (line {bad[0].line}: {why})")
    try:
        det = detect(sample, reader.label, format)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    default_source = name or _stem(reader.label)
    build = _Builder(reader.label, det, default_source, name)

    def all_rows():
        yield from head
        yield from rows

    with progress(f"reading {reader.label}") as advance:  # a count of rows read: their total is unknown
        for i, raw in enumerate(all_rows(), 1):
            if limit is not None and build.counts["imported"] >= limit:
                break
            build.add(raw)
            if i % 4096 == 0:  # one update per row would cost more than reading it
                advance(4096)
    data = build.finish(path=str(path) if path is not None else reader.label, reader=reader.name, detected=format == "auto")
    log.info("%s in %.2fs", data.summary(), time.perf_counter() - started)
    return data


def read_pair_rows(path: str | os.PathLike, limit: int | None = None, *, ties: bool = False) -> pl.DataFrame:
    """The first `limit` pairs of a pairs source, one row each with prompt messages and both texts
    (`schema.VERSION_ROWS`), in the source's order; pairs without a preference direction (the
    `curation.rows` tie rule) are left out unless `ties`, and `limit` counts the pairs returned.

    The one reader of labelled pair files outside a recipe (benchmarks, tests, held-out files for
    training), so they all see the same pairs: read, checked and deduplicated by `read_source`."""
    want = limit
    while True:
        data = read_source(path, limit=want)
        if data.pairs.height == 0:
            raise SourceError(f"{path}: no pairs in it (format {data.format}: {data.detection})")
        pairs = data.pairs if ties else data.pairs.filter(~tie_mask(data.pairs))
        if limit is None or pairs.height >= limit or data.counts["imported"] < want:
            break
        want += limit - pairs.height  # ties took places: read further (their count at least)
    prompts = data.prompts.select("prompt_id", pl.col("messages").alias("prompt"))
    rows = with_texts(pairs.head(limit) if limit is not None else pairs, data.candidates)
    rows = rows.join(prompts, on="prompt_id", how="left", maintain_order="left")
    return schema.conform(rows.select([c for c in rows.columns if c in schema.VERSION_ROWS.names]), "version_rows")


def _stem(label: str) -> str:
    base = Path(label.split(" (")[0].split("[")[0]).name
    for suffix in (".gz", ".jsonl", ".json", ".csv", ".tsv", ".parquet", ".pq", ".duckdb", ".ddb", ".db"):
        base = base.removesuffix(suffix)
    return base or "source"


class _Builder:
    """Accumulates records into tables: dedups prompts and candidates, merges duplicate pairs."""

    def __init__(self, label: str, det: Detection, default_source: str, forced_source: str | None) -> None:
        self.label = label
        self.det = det
        self.read = ADAPTERS[det.format].read
        self.default_source = default_source
        self.forced_source = forced_source
        self.counts: dict[str, int] = dict.fromkeys(("rows_read", *PARTITION, "ties"), 0)
        self.lines: dict[str, list[int]] = {"imported": [], "duplicates_merged": [], "blank_lines": []}
        self.prompts: dict[str, dict] = {}
        self.candidates: dict[str, dict] = {}
        self.response_ids: dict[tuple[str, str], str] = {}
        self.prompt_ids: dict[tuple, str] = {}
        self.pairs: dict[str, dict] = {}
        self.pair_meta: dict[str, dict] = {}
        self.scores: list[dict] = []
        self.rated: list[tuple[str, str, str]] = []  # (prompt_id, scorer, label_source) for build_pairs
        self.quarantine: list[dict] = []

    # ------------------------------------------------------------ rows

    def add(self, raw: RawRow) -> None:
        self.counts["rows_read"] += 1
        if is_blank(raw):
            self.counts["blank_lines"] += 1
            self.lines["blank_lines"].append(raw.line)
            return
        if raw.problem is not None:
            self._quarantine(raw.line, *raw.problem, raw.raw)
            return
        if not isinstance(raw.value, dict):
            self._quarantine(raw.line, "(row)", f"wrong type: a row must be an object, got {type(raw.value).__name__}", raw.value)
            return
        try:
            record = self.read(raw.value, self.det)
        except RowError as exc:
            self._quarantine(raw.line, exc.field, exc.reason, raw.value)
            return
        if isinstance(record, PairRecord):
            self._add_pair(raw.line, record)
        elif isinstance(record, RatedRecord):
            self._add_rated(raw.line, record, raw.value)
        else:
            self._add_prompt_row(raw.line, record)

    def _quarantine(self, line: int, field_: str, reason: str, raw: Any, *, row: bool = True) -> None:
        if not isinstance(raw, str):
            raw = schema.dumps(raw) if raw is not None else None
        self.quarantine.append({"file": self.label, "line": line, "field": field_, "reason": reason, "raw": truncate(raw) if raw else raw})
        self.counts["quarantined" if row else "items_quarantined"] = self.counts.get("quarantined" if row else "items_quarantined", 0) + 1

    def _source(self, record_source: str | None) -> str:
        return self.forced_source or record_source or self.default_source

    def _prompt_id(self, messages: list[dict[str, str]]) -> str:
        key = tuple((m["role"], m["content"]) for m in messages)
        pid = self.prompt_ids.get(key)
        if pid is None:
            pid = self.prompt_ids[key] = schema.prompt_id(messages)
        return pid

    def _prompt(self, messages: list[dict[str, str]], source: str, meta: dict | None = None) -> str:
        pid = self._prompt_id(messages)
        if pid not in self.prompts:
            self.prompts[pid] = {"prompt_id": pid, "messages": messages, "source": source, "meta": schema.dumps(meta or {})}
        return pid

    def _candidate(self, pid: str, text: str, source: str, model: str | None = None) -> str:
        cid = self.response_ids.get((pid, text))
        if cid is None:  # hashing long texts dominates a read: each (prompt, text) is hashed once
            cid = self.response_ids[(pid, text)] = schema.response_id(pid, text)
        generator = f"dataset:{source}/{model}" if model else f"dataset:{source}"
        if cid not in self.candidates:
            self.candidates[cid] = {"candidate_id": cid, "prompt_id": pid, "text": text, "generator": generator}
        elif model and self.candidates[cid]["generator"] != generator:  # two models wrote this text: unattributed
            self.candidates[cid]["generator"] = f"dataset:{source}"
        return cid

    def _model(self, rec: PairRecord, side: str) -> str | None:
        """The model an upstream pair row names for one side (our own exports' meta is not upstream: skipped)."""
        if self.det.format == "curate":
            return None
        for key in (f"generator_{side}", f"{side}_generator"):
            value = rec.meta.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    def _add_pair(self, line: int, rec: PairRecord) -> None:
        source = self._source(rec.source)
        pid = self._prompt(rec.messages, source)
        ids = {side: self._candidate(pid, getattr(rec, side), source, self._model(rec, side)) for side in ("chosen", "rejected")}
        key = ids["pair"] = schema.pair_id(pid, ids["chosen"], ids["rejected"])
        if rec.meta.get("upstream_pair_id") == key:
            del rec.meta["upstream_pair_id"]  # the content id agrees: nothing to remember
        if key in self.pairs:
            self._merge(line, key, rec.meta)
            return
        self.counts["imported"] += 1
        self.lines["imported"].append(line)
        self.counts["ties"] += rec.tie
        self.pair_meta[key] = rec.meta
        self.pairs[key] = {
            "pair_id": key, "prompt_id": pid, "chosen_id": ids["chosen"], "rejected_id": ids["rejected"],
            "margin": rec.margin, "score": rec.score, "builder": rec.builder, "label_source": rec.label_source,
            "confidence": rec.confidence,
        }  # fmt: skip
        for side, scorer, value, detail in rec.scores:
            self.scores.append(
                {"target_id": ids[side], "scorer": scorer, "scorer_fingerprint": schema.fingerprint(scorer, {"imported": True}),
                 "value": value, "detail": detail}
            )  # fmt: skip

    def _merge(self, line: int, key: str, meta: dict) -> None:
        """A repeated pair is merged into the first: its line and differing fields are kept in meta."""
        self.counts["duplicates_merged"] += 1
        self.lines["duplicates_merged"].append(line)
        first = self.pair_meta[key]
        differ = {k: v for k, v in meta.items() if first.get(k) != v and k != "merged"}
        first.setdefault("merged", []).append({"line": line, **differ})

    def _add_rated(self, line: int, rec: RatedRecord, raw: dict) -> None:
        if not rec.items:
            field_, reason = rec.skipped[0] if rec.skipped else ("completions", "empty response: no responses to rate")
            self._quarantine(line, field_, reason, raw)
            return
        for field_, reason in rec.skipped:
            self._quarantine(line, field_, reason, raw, row=False)
        source = self._source(rec.source)
        if self._prompt_id(rec.messages) in self.prompts:
            self.counts["prompts_merged"] = self.counts.get("prompts_merged", 0) + 1
        pid = self._prompt(rec.messages, source, rec.meta)
        self.counts["imported"] += 1
        self.lines["imported"].append(line)
        fp = schema.fingerprint(rec.scorer, {"imported": True})
        seen = set()
        for text, value, detail in rec.items:
            cid = self._candidate(pid, text, source)
            if cid in seen:
                continue
            seen.add(cid)
            self.scores.append(
                {"target_id": cid, "scorer": rec.scorer, "scorer_fingerprint": fp, "value": value,
                 "detail": schema.dumps(detail), "error": None if value is not None else "no rating in the source"}
            )  # fmt: skip
        self.rated.append((pid, rec.scorer, rec.label_source))

    def _add_prompt_row(self, line: int, rec: PromptRecord) -> None:
        pid = self._prompt_id(rec.messages)
        if pid in self.prompts:
            self._merge_prompt(line, pid, rec.meta)
            return
        self._prompt(rec.messages, self._source(rec.source), rec.meta)
        self.counts["imported"] += 1
        self.lines["imported"].append(line)

    def _merge_prompt(self, line: int, pid: str, meta: dict) -> None:
        import json

        self.counts["duplicates_merged"] += 1
        self.lines["duplicates_merged"].append(line)
        first = json.loads(self.prompts[pid]["meta"])
        differ = {k: v for k, v in meta.items() if first.get(k) != v and k != "merged"}
        first.setdefault("merged", []).append({"line": line, **differ})
        self.prompts[pid]["meta"] = schema.dumps(first)

    # ------------------------------------------------------------ tables

    def finish(self, *, path: str, reader: str, detected: bool) -> SourceData:
        for key, meta in self.pair_meta.items():
            self.pairs[key]["meta"] = schema.dumps(meta)
        candidates = schema.frame(self.candidates.values(), "candidates")
        scores = schema.frame(self.scores, "scores")
        pairs = schema.frame(self.pairs.values(), "pairs")
        if self.rated:
            pairs = self._rated_pairs(candidates, scores)
            self.counts["pairs_built"] = pairs.height
        return SourceData(
            path=path,
            format=self.det.format,
            detected=detected,
            detection=self.det.reason if not self.det.variant else f"{self.det.reason} [{self.det.variant} prompt]",
            prompts=schema.frame(self.prompts.values(), "prompts"),
            candidates=candidates,
            pairs=pairs,
            scores=scores,
            quarantine=schema.frame(self.quarantine, "quarantine"),
            rows_read=self.counts["rows_read"],
            counts=dict(self.counts),
            reader=reader,
            lines=self.lines,
        )

    def _rated_pairs(self, candidates: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
        """Best vs worst rated response per prompt, through the shared pair builders."""
        from curation.pairs import build_pairs_counted

        scorer = self.rated[0][1]
        built = build_pairs_counted(
            candidates, scores.filter(pl.col("value").is_not_null()), "best_worst", score=scorer, allow_empty=True
        )
        for reason, n in built.counts.items():
            if n:
                self.counts[f"pairs_{reason}"] = int(n)
        labels = pl.DataFrame(
            {"prompt_id": [p for p, _, _ in self.rated], "label_source": [lab for _, _, lab in self.rated]}
        ).unique("prompt_id", keep="first")
        pairs = built.pairs.drop("label_source").join(labels, on="prompt_id", how="left")
        unpaired = labels.height - pairs["prompt_id"].n_unique()
        if unpaired:
            self.counts["prompts_unpaired"] = unpaired
        if pairs.height == 0:
            how = ("a completion labelled true and one labelled false" if self.det.format == "kto"
                   else "two responses with different ratings")
            raise SourceError(
                f"{self.label}: no pairs: {self.det.format} rows rate responses one by one, and none of the "
                f"{labels.height} prompts has {how}. The catalog stores pairs: import paired data "
                "(prompt, chosen, rejected), or rows whose prompts carry both kinds"
            )
        return schema.conform(pairs, "pairs")
