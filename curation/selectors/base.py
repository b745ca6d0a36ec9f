"""The `Selector` protocol: a pool in, one decision row per pool item out."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from curation.registry import Component, ComponentConfig


class SelectorConfig(ComponentConfig):
    """Fields every selector shares. `budget`: an item count, or a fraction of the pool if < 1."""

    kind: str
    budget: float | None = Field(None, gt=0)
    seed: int = 42


class Selector(Component):
    """`select(pool, context)` returns a frame of the `decisions` table, one row per pool item.

    Nothing is deleted: dropped items get `kept = false` and a reason code. Deterministic for
    a seed. Embeddings and scores come through the context.
    """

    Config = SelectorConfig

    def select(self, pool: pl.DataFrame, context: object) -> pl.DataFrame:
        raise NotImplementedError
