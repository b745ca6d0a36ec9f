"""sources: read every source into prompts / candidates / pairs / scores / quarantine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from curation import schema
from curation.recipe import Recipe
from curation.stages.stage import RunContext, Stage, StageError, Tables, file_digest, fingerprint
from curation.stats import Stats

log = logging.getLogger(__name__)
TABLES = ("prompts", "candidates", "pairs", "scores", "quarantine")
_KEYS = {"prompts": "prompt_id", "candidates": "candidate_id", "pairs": "pair_id"}


class Sources(Stage):
    name = "sources"
    outputs = {n: (f"sources.{n}", n) for n in TABLES}

    def fingerprint(self, recipe: Recipe, tables: Tables, ctx: RunContext) -> str:
        ids = []
        for s in recipe.sources:
            spec = s.model_dump(mode="json")
            p = Path(s.path) if s.path else None
            if p is not None and p.is_file():  # a file is its content: moving it or the recipe changes nothing
                spec["path"] = file_digest(p)
            ids.append(spec)
        return fingerprint("sources", ids)

    def compute(self, recipe: Recipe, tables: Tables, ctx: RunContext, report: Stats,
                run: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
        from curation.sources import read_source

        parts: dict[str, list[pl.DataFrame]] = {n: [] for n in TABLES}
        for s in recipe.sources:
            try:
                data = read_source(s.path, s.format, s.limit, query=s.query, split=s.split, name=s.name)
            except Exception as exc:
                raise StageError(f"stage sources: reading {s.path or s.query}: {exc}") from exc
            log.info("%s", data.summary())
            report.rows_in += data.rows_read
            for n in TABLES:
                parts[n].append(getattr(data, n))
        frames = {}
        for n in TABLES:
            frame = pl.concat(parts[n]) if parts[n] else schema.empty(n)
            if n in _KEYS:
                frame = frame.unique(_KEYS[n], keep="first", maintain_order=True)
            elif n == "scores":
                frame = frame.unique(["target_id", "scorer"], keep="last", maintain_order=True)
            frames[n] = frame
        return frames

    def summarize(self, recipe: Recipe, tables: Tables, report: Stats) -> None:
        report.rows_out = tables["pairs"].rows or tables["prompts"].rows  # what the next stage works on
        report.detail = {n: tables[n].rows for n in TABLES}


STAGE = Sources()
