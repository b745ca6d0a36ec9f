"""Top-k by a quality value: a scorer, the pair margin, or a numeric pool column."""

from __future__ import annotations

import numpy as np
import polars as pl

from curation.selectors import SELECTORS
from curation.selectors._inputs import quality
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions


@SELECTORS.register("top_k")
class TopK(Selector):
    """Keep the `budget` items with the highest (or, `ascending`, lowest) `by` value.

    Ties at the cut are broken by pool order (lowest index first). A pool whose values are all
    equal raises: the "top" would be pool order, which a random subset states honestly.
    """

    class Config(SelectorConfig):
        by: str = "margin"
        ascending: bool = False

    budget_use = "required"

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        ids = context.ids(pool)
        values = quality(pool, context, self.config.by)
        if len(ids) > 1 and np.all(values == values[0]):
            raise SelectionError(
                f"{context.stage}: all {len(ids)} items have the same {self.config.by!r} ({values[0]}); "
                "top_k would only keep pool order; use `random` or another `by`"
            )
        size = int(budget or 0)
        key = values if self.config.ascending else -values
        order = np.lexsort((np.arange(len(ids)), key))[:size]
        rank: list[int | None] = [None] * len(ids)
        for r, i in enumerate(order):
            rank[i] = r
        details = [{self.config.by: float(v)} for v in values]
        return decisions(context, ids, [r is not None for r in rank], rank=rank, detail=details)
