"""Quality benchmark on real pairs from ../shared/data (not a test; writes benchmarks/results/quality.json).

1. Noise filter: inject a known fraction of flipped labels into real pairs and measure how well
   the cross-fitted Bradley-Terry heads on MiniLM embeddings find them (AUROC of -μ against the
   injected flips, precision at the flip rate, and the flagged set's precision / recall), and
   cleanlab's confident learning on the same out-of-sample probabilities.
2. Selection: split prompts 80/20; from the training pool each selector (and random) picks 20%;
   a logistic BT head on frozen MiniLM embeddings trained on that subset is scored by pairwise
   accuracy on the held-out pairs. Both with the original labels and with 20% injected flips in
   the training pool. Several seeds; mean and spread.

    python benchmarks/quality.py [--data hh_rlhf_test.jsonl.gz] [--limit 2400] [--seeds 3] [--out PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import argparse
import gzip
import json
import logging
import platform
import time

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation import schema
from curation.select import apply_selectors
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError, minilm_embed, prompt_texts
from curation.selectors.bt_head import cross_fitted_margins, fit_bt_head, last_user_turns, pair_embeddings
from curation.selectors.noise import apply_flips

DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "quality.json"
log = logging.getLogger("quality")


def load_pool(path: Path, limit: int) -> pl.DataFrame:
    rows = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("tie") or r["chosen"] == r["rejected"]:
                continue
            pid = schema.prompt_id(r["messages"])
            rows.append(
                {
                    "pair_id": r["id"],
                    "prompt_id": pid,
                    "chosen_id": schema.response_id(pid, r["chosen"]),
                    "rejected_id": schema.response_id(pid, r["rejected"]),
                    "prompt": r["messages"],
                    "chosen": r["chosen"],
                    "rejected": r["rejected"],
                }
            )
            if len(rows) >= limit:
                break
    return pl.DataFrame(rows)


class CachedEmbedder:
    """MiniLM with an in-memory cache: every text is embedded once for the whole benchmark."""

    def __init__(self) -> None:
        self.cache: dict[str, np.ndarray] = {}

    def warm(self, texts: list[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for start in range(0, len(todo), 512):
            batch = todo[start : start + 512]
            for t, v in zip(batch, minilm_embed(batch)):
                self.cache[t] = v
            log.info("embedded %d / %d texts", min(start + 512, len(todo)), len(todo))

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.warm(texts)
        return np.stack([self.cache[t] for t in texts])


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positives, scores))


def flip_rows(pool: pl.DataFrame, mask: np.ndarray) -> pl.DataFrame:
    ids = pool["pair_id"].to_numpy()[mask].tolist()
    decided = pl.DataFrame({"target_id": ids, "flip": [True] * len(ids)}, schema={"target_id": pl.String, "flip": pl.Boolean})
    return apply_flips(pool, decided)


def noise_benchmark(pool: pl.DataFrame, embed: CachedEmbedder, rate: float, seeds: int) -> dict:
    results = []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        mask = rng.random(pool.height) < rate
        noisy = flip_rows(pool, mask)
        ctx = SelectionContext("pair_id", embed=embed, stage="noise")
        t0 = time.perf_counter()
        heads = SELECTORS.build("noise", {"kind": "noise", "method": "bt_heads", "heads": 5, "folds": 5, "seed": seed})
        s = heads.strength(noisy, ctx)
        wall = time.perf_counter() - t0
        k = int(mask.sum())
        top = np.argsort(s["mu"], kind="stable")[:k]
        flagged = s["flagged"]
        cl = SELECTORS.build("noise", {"kind": "noise", "method": "confident_learning", "heads": 5, "folds": 5, "seed": seed})
        cl_flagged = cl.strength(noisy, ctx)["flagged"]
        results.append(
            {
                "seed": seed,
                "flipped": k,
                "auroc": auroc(-s["mu"], mask),
                "precision_at_flip_rate": float(mask[top].mean()),
                "flagged_mu_below_0": int(flagged.sum()),
                "flagged_precision": float(mask[flagged].mean()) if flagged.any() else None,
                "flagged_recall": float(flagged[mask].mean()),
                "cleanlab_flagged": int(cl_flagged.sum()),
                "cleanlab_precision": float(mask[cl_flagged].mean()) if cl_flagged.any() else None,
                "cleanlab_recall": float(cl_flagged[mask].mean()),
                "mean_sigma": float(s["sigma"].mean()),
                "wall_s": wall,
            }
        )
        log.info("noise seed %d: %s", seed, results[-1])
    summary = {}
    for key in ("auroc", "precision_at_flip_rate", "flagged_precision", "flagged_recall", "cleanlab_precision", "cleanlab_recall"):
        vals = [r[key] for r in results if r[key] is not None]
        summary[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    return {"flip_rate": rate, "pairs": pool.height, "method": "bt_heads (5 heads x 5 folds, MiniLM prompt+response)", "runs": results, "summary": summary}


def selector_steps(kind: str, budget: int, seed: int) -> list[dict]:
    if kind == "random":
        return [{"kind": "random", "budget": budget, "seed": seed}]
    if kind == "noise+random":
        return [{"kind": "noise", "method": "bt_heads", "heads": 3, "seed": seed}, {"kind": "random", "budget": budget, "seed": seed}]
    if kind == "dedup+random":
        return [{"kind": "dedup", "method": "minhash"}, {"kind": "random", "budget": budget, "seed": seed}]
    if kind == "length":
        return [{"kind": "length", "max_ratio": 3.0}, {"kind": "random", "budget": budget, "seed": seed}]
    if kind == "top_k":
        return [{"kind": "top_k", "by": "margin", "budget": budget, "seed": seed}]
    return [{"kind": kind, "budget": budget, "seed": seed}]


def accuracy(w: np.ndarray, diff: np.ndarray) -> float:
    return float((diff @ w > 0).mean())


def selection_benchmark(pool: pl.DataFrame, embed: CachedEmbedder, seeds: int, fraction: float, noise_rate: float) -> dict:
    prompt_bucket = np.array([int(schema.content_hash("split", p)[:8], 16) % 5 for p in pool["prompt_id"].to_list()])
    train_all, test = pool.filter(pl.Series(prompt_bucket != 0)), pool.filter(pl.Series(prompt_bucket == 0))
    ctx0 = SelectionContext("pair_id", embed=embed)
    tc, tr = pair_embeddings(test, ctx0)
    test_diff = tc - tr
    kinds = ["random", "top_k", "noise+random", "dedup+random", "length"] + [
        k for k in ("kmq", "sensitivity", "mig", "sift", "fifa", "deita") if k in SELECTORS.names()
    ]
    settings = {"clean": 0.0, f"flipped_{int(noise_rate * 100)}pct": noise_rate}
    out: dict = {"train_pairs": train_all.height, "test_pairs": test.height, "fraction": fraction, "settings": {}}
    for name, rate in settings.items():
        per_kind: dict[str, list[float]] = {k: [] for k in kinds + ["all_train_pairs"]}
        skipped: dict[str, str] = {}
        for seed in range(seeds):
            rng = np.random.default_rng(2000 + seed)
            train = flip_rows(train_all, rng.random(train_all.height) < rate) if rate else train_all
            ctx = SelectionContext("pair_id", embed=embed)
            c, r = pair_embeddings(train, ctx)
            diff = c - r
            # quality for margin-based selectors: out-of-fold BT margin on the training pool itself
            mu = cross_fitted_margins(diff, train["prompt_id"].to_list(), heads=3, folds=5, seed=seed).mean(axis=1)
            train_m = train.with_columns(margin=pl.Series(mu))
            per_kind["all_train_pairs"].append(accuracy(fit_bt_head(diff), test_diff))
            budget = int(round(fraction * train.height))
            for kind in kinds:
                if kind in skipped:
                    continue
                t0 = time.perf_counter()
                try:
                    res = apply_selectors(train_m, selector_steps(kind, budget, seed), SelectionContext("pair_id", embed=embed), coverage="prompts")
                except (SelectionError, ValueError) as exc:
                    skipped[kind] = f"{type(exc).__name__}: {exc}"
                    log.warning("%s skipped: %s", kind, exc)
                    continue
                keep = train_m["pair_id"].is_in(pl.Series(res.kept_ids, dtype=pl.String).implode()).to_numpy()
                sel = train_m.filter(pl.Series(keep))
                final = apply_flips(sel, res.decisions.filter(pl.col("target_id").is_in(sel["pair_id"].implode())))
                fc, fr = pair_embeddings(final, SelectionContext("pair_id", embed=embed))
                per_kind[kind].append(accuracy(fit_bt_head(fc - fr), test_diff))
                log.info("%s seed %d %s: %d pairs, acc %.4f (%.1fs)", name, seed, kind, final.height, per_kind[kind][-1], time.perf_counter() - t0)
        out["settings"][name] = {
            "train_flip_rate": rate,
            "accuracy": {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v} for k, v in per_kind.items() if v},
            "skipped": skipped,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="hh_rlhf_test.jsonl.gz")
    parser.add_argument("--limit", type=int, default=2400)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--flip-rate", type=float, default=0.2)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.perf_counter()
    pool = load_pool(DATA / args.data, args.limit)
    embed = CachedEmbedder()
    turns = last_user_turns(pool)
    embed.warm(prompt_texts(pool) + [f"{p}\n\n{c}" for p, c in zip(turns, pool["chosen"])] + [f"{p}\n\n{r}" for p, r in zip(turns, pool["rejected"])])
    embed_s = time.perf_counter() - t0
    result = {
        "data": args.data,
        "pairs": pool.height,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "embed_s": embed_s,
        "noise": noise_benchmark(pool, embed, args.flip_rate, args.seeds),
        "selection": selection_benchmark(pool, embed, args.seeds, args.fraction, args.flip_rate),
    }
    result["total_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"noise": result["noise"]["summary"],
                      "selection": {k: {s: v["mean"] for s, v in d["accuracy"].items()} for k, d in result["selection"]["settings"].items()}}, indent=2))


if __name__ == "__main__":
    main()
