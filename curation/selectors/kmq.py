"""kMQ: k-means clusters, quality-weighted sampling inside each (Yu et al., arXiv 2409.11378; spec §4).

Cluster the item embeddings with faiss k-means, split the budget over clusters (proportional to
their size by largest remainder, or uniform with the shortfall of small clusters redistributed)
and draw each cluster's share with probability softmax(quality / τ), without replacement by
default. `mode="code"` reproduces the reference code instead: integer-cast quality, the same
floor(b/k) for every cluster capped at its size, nothing redistributed, τ = 1.

Iterative kMQ (§4.3): after a training round, `refine` turns per-item scores S into new cluster
weights (softmax of each cluster's mean S; clusters without scored items get the mean) and the
next round's additions, drawn uniformly from each cluster's unselected members.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from curation.selectors import SELECTORS
from curation.selectors._inputs import EmbedWhat, item_embeddings, l2_normalize, quality
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions

log = logging.getLogger(__name__)


def allocate(sizes: np.ndarray, budget: int, weights: np.ndarray, *, capped: bool = True) -> np.ndarray:
    """Integer per-cluster counts summing to `budget`, proportional to `weights`.

    Water-filling: a cluster never gets more than its size when `capped` (sampling without
    replacement); what it cannot take goes to the others in proportion to their weights. The
    fractional shares are rounded by largest remainder (ties: lowest cluster index).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    w = np.where(sizes > 0, np.asarray(weights, dtype=np.float64), 0.0)
    cap = sizes.astype(np.float64) if capped else np.full(len(sizes), np.inf)
    total = sizes.sum() if capped else np.inf
    if budget > total:
        raise SelectionError(f"kmq: budget {budget} exceeds the {total} items available")
    if budget == 0 or w.sum() <= 0:
        return np.zeros(len(sizes), dtype=np.int64)
    share = np.zeros(len(sizes))
    full = np.zeros(len(sizes), dtype=bool)
    while True:
        free = (~full) & (w > 0)
        if not free.any():
            share[full] = cap[full]
            break
        t = (budget - cap[full].sum()) / w[free].sum()
        newly = free & (t * w >= cap)
        if not newly.any():
            share[free] = t * w[free]
            share[full] = cap[full]
            break
        full |= newly
    counts = np.minimum(np.floor(share), cap).astype(np.int64)
    short = budget - int(counts.sum())
    if short > 0:
        frac = share - counts
        open_ = np.flatnonzero(counts < cap)
        order = open_[np.argsort(-frac[open_], kind="stable")]
        counts[order[:short]] += 1
    return counts


def softmax_within(labels: np.ndarray, logits: np.ndarray, k: int) -> np.ndarray:
    """p_i = exp(logit_i) / Σ over i's cluster, computed stably per cluster."""
    top = np.full(k, -np.inf)
    np.maximum.at(top, labels, logits)
    e = np.exp(logits - top[labels])
    return e / np.bincount(labels, weights=e, minlength=k)[labels]


@dataclass
class KMQSample:
    order: np.ndarray  # selected item indices in draw order (cluster by cluster); repeats when replace
    labels: np.ndarray  # cluster of every item
    counts: np.ndarray  # per-cluster allocation
    probabilities: np.ndarray  # within-cluster sampling probability of every item


