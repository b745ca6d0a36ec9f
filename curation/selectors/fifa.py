"""FiFA: filter feedback by importance (Yang et al., ICLR 2025, arXiv 2410.10166; spec §3).

Each pair is scored independently, I = z(M) + α·z(Q) + γ·z(D): M the reward margin, Q an
optional prompt-quality score, D = log(distance from the pair's prompt to its k-th nearest
other distinct prompt + ε), a Kozachenko–Leonenko-style entropy contribution. The top-K by I
are kept (ties: lowest index). The official code is not available: z-normalisation, k = 5 and α = γ = 1 are
the spec's toolkit defaults until verified, and every one of them is a config field.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from curation.selectors import SELECTORS
from curation.selectors._inputs import EmbedWhat, item_embeddings, item_texts, l2_normalize, quality
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions

FLAT_LIMIT = 100_000  # above this, "auto" uses an IVF index (exact search is O(n²))
IVF_TRAIN_PER_LIST = 32  # k-means points per inverted list (faiss asks for at least 39 and warns below)
IVF_TRAIN_ITERATIONS = 10

log = logging.getLogger(__name__)


def nearest(
    x: np.ndarray, k: int, *, index: Literal["auto", "flat", "ivf"] = "auto", nprobe: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances and row ids of each row's k + 1 nearest rows (itself normally among them).

    "ivf" (and "auto" past FLAT_LIMIT rows): sqrt(n) inverted lists from a k-means of 32 points
    per list and 10 iterations (the lists only need to bucket nearby points; a finer k-means costs
    more than the search it saves), `nprobe` lists searched per row; a row whose lists held fewer
    than k + 1 rows is searched exactly. The recall this gives is measured against exact search
    in benchmarks/recipe_1m.py (100k synthetic prompt vectors, 2,000 queries: 0.989 at nprobe 2,
    0.9999 at 4)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if index == "flat" or (index == "auto" and n <= FLAT_LIMIT):
        idx = faiss.IndexFlatL2(d)
    else:
        nlist = max(1, int(round(np.sqrt(n))))
        idx = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        idx.cp.niter = IVF_TRAIN_ITERATIONS
        idx.cp.min_points_per_centroid = 1  # a small pool is legitimate; don't warn
        rng = np.random.default_rng(seed)
        idx.train(x[np.sort(rng.choice(n, size=min(n, IVF_TRAIN_PER_LIST * nlist), replace=False))])
        idx.nprobe = min(nprobe, nlist)
    idx.add(x)
    dist, ids = idx.search(x, k + 1)
    short = np.flatnonzero((ids < 0).any(axis=1))  # probed lists held fewer than k + 1 rows
    if short.size:
        flat = faiss.IndexFlatL2(d)
        flat.add(x)
        dist[short], ids[short] = flat.search(x[short], k + 1)
    return dist, ids


def kth_neighbour_distance(
    x: np.ndarray, k: int, *, index: Literal["auto", "flat", "ivf"] = "auto", nprobe: int = 8, seed: int = 0
) -> np.ndarray:
    """L2 distance from each row to its k-th nearest other row (itself excluded, copies included)."""
    n = len(x)
    if k >= n:
        raise SelectionError(f"fifa: k={k} neighbours needs more than {k} items; the pool has {n}")
    dist, ids = nearest(x, k, index=index, nprobe=nprobe, seed=seed)
    is_self = ids == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    col = np.where(drop <= k - 1, k, k - 1)
    kth = dist[np.arange(n), col]
    return np.sqrt(np.maximum(kth, 0.0).astype(np.float64))


def zscore(v: np.ndarray) -> np.ndarray:
    """(v − mean) / std; all zeros when v is constant."""
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def fifa_importance(
    margin: np.ndarray,
    log_distance: np.ndarray,
    prompt_quality: np.ndarray | None = None,
    *,
    alpha: float = 1.0,
    gamma: float = 1.0,
    normalize: bool = True,
) -> np.ndarray:
    """I = M + α·Q + γ·D, each term z-normalised first when `normalize`."""
    f = zscore if normalize else (lambda v: v)
    out = f(np.asarray(margin, dtype=np.float64)) + gamma * f(np.asarray(log_distance, dtype=np.float64))
    if prompt_quality is not None:
        out = out + alpha * f(np.asarray(prompt_quality, dtype=np.float64))
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, largest first, ties to the lowest index."""
    return np.argsort(-scores, kind="stable")[:k]


