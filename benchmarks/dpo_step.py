"""Benchmark: a short DPO run through curation.train (TRL), seconds per optimiser step.

Real pairs (hh-rlhf test pairs from ../shared/data) train the tiny offline chat model (or
`--model`) for `--steps` steps with method dpo; the reference log-probs are computed first (the
project default), so the report splits the set-up (model load, reference pass) from the steps.
TRL runs on CUDA when torch sees a GPU, else on the CPU. Used by benchmarks/gpu.sh.

Usage:  python benchmarks/dpo_step.py [--model DIR] [--pairs 64] [--steps 8] [--batch-size 4]
                                      [--max-length 512] [--out benchmarks/results/dpo_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


class StepClock:
    """A TrainerCallback that stamps every optimiser step (created lazily: transformers is heavy)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self) -> None:
                self.stamps: list[float] = []

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                self.stamps.append(time.perf_counter())

        return _Clock()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="policy folder (default: build the tiny chat model)")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dpo_step.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import polars as pl
    import torch

    from curation.testing import tiny_chat_model
    from curation.train import train
    from curation.train.data import drop_ties, load_pairs

    work = Path(tempfile.mkdtemp(prefix="curate-bench-dpo-"))
    model = args.model or str(tiny_chat_model(work / "policy"))
    rows, _ = drop_ties(load_pairs(str(DATA / "hh_rlhf_test.jsonl.gz")).rows)
    rows = rows.unique("pair_id", keep="first", maintain_order=True).head(args.pairs).with_columns(split=pl.lit("train"))
    clock = StepClock()
    started = time.perf_counter()
    result = train(
        rows, method="dpo", model=model, out=str(work / "out"), max_steps=args.steps, batch_size=args.batch_size,
        max_length=args.max_length, record=False, save_steps=10**6, logging_steps=1, callbacks=[clock],
    )  # fmt: skip
    total = time.perf_counter() - started
    stamps = clock.stamps
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    steady = sorted(per_step)[len(per_step) // 2] if per_step else None
    out = {
        "benchmark": "DPO steps through curation.train (TRL DPOTrainer)",
        "model": "tiny chat model (curation.testing)" if args.model is None else args.model,
        "pairs": rows.height,
        "steps": len(stamps),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "total_s": round(total, 2),
        "set_up_and_first_step_s": round(stamps[0] - started, 2) if stamps else None,
        "median_step_s": round(steady, 4) if steady is not None else None,
        "steps_per_s": round(1 / steady, 2) if steady else None,
        "pairs_per_s": round(args.batch_size / steady, 2) if steady else None,
        "final_loss": next((h["loss"] for h in reversed(result.log_history) if "loss" in h), None),
        "platform": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
