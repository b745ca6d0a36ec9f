"""generate: candidates for every prompt from the recipe's generation backend, shard by shard."""

from __future__ import annotations

from typing import Any

import polars as pl

from curation.recipe import Recipe
from curation.stages.rounds import ROUND
from curation.stages.sharded import ShardedStage
from curation.stages.stage import RunContext, Tables, component_fingerprint, read_record
from curation.stats import Stats
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

    def combined_rows_in(self, tables: Tables) -> int:
        return tables["prompts"].rows

    def config_fingerprint(self, recipe: Recipe) -> Any:
        return component_fingerprint(recipe.generate, "generate")

    def shard_inputs(self, tables: Tables) -> tuple[tuple[str, ArtifactRef], ...]:
        """From round 2 on, the round record: which policy samples."""
        return ((ROUND, tables[ROUND]),) if ROUND in tables else ()

    def compute_shard(self, recipe: Recipe, prompts: pl.DataFrame, inputs: dict[str, ArtifactRef],
                      ctx: RunContext, report: Stats) -> pl.DataFrame:
        from curation.generate import run_generation

        config = recipe.generate
        if ROUND in inputs:
            config = config.model_copy(update={"model": read_record(inputs[ROUND])["policy"]})
        frame, stats = run_generation(prompts, config, cache_dir=ctx.generation_cache)
        report.merge(stats)
        return frame


STAGE = Generate()