def kmq_sample(
    labels: np.ndarray,
    quality_: np.ndarray,
    budget: int,
    *,
    k: int,
    seed: int,
    temperature: float = 1.0,
    allocation: Literal["proportional", "uniform"] = "proportional",
    replace: bool = False,
    mode: Literal["toolkit", "code"] = "toolkit",
) -> KMQSample:
    """Split `budget` over the clusters in `labels` and draw each share by softmax(quality/τ)."""
    labels = np.asarray(labels, dtype=np.int64)
    q = np.asarray(quality_, dtype=np.float64)
    sizes = np.bincount(labels, minlength=k)
    if mode == "code":
        q = q.astype(np.int64).astype(np.float64)  # the reference casts eval_score to int64
        temperature, replace = 1.0, False
        counts = np.minimum(budget // k, sizes)  # same share per cluster, nothing redistributed
    else:
        weights = sizes if allocation == "proportional" else np.ones(k)
        counts = allocate(sizes, budget, weights, capped=not replace)
    p = softmax_within(labels, q / temperature, k)
    rng = np.random.default_rng(seed)
    if replace:
        members = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        parts = []
        for j in np.flatnonzero(counts):
            m = members[starts[j] : starts[j + 1]]
            parts.append(rng.choice(m, size=int(counts[j]), replace=True, p=p[m] / p[m].sum()))
        order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    else:
        # Gumbel top-c per cluster: the same law as c successive draws without replacement.
        keys = np.log(np.maximum(p, 1e-300)) + rng.gumbel(size=len(q))
        by_key = np.lexsort((-keys, labels))
        starts = np.concatenate([[0], np.cumsum(sizes)])
        position = np.arange(len(q)) - starts[labels[by_key]]
        order = by_key[position < counts[labels[by_key]]]
    return KMQSample(order=order.astype(np.int64), labels=labels, counts=counts, probabilities=p)


@dataclass
class Refinement:
    cluster_scores: np.ndarray  # mean S per cluster (clusters without scored items: the mean)
    weights: np.ndarray  # softmax of cluster_scores; sums to 1
    counts: np.ndarray  # additions per cluster
    additions: np.ndarray  # item indices to add next round, cluster by cluster


def refine(
    labels: np.ndarray, selected: np.ndarray, scores: np.ndarray, budget: int, *, seed: int, k: int | None = None
) -> Refinement:
    """One round of iterative kMQ (spec §4.3, code form of the weight update).

    `scores[i]` is S of `selected[i]` from the last training round (larger S: the model is
    further from the gold answer there, so its cluster gets more of the next budget). New items
    are drawn uniformly from each cluster's not-yet-selected members; a cluster's excess over
    what it has left is redrawn over the clusters that still have members.
    """
    labels = np.asarray(labels, dtype=np.int64)
    selected = np.asarray(selected, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if selected.shape != scores.shape:
        raise SelectionError(f"kmq refine: {len(selected)} selected items but {len(scores)} scores")
    if not np.isfinite(scores).all():
        raise SelectionError("kmq refine: scores must be finite")
    k = int(labels.max()) + 1 if k is None else k
    sums = np.bincount(labels[selected], weights=scores, minlength=k)
    hits = np.bincount(labels[selected], minlength=k)
    if not hits.any():
        raise SelectionError("kmq refine: no scored items; nothing to learn cluster weights from")
    cluster_scores = np.where(hits > 0, sums / np.maximum(hits, 1), 0.0)
    cluster_scores[hits == 0] = cluster_scores[hits > 0].mean()
    e = np.exp(cluster_scores - cluster_scores.max())
    weights = e / e.sum()
    taken = np.zeros(len(labels), dtype=bool)
    taken[selected] = True
    left = np.bincount(labels[~taken], minlength=k)
    rng = np.random.default_rng(seed)
    counts = np.zeros(k, dtype=np.int64)
    want = min(budget, int(left.sum()))
    while want > 0:
        room = left - counts
        w = np.where(room > 0, weights, 0.0)
        draw = rng.multinomial(want, w / w.sum())
        counts += np.minimum(draw, room)
        want = min(budget, int(left.sum())) - int(counts.sum())
    parts = []
    for j in np.flatnonzero(counts):
        free = np.flatnonzero((labels == j) & ~taken)
        parts.append(rng.choice(free, size=int(counts[j]), replace=False))
    additions = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return Refinement(cluster_scores=cluster_scores, weights=weights, counts=counts, additions=additions)


@SELECTORS.register("kmq")
class KMQ(Selector):
    """kMQ over the pool's embeddings; `detail` holds each item's cluster.

    A repeat (replace=True) keeps the item once with `weight` = how often it was drawn.
    k-means runs `niter` = 300 iterations and `nredo` = 5 restarts, the reference's values.

    Iterative kMQ from a recipe: `refine: <scorer>` names the scorer holding S (spec §4.3, e.g.
    gold score minus the trained model's score) for the items selected in the previous round;
    the items it scored are that selection. They are all kept, and `budget` − their number new
    items are drawn by `refine` (cluster weights = softmax of mean S, uniform within a
    cluster). `budget` is the size of the whole selection after this round, as in the paper's
    b/N per round; the same `seed` gives the same clusters as the round before.
    """

    version = "2"  # k-means 300 iterations, 5 restarts (was 20, 1); refine from a recipe
    objective_name = "cluster_coverage"

    class Config(SelectorConfig):
        k: int | Literal["auto"] = 64
        k_candidates: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128, 256, 512])
        silhouette_sample: int = Field(5000, ge=10)
        quality: str = "margin"
        temperature: float = Field(1.0, gt=0.0)
        allocation: Literal["proportional", "uniform"] = "proportional"
        replace: bool = False
        mode: Literal["toolkit", "code"] = "toolkit"
        embed: EmbedWhat = "prompt"
        niter: int = Field(300, ge=1)
        nredo: int = Field(5, ge=1)
        refine: str | None = None

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        from curation.selectors._kmeans import choose_k, kmeans

        cfg = self.config
        n = pool.height
        if cfg.k != "auto" and cfg.k > n:
            raise SelectionError(f"{context.stage}: kmq k={cfg.k} clusters but the pool has only {n} items")
        budget = n if budget is None else budget
        previous = self._previous_round(pool, context) if cfg.refine else None
        q = quality(pool, context, cfg.quality) if previous is None else None
        x = l2_normalize(item_embeddings(pool, context, cfg.embed))
        silhouettes: dict[int, float] = {}
        k = cfg.k
        if k == "auto":
            k, silhouettes = choose_k(x, cfg.k_candidates, seed=cfg.seed, sample=cfg.silhouette_sample)
        labels = kmeans(x, k, seed=cfg.seed, niter=cfg.niter, nredo=cfg.nredo).labels
        self._labels, self._k = labels, k
        if previous is None:
            s = kmq_sample(
                labels, q, budget, k=k, seed=cfg.seed, temperature=cfg.temperature,
                allocation=cfg.allocation, replace=cfg.replace, mode=cfg.mode,
            )
            order, probabilities, counts = s.order, s.probabilities, s.counts
        else:
            selected, scores = previous
            if budget <= len(selected):
                raise SelectionError(
                    f"{context.stage}: kmq refine: budget {budget} leaves no room beyond the {len(selected)} items "
                    f"{cfg.refine!r} scored in the previous round; budget is the selection's size after this round"
                )
            r = refine(labels, selected, scores, budget - len(selected), seed=cfg.seed, k=k)
            order = np.concatenate([selected, r.additions])
            probabilities = r.weights[labels]
            counts = np.bincount(labels[order], minlength=k)
        drawn = np.bincount(order, minlength=n)
        rank = np.full(n, -1, dtype=np.int64)
        first = np.unique(order, return_index=True)
        rank[first[0]] = np.argsort(np.argsort(first[1]))
        sizes = np.bincount(labels, minlength=k)
        self.report = {"k": int(k), "silhouette": silhouettes, "selected": int(len(order)),
                       "distinct": int((drawn > 0).sum()), "clusters_used": int((counts > 0).sum()),
                       "niter": cfg.niter, "nredo": cfg.nredo,
                       **({"refined_from": int(len(previous[0])), "refine_scores": cfg.refine} if previous else {})}
        log.info("%s %s: %s", context.stage, "kMQ", self.report)
        detail = [
            {"cluster": int(labels[i]), "cluster_size": int(sizes[labels[i]]),
             ("cluster_weight" if previous else "p"): float(probabilities[i]),
             **({"count": int(drawn[i])} if drawn[i] > 1 else {})}
            for i in range(n)
        ]
        if previous is None:
            reason_kept: str | list[str] = "selected"
        else:
            before = np.zeros(n, dtype=bool)
            before[previous[0]] = True
            reason_kept = ["previous_round" if b else "selected" for b in before]
        return decisions(
            context, context.ids(pool), drawn > 0, rank=[int(r) if r >= 0 else None for r in rank],
            weight=drawn.astype(float).clip(min=1.0), reason_kept=reason_kept, reason_dropped="budget", detail=detail,
        )

    def _previous_round(self, pool: pl.DataFrame, context: SelectionContext) -> tuple[np.ndarray, np.ndarray]:
        """Indices the `refine` scorer scored (last round's selection) and their S values."""
        ids = context.ids(pool)
        scored = set(context.scores.filter(pl.col("scorer") == self.config.refine)["target_id"].to_list())
        if context.pool_kind == "pairs" and not any(i in scored for i in ids):
            ids = pool.get_column("chosen_id").to_list()
        values = context.values(self.config.refine, ids, allow_missing=True)
        selected = np.flatnonzero(np.isfinite(values))
        if selected.size == 0:
            raise SelectionError(
                f"{context.stage}: kmq refine: scorer {self.config.refine!r} scored none of the pool's items; "
                "it must score the previous round's selection"
            )
        return selected, values[selected]

    def objective(self, rows: np.ndarray, weights: np.ndarray | None = None) -> float | None:
        """Share of the k-means clusters with at least one of `rows` (the coverage kMQ spreads the budget for)."""
        return float(np.unique(self._labels[rows]).size / self._k) if len(rows) else 0.0
