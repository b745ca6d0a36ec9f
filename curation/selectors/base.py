"""The `Selector` protocol: a pool in, one decision row per pool item out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl
from pydantic import Field

from curation.registry import Component, ComponentConfig


class SelectorConfig(ComponentConfig):
    """Fields every selector shares. `budget`: an item count, or a fraction of the pool if < 1."""

    kind: str
    budget: float | None = Field(None, gt=0)
    seed: int = 42


class SelectionError(ValueError):
    """Raised before any heavy work when a selector cannot run on the pool it was given."""


@dataclass
class SelectionContext:
    """What a selector may use besides the pool rows.

    The pool is a pairs pool (the `version_rows` columns, id column `pair_id`) or a candidates
    pool (candidate_id, prompt_id, messages, text, meta; id column `candidate_id`).
    `scores` holds the `scores` table rows for the pool's items (pointwise scores of
    candidates and pairwise scores of pairs). `embed(texts)` turns strings into an (n, d)
    float32 matrix (cached; MiniLM by default). Selectors ask for what they need through the
    methods below, which raise `SelectionError` naming what is missing.
    """

    id_column: str
    scores: pl.DataFrame
    embed: Callable[[list[str]], np.ndarray] | None = None
    stage: str = "select"
    cache: dict = field(default_factory=dict)

    def budget(self, config: SelectorConfig, pool_size: int) -> int:
        """Resolve `budget` (count or fraction) against the pool; the whole pool when unset."""
        if pool_size == 0:
            raise SelectionError(f"{self.stage}: the pool is empty; nothing to select from")
        if config.budget is None:
            return pool_size
        n = round(config.budget * pool_size) if config.budget < 1 else int(config.budget)
        return max(1, min(n, pool_size))
