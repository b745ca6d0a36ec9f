"""`first_round_rank`: RSO's first-round-rank, k accepted samples per prompt paired 1-2, 3-4, ..."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from curation.pairs import PAIR_BUILDERS
from curation.pairs.base import PairBuilder, PairBuilderConfig, judge_or_scores, oriented


@PAIR_BUILDERS.register("first_round_rank")
class FirstRoundRank(PairBuilder):
    """RSO's "first-round-rank": k accepted samples, shuffled, paired 1-2, 3-4, ...

    With `k` set, the k samples are drawn per prompt by RSO statistical rejection sampling
    (β = `beta`) over the candidates' scores; prompts with fewer than k candidates use all of
    them (counted as `short_prompts`). Without `k`, the given candidates are taken as the
    accepted set. Each pair is shown to the judge in a random order (position-bias removal,
    recorded as `presented_swapped`) and labelled by it, or by the score difference.
    """

    uses_judge = True

    class Config(PairBuilderConfig):
        k: int | None = Field(None, ge=2)
        beta: float = Field(0.5, gt=0.0)

    def pairs_for_prompt(self, group, rng, stats, judge):
        from curation.selectors.rso import rso_sample

        compare = judge_or_scores(judge)
        accepted = list(group)
        if self.config.k is not None:
            if len(group) <= self.config.k:
                stats.add("short_prompts")
            else:
                order = rso_sample(np.array([c.score for c in group]), self.config.k, self.config.beta, rng)
                accepted = [group[i] for i in order]
        accepted = [accepted[i] for i in rng.permutation(len(accepted))]
        out = []
        for i in range(0, len(accepted) - 1, 2):
            a, b = accepted[i], accepted[i + 1]
            swapped = bool(rng.integers(2))
            value = -float(compare(b, a)) if swapped else float(compare(a, b))
            out.append(oriented(a, b, value, {"presented_swapped": swapped}))
        if len(accepted) % 2:
            stats.add("unpaired_samples")
        return out
