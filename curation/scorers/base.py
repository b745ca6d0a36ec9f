"""The `Scorer` protocol: candidates (pointwise) or pairs (pairwise) in, score rows out."""

from __future__ import annotations

from typing import ClassVar, Literal

import polars as pl

from curation.registry import Component, ComponentConfig


class ScorerConfig(ComponentConfig):
    """Fields every scorer shares: `name` is how later stages refer to its scores."""

    name: str
    kind: str


class Scorer(Component):
    """Scores rows and returns a frame of the `scores` table.

    Pointwise input columns: candidate_id, prompt_id, messages, text, meta.
    Pairwise input columns: pair_id, prompt_id, messages, chosen_id, chosen, rejected_id,
    rejected, meta. A failure on one row yields a null `value` with `error`, not a crash.
    """

    Config = ScorerConfig
    mode: ClassVar[Literal["pointwise", "pairwise"]] = "pointwise"

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError
