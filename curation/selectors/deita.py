"""Deita's score-first, diversity-aware filter (Liu et al., ICLR 2024, arXiv 2312.15685; spec §8).

Walk the items by score S (descending, ties to the lowest index); keep an item unless its cosine
similarity to an already kept item exceeds τ; stop at N kept. S is `quality` (times `complexity`
when given: Deita's c·q). Kept items live in a faiss inner-product index and each block of
candidates is tested with one range search at τ; survivors of a block are then compared with
each other in order, so the result is the reference's batch-size-1 filter, not its
over-conservative batched variant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import Field

from curation.selectors import SELECTORS
from curation.selectors._inputs import EmbedWhat, item_embeddings, l2_normalize, quality
from curation.selectors.base import SelectionContext, Selector, SelectorConfig, decisions

log = logging.getLogger(__name__)


@dataclass
class DeitaResult:
    kept: np.ndarray  # item indices in keep order
    similar_to: np.ndarray  # per item: the kept item it was too close to, -1 otherwise
    similarity: np.ndarray  # per item: that similarity (NaN otherwise)
    examined: int  # items looked at before the budget was reached


def deita_filter(x: np.ndarray, scores: np.ndarray, budget: int, threshold: float = 0.9, *, block: int = 1024) -> DeitaResult:
    """Score-first filter over unit-norm rows `x`; see the module docstring."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    index = faiss.IndexFlatIP(d)
    kept: list[int] = []
    similar_to = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan)
    examined = 0
    for start in range(0, n, block):
        if len(kept) >= budget:
            break
        cand = order[start : start + block]
        xb = x[cand]
        hit = np.zeros(len(cand), dtype=bool)
        if index.ntotal:
            lims, sims, ids = index.range_search(xb, float(threshold))
            for t in np.flatnonzero(lims[1:] > lims[:-1]):
                s, e = lims[t], lims[t + 1]
                best = s + int(np.argmax(sims[s:e]))
                hit[t] = True
                similar_to[cand[t]], similarity[cand[t]] = kept[ids[best]], sims[best]
        survivors = np.flatnonzero(~hit)
        inner = xb[survivors] @ xb[survivors].T
        taken: list[int] = []  # positions within `survivors`
        stop_at = len(cand)
        for pos, t in enumerate(survivors):
            if len(kept) + len(taken) >= budget:
                stop_at = t
                break
            if taken:
                row = inner[pos, taken]
                j = int(np.argmax(row))
                if row[j] > threshold:
                    similar_to[cand[t]], similarity[cand[t]] = cand[survivors[taken[j]]], row[j]
                    continue
            taken.append(pos)
        new = [int(cand[survivors[p]]) for p in taken]
        kept.extend(new)
        if new:
            index.add(x[new])
        examined += stop_at
        similar_to[cand[stop_at:]] = -1
        similarity[cand[stop_at:]] = np.nan
    return DeitaResult(np.asarray(kept, dtype=np.int64), similar_to, similarity, examined)


@SELECTORS.register("deita")
class Deita(Selector):
    """Deita's repr filter; dropped items say `similar_to_kept` (with the kept item) or `budget`."""

    class Config(SelectorConfig):
        quality: str = "margin"
        complexity: str | None = None
        threshold: float = Field(0.9, ge=-1.0, le=1.0)
        block: int = Field(1024, ge=1)
        embed: EmbedWhat = "prompt"

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        cfg = self.config
        n = pool.height
        budget = n if budget is None else budget
        score = quality(pool, context, cfg.quality)
        if cfg.complexity:
            score = score * quality(pool, context, cfg.complexity)
        x = l2_normalize(item_embeddings(pool, context, cfg.embed))
        res = deita_filter(x, score, budget, cfg.threshold, block=cfg.block)
        ids = context.ids(pool)
        kept = np.zeros(n, dtype=bool)
        kept[res.kept] = True
        rank = np.full(n, -1, dtype=np.int64)
        rank[res.kept] = np.arange(len(res.kept))
        similar = res.similar_to >= 0
        self.report = {"selected": len(res.kept), "examined": res.examined, "similar_to_kept": int(similar.sum())}
        log.info("%s %s: %s", context.stage, "Deita", self.report)
        detail = [
            {"score": float(score[i]), **({"similar_to": ids[res.similar_to[i]], "similarity": float(res.similarity[i])}
                                           if similar[i] else {})}
            for i in range(n)
        ]
        return decisions(
            context, ids, kept, rank=[int(r) if r >= 0 else None for r in rank], reason_kept="selected",
            reason_dropped=["similar_to_kept" if s else "budget" for s in similar], detail=detail,
        )
