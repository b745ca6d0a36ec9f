"""Benchmark: reward-model scoring rows/s, transformers vs vLLM's pooling runner, same rows.

The `reward_model` scorer runs the same rows (AlpacaEval 1 responses, both sides, mixed
lengths) with `backend: transformers` (length-sorted dynamic padding) and `backend: vllm`
(`LLM.classify` on a `runner="pooling"` engine), on the same token ids. Both are warmed up, then
timed alternately; the median of the repeats is reported with the largest value difference
between the paths. Models: the project's tiny random-init reward model and the wider one of
benchmarks/score.py. On this machine vLLM is the CPU build; on a GPU machine (benchmarks/gpu.sh)
pass `--device cuda`.

Usage:  python benchmarks/score_vllm.py [--rows 256] [--repeats 3] [--enforce-eager] [--device cpu]
                                        [--models tiny,wider] [--out benchmarks/results/score_vllm.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from score import load_rows, wider_reward_model  # noqa: E402


def measure(model: Path, rows, args: argparse.Namespace) -> dict:
    from curation.generate.vllm_engine import release_engine
    from curation.scorers import SCORERS

    base = {"name": "rm", "kind": "reward_model", "model": str(model), "max_length": args.max_length, "dtype": args.dtype}
    scorers = {
        "transformers": SCORERS.build("reward_model", {**base, "batch_size": args.batch_size, "device": args.device}),
        "vllm": SCORERS.build("reward_model", {**base, "backend": "vllm", "enforce_eager": args.enforce_eager}),
    }
    out: dict = {}
    for mode, scorer in scorers.items():
        t = time.perf_counter()
        scorer.score(rows.head(args.batch_size))  # load (the engine starts here) and warm up
        out[mode] = {"start_and_warm_up_s": round(time.perf_counter() - t, 2)}
    times: dict[str, list[float]] = {mode: [] for mode in scorers}
    values: dict[str, list] = {}
    for _ in range(args.repeats):
        for mode, scorer in scorers.items():
            t = time.perf_counter()
            values[mode] = scorer.score(rows).get_column("value").to_list()
            times[mode].append(time.perf_counter() - t)
    release_engine()
    for mode in scorers:
        median = statistics.median(times[mode])
        out[mode].update(
            seconds_median=round(median, 3), seconds_all=[round(t, 3) for t in times[mode]], rows_per_s=round(rows.height / median, 2)
        )
    out["speedup_vllm_over_transformers"] = round(out["vllm"]["rows_per_s"] / out["transformers"]["rows_per_s"], 3)
    pairs = [(a, b) for a, b in zip(values["transformers"], values["vllm"]) if a is not None and b is not None]
    out["max_abs_value_diff"] = max(abs(a - b) for a, b in pairs)
    out["rows_scored"] = len(pairs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16, help="transformers batch size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu", help="transformers device (vLLM runs where its build runs)")
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM without graph compilation (faster start)")
    ap.add_argument("--models", default="tiny,wider")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "score_vllm.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from curation.testing import tiny_reward_model

    rows = load_rows(args.rows)
    work = Path(tempfile.mkdtemp(prefix="curate-bench-score-vllm-"))
    builders = {"tiny": ("tiny (128 wide, 2 layers)", tiny_reward_model), "wider": ("wider (512 wide, 4 layers)", wider_reward_model)}
    import vllm

    result = {
        "benchmark": "reward_model scoring rows/s: transformers vs vLLM pooling runner (LLM.classify)",
        "data": f"{rows.height} responses from alpaca_eval1_gpt4_pairs.jsonl.gz (both sides of each pair)",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "vllm": vllm.__version__,
            "platform": platform.platform(),
            "load_average_1m": os.getloadavg()[0],
        },
        "models": {},
    }
    for name in args.models.split(","):
        label, build = builders[name]
        print(f"measuring {label} ...", flush=True)
        result["models"][label] = measure(build(work / f"{name}_rm"), rows, args)
        print(json.dumps(result["models"][label], indent=2), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # after each model: partial results survive
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
