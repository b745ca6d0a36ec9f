"""The recipe's stages: artifact references in, artifact references out.

A run's state is a `Tables` mapping (table name -> ArtifactRef): sources fill prompts,
candidates, pairs, scores and quarantine; generate adds candidates; score adds scores; pairs
adds pairs; select adds decisions; publish, train and evaluate add one small record each.

Each stage is one module declaring a `Stage` (`stage.py`): its inputs, outputs, fingerprint and
compute. The one wrapper (`stage.execute` / `stage.produce`) computes the fingerprint *before*
any work and returns the stored artifact when it exists (a cache hit), so a re-run resumes and
an unchanged re-run touches no model. Generation and scoring work shard by shard (`sharded.py`),
each shard its own artifact, so a crash loses at most one shard. `loop.walk` is the one loop,
walked by `run_recipe` here and by the Prefect flow in `curation.flows`.

No Prefect here: `curation.flows` wraps these calls in tasks; tests and notebooks call them directly.
"""

from __future__ import annotations

from curation.recipe import Recipe, load_recipe
from curation.stages.loop import (
    BY_NAME,
    PIPELINE,
    Executor,
    LocalExecutor,
    applies,
    build_models,
    run_recipe,
    stage_order,
    walk,
)
from curation.stages.select import pair_pool
from curation.stages.sharded import Shard, ShardedStage, run_sharded
from curation.stages.stage import (
    RunContext,
    Stage,
    StageError,
    Tables,
    execute,
    produce,
    read_record,
)
from curation.stages.train import random_control
from curation.stats import Stats


def load(recipe_path) -> Recipe:
    """Load and validate a recipe (paths resolved against its folder): what every stage works from."""
    return load_recipe(recipe_path)


__all__ = [
    "BY_NAME", "PIPELINE", "Executor", "LocalExecutor", "RunContext", "Shard", "ShardedStage", "Stage", "StageError",
    "Stats", "Tables", "applies", "build_models", "execute", "load", "pair_pool", "produce", "random_control",
    "read_record", "run_recipe", "run_sharded", "stage_order", "walk",
]
