"""`curate run` as a Prefect flow in ephemeral mode: --until, resume, summary, errors before work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml


def _recipe(tmp_path, shared_data):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "flow-small",
        "sources": [{"path": str(shared_data / "pandalm_testset.jsonl.gz"), "limit": 80}],
        "select": [{"kind": "dedup", "method": "exact"}, {"kind": "length", "fraction": 0.5}],
    }))
    return path


def _curate(*args, cwd):
    unset = ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH", "PREFECT_MEMO_STORE_PATH")  # the project's .curate/prefect
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run([sys.executable, "-m", "curation", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_curate_run_until_then_resume_then_unchanged(tmp_path, shared_data):
    """Resume, unchanged re-run and a lost artifact, read back from the Prefect server the flow ran
    against (this process's ephemeral server on 127.0.0.1): task states, artifacts, the run record."""
    from curation.catalog import open_catalog
    from curation.flows.pipeline import run_flow

    recipe, catalog = _recipe(tmp_path, shared_data), tmp_path / "catalog"
    proc = _curate("run", str(recipe), "--until", "select", "--catalog", str(catalog), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert [s["stage"] for s in summary["stages"]] == ["sources", "pairs", "select"]
    assert summary["version"] is None
    assert (tmp_path / ".curate" / "prefect").is_dir()  # Prefect's state went to the project, not ~

    # resumes: sources, pairs and select are reused by the stages' own check (their Prefect results
    # are in the project's Prefect home, not this one), so Prefect runs every task
    full = run_flow(str(recipe), str(catalog))
    cached = {s["stage"]: s["cached"] for s in full["stages"]}
    assert cached == {"sources": True, "pairs": True, "select": True, "publish": False}
    assert full["version"] == "flow-small@v1"
    assert _task_states(full["flow_run_id"]) == dict.fromkeys(["sources", "pairs", "select", "publish"], "Completed")

    again = run_flow(str(recipe), str(catalog))  # unchanged: every stage answered from Prefect's cache
    assert all(s["cached"] for s in again["stages"]) and again["version"] == "flow-small@v1"
    assert all(s["seconds"] == 0 and s["calls"] == 0 for s in again["stages"])  # not the stored run's work
    assert _task_states(again["flow_run_id"]) == dict.fromkeys(["sources", "pairs", "select", "publish"], "Cached")

    decisions = Path(full["artifacts"]["decisions"]["path"])
    decisions.unlink()  # the store lost select's output: Prefect's cache must not hand it back
    third = run_flow(str(recipe), str(catalog))
    assert _task_states(third["flow_run_id"]) == {"sources": "Cached", "pairs": "Cached", "select": "Completed",
                                                  "publish": "Cached"}
    assert decisions.is_file() and third["version"] == "flow-small@v1"
    assert open_catalog(catalog).versions("flow-small").height == 1

    # every run's stats: in the catalog with the run, and as Prefect artifacts of its flow run
    runs = open_catalog(catalog).runs()
    assert set(runs["run_id"]) == {summary["run_id"], full["run_id"], again["run_id"], third["run_id"]}
    recorded = json.loads(runs.filter(runs["run_id"] == full["run_id"])["stats"][0])
    assert list(recorded) == ["sources", "pairs", "select", "publish"] and recorded["publish"]["detail"]["version"] == "flow-small@v1"
    table, markdown = _artifacts("curate-run-stats"), _artifacts("curate-run-summary")
    assert [row["stage"] for row in json.loads(table[0].data)] == ["sources", "pairs", "select", "publish"]
    assert third["run_id"] in markdown[0].data and "flow-small@v1" in markdown[0].data

    # each stage task's counters, each selection step beside its random control, the dataset card
    stats = {s["stage"]: s for s in full["stages"]}
    for stage in ("sources", "pairs", "select", "publish"):
        rows = {r["counter"]: r["value"] for r in json.loads(_artifacts(f"curate-flow-small-{stage}-stats", full)[0].data)}
        assert rows["rows_out"] == stats[stage]["rows_out"] and rows["fingerprint"] == stats[stage]["fingerprint"]
    report = json.loads(pl.read_parquet(full["artifacts"]["select_report"]["path"])["report"][0])
    assert [s["stage"] for s in report["steps"]] == ["select.0:dedup", "select.1:length"]
    for step, key in zip(report["steps"], ["curate-flow-small-select-0-dedup", "curate-flow-small-select-1-length"]):
        (artifact,) = _artifacts(key, third)  # select ran again in the third run
        rows = {r["measure"]: r for r in json.loads(artifact.data)}
        assert f"kept {step['kept']} of {step['input']}" in artifact.description
        measures = [m for m, v in step["selection"].items() if m != "size" and v is not None]
        assert sorted(rows) == sorted(measures) and measures
        for measure, row in rows.items():
            control = step["random_control"][measure]
            assert row["selection"] == step["selection"][measure] and row["control_mean"] == control["mean"]
            assert row["outside_control"] == (not control["ci95"][0] <= row["selection"] <= control["ci95"][1])
    (card,) = _artifacts("curate-flow-small-card", full)
    version_dir = Path(open_catalog(catalog).resolve("flow-small@v1").path)
    assert "flow-small@v1" in card.data and not card.data.startswith("---")  # the card, without its YAML header
    assert "](plots/" not in card.data and f"{version_dir}/plots/" in card.data


def _task_states(flow_run_id: str) -> dict[str, str]:
    """Each stage task of a flow run -> the name of its final state (Completed, Cached ...), from the API."""
    import asyncio
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))

    return {t.name: t.state.name for t in asyncio.run(read()) if t.task_key.startswith("stage_task")}


def _artifacts(key: str, run: dict | None = None) -> list:
    """The artifacts under `key` (of one flow run, when given), newest first, read back from the Prefect API."""
    import asyncio
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    flt = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
    if run is not None:
        flt.flow_run_id = ArtifactFilterFlowRunId(any_=[UUID(run["flow_run_id"])])

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=flt, sort=ArtifactSort.CREATED_DESC)

    return asyncio.run(read())


def test_bad_recipe_fails_before_prefect_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsources:\n  - path: missing.jsonl\nselect:\n  - kind: kmeanz\n")
    proc = _curate("run", str(bad), "--catalog", str(tmp_path / "c"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "bad.yaml" in proc.stderr and "file not found" in proc.stderr and "kmeanz" in proc.stderr
    assert not (tmp_path / ".curate").exists()  # nothing started

    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    good = tmp_path / "good.yaml"
    good.write_text("name: x\nsources:\n  - path: p.jsonl\n")
    proc = _curate("run", str(good), "--until", "selct", cwd=tmp_path)
    assert proc.returncode == 1 and "unknown stage 'selct'" in proc.stderr
    assert not (tmp_path / ".curate").exists()
