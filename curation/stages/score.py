"""score: pointwise scores for every candidate, shard by shard (pairwise scorers run in `pairs`)."""

from __future__ import annotations

from typing import Any

import polars as pl

from curation import schema
from curation.recipe import Recipe
from curation.stages.sharded import ShardedStage
from curation.stages.stage import RunContext, Tables, component_fingerprint, is_pairwise
from curation.stats import Stats
from curation.store import ArtifactRef


def _pointwise(recipe: Recipe) -> list[Any]:
    return [s for s in recipe.score if not is_pairwise(s)]


class Score(ShardedStage):
    name = "score"
    inputs = ("prompts", "candidates", "scores")
    table = "scores"
    key = ["target_id", "scorer"]

    def applies(self, recipe: Recipe) -> bool:
        return bool(_pointwise(recipe))

    def context(self, recipe: Recipe) -> str:
        return f" ({', '.join(f'{c.kind}:{c.name}' for c in _pointwise(recipe))})"

    def combined_rows_in(self, tables: Tables) -> int:
        return tables["candidates"].rows

    def config_fingerprint(self, recipe: Recipe) -> Any:
        return [component_fingerprint(s, "score") for s in _pointwise(recipe)]

    def shard_inputs(self, tables: Tables) -> tuple[tuple[str, ArtifactRef], ...]:
        return (("candidates", tables["candidates"]),)

    def compute_shard(self, recipe: Recipe, prompts: pl.DataFrame, inputs: dict[str, ArtifactRef],
                      ctx: RunContext, report: Stats) -> pl.DataFrame:
        from curation.scorers import run_scorers

        candidates = ctx.store.read(inputs["candidates"])
        candidates = candidates.filter(pl.col("prompt_id").is_in(prompts["prompt_id"].implode()))
        configs = _pointwise(recipe)
        frame = run_scorers(configs, prompts, candidates) if configs and candidates.height else schema.empty("scores")
        report.calls = frame.height
        return frame

    def combined_rows_out(self, tables: Tables, out: Tables) -> int:
        """Only the scores this stage added (the sources may bring scores of their own)."""
        return out[self.table].rows - (tables[self.table].rows if self.table in tables else 0)


STAGE = Score()
