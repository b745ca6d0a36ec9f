"""The one loop over the stages, shared by `run_recipe` (in this process) and the Prefect flow.

`walk` decides what runs (stage order, `--until`, what the recipe asks for), builds missing
models, keeps the run record that publish stores, and collects the reports. How each step runs
is the executor's business: `LocalExecutor` calls the stages here; `curation.flows` supplies
one that wraps the same calls in Prefect tasks and maps shards on a task runner.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Protocol

from curation.recipe import STAGES, Recipe, model_builder
from curation.stages import evaluate, generate, pairs, publish, score, select, sources, train
from curation.stages.rounds import (
    CONTROL_CHAIN,
    control_pool_tables,
    control_tables,
    label,
    round_sources,
    start_round,
)
from curation.stages.sharded import ShardedStage, run_sharded
from curation.stages.stage import RunContext, Stage, Tables, execute
from curation.stats import Stats

log = logging.getLogger(__name__)

PIPELINE: tuple[Stage, ...] = tuple(m.STAGE for m in (sources, generate, score, pairs, select, publish, train, evaluate))
BY_NAME: dict[str, Stage] = {s.name: s for s in PIPELINE}
assert tuple(BY_NAME) == STAGES, "the pipeline and the recipe's stage names must agree"


def stage_order(until: str | None) -> list[str]:
    """The stages to run, in order, up to and including `until`."""
    if until is None:
        return list(STAGES)
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r} for --until; stages: {', '.join(STAGES)}")
    return list(STAGES[: STAGES.index(until) + 1])


def applies(stage: str, recipe: Recipe) -> bool:
    """Whether the recipe asks for `stage` (sources, pairs, select and publish always run)."""
    return BY_NAME[stage].applies(recipe)


def build_models(recipe: Recipe) -> list[str]:
    """Build the recipe's `models:` entries whose folders are missing; returns what was built."""
    built = []
    for entry in recipe.models:
        path = Path(entry.path)
        if (path / "config.json").exists():
            continue
        log.info("building model %s (%s)", path, entry.build)
        model_builder(entry.build)(path, **entry.options)
        built.append(str(path))
    return built


class Executor(Protocol):
    """How one step of the loop runs (in this process, or as Prefect tasks), against `ctx`."""

    ctx: RunContext  # where the run reads and writes (the loop writes each round's record and the run there)

    def stage(self, stage: Stage, tables: Tables, run: dict[str, Any]) -> tuple[Tables, Stats]: ...

    def sharded(self, stage: ShardedStage, tables: Tables) -> tuple[Tables, Stats]: ...


class LocalExecutor:
    """Every step in this process, shards one after the other."""

    def __init__(self, recipe: Recipe, ctx: RunContext, shard_size: int = 256) -> None:
        self.recipe, self.ctx, self.shard_size = recipe, ctx, shard_size

    def stage(self, stage: Stage, tables: Tables, run: dict[str, Any]) -> tuple[Tables, Stats]:
        return execute(stage, self.recipe, tables, self.ctx, run)

    def sharded(self, stage: ShardedStage, tables: Tables) -> tuple[Tables, Stats]:
        return run_sharded(stage, self.recipe, tables, self.ctx, self.shard_size)


def walk(
    recipe: Recipe, executor: Executor, *, until: str | None = None, on_stage: Callable[[Stats], None] | None = None,
) -> tuple[Tables, list[Stats], dict[str, Any]]:
    """Run the recipe's stages in order through `executor`: tables, stats and the run record.

    With `rounds: N`, rounds 2..N run every stage after sources again, from the sources' tables
    (with `round_prompts`, the round's own share of them) and a round record
    (`curation.stages.rounds`); each report's detail names its round. From round 2 on, a run with
    a random-pairs control runs generate, score and pairs a second time before train, on the
    control's own samples (the report's detail says chain: control).
    The run (its recipe and every stage's stats) is stored in the catalog when the loop ends,
    completed or failed; publish links the version it makes to the same run id.
    """
    build_models(recipe)
    run: dict[str, Any] = {"run_id": uuid.uuid4().hex[:16], "name": recipe.name, "recipe": recipe.model_dump(mode="json"),
                           "started_at": time.time()}
    tables: Tables = {}
    sources: Tables = {}
    reports: list[Stats] = []
    try:
        for index in range(1, recipe.rounds + 1):
            if index > 1:
                if "train" not in tables:  # --until stopped before train: nothing to sample the next round with
                    break
                tables = start_round(index, recipe, sources, tables, executor.ctx)
                start = tables  # what the round starts from: the control's chain starts there too
            for name in stage_order(until):
                stage = BY_NAME[name]
                if not stage.applies(recipe) or (index > 1 and name == "sources"):
                    continue
                if name == "train" and index > 1 and (chain := control_tables(start, executor.ctx)) is not None:
                    for step in (s for s in CONTROL_CHAIN if BY_NAME[s].applies(recipe)):  # samples, scores, pairs on its own
                        chain = _step(BY_NAME[step], chain, executor, run, reports, on_stage, index, recipe, "control")
                    tables = {**tables, **control_pool_tables(chain)}
                tables = _step(stage, tables, executor, run, reports, on_stage, index, recipe)
                if name == "sources":
                    sources = dict(tables)
                    tables = {**tables, **round_sources(1, recipe, sources, executor.ctx)}
    except BaseException:
        _record(executor.ctx, run, reports, "failed")
        raise
    _record(executor.ctx, run, reports, "completed")
    return tables, reports, run


def _step(stage: Stage, tables: Tables, executor: Executor, run: dict[str, Any], reports: list[Stats],
          on_stage: Callable[[Stats], None] | None, index: int, recipe: Recipe, chain: str | None = None) -> Tables:
    """One stage through the executor; its report (named by round and chain) joins the run's."""
    run["stats"] = _stats(reports)  # what publish stores with the version
    tables, report = executor.sharded(stage, tables) if isinstance(stage, ShardedStage) else executor.stage(stage, tables, run)
    if recipe.rounds > 1:
        report.detail["round"] = index
    if chain:
        report.detail["chain"] = chain
    reports.append(report)
    if on_stage:
        on_stage(report)
    return tables


def _stats(reports: list[Stats]) -> dict[str, Any]:
    """Every stage's stats by name ("train", "train (round 2)", "generate (round 2, control)")."""
    return {label(r.stage, r.detail): r.to_dict() for r in reports}


def _record(ctx: RunContext, run: dict[str, Any], reports: list[Stats], status: str) -> None:
    run.update(stats=_stats(reports), status=status, ended_at=time.time())
    ctx.catalog().record_run(**run)


def run_recipe(
    recipe: Recipe, catalog_root: str | os.PathLike, *, until: str | None = None, shard_size: int = 256,
    on_stage: Callable[[Stats], None] | None = None,
) -> tuple[Tables, list[Stats]]:
    """Run the recipe's stages in this process, in order (what the Prefect flow does, minus Prefect)."""
    ctx = RunContext(str(Path(catalog_root).resolve()))
    tables, reports, _ = walk(recipe, LocalExecutor(recipe, ctx, shard_size), until=until, on_stage=on_stage)
    return tables, reports
