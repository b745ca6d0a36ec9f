"""Noise filter on real pairs with injected flips (not a test; writes benchmarks/results/noise_filter.json).

For each seed, a fresh 20% of labels is flipped; every method then scores the noisy pool and
is measured against the injected flips: AUROC of −μ, the default threshold's recall of flips and
share of good pairs lost, and the calibration of p = P(label right) (ECE against "not
injected", and against the pool's labels shown in a random order). Methods: the default
`stacked` filter, `stacked` with MiniLM embeddings, the former default `bt_heads`, and the
length-only cross-fitted BT baseline every noise step reports beside itself.

    python -m benchmarks.noise_filter --data alpaca_eval2_gpt4turbo_pairs.jsonl.gz --pairs 3000 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from curation.rows import apply_flips
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext
from curation.selectors.pair_features import log_length
from curation.selectors.stacked_bt import (
    cross_fitted_length_margins,
    expected_calibration_error,
)
from curation.sources import read_pair_rows

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "noise_filter.json"
log = logging.getLogger("noise_filter")

METHODS = {
    "stacked (default)": {"method": "stacked"},
    "stacked + embeddings": {"method": "stacked", "signals": ["features", "words", "embeddings", "scores"]},
    "bt_heads (former default)": {"method": "bt_heads"},
}


def auroc(score: np.ndarray, positives: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positives, score))


def measure(mu: np.ndarray, p: np.ndarray, flagged: np.ndarray, flipped: np.ndarray, seed: int) -> dict:
    shown = np.random.default_rng(seed).random(p.size) < 0.5  # each pair in a random order
    ece_truth, table = expected_calibration_error(p, ~flipped)
    ece_labels, _ = expected_calibration_error(np.where(shown, p, 1 - p), shown)
    return {
        "auroc": auroc(-mu, flipped),
        "flagged": int(flagged.sum()),
        "flip_recall": float(flagged[flipped].mean()),
        "good_lost": float(flagged[~flipped].mean()),
        "flagged_precision": float(flipped[flagged].mean()) if flagged.any() else None,
        "ece_vs_injected": ece_truth,
        "ece_vs_pool_labels": ece_labels,
        "reliability_vs_injected": table,
    }


def run(data: str, pairs: int, seeds: int, rate: float, methods: list[str]) -> dict:
    from curation.embed import Embedder

    pool = read_pair_rows(DATA / data, pairs)
    embed = Embedder().embed
    runs = []
    for seed in range(seeds):
        flipped = np.random.default_rng(1000 + seed).random(pool.height) < rate
        noisy = apply_flips(pool, pl.DataFrame({"target_id": pool["pair_id"].filter(pl.Series(flipped)), "flip": True}))
        row: dict = {"seed": seed, "flipped": int(flipped.sum())}
        t0 = time.perf_counter()
        diff = log_length(noisy["chosen"].to_list()) - log_length(noisy["rejected"].to_list())
        lm = cross_fitted_length_margins(diff, noisy["prompt_id"].to_list(), folds=5, seed=seed)
        row["length-only baseline"] = {"auroc": auroc(-lm, flipped), "wall_s": time.perf_counter() - t0}
        for name in methods:
            sel = SELECTORS.build("noise", {"kind": "noise", **METHODS[name], "seed": seed})
            ctx = SelectionContext("pair_id", embed=embed, stage="noise")
            if "embeddings" in json.dumps(METHODS[name]) or METHODS[name]["method"] == "bt_heads":
                from curation.selectors.bt_head import pair_embeddings

                pair_embeddings(noisy, ctx)  # from the disk cache when warm; not counted in wall_s
            t0 = time.perf_counter()
            s = sel.strength(noisy, ctx)
            wall = time.perf_counter() - t0
            m = measure(s["mu"], s["p"], s["flagged"], flipped, seed)
            m["wall_s"] = wall
            if hasattr(sel, "fit"):
                m["member_auroc"] = {n: auroc(-sel.fit.members[:, j], flipped) for j, n in enumerate(sel.fit.member_names)}
                m["stacker_weights"] = sel.report["stacker_weights"]
                k = int(s["flagged"].sum())
                base = np.zeros(flipped.size, dtype=bool)
                base[np.argsort(lm, kind="stable")[:k]] = True
                m["length_baseline_at_same_count"] = {"flip_recall": float(base[flipped].mean()), "good_lost": float(base[~flipped].mean())}
            row[name] = m
            log.info("%s seed %d %s: auroc %.3f recall %.3f lost %.3f ece %.3f (%.0fs)", data, seed, name, m["auroc"],
                     m["flip_recall"], m["good_lost"], m["ece_vs_injected"], wall)
        runs.append(row)
    summary: dict = {}
    for name in ["length-only baseline", *methods]:
        keys = [k for k, v in runs[0][name].items() if isinstance(v, (int, float)) and v is not None]
        summary[name] = {k: {"mean": float(np.mean([r[name][k] for r in runs])), "std": float(np.std([r[name][k] for r in runs]))} for k in keys}
    return {"pairs": pool.height, "flip_rate": rate, "seeds": seeds, "summary": summary, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="alpaca_eval2_gpt4turbo_pairs.jsonl.gz")
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--flip-rate", type=float, default=0.2)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated names of METHODS")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run(args.data, args.pairs, args.seeds, args.flip_rate, args.methods.split(","))
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    out[args.data] = {**result, "machine": "2 shared CPU cores", "load_note": "wall times taken under load from other jobs"}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({args.data: result["summary"]}, indent=1))


if __name__ == "__main__":
    main()
