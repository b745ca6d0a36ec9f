"""`best_worst`: one pair per prompt, the highest-scored candidate against the lowest."""

from __future__ import annotations

import polars as pl

from curation.pairs import PAIR_BUILDERS
from curation.pairs.base import PROPOSALS, PairBuilder, Proposal, first_best, first_worst


@PAIR_BUILDERS.register("best_worst")
class BestWorst(PairBuilder):
    """One pair per prompt: the highest-scored candidate against the lowest (first in order on ties).

    Proposed from columns (one group-by over all prompts); `pairs_for_prompt` is the same rule for
    one prompt's candidates."""

    def propose(self, scored, stats, judge):
        best = pl.col("candidate_id").sort_by(["score", "index"], descending=[True, False]).first()
        worst = pl.col("candidate_id").sort_by(["score", "index"]).first()
        return scored.group_by("prompt_id", maintain_order=True).agg(
            best.alias("chosen_id"), worst.alias("rejected_id"),
            pl.col("score").max().alias("chosen_score"), pl.col("score").min().alias("rejected_score"),
        ).with_columns((pl.col("chosen_score") - pl.col("rejected_score")).alias("margin"),
                       pl.lit("{}").alias("meta")).select(list(PROPOSALS))

    def pairs_for_prompt(self, group, rng, stats, judge):
        best, worst = first_best(group), first_worst(group)
        return [Proposal(best, worst, best.score - worst.score)]
