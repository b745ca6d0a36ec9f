"""Benchmark: one recipe on each task runner (one process, a local process pool, Dask, Ray).

The recipe generates with the tiny chat model (transformers), scores by length, builds
best-worst pairs, dedups and publishes; every runner starts from an empty catalog, so every
shard is computed. Times are wall seconds of `run_flow` including the runner's own start (the
Dask cluster, the process pool), with Ray's start (`ray.init`, num_cpus=2) and the Prefect
ephemeral server's start (once, before the first run) timed beside them. The
published versions' content fingerprints must all be equal; the script exits 1 otherwise.

Usage:  python benchmarks/runners.py [--prompts 48] [--n 4] [--shard-size 8]
Writes benchmarks/results/runners.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "runners.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--n", type=int, default=4, help="candidates per prompt")
    parser.add_argument("--shard-size", type=int, default=8)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="curate-runners-"))
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PREFECT_HOME": str(work / "prefect"),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    import yaml

    from curation.catalog import open_catalog
    from curation.flows.pipeline import run_flow
    from curation.quickstart import write_prompts_jsonl
    from curation.testing import tiny_chat_model

    model = tiny_chat_model(work / "policy")
    write_prompts_jsonl(work / "prompts.jsonl", args.prompts, seed=7)
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "runners",
        "sources": [{"path": "prompts.jsonl"}],
        "generate": {"backend": "transformers", "model": str(model), "n": args.n,
                     "sampling": {"max_tokens": 16, "temperature": 1.0, "seed": 3}},
        "score": [{"kind": "heuristic", "name": "len", "measure": "length", "unit": "chars"}],
        "pairs": {"builder": "best_worst", "score": "len"},
        "select": [{"kind": "dedup", "method": "exact"}],
    }))

    from prefect.client.orchestration import get_client

    started = time.perf_counter()
    with get_client(sync_client=True) as client:  # Prefect's ephemeral server starts once, before any timing
        client.hello()
    prefect_start = time.perf_counter() - started
    results: dict[str, dict] = {}

    def timed(name: str, runner: str, **kw) -> None:
        started = time.perf_counter()
        summary = run_flow(str(recipe), str(work / name), runner=runner, shard_size=args.shard_size, **kw)
        wall = time.perf_counter() - started
        fp = open_catalog(work / name).versions("runners")["fingerprint"][0]
        results[name] = {"wall_s": round(wall, 1), "flow_s": round(summary["seconds"], 1), "version": summary["version"],
                         "fingerprint": fp}
        print(f"{name}: {wall:.1f} s, {summary['version']} {fp[:16]}", flush=True)

    timed("local", "local", shard_workers=1)
    timed("local-pool-2", "local", shard_workers=2)
    timed("dask", "dask")  # its own LocalCluster: two worker processes
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20)
    ray_start = time.perf_counter() - started
    try:
        timed("ray", "ray")
    finally:
        ray.shutdown()
    results["ray"]["ray_init_s"] = round(ray_start, 1)

    same = len({r["fingerprint"] for r in results.values()}) == 1
    out = {
        "what": "one recipe (tiny chat model generation, length score, best-worst pairs, dedup, publish) per runner, "
                "each from an empty catalog; wall seconds of run_flow including the runner's start",
        "recipe": {"prompts": args.prompts, "candidates_per_prompt": args.n, "shard_size": args.shard_size,
                   "shards": -(-args.prompts // args.shard_size)},
        "prefect_server_start_s": round(prefect_start, 1),
        "runners": results,
        "same_fingerprint": same,
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg()},
        "note": "one run each on a machine shared with other jobs: the load average says how shared",
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
