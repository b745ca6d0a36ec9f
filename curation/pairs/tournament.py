"""`tournament`: a knockout tournament per prompt, each match a pair (winner, loser)."""

from __future__ import annotations

import math

from curation.pairs import PAIR_BUILDERS
from curation.pairs.base import PairBuilder, PairBuilderConfig, PairError, Proposal, judge_or_scores, oriented


@PAIR_BUILDERS.register("tournament")
class Tournament(PairBuilder):
    """Knockout tournament: neighbours meet, winners advance, a lone candidate gets a bye.

    n candidates take n - 1 matches, each a pair (winner, loser) labelled by the judge
    (a `PairwiseJudge`, or the score difference when none is given). A tied match gives no
    pair and the candidate listed first advances (deterministic, counted as a tie).
    `shuffle` seeds the bracket; otherwise input order is the bracket.
    """

    uses_judge = True

    class Config(PairBuilderConfig):
        shuffle: bool = False

    def pairs_for_prompt(self, group, rng, stats, judge):
        compare = judge_or_scores(judge)
        alive = list(group)
        if self.config.shuffle:
            alive = [alive[i] for i in rng.permutation(len(alive))]
        out: list[Proposal] = []
        round_ = 0
        while len(alive) > 1:
            nxt = []
            for i in range(0, len(alive) - 1, 2):
                a, b = alive[i], alive[i + 1]
                value = float(compare(a, b))
                if not math.isfinite(value):
                    raise PairError(f"judge returned {value} comparing {a.candidate_id} and {b.candidate_id}")
                out.append(oriented(a, b, value, {"round": round_}))
                nxt.append(a if value >= 0 else b)
            if len(alive) % 2:
                nxt.append(alive[-1])
            alive = nxt
            round_ += 1
        self.last_winner = alive[0]
        return out
