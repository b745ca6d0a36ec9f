"""Benchmark: kMQ, sensitivity, MIG, SIFT, FiFA and Deita on synthetic pools (default 1M items, 384-dim).

Each measurement runs in its own forked process, which builds the data itself (seeded), so the
peak RSS reported is that measurement's own (it includes the n x 384 float32 input, 1.5 GB at
1M). Side by side, in the same run and on the same data:
  - SIFT against the reference library activeft (Retriever, VTL, same λ, same faiss
    pre-selection): identical selections? time of each;
  - MIG's sparse lazy greedy against the dense greedy (identical sequences?), and a BLAS
    mat-vec dense greedy for an honest speed reference;
  - kMQ's faiss k-means against scikit-learn's KMeans (same k, iterations, k-means++ init).

activeft is benchmark-only, not a project dependency. Install it into the venv with
    pip install activeft --no-deps
(it imports only torch, numpy and faiss, which the project already has; never let pip pull
another torch). Without it the SIFT comparison is skipped and says so.

Usage:  python benchmarks/selection.py            # n = 1,000,000
        python benchmarks/selection.py --quick    # n = 50,000, smaller side-by-sides
        python benchmarks/selection.py --only mig sift
Writes benchmarks/results/selection.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

D = 384


def embeddings(n: int, seed: int = 0, centres: int = 2000, noise: float = 0.5) -> np.ndarray:
    """Unit rows around `centres` random directions (within-cluster cosine about 0.8)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, D), dtype=np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = rng.standard_normal((n, D), dtype=np.float32)
    x *= noise / np.sqrt(D)
    x += c[rng.integers(0, centres, size=n)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


# ---------------------------------------------------------------- measurements (run in children)


def bench_kmq(n: int, k: int, budget: int) -> dict:
    from curation.selectors._kmeans import kmeans
    from curation.selectors.kmq import kmq_sample

    x = embeddings(n)
    q = np.random.default_rng(1).normal(size=n)
    cl, t_km = timed(kmeans, x, k, seed=0, niter=20)
    s, t_sample = timed(kmq_sample, cl.labels, q, budget, k=k, seed=0)
    return {"n": n, "k": k, "budget": budget, "kmeans_s": t_km, "sample_s": t_sample, "total_s": t_km + t_sample,
            "inertia": float(cl.sq_distances.sum()), "selected": int(len(s.order))}


def bench_kmeans_sklearn(n: int, k: int) -> dict:
    from sklearn.cluster import KMeans

    from curation.selectors._kmeans import kmeans

    x = embeddings(n)
    cl, t_faiss = timed(kmeans, x, k, seed=0, niter=20)
    km = KMeans(n_clusters=k, n_init=1, max_iter=20, init="k-means++", random_state=0, tol=0.0)
    _, t_sk = timed(km.fit, x)
    return {"n": n, "k": k, "iterations": 20, "faiss_s": t_faiss, "sklearn_s": t_sk, "speedup": t_sk / t_faiss,
            "faiss_inertia": float(cl.sq_distances.sum()), "sklearn_inertia": float(km.inertia_)}


def bench_sensitivity(n: int, m: int) -> dict:
    from curation.selectors.sensitivity import sensitivity_sample

    x = embeddings(n)
    s, t = timed(sensitivity_sample, x, m, k=m // 10, seed=0)
    return {"n": n, "m": m, "k": m // 10, "total_s": t, "distinct": int(len(np.unique(s.draws)) + len(s.representatives))}


def mig_pool(n: int, n_labels: int, seed: int = 0):
    """Items with 1-5 Zipf-distributed labels; labels come in near-synonym groups of 3 (cos > 0.9)."""
    from curation.selectors.mig import label_graph, propagate, propagation_matrix

    rng = np.random.default_rng(seed)
    groups = rng.standard_normal((n_labels // 3 + 1, D))
    vectors = groups[np.arange(n_labels) // 3] + 0.02 * rng.standard_normal((n_labels, D))
    popularity = 1.0 / np.arange(1, n_labels + 1) ** 0.8
    popularity /= popularity.sum()
    sizes = rng.integers(1, 6, size=n)
    flat = rng.choice(n_labels, size=int(sizes.sum()), p=popularity)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    sets = [sorted(set(flat[bounds[i] : bounds[i + 1]].tolist())) for i in range(n)]
    s = np.logaddexp(0, rng.normal(size=n))
    t = time.perf_counter()
    p = propagation_matrix(label_graph(vectors, 0.9), 1.0)
    e_hat = propagate(sets, s, p)
    return e_hat, time.perf_counter() - t, int(p.nnz)


def bench_mig(n: int, n_labels: int, budget: int) -> dict:
    from curation.selectors.mig import mig_greedy_lazy

    e_hat, t_build, edges = mig_pool(n, n_labels)
    (order, _), t_lazy = timed(mig_greedy_lazy, e_hat, budget)
    return {"n": n, "labels": n_labels, "graph_nnz": edges, "e_hat_nnz": int(e_hat.nnz), "budget": budget,
            "build_s": t_build, "lazy_greedy_s": t_lazy, "selected": int(len(order))}


def bench_mig_dense(n: int, n_labels: int, budget: int) -> dict:
    from curation.selectors.mig import Phi, mig_greedy_dense, mig_greedy_lazy

    e_hat, _, _ = mig_pool(n, n_labels, seed=1)
    (lazy, lazy_g), t_lazy = timed(mig_greedy_lazy, e_hat, budget)
    dense_m = e_hat.toarray()
    (dense, dense_g), t_dense = timed(mig_greedy_dense, dense_m, budget)
    phi = Phi()

    def blas_greedy():  # the reference's dense mat-vec (BLAS), for the speed reference only
        z, avail, out = np.zeros(n_labels), np.ones(n, bool), []
        for _ in range(budget):
            g = dense_m @ phi.derivative(z)
            g[~avail] = -np.inf
            j = int(np.argmax(g))
            out.append(j)
            avail[j] = False
            z += dense_m[j]
        return out

    blas, t_blas = timed(blas_greedy)
    return {"n": n, "labels": n_labels, "budget": budget, "lazy_s": t_lazy, "dense_s": t_dense, "dense_blas_s": t_blas,
            "speedup_vs_dense": t_dense / t_lazy, "speedup_vs_dense_blas": t_blas / t_lazy,
            "identical": bool(lazy.tolist() == dense.tolist() and np.array_equal(lazy_g, dense_g)),
            "blas_agrees": bool(blas == lazy.tolist())}


def sift_data(n: int, m: int):
    x = embeddings(n)
    rng = np.random.default_rng(5)
    targets = x[rng.choice(n, size=m, replace=False)] + 0.3 * rng.standard_normal((m, D), dtype=np.float32) / np.sqrt(D)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    return x, targets.astype(np.float32)


def bench_sift(n: int, m: int, budget: int) -> dict:
    from curation.selectors.sift import sift_select

    x, targets = sift_data(n, m)
    res, t = timed(sift_select, x, targets, budget, lam=0.01, preselect_k=None, mini_batch_size=1000, seed=0)
    return {"n": n, "targets": m, "budget": budget, "preselect": "all (reference default K=None)", "levels": res.levels,
            "total_s": t, "distinct": int(len(np.unique(res.picks)))}


def bench_sift_vs_activeft(n: int, m: int, budget: int, k: int) -> dict:
    import faiss

    from curation.selectors.sift import sift_select

    try:
        import torch
        from activeft.sift import Retriever
    except ImportError:
        return {"skipped": "activeft not installed: pip install activeft --no-deps"}
    torch.set_num_threads(2)
    x, targets = sift_data(n, m)
    index = faiss.IndexFlatIP(D)
    index.add(x)
    faiss.omp_set_num_threads(2)
    ours, t_ours = timed(sift_select, x, targets, budget, lam=0.01, preselect_k=k, seed=0, index=index)
    retriever = Retriever(index, llambda=0.01, fast=False, also_query_opposite=True, device=torch.device("cpu"))
    (values, ref, _, rt), t_ref = timed(retriever.search, targets, N=budget, K=k, threads=2)
    # the SIFT part alone (pre-selection excluded) for both
    from curation.selectors.sift import preselect, vtl

    cand = preselect(x, targets.mean(axis=0), k, index)
    _, t_ours_vtl = timed(vtl, x[cand], targets, budget, 0.01)
    same = [int(a) == int(b) for a, b in zip(ours.picks.tolist(), ref.tolist())]
    first_diff = same.index(False) if False in same else None
    return {"n": n, "targets": m, "budget": budget, "preselect_K": k, "lambda": 0.01,
            "ours_s": t_ours, "activeft_s": t_ref, "speedup": t_ref / t_ours,
            "ours_sift_only_s": t_ours_vtl, "activeft_sift_only_s": rt.sift, "speedup_sift_only": rt.sift / t_ours_vtl,
            "identical": all(same), "agreeing_picks": int(sum(same)), "first_difference": first_diff,
            "repeats": int(budget - len(set(ours.picks.tolist())))}


def bench_fifa(n: int, budget: int) -> dict:
    from curation.selectors.fifa import fifa_importance, kth_neighbour_distance, top_k

    x = embeddings(n)
    d, t_knn = timed(kth_neighbour_distance, x, 5)
    rng = np.random.default_rng(2)
    order, t_rest = timed(lambda: top_k(fifa_importance(rng.normal(size=n), np.log(d + 1e-6), rng.normal(size=n)), budget))
    return {"n": n, "budget": budget, "knn_index": "flat" if n <= 100_000 else "ivf", "knn_s": t_knn,
            "score_topk_s": t_rest, "total_s": t_knn + t_rest}


def bench_deita(n: int, budget: int) -> dict:
    from curation.selectors.deita import deita_filter

    x = embeddings(n)
    s = np.random.default_rng(3).normal(size=n)
    res, t = timed(deita_filter, x, s, budget, 0.9)
    return {"n": n, "budget": budget, "threshold": 0.9, "total_s": t, "kept": int(len(res.kept)), "examined": int(res.examined)}


def bench_selector_overhead(n: int) -> dict:
    """The full KMQ.select path (pool frame, embed lookup, decisions) against the bare algorithm."""
    import polars as pl

    from curation.selectors import SELECTORS
    from curation.selectors.base import SelectionContext

    x = embeddings(n)
    pool = pl.DataFrame({"pair_id": [f"p{i}" for i in range(n)], "prompt": [f"item-{i}" for i in range(n)],
                         "margin": np.random.default_rng(1).normal(size=n)})
    ctx = SelectionContext(id_column="pair_id", embed=lambda texts: x[[int(t[5:]) for t in texts]])
    sel = SELECTORS.build("kmq", {"kind": "kmq", "k": 256, "fraction": 0.05})
    d, t = timed(sel.select, pool, ctx)
    return {"n": n, "kmq_select_s": t, "rows": d.height}


# ---------------------------------------------------------------- driver


def _child(fn, kwargs, queue):
    try:
        out = fn(**kwargs)
        out["peak_rss_mb"] = peak_rss_mb()
    except Exception as exc:  # a failed measurement is reported, not fatal
        out = {"error": f"{type(exc).__name__}: {exc}"}
    queue.put(out)


def run(name: str, fn, **kwargs) -> dict:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, kwargs, queue))
    t = time.perf_counter()
    proc.start()
    out = queue.get()
    proc.join()
    out["wall_s"] = time.perf_counter() - t
    print(f"[{name}] {json.dumps(out, default=float)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="n = 50,000 and smaller side-by-sides")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "selection.json"))
    args = ap.parse_args()
    n = 50_000 if args.quick else args.n
    side = 20_000 if args.quick else 100_000
    plan = {
        "kmq": lambda: run("kmq", bench_kmq, n=n, k=256, budget=n // 20),
        "kmq_vs_sklearn": lambda: run("kmq_vs_sklearn", bench_kmeans_sklearn, n=side, k=64),
        "sensitivity": lambda: run("sensitivity", bench_sensitivity, n=n, m=2560),
        "mig": lambda: run("mig", bench_mig, n=n, n_labels=4531, budget=n // 20),
        "mig_lazy_vs_dense": lambda: run("mig_lazy_vs_dense", bench_mig_dense, n=min(n, 20_000), n_labels=4531,
                                         budget=100 if args.quick else 200),
        "sift": lambda: run("sift", bench_sift, n=n, m=10, budget=100),
        "sift_vs_activeft": lambda: run("sift_vs_activeft", bench_sift_vs_activeft, n=n, m=10, budget=200, k=1000),
        "fifa": lambda: run("fifa", bench_fifa, n=n, budget=n // 20),
        "deita": lambda: run("deita", bench_deita, n=n, budget=10_000),
        "selector_overhead": lambda: run("selector_overhead", bench_selector_overhead, n=min(n, 200_000)),
    }
    chosen = args.only or list(plan)
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.exists() and args.only else {}
    results = previous.get("results", {})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        results[name] = plan[name]()
        report = {  # written after every measurement, so a long run leaves what it finished
            "benchmark": "selectors",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "n": n,
            "dim": D,
            "results": results,
        }
        out_path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
