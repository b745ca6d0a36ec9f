"""Benchmark: reward-model scoring rows/s with length-sorted dynamic padding vs naive batching.

Real responses (AlpacaEval 1 pairs from ../shared/data, both sides, mixed lengths) are scored by
the `reward_model` scorer twice in one run, on the same rows and batch size:
  - sorted: rows ordered by token length, each batch padded to its own longest row;
  - naive:  rows in input order, each batch padded to its own longest row.
Both give the same values (checked: max abs difference); the difference is padding work.
Two random-init reward models (offline, built on the fly): the project's tiny one and a wider,
deeper one where compute per token dominates more.

Usage:  python benchmarks/score.py [--rows 256] [--batch-size 16] [--repeats 3] [--max-length 1024]
Writes benchmarks/results/score.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "score.json"


def load_rows(n: int):
    """Both responses of the first pairs (the shared reader, curation.sources.read_pair_rows), n candidate rows."""
    import polars as pl

    from curation.sources import read_pair_rows

    pairs = read_pair_rows(DATA / "alpaca_eval1_gpt4_pairs.jsonl.gz", limit=(n + 1) // 2)
    out = [
        {"candidate_id": r[f"{side}_id"], "prompt_id": r["prompt_id"], "messages": r["prompt"], "text": r[side]}
        for r in pairs.iter_rows(named=True)
        for side in ("chosen", "rejected")
    ]
    return pl.DataFrame(out[:n])


def wider_reward_model(path: Path) -> Path:
    """A random-init Qwen2 reward model 4x wider and 2x deeper than the tiny one (same tokenizer)."""
    if (path / "config.json").exists():
        return path
    import torch
    from transformers import Qwen2ForSequenceClassification

    from curation.testing import _config, build_tokenizer

    torch.manual_seed(2)
    tok = build_tokenizer()
    model = Qwen2ForSequenceClassification(
        _config(tok, num_labels=1, hidden_size=512, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2)
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def padding_stats(scorer, rows) -> dict:
    tok, _ = scorer.load()
    ids = [x[: scorer.config.max_length] for x in scorer.encode(tok, [(r["messages"], r["text"]) for r in rows.to_dicts()])]
    real = sum(len(x) for x in ids)
    padded = sum(len(b) * max(len(ids[i]) for i in b) for b in scorer.batches(ids))
    return {"real_tokens": real, "padded_tokens": padded, "padding_share": round(1 - real / padded, 4)}


def measure(model: Path, rows, batch_size: int, repeats: int, max_length: int) -> dict:
    """Both modes warmed up, then timed alternately (sorted, naive, sorted, ...): on a shared
    machine, load drifts hit both alike. The median of the repeats is reported."""
    from curation.scorers import SCORERS

    scorers = {
        mode: SCORERS.build(
            "reward_model",
            {"name": "rm", "kind": "reward_model", "model": str(model), "batch_size": batch_size, "sort_by_length": sort, "max_length": max_length},
        )
        for mode, sort in (("sorted", True), ("naive", False))
    }
    for scorer in scorers.values():
        scorer.score(rows.head(batch_size))  # load and warm up
    times: dict[str, list[float]] = {mode: [] for mode in scorers}
    values = {}
    for _ in range(repeats):
        for mode, scorer in scorers.items():
            t = time.perf_counter()
            scores = scorer.score(rows)
            times[mode].append(time.perf_counter() - t)
            values[mode] = scores.get_column("value").to_list()
    out: dict = {}
    for mode, scorer in scorers.items():
        median = statistics.median(times[mode])
        out[mode] = {
            "seconds_median": round(median, 3),
            "seconds_all": [round(t, 3) for t in times[mode]],
            "rows_per_s": round(rows.height / median, 2),
            **padding_stats(scorer, rows),
        }
    out["speedup_sorted_over_naive"] = round(out["sorted"]["rows_per_s"] / out["naive"]["rows_per_s"], 3)
    out["max_abs_value_diff"] = max(abs(a - b) for a, b in zip(values["sorted"], values["naive"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=1024)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from curation.testing import tiny_reward_model

    rows = load_rows(args.rows)
    lengths = sorted(len(t) for t in rows.get_column("text"))
    work = Path(tempfile.mkdtemp(prefix="curate-bench-score-"))
    models = {"tiny (128 wide, 2 layers)": tiny_reward_model(work / "tiny_rm"), "wider (512 wide, 4 layers)": wider_reward_model(work / "wider_rm")}
    result = {
        "benchmark": "reward_model scoring: length-sorted dynamic padding vs naive batching",
        "data": f"{rows.height} responses from alpaca_eval1_gpt4_pairs.jsonl.gz (both sides of each pair)",
        "response_chars": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1]},
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
        "models": {},
    }
    for label, path in models.items():
        print(f"measuring {label} ...", flush=True)
        result["models"][label] = measure(path, rows, args.batch_size, args.repeats, args.max_length)
        print(json.dumps(result["models"][label], indent=2), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")  # after each model: partial results survive
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
