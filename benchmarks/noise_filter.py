"""Noise filter on real pairs with injected flips (not a test; writes benchmarks/results/noise_filter.json).

For each seed, a fresh 20% of labels is flipped; every method then scores the noisy pool and
is measured against the injected flips: AUROC of −μ, the default threshold's recall of flips and
share of good pairs lost, and the calibration of p = P(label right) (ECE against "not
injected", and against the pool's labels shown in a random order). Methods: the default
`stacked` filter, the stacked filter as it was before the `generators` signal, `stacked` with
MiniLM embeddings, the former default `bt_heads`, and the length-only cross-fitted BT baseline
every noise step reports beside itself. The filter sees who wrote each response through the
candidates table (candidate_id -> generator), as in a recipe run: a flip swaps the candidate
ids, so it swaps the generators too (checked on every seed); the pairs' `meta`, where a flip
writes `flipped`, is never a signal. Confidence
intervals (95%) resample pairs (the same resample for every seed and method, so differences
are paired) and average over seeds.

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
from curation.sources import read_pair_rows, read_source

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "noise_filter.json"
log = logging.getLogger("noise_filter")

BEFORE = "stacked (before: no generators)"
METHODS = {
    "stacked (default)": {"method": "stacked"},
    BEFORE: {"method": "stacked", "signals": ["features", "words", "shared_responses", "scores"]},
    "stacked + embeddings": {"method": "stacked", "signals": ["features", "words", "shared_responses", "generators", "embeddings", "scores"]},
    "bt_heads (former default)": {"method": "bt_heads"},
}


def auroc(score: np.ndarray, positives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties 1/2 (Mann-Whitney on ranks: fast enough to bootstrap)."""
    from scipy.stats import rankdata

    pos = positives.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((rankdata(score)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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


def bootstrap_ci(per_seed: list[tuple[np.ndarray, np.ndarray]], stat, reps: int = 1000, seed: int = 0) -> dict:
    """Mean over seeds of stat(score, flipped) and its 95% interval, resampling pairs (one resample for all seeds)."""
    n = per_seed[0][0].shape[0]
    rng = np.random.default_rng(seed)
    point = float(np.mean([stat(a, f) for a, f in per_seed]))
    draws = []
    for _ in range(reps):
        idx = rng.integers(0, n, n)
        draws.append(np.mean([stat(a[idx], f[idx]) for a, f in per_seed]))
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"mean": point, "ci95": [float(lo), float(hi)]}


def _auroc_of(score: np.ndarray, flipped: np.ndarray) -> float:
    return auroc(score, flipped)


def _recall(flagged: np.ndarray, flipped: np.ndarray) -> float:
    return float(flagged[flipped].mean())


def _lost(flagged: np.ndarray, flipped: np.ndarray) -> float:
    return float(flagged[~flipped].mean())


def intervals(kept: dict[str, list[dict]]) -> dict:
    """Bootstrap intervals of AUROC, recall and good pairs lost per method, and of AUROC minus the length-only baseline."""
    out: dict = {}
    base = kept["length-only baseline"]
    for name, seeds in kept.items():
        out[name] = {"auroc": bootstrap_ci([(-s["mu"], s["flipped"]) for s in seeds], _auroc_of)}
        if name == "length-only baseline":
            continue
        out[name]["flip_recall"] = bootstrap_ci([(s["flagged"], s["flipped"]) for s in seeds], _recall)
        out[name]["good_lost"] = bootstrap_ci([(s["flagged"], s["flipped"]) for s in seeds], _lost)
        out[name]["auroc_minus_length_only"] = paired_auroc_difference(seeds, base)
    if "stacked (default)" in kept and BEFORE in kept:
        ours, theirs = kept["stacked (default)"], kept[BEFORE]
        out["stacked (default)"]["auroc_minus_before"] = paired_auroc_difference(ours, theirs)
        for key, stat in (("flip_recall", _recall), ("good_lost", _lost)):
            paired = [(np.column_stack([s["flagged"], b["flagged"]]), s["flipped"]) for s, b in zip(ours, theirs)]
            out["stacked (default)"][f"{key}_minus_before"] = bootstrap_ci(paired, lambda a, f, st=stat: st(a[:, 0], f) - st(a[:, 1], f))
    return out


def paired_auroc_difference(ours: list[dict], theirs: list[dict]) -> dict:
    paired = [(np.column_stack([-s["mu"], -b["mu"]]), s["flipped"]) for s, b in zip(ours, theirs)]
    return bootstrap_ci(paired, lambda a, f: auroc(a[:, 0], f) - auroc(a[:, 1], f))


def thresholds(p: np.ndarray, flipped: np.ndarray) -> dict:
    """Recall and good pairs lost of the loss-bounded threshold at several caps (1.0: plain p <= 0.5)."""
    from curation.selectors.noise import loss_bounded_flags

    out = {}
    for cap in (0.1, 0.15, 0.2, 0.25, 1.0):
        f = loss_bounded_flags(p, 0.5, cap)
        out[str(cap)] = {"flagged": int(f.sum()), "flip_recall": _recall(f, flipped), "good_lost": _lost(f, flipped)}
    return out


def swapped_generators(pool: pl.DataFrame, noisy: pl.DataFrame, flipped: np.ndarray, cands: pl.DataFrame) -> dict:
    """The generators the filter sees: a flipped pair's are the clean pair's, swapped; the others unchanged."""
    ctx = SelectionContext("pair_id", candidates=cands)
    (c0, r0), (c1, r1) = ctx.pair_generators(pool), ctx.pair_generators(noisy)
    same = [(a, b) == ((r, c) if f else (c, r)) for a, b, c, r, f in zip(c1, r1, c0, r0, flipped)]
    if not all(same):
        raise AssertionError(f"{len(same) - sum(same)} pairs show generators the flip rule did not give them")
    return {"distinct": len(set(c0) | set(r0)), "flips_swap_them": True,
            "flipped_pairs_with_different_generators": int(sum(a != b for a, b, f in zip(c1, r1, flipped) if f))}


def run(data: str, pairs: int, seeds: int, rate: float, methods: list[str]) -> dict:
    from curation.embed import Embedder

    pool = read_pair_rows(DATA / data, pairs)
    cands = read_source(DATA / data).candidates.select("candidate_id", "generator")
    embed = Embedder().embed
    runs = []
    kept: dict[str, list[dict]] = {name: [] for name in ["length-only baseline", *methods]}
    for seed in range(seeds):
        flipped = np.random.default_rng(1000 + seed).random(pool.height) < rate
        noisy = apply_flips(pool, pl.DataFrame({"target_id": pool["pair_id"].filter(pl.Series(flipped)), "flip": True}))
        row: dict = {"seed": seed, "flipped": int(flipped.sum()), "generators": swapped_generators(pool, noisy, flipped, cands)}
        t0 = time.perf_counter()
        diff = log_length(noisy["chosen"].to_list()) - log_length(noisy["rejected"].to_list())
        lm = cross_fitted_length_margins(diff, noisy["prompt_id"].to_list(), folds=5, seed=seed)
        row["length-only baseline"] = {"auroc": auroc(-lm, flipped), "wall_s": time.perf_counter() - t0}
        kept["length-only baseline"].append({"mu": lm, "flipped": flipped})
        for name in methods:
            sel = SELECTORS.build("noise", {"kind": "noise", **METHODS[name], "seed": seed})
            ctx = SelectionContext("pair_id", embed=embed, stage="noise", candidates=cands)
            if "embeddings" in json.dumps(METHODS[name]) or METHODS[name]["method"] == "bt_heads":
                from curation.selectors.bt_head import pair_embeddings

                pair_embeddings(noisy, ctx)  # from the disk cache when warm; not counted in wall_s
            t0 = time.perf_counter()
            s = sel.strength(noisy, ctx)
            wall = time.perf_counter() - t0
            m = measure(s["mu"], s["p"], s["flagged"], flipped, seed)
            m["wall_s"] = wall
            kept[name].append({"mu": s["mu"], "flagged": s["flagged"], "flipped": flipped})
            if hasattr(sel, "fit"):
                m["member_auroc"] = {n: auroc(-sel.fit.members[:, j], flipped) for j, n in enumerate(sel.fit.member_names)}
                m["stacker_weights"] = sel.report["stacker_weights"]
                m["skipped_signals"] = sel.report["skipped_signals"]
                m["expected_good_lost"] = sel.report["expected_good_lost"]
                m["max_good_loss_caps"] = thresholds(s["p"], flipped)
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
    return {"pairs": pool.height, "flip_rate": rate, "seeds": seeds, "summary": summary, "intervals": intervals(kept), "runs": runs}


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
    print(json.dumps({args.data: result["intervals"]}, indent=1))


if __name__ == "__main__":
    main()
