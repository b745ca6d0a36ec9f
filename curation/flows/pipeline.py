"""The curation flow: the recipe's stages as Prefect tasks that pass artifact references.

Tasks hand each other `ArtifactRef`s (path + fingerprint), never frames: Prefect keeps task
results in memory and may persist them. Generation and scoring are mapped over shards of
prompts on the flow's task runner (threads locally; a Dask or Ray cluster with `--runner`);
every other stage runs in the flow's own process, so catalog writes stay in one process.
Stage skipping is the stages' own fingerprint check, so Prefect's task cache is off. The loop
itself (order, --until, the run record) is `curation.stages.walk`, the same one `run_recipe`
walks; this module only supplies the executor that turns its steps into tasks.

Import through `curation.flows.prefect_env()` first, so Prefect's home is the project's.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Iterator

from curation.flows import prefect_env

prefect_env()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NONE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from curation import stages  # noqa: E402

RUNNERS = ("local", "dask", "ray")
TRANSIENT = (ConnectionError, TimeoutError, BrokenPipeError)


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what may pass on a second try: lost connections and timeouts, not bad input."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we inspect, not handle
        seen = exc
        while seen is not None:
            if isinstance(seen, TRANSIENT):
                return True
            seen = seen.__cause__ or seen.__context__
    return False


_TASK = dict(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NONE, persist_result=False)


@task(name="plan-shards", **_TASK)
def plan_task(stage: str, recipe_path: str, tables: stages.Tables, ctx: stages.RunContext, shard_size: int):
    return stages.BY_NAME[stage].plan(stages.load(recipe_path), tables, ctx, shard_size)


@task(name="shard", task_run_name="{shard.stage}-shard-{shard.index}", **_TASK)
def shard_task(shard: stages.Shard, recipe_path: str, ctx: stages.RunContext):
    return stages.BY_NAME[shard.stage].run_shard(shard, stages.load(recipe_path), ctx)


@task(name="combine-shards", **_TASK)
def combine_task(stage: str, shards: list, results: list, tables: stages.Tables, ctx: stages.RunContext):
    return stages.BY_NAME[stage].combine(shards, [r for r, _ in results], [r for _, r in results], tables, ctx)


@task(name="stage", task_run_name="{stage}", **_TASK)
def stage_task(stage: str, recipe_path: str, tables: stages.Tables, ctx: stages.RunContext, run: dict):
    return stages.execute(stages.BY_NAME[stage], stages.load(recipe_path), tables, ctx, run)


class PrefectExecutor:
    """The loop's steps as Prefect tasks: shards mapped on the flow's task runner, the rest inline."""

    def __init__(self, recipe_path: str, ctx: stages.RunContext, shard_size: int) -> None:
        self.recipe_path, self.ctx, self.shard_size = recipe_path, ctx, shard_size
        self.logger = get_run_logger()

    def stage(self, stage: stages.Stage, tables: stages.Tables, run: dict[str, Any]):
        return stage_task(stage.name, self.recipe_path, tables, self.ctx, run)

    def sharded(self, stage: stages.ShardedStage, tables: stages.Tables):
        shards = plan_task(stage.name, self.recipe_path, tables, self.ctx, self.shard_size)
        self.logger.info("%s: %d shard(s) of up to %d prompts", stage.name, len(shards), self.shard_size)
        results = []
        for i, fut in enumerate(shard_task.map(shards, recipe_path=self.recipe_path, ctx=self.ctx)):
            results.append(fut.result())
            self.logger.info("%s: shard %d/%d done%s", stage.name, i + 1, len(shards),
                             " (cached)" if results[-1][1].cached else "")
        return combine_task(stage.name, shards, results, tables, self.ctx)


@flow(name="curate", log_prints=True)
def curate_flow(recipe_path: str, catalog: str, until: str | None = None, shard_size: int = 256) -> dict[str, Any]:
    """Run one recipe end to end (or `until` a stage) against a catalog folder."""
    logger = get_run_logger()
    recipe = stages.load(recipe_path)
    ctx = stages.RunContext(str(Path(catalog).resolve()))
    started = time.time()

    def log_stage(report: stages.Stats) -> None:
        logger.info("%s", report.summary())

    tables, reports, run = stages.walk(recipe, PrefectExecutor(recipe_path, ctx, shard_size), until=until,
                                       on_stage=log_stage)
    version = stages.read_record(tables["publish"])["ref"] if "publish" in tables else None
    publish_stats_artifacts(recipe.name, run["run_id"], reports, version)
    return {
        "recipe": recipe.name,
        "run_id": run["run_id"],
        "catalog": ctx.catalog_root,
        "version": version,
        "seconds": time.time() - started,
        "stages": [r.to_dict() for r in reports],
        "artifacts": {k: v.to_dict() for k, v in tables.items()},
    }


STATS_COLUMNS = ("stage", "rows_in", "rows_out", "cached", "shards", "shards_cached", "calls", "cache_hits", "tokens",
                 "errors", "seconds")


def publish_stats_artifacts(recipe_name: str, run_id: str, reports: list[stages.Stats], version: str | None) -> None:
    """The run's stats in the Prefect UI: a table (one row per stage) and the named counts as markdown."""
    create_table_artifact(
        key="curate-run-stats", table=[{c: getattr(r, c) for c in STATS_COLUMNS} for r in reports],
        description=f"curate run {recipe_name} ({run_id}): stage stats",
    )
    lines = [f"# curate run {recipe_name}", "", f"run `{run_id}`" + (f", published `{version}`" if version else ""), ""]
    for r in reports:
        lines.append(f"- **{r.stage}**: {r.describe()}")
    create_markdown_artifact(key="curate-run-summary", markdown="\n".join(lines) + "\n",
                             description=f"curate run {recipe_name} ({run_id})")


