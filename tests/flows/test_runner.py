"""The task runners: the mapped shards of a real flow run in this process, in a local process pool,
on a real local Dask cluster's and a real local Ray cluster's worker processes, and all of them
publish the same version."""

from __future__ import annotations

import os

import polars as pl
import psutil
import pytest
import yaml
from polars.testing import assert_frame_equal

from curation.quickstart import write_prompts_jsonl


def _worker_pids(summary: dict) -> set[int]:
    stages = {s["stage"]: s for s in summary["stages"]}
    workers = stages["generate"]["detail"]["workers"] + stages["score"]["detail"]["workers"]
    return {int(w.rsplit(":", 1)[1]) for w in workers}


def _tables(summary: dict) -> dict[str, pl.DataFrame]:
    """The run's tables, rows in key order (shards finish in any order on a cluster)."""
    keys = {"candidates": ["candidate_id"], "scores": ["target_id", "scorer"], "pairs": ["pair_id"],
            "decisions": ["target_id", "stage"]}
    return {t: pl.read_parquet(summary["artifacts"][t]["path"]).sort(k) for t, k in keys.items()}


@pytest.mark.slow
def test_local_dask_and_ray_runners_publish_the_same_version(tmp_path, tiny_chat):
    """Generation and scoring shards run in cluster workers (never the flow's process); the
    candidates, scores, pairs and decisions are equal row for row, and the published versions have
    one content fingerprint."""
    import ray
    from dask.distributed import Client, LocalCluster

    from curation.catalog import open_catalog
    from curation.flows.pipeline import run_flow

    write_prompts_jsonl(tmp_path / "prompts.jsonl", 12, seed=7)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "runners",
        "sources": [{"path": "prompts.jsonl"}],
        "generate": {"backend": "transformers", "model": str(tiny_chat), "n": 2,
                     "sampling": {"max_tokens": 6, "temperature": 1.0, "seed": 3}},
        "score": [{"kind": "heuristic", "name": "len", "measure": "length", "unit": "chars"}],
        "pairs": {"builder": "best_worst", "score": "len"},
        "select": [{"kind": "dedup", "method": "exact"}],
    }))
    run = lambda runner, out=None, **kw: run_flow(str(recipe), str(tmp_path / (out or runner)), runner=runner,
                                                  shard_size=4, **kw)

    local = run("local", shard_workers=1)  # shards in turn, in this process
    pool = run("local", "local-pool", shard_workers=2)  # shards in two local processes
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        dask_pids = set(client.run(os.getpid).values())
        dask = run("dask", address=cluster.scheduler_address)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, namespace="curate-test")
    try:
        ray_summary = run("ray")  # the runner finds the cluster this process started
        raylet = ray.get(ray.remote(lambda: os.getppid()).remote())  # Ray's workers are the raylet's children
        ray_pids = {p.pid for p in psutil.Process(raylet).children()}
    finally:
        ray.shutdown()

    gen = {s["stage"]: s for s in local["stages"]}["generate"]
    assert (gen["shards"], gen["calls"], gen["rows_out"]) == (3, 24, 24)
    assert _worker_pids(local) == {os.getpid()}  # one process: the flow's own
    assert os.getpid() not in _worker_pids(pool)  # the pool's processes
    for summary, pids in ((dask, dask_pids), (ray_summary, ray_pids)):
        ran = _worker_pids(summary)
        assert ran and os.getpid() not in ran  # every shard ran outside the flow's process ...
        assert ran <= pids  # ... in one of the cluster's workers
    expected = _tables(local)
    for summary in (pool, dask, ray_summary):
        for table, frame in _tables(summary).items():
            assert_frame_equal(frame, expected[table])  # floats (log-probabilities) to 1e-5
    runs = ("local", "local-pool", "dask", "ray")
    fingerprints = {open_catalog(tmp_path / r).versions("runners")["fingerprint"].to_list()[0] for r in runs}
    assert len(fingerprints) == 1
    assert {s["version"] for s in (local, pool, dask, ray_summary)} == {"runners@v1"}


def test_unknown_runner_is_a_clear_error():
    from curation.flows.pipeline import task_runner

    with pytest.raises(ValueError, match="unknown runner 'spark'"):
        task_runner("spark")
