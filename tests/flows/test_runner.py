"""--runner dask: the mapped shards of a real flow run on a real local Dask cluster's worker processes."""

from __future__ import annotations

import os

import pytest
import yaml

from curation.quickstart import write_prompts_jsonl


@pytest.mark.slow
def test_generation_shards_run_on_dask_worker_processes(tmp_path, tiny_chat):
    from dask.distributed import Client, LocalCluster

    from curation.flows.pipeline import run_flow

    write_prompts_jsonl(tmp_path / "prompts.jsonl", 12, seed=7)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "dask-gen",
        "sources": [{"path": "prompts.jsonl"}],
        "generate": {"backend": "transformers", "model": str(tiny_chat), "n": 2, "sampling": {"max_tokens": 4}},
        "score": [{"kind": "verify", "name": "correct"}],
    }))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        summary = run_flow(str(recipe), str(tmp_path / "catalog"), until="score", runner="dask",
                           address=cluster.scheduler_address, shard_size=4)
    stages = {s["stage"]: s for s in summary["stages"]}
    gen, score = stages["generate"], stages["score"]
    assert (gen["shards"], gen["calls"], gen["rows_out"]) == (3, 24, 24)
    assert score["shards"] == 3 and score["rows_out"] == 24
    pids = {int(w.rsplit(":", 1)[1]) for w in gen["detail"]["workers"] + score["detail"]["workers"]}
    assert pids and pids <= worker_pids  # every shard ran in a cluster worker ...
    assert os.getpid() not in pids  # ... none in the flow's own process


def test_unknown_runner_and_missing_ray_are_clear_errors():
    from curation.flows.pipeline import task_runner

    with pytest.raises(ValueError, match="unknown runner 'spark'"):
        task_runner("spark")
    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="pip install 'prefect-ray"):
            task_runner("ray")