# ---------------------------------------------------------------- task runners


def task_runner(runner: str, address: str | None = None) -> Any:
    """The Prefect task runner for `--runner`: threads, or an existing Dask / Ray cluster."""
    if runner == "local":
        return ThreadPoolTaskRunner(max_workers=1)  # one engine per process; shards in turn
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    if runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise RuntimeError(
                "--runner ray needs the ray extra, which is not installed (pip install -e '.[ray]'); "
                "--runner dask works out of the box"
            ) from None
        return RayTaskRunner(address=address or os.environ.get("RAY_ADDRESS"))
    raise ValueError(f"unknown runner {runner!r}; use one of {', '.join(RUNNERS)}")


@contextlib.contextmanager
def shared_api(runner: str) -> Iterator[str | None]:
    """Workers in other processes need one Prefect API: this process's ephemeral server when unset.

    Without it every Dask or Ray worker would start its own temporary server on the same
    database. The server's URL travels to the workers in the serialised settings context. The
    server is the one Prefect's ephemeral mode starts for this process (one per process, stopped
    when the process exits), so it is left running: a flow run's events may still be on the way.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if runner == "local" or PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield server.api_url


def run_flow(
    recipe_path: str, catalog: str, *, until: str | None = None, runner: str = "local",
    address: str | None = None, shard_size: int = 256,
) -> dict[str, Any]:
    """Run the flow with the chosen task runner; returns its summary."""
    runner_obj = task_runner(runner, address)
    with shared_api(runner):
        return curate_flow.with_options(task_runner=runner_obj)(
            recipe_path=str(Path(recipe_path).resolve()), catalog=str(Path(catalog).resolve()), until=until,
            shard_size=shard_size,
        )


# ---------------------------------------------------------------- deployments


def deployment(recipe_path: str, catalog: str, name: str, cron: str | None = None, *,
               until: str | None = None, work_pool: str | None = None) -> Any:
    """A Prefect deployment of the flow for one recipe and catalog, on a cron schedule."""
    from prefect.deployments.runner import EntrypointType

    kwargs: dict[str, Any] = dict(
        name=name,
        cron=cron,
        parameters={"recipe_path": str(Path(recipe_path).resolve()), "catalog": str(Path(catalog).resolve()),
                    "until": until},
        description=f"curate run {recipe_path}",
        tags=["curate"],
        entrypoint_type=EntrypointType.MODULE_PATH,  # workers import the installed package, wherever they run
    )
    if work_pool:
        kwargs["work_pool_name"] = work_pool
    return curate_flow.to_deployment(**kwargs)
