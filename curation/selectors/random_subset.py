"""Uniform random subset of `budget` items: the baseline every other selector must beat."""

from __future__ import annotations

import numpy as np
import polars as pl

from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, Selector, decisions


def random_indices(n: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct indices of range(n), uniformly at random, in draw order (the random control)."""
    return np.random.default_rng(seed).permutation(n)[:size]


@SELECTORS.register("random")
class RandomSubset(Selector):
    """Keep `budget` items drawn uniformly without replacement; `rank` is the draw order.

    A budget larger than the pool is clipped to the pool (the step report warns).
    """

    budget_use = "required"

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        ids = context.ids(pool)
        size = int(budget or 0)
        rank: list[int | None] = [None] * len(ids)
        for r, i in enumerate(random_indices(len(ids), size, self.config.seed)):
            rank[i] = r
        return decisions(context, ids, [r is not None for r in rank], rank=rank)
