"""Benchmark: what the issue-12 fixes change on a real slice (1,000 AlpacaEval 2 pairs), before/after.

The slice: the pairs of the first 100 prompts (sorted by prompt) of alpaca_eval2_gpt4turbo_pairs
(10 pairs per prompt, ties dropped), margin = logit of the annotator's P(chosen better), clipped
to ±10; prompts embedded with MiniLM. "Before" is the behaviour up to commit f1d0723, rebuilt
here from the same functions (FiFA's k-th neighbour over pool rows, semantic dedup over the 16
nearest neighbours, kMQ's k-means with 20 iterations and 1 restart, unscaled sensitivity weights).
Each selector also reports its objective beside the new 20-draw random control.

Also times k-means at the reference setting (300 iterations, 5 restarts) against the old one
(20, 1) on synthetic 384-d pools of 10,000 and 50,000 items, k = 64.

Usage:  python benchmarks/selector_fixes.py     # writes benchmarks/results/selector_fixes.json
"""

from __future__ import annotations

import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data/alpaca_eval2_gpt4turbo_pairs.jsonl.gz")


def load_slice(prompts: int = 100) -> pl.DataFrame:
    from curation import schema

    with gzip.open(DATA, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    keep = set(sorted({r["prompt"] for r in rows})[:prompts])
    out = []
    for r in rows:
        if r["prompt"] not in keep or r.get("tie"):
            continue
        p = min(max(float(r["p_chosen"]), 1e-6), 1 - 1e-6)
        pid = schema.prompt_id(r["messages"])
        out.append({"pair_id": r["id"], "prompt_id": pid, "chosen_id": f"{r['id']}:c", "rejected_id": f"{r['id']}:r",
                    "prompt": r["messages"], "chosen": r["chosen"], "rejected": r["rejected"],
                    "margin": float(np.clip(math.log(p / (1 - p)), -10, 10))})
    return schema.frame(sorted(out, key=lambda r: r["pair_id"]), "version_rows")


def kept_rows(d: pl.DataFrame) -> np.ndarray:
    return np.flatnonzero(d["kept"].to_numpy())


def fifa(pool, ctx, budget: int) -> dict:
    from curation.selectors import SELECTORS
    from curation.selectors._inputs import item_embeddings, l2_normalize
    from curation.selectors.fifa import fifa_importance, kth_neighbour_distance, top_k

    after = kept_rows(SELECTORS.build("fifa", {"kind": "fifa", "budget": budget}).select(pool, ctx))
    m = pool["margin"].to_numpy()
    x = l2_normalize(item_embeddings(pool, ctx, "prompt"))
    before_kth = kth_neighbour_distance(x, 5)  # over pool rows, copies included
    before_log_d = np.log(before_kth + 1e-6)
    before = np.sort(top_k(fifa_importance(m, before_log_d), budget))
    by_margin = set(top_k(m, budget).tolist())
    prompts = pool["prompt_id"].to_numpy()
    row = lambda rows: {"distinct_prompts": int(len(set(prompts[rows]))), "mean_margin": float(m[rows].mean()),
                        "overlap_with_top_k_by_margin": len(by_margin & set(rows.tolist()))}
    return {"budget": budget, "before": {**row(before), "pairs_at_log_eps": int((before_log_d < np.log(2e-6)).sum()),
                                          "max_kth_distance": float(before_kth.max())},
            "after": row(after), "overlap_before_after": len(set(before.tolist()) & set(after.tolist()))}


def dedup(pool, ctx, threshold: float = 0.85) -> dict:
    import faiss

    from curation.selectors import SELECTORS
    from curation.selectors.dedup import dedup_texts

    out = {}
    for field in ("prompt", "response"):
        d = SELECTORS.build("dedup", {"kind": "dedup", "method": "semantic", "field": field,
                                      "threshold": threshold}).select(pool, ctx)
        emb = np.ascontiguousarray(ctx.embeddings(dedup_texts(pool, field)), dtype=np.float32)
        faiss.normalize_L2(emb)
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        sims, nbrs = index.search(emb, min(17, len(emb)))
        kept = np.zeros(len(emb), dtype=bool)
        for i in range(len(emb)):  # the old rule: only the 16 nearest neighbours looked at
            kept[i] = not any(s >= threshold and j < i and kept[j] for s, j in zip(sims[i], nbrs[i]))
        out[field] = {"threshold": threshold, "kept_before_16nn": int(kept.sum()), "kept_after_radius": int(d["kept"].sum())}
    return out


def kmq(pool, ctx, budget: int) -> dict:
    from curation.selectors import SELECTORS
    from curation.selectors._inputs import item_embeddings, l2_normalize
    from curation.selectors._kmeans import kmeans

    x = l2_normalize(item_embeddings(pool, ctx, "prompt"))
    out = {}
    picks = {}
    for name, niter, nredo in (("before_20x1", 20, 1), ("after_300x5", 300, 5)):
        started = time.perf_counter()
        cl = kmeans(x, 16, seed=42, niter=niter, nredo=nredo)
        seconds = time.perf_counter() - started
        sel = SELECTORS.build("kmq", {"kind": "kmq", "k": 16, "budget": budget, "niter": niter, "nredo": nredo})
        picks[name] = set(kept_rows(sel.select(pool, ctx)).tolist())
        out[name] = {"kmeans_seconds": round(seconds, 3), "inertia": float(cl.sq_distances.sum())}
    out["same_selection"] = len(picks["before_20x1"] & picks["after_300x5"])
    out["budget"] = budget
    return out


def kmeans_timing() -> list[dict]:
    from curation.selectors._kmeans import kmeans

    rows = []
    for n in (10_000, 50_000):
        rng = np.random.default_rng(0)
        c = rng.standard_normal((500, 384)).astype(np.float32)
        x = c[rng.integers(0, 500, size=n)] + 0.6 * rng.standard_normal((n, 384)).astype(np.float32) / np.sqrt(384) * 20
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        for niter, nredo in ((20, 1), (300, 5)):
            started = time.perf_counter()
            cl = kmeans(x, 64, seed=0, niter=niter, nredo=nredo)
            rows.append({"n": n, "k": 64, "niter": niter, "nredo": nredo,
                         "seconds": round(time.perf_counter() - started, 2), "inertia": float(cl.sq_distances.sum())})
            print(rows[-1], flush=True)
    return rows


def sensitivity(pool, ctx) -> dict:
    from curation.selectors import SELECTORS

    out = {}
    for m in (100, 400):
        sel = SELECTORS.build("sensitivity", {"kind": "sensitivity", "budget": m})
        d = sel.select(pool, ctx)
        w = d.filter(d["kept"])["weight"].to_numpy()
        out[f"m={m}"] = {"mean_weight_before": sel.report["weight_scale"], "mean_weight_after": float(w.mean()),
                         "weight_sum_after": float(w.sum())}
    return out


def controls(pool, ctx) -> list[dict]:
    from curation.select import apply_selectors

    steps = [{"kind": "fifa", "budget": 200}, {"kind": "kmq", "k": 16, "budget": 200},
             {"kind": "sift", "budget": 100}, {"kind": "mig", "labels": "clusters", "budget": 200},
             {"kind": "random", "budget": 200}]
    out = []
    for step in steps:
        rep = apply_selectors(pool, [step], ctx).report["steps"][0]
        ctl = rep["random_control"]
        out.append({"kind": step["kind"], "objective": rep["objective"],
                    "selection": {k: rep["selection"].get(k) for k in ("objective", "mean_margin", "cluster_coverage")},
                    "random_control": {k: ctl.get(k) for k in ("objective", "mean_margin", "cluster_coverage")}})
        print(out[-1], flush=True)
    return out


def main() -> None:
    from curation.selectors import SELECTORS
    from curation.selectors.base import SelectionContext, SelectionError, default_embedder

    pool = load_slice()
    ctx = SelectionContext("pair_id", embed=default_embedder())
    result = {"slice": {"pairs": pool.height, "prompts": pool["prompt_id"].n_unique(), "source": DATA.name}}
    result["fifa"] = fifa(pool, ctx, 200)
    print(result["fifa"], flush=True)
    result["dedup_semantic"] = dedup(pool, ctx)
    print(result["dedup_semantic"], flush=True)
    result["kmq"] = kmq(pool, ctx, 200)
    print(result["kmq"], flush=True)
    result["sensitivity"] = sensitivity(pool, ctx)
    try:
        SELECTORS.build("mig", {"kind": "mig", "budget": 200}).select(pool, ctx)
        result["mig_labels_auto_without_tags"] = "ran"
    except SelectionError as exc:
        result["mig_labels_auto_without_tags"] = f"error (before: silently k-means clusters): {exc}"
    result["controls"] = controls(pool, ctx)
    result["kmeans_timing"] = kmeans_timing()
    path = ROOT / "benchmarks" / "results" / "selector_fixes.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
