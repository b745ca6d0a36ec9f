"""Best-of-N: per prompt, keep the `n` highest-scored candidates (OpenRLHF-style rejection sampling)."""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import Field

from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, Selector, SelectorConfig, decisions


@SELECTORS.register("best_of_n")
class BestOfN(Selector):
    """Keep the top `n` candidates of each prompt by `score` (candidates pool).

    Equal scores rank by pool order (lowest index first), never at random. A prompt whose
    candidates are all tied still keeps its first `n`, with reason `kept_tied` so the
    arbitrary choice is visible; prompts with fewer than `n` candidates keep them all.
    """

    pool_kinds = ("candidates",)

    class Config(SelectorConfig):
        score: str
        n: int = Field(1, ge=1)

    budget_use = "none"

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        ids = context.ids(pool)
        values = context.values(self.config.score, ids)
        groups: dict[str, list[int]] = {}
        for i, pid in enumerate(pool.get_column("prompt_id").to_list()):
            groups.setdefault(pid, []).append(i)
        kept = [False] * len(ids)
        rank: list[int | None] = [None] * len(ids)
        reason_kept = ["kept"] * len(ids)
        for members in groups.values():
            scores = values[members]
            order = sorted(range(len(members)), key=lambda j: (-scores[j], j))[: self.config.n]
            tied = len(members) > 1 and bool(np.all(scores == scores[0]))
            for r, j in enumerate(order):
                i = members[j]
                kept[i], rank[i] = True, r
                if tied:
                    reason_kept[i] = "kept_tied"
        return decisions(context, ids, kept, rank=rank, reason_kept=reason_kept, reason_dropped="not_best")
