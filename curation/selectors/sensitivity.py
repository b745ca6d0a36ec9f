"""Clustering-based sensitivity sampling (Axiotis et al., ICML 2024, arXiv 2402.17327; spec §5).

k-means the embeddings; the loss is queried only at each cluster's representative (the item
nearest its centre) and at a few probes; every item gets the sensitivity
s(e) = ℓ̂_{C(e)} + Λ·‖e − c_{C(e)}‖^z and the sampling probability p ∝ s; m − k items are drawn
with weight 1/((m − k)·p), so that Σ w·ℓ is an unbiased estimate of the pool's total loss.

The spec draws the m − k items i.i.d. (with replacement), so a budget of m kept fewer distinct
items (58, 112 and 245 for budgets 60, 120 and 300 of a 600-pair pool). Here they are drawn
without replacement with inclusion probability π = (m − k)·p (randomised systematic πps
sampling): exactly m − k distinct items, and the Horvitz-Thompson weight 1/π is the spec's
1/((m − k)·p), so the estimator stays unbiased with the same weights. An item whose π would pass 1
is taken for certain with weight 1 and the others share the remaining draws in proportion to s.

Toolkit decisions (the paper has no official code): the k representatives are always included
(the "k +" of the bound) with weight 1 and the sensitivity draws come from the other items, which
keeps the estimator exactly unbiased (a representative weighted |C_j| on top of draws over the
whole pool would count its cluster twice); `include_representatives=False` gives the plain
m-draw scheme. Λ is estimated from the oracle as the median over clusters of the median of
|ℓ(e) − ℓ(rep)| / ‖e − c‖^z over ≤ `probes` members; without an oracle ℓ̂ ≡ 1 and Λ = 1, so
items far from their centre are drawn more often.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl
from pydantic import Field

from curation.selectors import SELECTORS
from curation.selectors._inputs import EmbedWhat, item_embeddings, l2_normalize, quality
from curation.selectors._kmeans import Clustering
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions

LossOracle = Callable[[np.ndarray], np.ndarray]

log = logging.getLogger(__name__)


@dataclass
class SensitivitySample:
    draws: np.ndarray  # sampled item indices, distinct, in draw order
    draw_weights: np.ndarray  # 1/π of each draw (= 1/(m'·p) unless capped at π = 1)
    representatives: np.ndarray  # one item per cluster, weight 1 each (empty if not included)
    probabilities: np.ndarray  # p(e) of every item (0 for representatives when they are included)
    inclusion: np.ndarray  # π(e) = P(e is drawn), summing to the m' draws
    sensitivities: np.ndarray  # s(e) of every item
    labels: np.ndarray
    lipschitz: float

    def item_weights(self, n: int) -> np.ndarray:
        """Total weight per item: its draws' weights summed, 1 for a representative, 0 otherwise."""
        w = np.bincount(self.draws, weights=self.draw_weights, minlength=n)
        w[self.representatives] += 1.0
        return w


def representatives_of(labels: np.ndarray, sq_distances: np.ndarray, k: int) -> np.ndarray:
    """Per cluster, the member nearest its centre (ties: lowest index); -1 for empty clusters."""
    order = np.lexsort((np.arange(len(labels)), sq_distances, labels))
    reps = np.full(k, -1, dtype=np.int64)
    first = np.concatenate([[True], labels[order][1:] != labels[order][:-1]])
    reps[labels[order][first]] = order[first]
    return reps


def inclusion_probabilities(p: np.ndarray, draws: int) -> np.ndarray:
    """π ∝ p with Σπ = `draws`, capped at 1: items that would pass 1 are certain, the rest rescaled."""
    pi = np.zeros_like(p)
    certain = np.zeros(p.shape, dtype=bool)
    while True:
        rest = ~certain & (p > 0)
        pi[rest] = (draws - certain.sum()) * p[rest] / p[rest].sum()
        over = rest & (pi >= 1.0)
        if not over.any():
            break
        certain |= over
    pi[certain] = 1.0
    return pi


