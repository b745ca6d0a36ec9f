"""`all_pairs`: every two candidates of a prompt whose scores differ by at least `min_margin`."""

from __future__ import annotations

from pydantic import Field

from curation.pairs import PAIR_BUILDERS
from curation.pairs.base import PairBuilder, PairBuilderConfig, oriented


@PAIR_BUILDERS.register("all_pairs")
class AllPairs(PairBuilder):
    """Every two candidates of a prompt whose scores differ by at least `min_margin`."""

    class Config(PairBuilderConfig):
        max_pairs_per_prompt: int | None = Field(None, ge=1)

    def pairs_for_prompt(self, group, rng, stats, judge):
        out = [oriented(a, b, a.score - b.score) for i, a in enumerate(group) for b in group[i + 1 :]]
        cap = self.config.max_pairs_per_prompt
        if cap is not None:
            keep = sorted(out, key=lambda p: -p.margin)[:cap]
            stats.add("over_cap", sum(1 for p in out if p.margin >= self.config.min_margin and p not in keep))
            out = keep
        return out