@SELECTORS.register("fifa")
class FiFA(Selector):
    """Top-K pairs by FiFA importance; `detail` holds the three terms and I.

    The diversity term is measured over distinct prompts (spec §3.4: one embedding per unique
    prompt): every pair of a prompt gets its prompt's k-th neighbour distance among the other
    prompts. Over pool rows instead, a prompt with k or more other pairs would find its own
    copies at distance 0, and with several pairs per prompt FiFA would reduce to top-K by margin.
    """

    pool_kinds = ("pairs", "candidates")
    version = "3"  # IVF past 100k: sqrt(n) lists, nprobe 4 (was 4 sqrt(n), 8); 2: distances over distinct prompts
    objective_name = "mean_importance"

    class Config(SelectorConfig):
        margin: str = "margin"
        prompt_quality: str | None = None
        alpha: float = 1.0
        gamma: float = 1.0
        k: int = Field(5, ge=1)
        epsilon: float = Field(1e-6, gt=0.0)
        normalize: bool = True
        knn_index: Literal["auto", "flat", "ivf"] = "auto"
        nprobe: int = Field(4, ge=1)
        embed: EmbedWhat = "prompt"

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        cfg = self.config
        n = pool.height
        texts = item_texts(pool, cfg.embed)
        distinct: dict[str, int] = {}
        of_item = np.fromiter((distinct.setdefault(t, len(distinct)) for t in texts), dtype=np.int64, count=n)
        if cfg.k >= len(distinct):
            raise SelectionError(
                f"{context.stage}: fifa k={cfg.k} neighbours needs more than {cfg.k} distinct prompts; "
                f"the pool has {len(distinct)} (in {n} items)"
            )
        size = n if budget is None else budget
        m = quality(pool, context, cfg.margin)
        q = quality(pool, context, cfg.prompt_quality) if cfg.prompt_quality else None
        first = np.unique(of_item, return_index=True)[1]
        x = l2_normalize(item_embeddings(pool, context, cfg.embed)[first])
        kth = kth_neighbour_distance(x, cfg.k, index=cfg.knn_index, nprobe=cfg.nprobe, seed=cfg.seed)
        log_d = np.log(kth + cfg.epsilon)[of_item]
        importance = fifa_importance(m, log_d, q, alpha=cfg.alpha, gamma=cfg.gamma, normalize=cfg.normalize)
        self._importance = importance
        order = top_k(importance, size)
        kept = np.zeros(n, dtype=bool)
        kept[order] = True
        rank = np.full(n, -1, dtype=np.int64)
        rank[order] = np.arange(len(order))
        self.report = {"selected": len(order), "distinct_prompts": len(distinct),
                       "prompt_quality": cfg.prompt_quality or "not used",
                       "threshold_importance": float(importance[order[-1]])}
        log.info("%s %s: %s", context.stage, "FiFA", self.report)
        detail = [
            {"importance": float(importance[i]), "margin": float(m[i]), "log_knn_distance": float(log_d[i]),
             **({"prompt_quality": float(q[i])} if q is not None else {})}
            for i in range(n)
        ]
        return decisions(
            context, context.ids(pool), kept, rank=[int(r) if r >= 0 else None for r in rank],
            reason_kept="selected", reason_dropped="budget", detail=detail,
        )

    def objective(self, rows: np.ndarray, weights: np.ndarray | None = None) -> float | None:
        """Mean importance I of `rows` (the per-pair score FiFA's top-K maximises)."""
        return float(np.average(self._importance[rows], weights=weights)) if len(rows) else None
