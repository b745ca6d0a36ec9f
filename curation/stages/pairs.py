"""pairs: build pairs from scored candidates (kept beside imported pairs), then run pairwise scorers."""

from __future__ import annotations

from typing import Any, Mapping

import polars as pl

from curation import schema
from curation.recipe import Recipe
from curation.stages.stage import (
    RunContext,
    Stage,
    StageError,
    Tables,
    component_fingerprint,
    config_of,
    fingerprint,
    fingerprints,
    is_pairwise,
    read_table,
)
from curation.stats import Stats


class Pairs(Stage):
    name = "pairs"
    inputs = ("prompts", "candidates", "pairs", "scores")
    outputs = {"pairs": ("pairs", "pairs"), "scores": ("pairs.scores", "scores")}

    def fingerprint(self, recipe: Recipe, tables: Tables, ctx: RunContext) -> str:
        pairwise = [component_fingerprint(s, "score") for s in recipe.score if is_pairwise(s)]
        return fingerprint("pairs", config_of(recipe.pairs), pairwise, fingerprints(tables, *self.inputs))

    def context(self, recipe: Recipe) -> str:
        return f" (builder {recipe.pairs.builder})" if recipe.pairs is not None else ""

    def rows_in(self, recipe: Recipe, tables: Tables) -> int:
        return tables["candidates"].rows

    def compute(self, recipe: Recipe, tables: Tables, ctx: RunContext, report: Stats,
                run: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
        store = ctx.store
        prompts, candidates = store.read(tables["prompts"]), store.read(tables["candidates"])
        pairs, scores = read_table(store, tables, "pairs"), read_table(store, tables, "scores")
        if recipe.pairs is not None:
            from curation.pairs import build_pairs_counted

            generated = candidates.filter(~pl.col("generator").str.starts_with("dataset:"))
            built = build_pairs_counted(generated, scores, prompts=prompts, allow_empty=True, **config_of(recipe.pairs))
            report.merge(built.stats)
            pairs = pl.concat([schema.conform(pairs, "pairs"), schema.conform(built.pairs, "pairs")]).unique(
                "pair_id", keep="first", maintain_order=True
            )
        pairwise = [s for s in recipe.score if is_pairwise(s)]
        if pairwise and pairs.height:
            from curation.scorers import run_scorers

            try:
                extra = run_scorers(pairwise, prompts, candidates, pairs)
            except Exception as exc:
                raise StageError(f"stage pairs, pairwise scoring ({', '.join(s.name for s in pairwise)}): {exc}") from exc
            report.calls = extra.height
            scores = pl.concat([schema.conform(scores, "scores"), schema.conform(extra, "scores")])
        return {"pairs": pairs, "scores": scores}

    def summarize(self, recipe: Recipe, tables: Tables, report: Stats) -> None:
        report.rows_out = tables["pairs"].rows


STAGE = Pairs()
