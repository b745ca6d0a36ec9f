"""generate: candidates for every prompt from the recipe's generation backend, shard by shard."""

from __future__ import annotations

from typing import Any

import polars as pl

from curation.recipe import Recipe
from curation.stages.sharded import ShardedStage
from curation.stages.stage import RunContext, StageReport, Tables, component_fingerprint
from curation.store import ArtifactRef


class Generate(ShardedStage):
    name = "generate"
    inputs = ("prompts", "candidates")
    table = "candidates"
    key = ["candidate_id"]

    def applies(self, recipe: Recipe) -> bool:
        return recipe.generate is not None

    def context(self, recipe: Recipe) -> str:
        return f" (backend {recipe.generate.backend})"

    def rows_in(self, recipe: Recipe | None, tables: Tables) -> int:
        return tables["prompts"].rows

    def config_fingerprint(self, recipe: Recipe) -> Any:
        return component_fingerprint(recipe.generate, "generate")

    def compute_shard(self, recipe: Recipe, prompts: pl.DataFrame, inputs: dict[str, ArtifactRef],
                      ctx: RunContext, report: StageReport) -> pl.DataFrame:
        from curation.generate import run_generation

        frame, stats = run_generation(prompts, recipe.generate, cache_dir=ctx.generation_cache)
        report.calls, report.cache_hits, report.tokens = stats.calls, stats.cache_hits, stats.tokens
        report.detail = {"errors": stats.errors, "skipped_long": stats.skipped_long}
        return frame


STAGE = Generate()
