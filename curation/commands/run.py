"""`curate run` and `curate deploy`: the recipe's stages as a Prefect flow, now or on a schedule."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from curation.cli import (
    CatalogOption,
    JsonOption,
    app,
    catalog_path,
    console,
    err_console,
    fail,
    json_stream,
    print_json,
    setup_logging,
    warn,
)

RunnerOption = typer.Option("local", "--runner", help="Where mapped stages run: local (threads), dask or ray.")
AddressOption = typer.Option(
    None, "--address", help="Scheduler address of an existing cluster [default: $DASK_SCHEDULER_ADDRESS / $RAY_ADDRESS]"
)


def _check(recipe: Path, until: str | None):
    """Validate the recipe and --until before Prefect or any model loads."""
    from curation.recipe import RecipeError, load_recipe
    from curation.stages import stage_order

    try:
        r = load_recipe(recipe)
        stage_order(until)
    except RecipeError as exc:
        fail(str(exc), file=exc.path, hint=f"`curate validate {recipe}` lists every problem with its line")
    except ValueError as exc:
        fail(str(exc), file=recipe)
    return r


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML file"),
    until: str = typer.Option(None, "--until", help="Stop after this stage (sources, generate, score, pairs, select, publish, train, evaluate)."),
    runner: str = RunnerOption,
    address: str = AddressOption,
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Prompts per generation / scoring shard."),
    catalog: str = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a recipe: sources -> generate -> score -> pairs -> select -> publish -> train -> evaluate.

    Finished stages are skipped (their artifacts are reused), so a re-run resumes where it stopped.
    """
    from curation.flows import prefect_env

    if runner not in ("local", "dask", "ray"):
        fail(f"unknown --runner {runner!r}; use local, dask or ray")
    _check(recipe, until)
    if as_json:
        json_stream(_stdout_for_json_only())
    prefect_env()
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from curation.flows.pipeline import run_flow
    from curation.stages import StageError

    try:
        summary = run_flow(str(recipe), str(catalog_path(catalog)), until=until, runner=runner, address=address,
                           shard_size=shard_size)
    except StageError as exc:
        fail(str(exc), file=recipe, hint="finished stages are kept: run the same command again to resume")
    except RuntimeError as exc:
        fail(str(exc), file=recipe)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)


