"""select: apply the recipe's selectors in order; every pool item gets a decision row per step."""

from __future__ import annotations

import json
from typing import Any, Mapping

import polars as pl

from curation import schema
from curation.recipe import Recipe
from curation.rows import version_rows
from curation.stages.stage import (
    RunContext,
    Stage,
    Tables,
    component_fingerprint,
    config_of,
    fingerprint,
    fingerprints,
    read_table,
)
from curation.stats import Stats
from curation.store import ArtifactStore


def pool_tables(store: ArtifactStore, tables: Tables) -> dict[str, pl.DataFrame]:
    """The run's tables a selection pool is built from."""
    return {n: read_table(store, tables, n) for n in ("prompts", "candidates", "scores", "pairs")}


def pair_pool(store: ArtifactStore, tables: Tables, frames: dict[str, pl.DataFrame] | None = None) -> pl.DataFrame:
    """The selection pool: every pair denormalised (VERSION_ROWS columns), no decision applied."""
    rows, _ = version_rows(frames or pool_tables(store, tables))
    return rows


class Select(Stage):
    name = "select"
    inputs = ("pairs", "scores", "candidates")
    outputs = {"decisions": ("select", "decisions"), "select_report": ("select.report", None)}

    def fingerprint(self, recipe: Recipe, tables: Tables, ctx: RunContext) -> str:
        return fingerprint("select", [component_fingerprint(s, "select") for s in recipe.select],
                           fingerprints(tables, *self.inputs))

    def rows_in(self, recipe: Recipe, tables: Tables) -> int:
        return tables["pairs"].rows

    def compute(self, recipe: Recipe, tables: Tables, ctx: RunContext, report: Stats,
                run: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
        frames = pool_tables(ctx.store, tables)  # read once: the pool, the scores and who wrote each response
        pool = pair_pool(ctx.store, tables, frames)
        if not recipe.select:
            decisions, summary = schema.empty("decisions"), {"pool": pool.height, "kept": pool.height, "steps": []}
        else:
            from curation.select import apply_selectors

            result = apply_selectors(pool, [config_of(s) for s in recipe.select], scores=frames["scores"],
                                     candidates=frames["candidates"].select("candidate_id", "generator")
                                     if "candidates" in tables else None)  # who wrote each response, for the noise filter
            decisions, summary = result.decisions, result.report
        return {"decisions": decisions, "select_report": pl.DataFrame({"report": [schema.dumps(summary)]})}

    def summarize(self, recipe: Recipe, tables: Tables, report: Stats) -> None:
        summary = json.loads(pl.read_parquet(tables["select_report"].path)["report"][0])
        report.rows_out = int(summary.get("kept", 0))
        steps = summary.get("steps", [])
        report.detail = {"steps": [{k: s.get(k) for k in ("stage", "input", "kept", "reasons", "warnings", "naive_baseline")}
                                   for s in steps]}
        for step in steps:  # items dropped per step, by reason
            for reason, n in (step.get("reasons") or {}).items():
                report.add(f"{step['stage']} dropped: {reason}", int(n))


STAGE = Select()
