"""The curation flow: the recipe's stages as Prefect tasks that pass artifact references.

Tasks hand each other `ArtifactRef`s (path + fingerprint), never frames: Prefect keeps task
results in memory and persists them. Generation and scoring are mapped over shards of prompts on
the flow's task runner (locally one process, or a pool of processes where the cores allow one
model engine each; a Dask or Ray cluster with `--runner`); every other stage runs in the flow's
own process, so catalog writes stay in one process. The loop itself (order, --until, the run
record) is `curation.stages.walk`, the same one `run_recipe` walks; this module only supplies
the executor that turns its steps into tasks.

What the Prefect UI shows of a run: each stage's counters as a table artifact of its task, each
selection step beside its random control, the published version's dataset card, and the run's
stats. A stage, shard or combine step whose outputs the catalog already holds is answered from
Prefect's persisted result and shows as Cached: its cache key is its fingerprint in this catalog,
and a step whose outputs the store lacks is recomputed, never answered from Prefect's cache (a
task Prefect does run still skips stored work through the stage's own check).

Import through `curation.flows.prefect_env()` first, so Prefect's home is the project's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

import polars as pl

from curation.flows import prefect_env

prefect_env()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NONE, CachePolicy  # noqa: E402
from prefect.runtime import flow_run as current_flow_run  # noqa: E402
from prefect.states import State  # noqa: E402
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner  # noqa: E402
from pydantic import Field, FilePath  # noqa: E402

from curation import schema, stages  # noqa: E402
from curation.recipe import STAGES  # noqa: E402
from curation.stages.stage import stored  # noqa: E402

RUNNERS = ("local", "dask", "ray")
TRANSIENT = (ConnectionError, TimeoutError, BrokenPipeError)
CORES_PER_SHARD_WORKER = 4  # a model engine's forward pass uses a few cores; more processes on fewer only contend
StageName = Literal[STAGES]


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


# ---------------------------------------------------------------- Prefect's cache: the store's fingerprints
#
# A step's cache key is its fingerprint in this catalog; the executor checks the store first and
# calls a step whose outputs the store lacks with `refresh_cache`, so Prefect recomputes it (and
# rewrites its record) instead of handing back a result that points at a lost artifact.


def _key(ctx: stages.RunContext, step: str, fp: str) -> str:
    return schema.content_hash("prefect-cache", ctx.catalog_root, step, fp)


def _stage_fingerprint(stage: stages.Stage, recipe: Path, tables: stages.Tables, ctx: stages.RunContext) -> str:
    return stage.fingerprint(stages.load(recipe), tables, ctx)


def _stage_key(task_ctx: Any, inputs: dict[str, Any]) -> str:
    stage = stages.BY_NAME[inputs["stage"]]
    return _key(inputs["ctx"], stage.name, _stage_fingerprint(stage, inputs["recipe"], inputs["tables"], inputs["ctx"]))


def _shard_key(task_ctx: Any, inputs: dict[str, Any]) -> str:
    shard = inputs["shard"]
    return _key(inputs["ctx"], f"{shard.stage}.shard", shard.fingerprint)


def _combine_key(task_ctx: Any, inputs: dict[str, Any]) -> str:
    stage = stages.BY_NAME[inputs["stage"]]
    return _key(inputs["ctx"], stage.name, stage.combined_fingerprint(inputs["shards"], inputs["tables"]))


_TASK = dict(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient)


def _cached_by(key_fn: Any) -> dict[str, Any]:
    return dict(_TASK, cache_policy=CachePolicy.from_cache_key_fn(key_fn), persist_result=True)


@task(name="plan-shards", cache_policy=NONE, persist_result=False, **_TASK)
def plan_task(stage: str, recipe: Path, tables: stages.Tables, ctx: stages.RunContext, shard_size: int):
    return stages.BY_NAME[stage].plan(stages.load(recipe), tables, ctx, shard_size)


@task(name="shard", task_run_name="{shard.stage}-shard-{shard.index}", **_cached_by(_shard_key))
def shard_task(shard: stages.Shard, recipe: Path, ctx: stages.RunContext, cores: tuple[int, ...] = ()):
    if cores:  # one of several shard processes on this machine: its own cores (torch and vLLM's CPU build use them)
        import torch

        os.sched_setaffinity(0, cores)
        torch.set_num_threads(len(cores))
    return stages.BY_NAME[shard.stage].run_shard(shard, stages.load(recipe), ctx)


@task(name="combine-shards", task_run_name="{stage}", **_cached_by(_combine_key))
def combine_task(stage: str, shards: list, results: list, tables: stages.Tables, ctx: stages.RunContext,
                 dataset: str):
    out, report = stages.BY_NAME[stage].combine(shards, [r for r, _ in results], [r for _, r in results], tables, ctx)
    stage_artifacts(dataset, report, out)
    return out, report


@task(name="stage", task_run_name="{stage}", **_cached_by(_stage_key))
def stage_task(stage: str, recipe: Path, tables: stages.Tables, ctx: stages.RunContext, run: dict):
    loaded = stages.load(recipe)
    out, report = stages.execute(stages.BY_NAME[stage], loaded, tables, ctx, run)
    stage_artifacts(loaded.dataset_name, report, out)
    return out, report


def _answer(state: State) -> tuple[Any, stages.Stats]:
    """A step's result; a Prefect cache hit gives back the report of the run that computed it, so it
    is replayed as cached: nothing ran this time (the first run's calls and seconds are not this run's)."""
    out, report = state.result()
    return (out, report.replayed()) if state.name == "Cached" else (out, report)


class PrefectExecutor:
    """The loop's steps as Prefect tasks: shards mapped on the flow's task runner, the rest inline."""

    def __init__(self, recipe: Path, dataset: str, ctx: stages.RunContext, shard_size: int,
                 shard_cores: int | None) -> None:
        self.recipe, self.dataset, self.ctx, self.shard_size = recipe, dataset, ctx, shard_size
        cpus = sorted(os.sched_getaffinity(0))  # shard i runs on slice i mod n: shards that run together never share
        self.slices = ([tuple(cpus[i:i + shard_cores]) for i in range(0, len(cpus), shard_cores)
                        if len(cpus) - i >= shard_cores] or [tuple(cpus)]) if shard_cores else [()]
        self.logger = get_run_logger()

    def stage(self, stage: stages.Stage, tables: stages.Tables, run: dict[str, Any]):
        fp = _stage_fingerprint(stage, self.recipe, tables, self.ctx)
        lost = stored(self.ctx, fp, stage.outputs, lambda refs: stage.reusable(refs, self.ctx)) is None
        return _answer(stage_task.with_options(refresh_cache=lost)(stage.name, self.recipe, tables, self.ctx, run,
                                                                    return_state=True))

    def sharded(self, stage: stages.ShardedStage, tables: stages.Tables):
        shards = plan_task(stage.name, self.recipe, tables, self.ctx, self.shard_size)
        self.logger.info("%s: %d shard(s) of up to %d prompts", stage.name, len(shards), self.shard_size)
        futures = [
            shard_task.with_options(refresh_cache=stored(self.ctx, s.fingerprint, stage.shard_outputs()) is None)
            .submit(s, self.recipe, self.ctx, self.slices[s.index % len(self.slices)])
            for s in shards
        ]
        results = []
        for i, fut in enumerate(futures):
            fut.wait()
            results.append(_answer(fut.state))
            self.logger.info("%s: shard %d/%d done%s", stage.name, i + 1, len(shards),
                             " (cached)" if results[-1][1].cached else "")
        lost = stored(self.ctx, stage.combined_fingerprint(shards, tables), stage.combined_outputs()) is None
        return _answer(combine_task.with_options(refresh_cache=lost)(stage.name, shards, results, tables, self.ctx,
                                                                     self.dataset, return_state=True))


# log_prints off: curate logs through `logging`; with it on, every print of a library inside a stage
# (dill's bytecode dumps while datasets hashes TRL's map functions: ~160 lines per training) went to the run log
@flow(name="curate", log_prints=False, task_runner=ThreadPoolTaskRunner(max_workers=1))  # run_flow picks another
def curate_flow(
    recipe: FilePath,
    catalog: Path,
    until: StageName | None = None,
    shard_size: Annotated[int, Field(ge=1)] = 256,
    shard_cores: Annotated[int, Field(ge=1)] | None = None,
) -> dict[str, Any]:
    """Run one recipe end to end (or `until` a stage) against a catalog folder.

    Args:
        recipe: the recipe YAML; paths in it are read relative to its folder
        catalog: the catalog folder that stores artifacts and published versions
        until: stop after this stage (the stages before it run or are reused)
        shard_size: prompts per generation or scoring shard
        shard_cores: cores each shard process is pinned to (run_flow sets it for a local process pool)
    """
    logger = get_run_logger()
    loaded = stages.load(recipe)
    ctx = stages.RunContext(str(Path(catalog).resolve()))
    started = time.time()

    def log_stage(report: stages.Stats) -> None:
        logger.info("%s", report.summary())

    executor = PrefectExecutor(Path(recipe).resolve(), loaded.dataset_name, ctx, shard_size, shard_cores)
    tables, reports, run = stages.walk(loaded, executor, until=until, on_stage=log_stage)
    version = stages.read_record(tables["publish"])["ref"] if "publish" in tables else None
    publish_stats_artifacts(loaded.name, run["run_id"], reports, version)
    return {
        "recipe": loaded.name,
        "run_id": run["run_id"],
        "flow_run_id": str(current_flow_run.id),
        "catalog": ctx.catalog_root,
        "version": version,
        "seconds": time.time() - started,
        "stages": [r.to_dict() for r in reports],
        "artifacts": {k: v.to_dict() for k, v in tables.items()},
    }


# ---------------------------------------------------------------- artifacts


STATS_COLUMNS = ("stage", "rows_in", "rows_out", "cached", "shards", "shards_cached", "calls", "cache_hits", "tokens",
                 "errors", "seconds")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from a dataset and what it shows."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", "-".join(("curate", *parts)).lower())).strip("-")


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


def stage_artifacts(dataset: str, report: stages.Stats, tables: stages.Tables) -> None:
    """A stage task's artifacts: its counters; select adds each step beside its random control,
    publish adds the version's dataset card."""
    create_table_artifact(key=artifact_key(dataset, report.stage, "stats"), table=stats_rows(report),
                          description=f"{dataset}: {report.summary()}")
    if report.stage == "select" and "select_report" in tables:
        report_json = json.loads(pl.read_parquet(tables["select_report"].path)["report"][0])
        for step in report_json.get("steps", []):
            create_table_artifact(key=artifact_key(dataset, step["stage"]), table=control_rows(step),
                                  description=control_description(dataset, step))
    if report.stage == "publish":
        record = stages.read_record(tables["publish"])
        card = version_card_text(Path(record["path"]))
        if card is not None:
            create_markdown_artifact(key=artifact_key(dataset, "card"), markdown=card,
                                     description=f"dataset card of {record['ref']}")


