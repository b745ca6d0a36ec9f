"""Resume benchmark: a first run, an unchanged re-run, and a re-run with only the selection budget changed.

    python benchmarks/resume.py [--prompts 64] [--out benchmarks/results/resume.json]

Runs the stages in-process (no Prefect) with the transformers backend and tiny offline models, and
records per stage: cached or not, model calls, cache hits and seconds. Expected: the unchanged
re-run makes no model call; the budget change recomputes only select and publish.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "resume.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from curation.quickstart import write_prompts_jsonl
    from curation.recipe import load_recipe
    from curation.stages import run_recipe
    from curation.testing import tiny_chat_model, tiny_reward_model

    tmp = Path(tempfile.mkdtemp(prefix="curate-resume-"))
    policy, rm = tiny_chat_model(tmp / "policy"), tiny_reward_model(tmp / "rm")
    write_prompts_jsonl(tmp / "prompts.jsonl", args.prompts, seed=11)

    def recipe(budget: float):
        path = tmp / "recipe.yaml"
        path.write_text(yaml.safe_dump({
            "name": "resume-bench",
            "sources": [{"path": "prompts.jsonl"}],
            "generate": {"backend": "transformers", "model": str(policy), "n": 4, "sampling": {"max_tokens": 16}},
            "score": [{"kind": "reward_model", "name": "rm", "model": str(rm)}],
            "pairs": {"builder": "best_worst", "score": "rm"},
            "select": [{"kind": "length", "fraction": budget}],
        }))
        return load_recipe(path)

    runs = {}
    for label, budget in (("first", 0.5), ("unchanged", 0.5), ("budget_changed", 0.25)):
        started = time.perf_counter()
        _, reports = run_recipe(recipe(budget), tmp / "catalog", shard_size=16)
        runs[label] = {
            "seconds": round(time.perf_counter() - started, 2),
            "model_calls": sum(r.calls for r in reports if r.stage == "generate"),
            "stages": {r.stage: {"cached": r.cached, "calls": r.calls, "cache_hits": r.cache_hits,
                                 "seconds": round(r.seconds, 3)} for r in reports},
        }
        print(label, json.dumps(runs[label]))
    result = {
        "benchmark": "resume",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "prompts": args.prompts,
        "runs": runs,
        "recomputed_after_budget_change": [s for s, v in runs["budget_changed"]["stages"].items() if not v["cached"]],
        "speedup_unchanged_vs_first": round(runs["first"]["seconds"] / max(runs["unchanged"]["seconds"], 1e-9), 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("recomputed_after_budget_change", "speedup_unchanged_vs_first")}))


if __name__ == "__main__":
    main()
