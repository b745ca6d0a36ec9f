"""`best_random`: one pair per prompt, the best candidate against a random lower-scored one."""

from __future__ import annotations

from curation.pairs import PAIR_BUILDERS
from curation.pairs.base import PairBuilder, Proposal, first_best


@PAIR_BUILDERS.register("best_random")
class BestRandom(PairBuilder):
    """One pair per prompt: the best candidate against a random one scored at least `min_margin` lower."""

    def pairs_for_prompt(self, group, rng, stats, judge):
        best = first_best(group)
        eligible = [
            c
            for c in group
            if c is not best
            and best.score - c.score > self.config.tie_tolerance
            and best.score - c.score >= self.config.min_margin
        ]
        if not eligible:
            stats.add("below_margin")
            return []
        rejected = eligible[int(rng.integers(len(eligible)))]
        return [Proposal(best, rejected, best.score - rejected.score)]