def systematic_sample(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomised systematic πps sampling: items in random order laid end to end with lengths π, one
    uniform start u, and the items under u, u + 1, ...; each item is drawn with probability π (≤ 1),
    never twice, and exactly Σπ items come out."""
    count = int(round(pi.sum()))
    order = rng.permutation(len(pi))
    ends = np.cumsum(pi[order])
    hits = np.searchsorted(ends, rng.random() + np.arange(count), side="right")
    return order[np.minimum(hits, len(pi) - 1)]


def estimate_lipschitz(
    labels: np.ndarray, dist_z: np.ndarray, reps: np.ndarray, loss_fn: LossOracle, rep_loss: np.ndarray,
    probes: int, rng: np.random.Generator,
) -> float:
    """Median over clusters of the median |ℓ(e) − ℓ(rep)| / ‖e − c‖^z on ≤ `probes` members each."""
    per_cluster = []
    for j in np.flatnonzero(reps >= 0):
        members = np.flatnonzero((labels == j) & (dist_z > 0))
        members = members[members != reps[j]]
        if members.size == 0:
            continue
        picked = rng.choice(members, size=min(probes, members.size), replace=False)
        ratios = np.abs(np.asarray(loss_fn(picked), dtype=np.float64) - rep_loss[j]) / dist_z[picked]
        per_cluster.append(float(np.median(ratios)))
    return float(np.median(per_cluster)) if per_cluster else 0.0


def sensitivity_sample(
    x: np.ndarray,
    m: int,
    *,
    k: int,
    seed: int,
    z: float = 2.0,
    lipschitz: float | None = None,
    loss_fn: LossOracle | None = None,
    include_representatives: bool = True,
    probes: int = 20,
    niter: int = 20,
    clustering: Clustering | None = None,
) -> SensitivitySample:
    """Draw the sample of spec §5.2 from embeddings `x` (k-means of `x`, unless `clustering` is given)."""
    from curation.selectors._kmeans import kmeans

    n = x.shape[0]
    if k < 1 or k >= m:
        raise SelectionError(f"sensitivity: k={k} clusters must be at least 1 and smaller than the sample size m={m}")
    if m > n:
        raise SelectionError(f"sensitivity: sample size m={m} exceeds the {n} items")
    if k > n:
        raise SelectionError(f"sensitivity: k={k} clusters but only {n} items")
    rng = np.random.default_rng(seed)
    cl = clustering if clustering is not None else kmeans(x, k, seed=seed, niter=niter)
    labels = cl.labels
    dist_z = np.sqrt(cl.sq_distances.astype(np.float64)) ** z
    reps = representatives_of(labels, cl.sq_distances, k)
    present = reps >= 0
    rep_loss = np.ones(k)
    if loss_fn is not None:
        rep_loss[present] = np.asarray(loss_fn(reps[present]), dtype=np.float64)
        if not np.isfinite(rep_loss).all() or (rep_loss < 0).any():
            raise SelectionError("sensitivity: the loss oracle must return finite, non-negative losses")
    if lipschitz is None:
        lipschitz = 1.0 if loss_fn is None else estimate_lipschitz(labels, dist_z, reps, loss_fn, rep_loss, probes, rng)
    s = rep_loss[labels] + lipschitz * dist_z
    if not (s > 0).all():
        raise SelectionError(
            "sensitivity: some items have sensitivity 0 (zero loss at their cluster and Λ·distance 0); "
            "weights would be infinite; use a loss bounded away from 0 or a positive lipschitz"
        )
    eligible = np.ones(n, dtype=bool)
    kept_reps = reps[present] if include_representatives else np.zeros(0, dtype=np.int64)
    eligible[kept_reps] = False
    draws_wanted = m - len(kept_reps)
    p = np.where(eligible, s, 0.0)
    p /= p.sum()
    pi = inclusion_probabilities(p, draws_wanted)
    draws = systematic_sample(pi, rng) if draws_wanted > 0 else np.zeros(0, dtype=np.int64)
    return SensitivitySample(
        draws=draws.astype(np.int64), draw_weights=1.0 / pi[draws], representatives=kept_reps,
        probabilities=p, inclusion=pi, sensitivities=s, labels=labels, lipschitz=float(lipschitz),
    )


@SELECTORS.register("sensitivity")
class Sensitivity(Selector):
    """Sensitivity sampling; importance weights go to the `weight` column, scaled to mean 1.

    `budget` is the sample size m: m distinct items are kept (`inclusion` π in each item's `detail`).
    The unbiased weights (Σ w·ℓ estimates the
    pool's total loss) are about n/m, so a weighted loss would grow with the pool and shrink
    with the budget; the `weight` column is them divided by their mean over the kept items,
    which keeps the relative importances and a DPO loss scale that does not depend on the
    budget. `detail.importance_weight` keeps the unbiased value, `report.weight_scale` the divisor. `loss` names a pool column or scorer holding
    a per-item loss (e.g. the current policy's DPO loss); only representatives and probes are read.
    """

    class Config(SelectorConfig):
        k: int | None = Field(None, ge=1)  # default m // 10
        z: float = Field(2.0, gt=0.0)
        lipschitz: float | None = Field(None, ge=0.0)
        loss: str | None = None
        include_representatives: bool = True
        probes: int = Field(20, ge=1)
        embed: EmbedWhat = "prompt"
        niter: int = Field(20, ge=1)

    version = "3"  # m distinct items, drawn without replacement (were m i.i.d. draws); weights scaled to mean 1

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        cfg = self.config
        n = pool.height
        m = n if budget is None else budget
        k = cfg.k if cfg.k is not None else max(1, m // 10)
        if k >= m:
            raise SelectionError(
                f"{context.stage}: sensitivity needs k < m; got k={k} clusters for a sample of m={m} (budget)"
            )
        losses = quality(pool, context, cfg.loss) if cfg.loss else None
        x = l2_normalize(item_embeddings(pool, context, cfg.embed))
        res = sensitivity_sample(
            x, m, k=k, seed=cfg.seed, z=cfg.z, lipschitz=cfg.lipschitz,
            loss_fn=(lambda idx: losses[idx]) if losses is not None else None,
            include_representatives=cfg.include_representatives, probes=cfg.probes, niter=cfg.niter,
        )
        weights = res.item_weights(n)
        is_rep = np.zeros(n, dtype=bool)
        is_rep[res.representatives] = True
        kept = weights > 0
        scale = float(weights[kept].mean())
        order = np.concatenate([res.representatives, res.draws])
        rank = np.full(n, -1, dtype=np.int64)
        rank[order] = np.arange(len(order))
        self.report = {"m": m, "k": k, "lipschitz": res.lipschitz, "distinct": int(kept.sum()),
                       "loss_oracle": cfg.loss or "constant", "weight_scale": scale}
        log.info("%s %s: %s", context.stage, "sensitivity", self.report)
        detail = [
            {"cluster": int(res.labels[i]), "sensitivity": float(res.sensitivities[i]), "p": float(res.probabilities[i]),
             **({"inclusion": float(res.inclusion[i])} if res.probabilities[i] > 0 else {}),
             **({"representative": True} if is_rep[i] else {}),
             **({"importance_weight": float(weights[i])} if kept[i] else {})}
            for i in range(n)
        ]
        return decisions(
            context, context.ids(pool), kept, rank=[int(r) if r >= 0 else None for r in rank],
            weight=np.where(kept, weights / scale, 1.0), reason_kept=["representative" if r else "selected" for r in is_rep],
            reason_dropped="budget", detail=detail,
        )
