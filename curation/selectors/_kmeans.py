"""faiss k-means shared by kmq, sensitivity sampling and MIG's fallback labels; choose_k by silhouette."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.selectors.base import SelectionError


@dataclass
class Clustering:
    centroids: np.ndarray  # (k, d) float32
    labels: np.ndarray  # (n,) int64, nearest centroid of each point
    sq_distances: np.ndarray  # (n,) float32, squared L2 distance to that centroid


def kmeans(x: np.ndarray, k: int, *, seed: int, niter: int = 20, nredo: int = 1) -> Clustering:
    """Lloyd k-means with faiss (L2) from k-means++ seeds, every point assigned; deterministic for a seed.

    `nredo` restarts, each from its own k-means++ seeds; the one with the lowest training
    objective is kept (faiss's own restarts would start from random points). Training uses at
    most 256 points per centroid (a uniform subsample, as faiss does); every point is then
    assigned to its nearest centroid. k-means++ seeding matters: faiss's random
    initialisation often merges well-separated clusters. Seeds come from at most 32 points per
    centroid, which keeps the sequential seeding cheap.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if k < 1:
        raise SelectionError(f"k-means: k must be at least 1, got {k}")
    if k > n:
        raise SelectionError(f"k-means: k={k} clusters but only {n} items; lower k")
    if k == n:  # every point its own centre: faiss refuses k == n with few points
        return Clustering(x.copy(), np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.float32))
    rng = np.random.default_rng(seed)
    train = x if n <= 256 * k else x[np.sort(rng.choice(n, size=256 * k, replace=False))]
    best = None
    for redo in range(nredo):
        km = faiss.Kmeans(d, k, niter=niter, seed=(int(seed) + redo) % (2**31), verbose=False, spherical=False)
        km.cp.min_points_per_centroid = 1  # small pools are legitimate; don't warn
        km.cp.max_points_per_centroid = 256
        seeds = train if train.shape[0] <= 32 * k else train[rng.choice(train.shape[0], size=32 * k, replace=False)]
        km.train(train, init_centroids=kmeans_plus_plus(seeds, k, rng))
        if best is None or km.obj[-1] < best.obj[-1]:
            best = km
    dist, idx = best.index.search(x, 1)
    return Clustering(best.centroids.copy(), idx[:, 0].astype(np.int64), np.maximum(dist[:, 0], 0.0))


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds: each next centre drawn with probability ∝ squared distance to the nearest one."""
    n = x.shape[0]
    sq_norm = np.einsum("ij,ij->i", x, x).astype(np.float64)
    centres = [int(rng.integers(n))]
    # einsum, not BLAS: a threaded sgemv is many times slower on a busy 2-core machine
    d2 = np.maximum(sq_norm - 2 * np.einsum("ij,j->i", x, x[centres[0]]) + sq_norm[centres[0]], 0.0)
    for _ in range(1, k):
        total = d2.sum()
        c = int(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right")) if total > 0 else int(rng.integers(n))
        c = min(c, n - 1)
        centres.append(c)
        d2 = np.minimum(d2, np.maximum(sq_norm - 2 * np.einsum("ij,j->i", x, x[c]) + sq_norm[c], 0.0))
    return np.ascontiguousarray(x[centres], dtype=np.float32)


def choose_k(
    x: np.ndarray, candidates: list[int], *, seed: int, sample: int = 5000, niter: int = 20
) -> tuple[int, dict[int, float]]:
    """The k among `candidates` with the best silhouette score on a uniform subsample.

    Yu et al. (kMQ, App. B) report that the silhouette score tracks downstream quality; the
    score is computed on at most `sample` points so that choosing stays cheap on large pools.
    """
    from sklearn.metrics import silhouette_score

    n = x.shape[0]
    rng = np.random.default_rng(seed)
    sub = x if n <= sample else x[np.sort(rng.choice(n, size=sample, replace=False))]
    usable = [k for k in candidates if 2 <= k < sub.shape[0]]
    if not usable:
        raise SelectionError(
            f"choose_k: no candidate k in {candidates} is in [2, {sub.shape[0] - 1}] for {n} items"
        )
    scores: dict[int, float] = {}
    for k in usable:
        labels = kmeans(sub, k, seed=seed, niter=niter).labels
        scores[k] = float(silhouette_score(sub, labels)) if len(np.unique(labels)) > 1 else -1.0
    best = max(usable, key=lambda k: (scores[k], -k))
    return best, scores