def stats_rows(report: stages.Stats) -> list[dict[str, Any]]:
    """A stage's counters as (counter, value) rows: the non-zero fields, then its named counts."""
    skip = ("stage", "fingerprint", "counts", "detail")
    rows = [{"counter": k, "value": v} for k, v in report.to_dict().items() if k not in skip and (v or k == "cached")]
    rows += [{"counter": k, "value": n} for k, n in report.counts.items()]
    return rows + [{"counter": "fingerprint", "value": report.fingerprint}]


def control_rows(step: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per measure: the selection's value beside the random control's mean, sd and 95% range."""
    control = step.get("random_control") or {}
    rows = []
    for measure, value in (step.get("selection") or {}).items():
        if measure == "size" or value is None:
            continue
        row: dict[str, Any] = {"measure": measure, "selection": value}
        spread = control.get(measure)
        if spread:
            low, high = spread["ci95"]
            row.update(control_mean=spread["mean"], control_sd=spread["std"], control_low=low, control_high=high,
                       outside_control=not low <= value <= high)
        rows.append(row)
    return rows


def control_description(dataset: str, step: dict[str, Any]) -> str:
    control = step.get("random_control")
    against = (f"against {control['draws']} uniform random subsets of the same size (central 95% of their values)"
               if control else "no random control (nothing kept, or no draws)")
    return f"{dataset} {step['stage']}: kept {step['kept']} of {step['input']}, {against}"


def version_card_text(version_dir: Path) -> str | None:
    """The version's dataset card (README.md) as the UI can show it: no YAML header (it would show
    as text), and the plots named by their path in the version folder (the UI cannot load them)."""
    path = version_dir / "README.md"
    if not path.is_file():
        return None
    text = path.read_text()
    header = re.match(r"---\n.*?\n---\n", text, re.S)
    text = text[header.end():] if header else text
    return re.sub(r"!\[([^\]]*)\]\((?!https?:)([^)]+)\)", rf"*\1: `{version_dir}/\2`*", text)


# ---------------------------------------------------------------- task runners


def local_shard_workers() -> int:
    """Shard processes this machine allows: one per CORES_PER_SHARD_WORKER cores, and one where a
    GPU is visible (its engine takes the GPU's memory; several would not fit)."""
    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, len(os.sched_getaffinity(0)) // CORES_PER_SHARD_WORKER)


def task_runner(runner: str, address: str | None = None, workers: int = 1) -> Any:
    """The Prefect task runner for `--runner`: this process, a local process pool, or a Dask / Ray cluster."""
    if runner == "local":
        if workers > 1:  # one engine per process: parallel shards are parallel processes
            return ProcessPoolTaskRunner(max_workers=workers)
        return ThreadPoolTaskRunner(max_workers=1)  # shards in turn, in this process (its engine stays warm)
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
def shared_api(needed: bool) -> Iterator[str | None]:
    """Workers in other processes need one Prefect API: this process's ephemeral server when unset.

    Without it every worker process would start its own temporary server on the same database.
    The server's URL travels to the workers in the serialised settings context. The server is the
    one Prefect's ephemeral mode starts for this process (one per process, stopped when the
    process exits), so it is left running: a flow run's events may still be on the way.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if not needed or PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield server.api_url


def run_flow(
    recipe_path: str | os.PathLike, catalog: str | os.PathLike, *, until: str | None = None, runner: str = "local",
    address: str | None = None, shard_size: int = 256, shard_workers: int | None = None,
) -> dict[str, Any]:
    """Run the flow with the chosen task runner; returns its summary.

    `shard_workers` (local runner): shard processes; by default as many as the cores allow
    (`local_shard_workers`), or `$CURATE_SHARD_WORKERS`; 1 runs shards in turn in this process.
    """
    workers = shard_workers or int(os.environ.get("CURATE_SHARD_WORKERS") or 0) or local_shard_workers() \
        if runner == "local" else 1
    local_pool = workers > 1
    cores = max(1, len(os.sched_getaffinity(0)) // workers) if local_pool else None
    runner_obj = task_runner(runner, address, workers)
    with shared_api(runner != "local" or local_pool):
        return curate_flow.with_options(task_runner=runner_obj)(
            recipe=Path(recipe_path).resolve(), catalog=Path(catalog).resolve(), until=until,
            shard_size=shard_size, shard_cores=cores,
        )


# ---------------------------------------------------------------- deployments


def deployment(recipe_path: str, catalog: str, name: str, cron: str | None = None, *,
               until: str | None = None, work_pool: str | None = None) -> Any:
    """A Prefect deployment of the flow for one recipe and catalog, on a cron schedule."""
    from prefect.deployments.runner import EntrypointType

    kwargs: dict[str, Any] = dict(
        name=name,
        cron=cron,
        parameters={"recipe": str(Path(recipe_path).resolve()), "catalog": str(Path(catalog).resolve()),
                    "until": until},
        description=f"curate run {recipe_path}",
        tags=["curate"],
        entrypoint_type=EntrypointType.MODULE_PATH,  # workers import the installed package, wherever they run
    )
    if work_pool:
        kwargs["work_pool_name"] = work_pool
    return curate_flow.to_deployment(**kwargs)