def _stdout_for_json_only():
    """With --json, stdout carries the JSON alone: engines (vLLM and its child processes) log to
    file descriptor 1, so it is pointed at stderr for the rest of the process; the JSON goes to a
    copy of the original stdout."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return out


def print_summary(summary: dict[str, Any]) -> None:
    from curation.stages.rounds import label

    table = Table(title=f"curate run {summary['recipe']}: {summary['seconds']:.0f}s, catalog {summary['catalog']}")
    for col in ("stage", "rows in", "rows out", "cached", "calls", "cache hits", "tokens", "errors", "time"):
        table.add_column(col, justify="left" if col in ("stage", "cached") else "right", no_wrap=True)
    for s in summary["stages"]:
        cache = "yes" if s["cached"] else "-"
        if s["shards"]:
            cache = f"{s['shards_cached']}/{s['shards']} shards"
        name = label(s["stage"], s.get("detail"))
        table.add_row(name, str(s["rows_in"]), str(s["rows_out"]), cache, str(s["calls"]), str(s["cache_hits"]),
                      str(s["tokens"]), str(s["errors"]), f"{s['seconds']:.1f}s")
    console.print(table)
    for s in summary["stages"]:  # the named counts: what each stage skipped, dropped or flipped, and why
        counts = ", ".join(f"{n} {name}" for name, n in s["counts"].items() if n)
        if counts:
            console.print(f"  {s['stage']}: {counts}")
    for s in summary["stages"]:
        if s["stage"] == "evaluate":
            _print_metrics(s["detail"]["metrics"], s["detail"].get("intervals") or {}, s["detail"].get("round"),
                           s["detail"].get("decoding"))
    for s in summary["stages"]:  # a noise step beside the length-only model flagging as many pairs
        for step in (s.get("detail") or {}).get("steps") or []:
            if (b := step.get("naive_baseline")) and "overlap" in b:
                console.print(f"{step['stage']}: flagged {b['flagged']}; a length-only model flagging as many agrees on "
                              f"{b['overlap']} (Jaccard {b['jaccard']:.2f}, kappa {b['kappa']:.2f})")
    if summary.get("version"):
        console.print(f"published {summary['version']}", style="bold")
    for s in summary["stages"]:  # where the results are: folders and models, paths unwrapped to copy
        detail = s.get("detail") or {}
        if s["stage"] == "publish" and detail.get("path"):
            console.print(f"  {detail['version']} folder: {detail['path']}", soft_wrap=True)
            for fmt, where in (detail.get("exports") or {}).items():
                console.print(f"  export {fmt}: {where}", soft_wrap=True)
        if s["stage"] == "train" and detail.get("model"):
            console.print(f"  trained model: {detail['model']}", soft_wrap=True)
            if detail.get("control_model"):
                console.print(f"  random-control model: {detail['control_model']}", soft_wrap=True)
    if summary.get("run_id"):
        console.print(f"run {summary['run_id']} recorded in the catalog's runs table, with these stats")
    for s in summary["stages"]:  # e.g. a budget beyond the pool: the run went on, the user should know
        for step in (s.get("detail") or {}).get("steps") or []:
            for w in step.get("warnings") or []:
                warn(f"{step.get('stage') or s['stage']}: {w}")


def _print_metrics(metrics: dict[str, dict[str, float]], intervals: dict[str, dict[str, float]],
                   round_index: int | None, decoding: str | None = None) -> None:
    """Before / after / control side by side, one row per metric; then each paired difference
    with its 95% bootstrap interval (an interval that holds zero is a gain within noise)."""
    labels = sorted(metrics, key=lambda k: {"before": 0, "after": 1, "control": 2}.get(k, 3))
    names = sorted({k for m in metrics.values() for k in m})
    where = f"round {round_index}: " if round_index else ""
    table = Table(title=f"{where}evaluation on held-out data" + (f" (decoding: {decoding})" if decoding else ""))
    table.add_column("metric")
    for label in labels:
        table.add_column({"before": "base policy", "after": "trained on selection",
                          "control": "trained on random pairs"}.get(label, label), justify="right")
    for name in names:
        table.add_row(name, *[f"{metrics[lab][name]:.3f}" if name in metrics[lab] else "-" for lab in labels])
    console.print(table)
    for name, iv in intervals.items():
        a, b = name.split("_vs_")
        verdict = "within noise" if iv["low"] <= 0 <= iv["high"] else ("gain" if iv["low"] > 0 else "loss")
        console.print(f"{where}{a} - {b}: {iv['mean']:+.3f} (95% CI {iv['low']:+.3f} to {iv['high']:+.3f}, "
                      f"{int(iv['prompts'])} prompts): {verdict}")


@app.command()
def deploy(
    recipe: Path = typer.Argument(..., help="Recipe YAML file"),
    name: str = typer.Option(..., "--name", help="Deployment name, e.g. nightly"),
    cron: str = typer.Option(None, "--cron", help='Cron schedule, e.g. "0 3 * * *"'),
    until: str = typer.Option(None, "--until", help="Stop each run after this stage."),
    pool: str = typer.Option(None, "--pool", help="Work pool whose workers run it (e.g. a process pool)."),
    serve: bool = typer.Option(False, "--serve", help="Serve it from this process (blocks; Ctrl-C stops)."),
    catalog: str = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a Prefect deployment that runs the recipe on a schedule (needs PREFECT_API_URL, or --serve)."""
    from curation.flows import prefect_env

    _check(recipe, until)
    if pool and serve:
        fail("--pool and --serve exclude each other: a work pool's workers run the flow, or this process does")
    prefect_env()
    from curation.flows.pipeline import deployment

    dep = deployment(str(recipe), str(catalog_path(catalog)), name, cron, until=until, work_pool=pool)
    if serve:
        from prefect import serve as prefect_serve

        err_console.print(f"serving deployment curate/{name}; Ctrl-C stops")
        prefect_serve(dep)
        return
    try:
        dep_id = dep.apply()
    except Exception as exc:  # the API is unreachable or refuses
        fail(f"could not create deployment curate/{name}: {exc} (is PREFECT_API_URL set to a running server?)")
    info = {"deployment": f"curate/{name}", "id": str(dep_id), "cron": cron, "work_pool": pool,
            "recipe": str(recipe.resolve()), "catalog": str(catalog_path(catalog).resolve())}
    if as_json:
        print_json(info)
    else:
        console.print(f"created deployment curate/{name} ({cron or 'no schedule'})")
        console.print(f"run its flow runs with: prefect worker start --pool {pool}" if pool
                      else f"run its flow runs with: curate deploy {recipe} --name {name} --serve")
