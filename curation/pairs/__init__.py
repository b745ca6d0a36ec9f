"""Pair builders: scored candidates in, preference pairs out.

Every builder records on each pair the score it used (`score`), the margin under it
(`margin` = score(chosen) - score(rejected) >= 0) and builder details in `meta`.

Ties are explicit: two candidates with equal scores (|difference| <= `tie_tolerance`) never
form a pair, and a pair is never given a random direction. Skipped ties, pairs below
`min_margin`, prompts whose candidates are all tied, candidates without a score and prompts
without candidates are counted (`build_pairs_counted`) and logged, never dropped silently.
A build that yields no pair at all raises `PairError` with those counts (unless `allow_empty`).

    pairs = build_pairs(candidates, scores, builder="best_worst", score="rm", min_margin=0.5)
"""

from __future__ import annotations

from typing import Any

import polars as pl

from curation.pairs.base import PairBuilder, PairBuildResult, PairError, PairwiseJudge
from curation.registry import Registry

PAIR_BUILDERS: Registry = Registry("pair builder", "curation.pairs")

__all__ = ["PAIR_BUILDERS", "PairBuildResult", "PairBuilder", "PairError", "build_pairs", "build_pairs_counted"]


def build_pairs_counted(
    candidates: pl.DataFrame,
    scores: pl.DataFrame | None,
    builder: str = "best_worst",
    *,
    prompts: pl.DataFrame | None = None,
    judge: PairwiseJudge | None = None,
    allow_empty: bool = False,
    **config: Any,
) -> PairBuildResult:
    """Pairs and the counts of what was skipped (ties, low margins, unscored candidates, ...)."""
    impl = PAIR_BUILDERS.build(builder, {"builder": builder, **config})
    if judge is not None and not impl.uses_judge:
        raise PairError(f"builder {builder!r} does not take a judge; use 'tournament' or 'first_round_rank'")
    return impl.build(candidates, scores, prompts=prompts, judge=judge, allow_empty=allow_empty)


def build_pairs(
    candidates: pl.DataFrame,
    scores: pl.DataFrame | None,
    builder: str = "best_worst",
    **config: Any,
) -> pl.DataFrame:
    """Pairs (the `pairs` table) built from scored candidates by the named builder."""
    return build_pairs_counted(candidates, scores, builder, **config).pairs
