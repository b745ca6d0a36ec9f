"""`curate run` as a Prefect flow in ephemeral mode: --until, resume, summary, errors before work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    env = {**os.environ, "PREFECT_HOME": ""}  # unset: the project folder's .curate/prefect is used
    env.pop("PREFECT_HOME")
    return subprocess.run([sys.executable, "-m", "curation", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_curate_run_until_then_resume_then_unchanged(tmp_path, shared_data):
    from curation.catalog import open_catalog
    from curation.flows.pipeline import run_flow

    recipe, catalog = _recipe(tmp_path, shared_data), tmp_path / "catalog"
    proc = _curate("run", str(recipe), "--until", "select", "--catalog", str(catalog), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert [s["stage"] for s in summary["stages"]] == ["sources", "pairs", "select"]
    assert summary["version"] is None
    assert (tmp_path / ".curate" / "prefect").is_dir()  # Prefect's state went to the project, not ~

    full = run_flow(str(recipe), str(catalog))  # resumes: sources, pairs and select are reused
    cached = {s["stage"]: s["cached"] for s in full["stages"]}
    assert cached == {"sources": True, "pairs": True, "select": True, "publish": False}
    assert full["version"] == "flow-small@v1"

    again = run_flow(str(recipe), str(catalog))
    assert all(s["cached"] for s in again["stages"]) and again["version"] == "flow-small@v1"
    assert open_catalog(catalog).versions("flow-small").height == 1

    # every run's stats: in the catalog with the run, and as Prefect artifacts of its flow run
    runs = open_catalog(catalog).runs()
    assert set(runs["run_id"]) == {summary["run_id"], full["run_id"], again["run_id"]}
    recorded = json.loads(runs.filter(runs["run_id"] == full["run_id"])["stats"][0])
    assert list(recorded) == ["sources", "pairs", "select", "publish"] and recorded["publish"]["detail"]["version"] == "flow-small@v1"
    table, markdown = _artifacts("curate-run-stats"), _artifacts("curate-run-summary")
    assert [row["stage"] for row in json.loads(table[0].data)] == ["sources", "pairs", "select", "publish"]
    assert again["run_id"] in markdown[0].data and "flow-small@v1" in markdown[0].data


def _artifacts(key: str) -> list:
    """The flow's artifacts under `key`, newest first, read back from the Prefect API."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                               sort=ArtifactSort.CREATED_DESC)

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
