"""`best_worst`: one pair per prompt, the highest-scored candidate against the lowest."""

from __future__ import annotations

from curation.pairs import PAIR_BUILDERS
from curation.pairs.base import PairBuilder, Proposal, first_best, first_worst


@PAIR_BUILDERS.register("best_worst")
class BestWorst(PairBuilder):
    """One pair per prompt: the highest-scored candidate against the lowest (first in order on ties)."""

    def pairs_for_prompt(self, group, rng, stats, judge):
        best, worst = first_best(group), first_worst(group)
        return [Proposal(best, worst, best.score - worst.score)]
