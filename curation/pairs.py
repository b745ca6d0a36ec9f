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

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import polars as pl
from pydantic import Field

from curation import schema
from curation.registry import Component, ComponentConfig, Registry
from curation.stats import Stats

log = logging.getLogger(__name__)


class PairError(ValueError):
    """Candidates or scores cannot be turned into pairs; the message says which and why."""


@dataclass(frozen=True)
class Candidate:
    """One scored candidate of a prompt, in input order (`index`)."""

    candidate_id: str
    prompt_id: str
    text: str
    score: float
    index: int


# A pairwise judge: > 0 when `a` is better, < 0 when `b` is better, 0 for a tie; the
# magnitude is recorded as the pair's margin.
PairwiseJudge = Callable[[Candidate, Candidate], float]


class PairBuilderConfig(ComponentConfig):
    """Fields every builder shares. `score`: the scorer whose values label the pairs (may be
    omitted when exactly one scorer scored the candidates)."""

    builder: str
    score: str | None = None
    min_margin: float = Field(0.0, ge=0.0)
    tie_tolerance: float = Field(0.0, ge=0.0)
    seed: int = 0


@dataclass
class PairBuildResult:
    """The pairs, and the stats of the build (what was skipped, by reason, in `stats.counts`)."""

    pairs: pl.DataFrame
    stats: Stats = field(default_factory=Stats)

    @property
    def counts(self) -> dict[str, int]:
        return self.stats.counts


class _ModuleRegistry(Registry):
    """A registry whose components all live in one module (this one), not a package."""

    def _load(self) -> None:
        self._loaded = True


PAIR_BUILDERS: Registry = _ModuleRegistry("pair builder", __name__)


@dataclass
class _Proposal:
    chosen: Candidate
    rejected: Candidate
    margin: float
    meta: dict[str, Any] = field(default_factory=dict)


class PairBuilder(Component):
    """Builds pairs prompt by prompt from scored candidates.

    Subclasses implement `pairs_for_prompt`, proposing (chosen, rejected, margin) triples;
    the base class checks inputs, enforces ties and `min_margin`, and writes the rows.
    """

    Config = PairBuilderConfig
    uses_judge: ClassVar[bool] = False

    def build(
        self,
        candidates: pl.DataFrame,
        scores: pl.DataFrame,
        *,
        prompts: pl.DataFrame | None = None,
        judge: PairwiseJudge | None = None,
        allow_empty: bool = False,
    ) -> PairBuildResult:
        stats = Stats(stage=f"pairs:{self.name}", rows_in=candidates.height)
        if candidates.height == 0:
            raise PairError("no candidates to build pairs from")
        for col in ("candidate_id", "prompt_id", "text"):
            if col not in candidates.columns:
                raise PairError(f"candidates have no {col!r} column")
        usable = candidates
        if "error" in candidates.columns:
            usable = usable.filter(pl.col("error").is_null())
        usable = usable.filter(pl.col("text").is_not_null())
        stats.counts["failed_candidates"] = candidates.height - usable.height
        score_name, values = _resolve_scores(usable, scores, self.config.score, need=judge is None)
        self._scored = values is not None
        self.score_name = score_name if judge is None else getattr(judge, "__name__", "judge")
        by_prompt: dict[str, list[Candidate]] = {}
        for row in usable.select("candidate_id", "prompt_id", "text").iter_rows(named=True):
            value = values.get(row["candidate_id"]) if values is not None else 0.0
            if value is None:
                stats.add("unscored_candidates")
                continue
            group = by_prompt.setdefault(row["prompt_id"], [])
            group.append(Candidate(row["candidate_id"], row["prompt_id"], row["text"], value, len(group)))
        if prompts is not None:
            stats.counts["prompts_without_candidates"] = len(set(prompts["prompt_id"].to_list()) - set(by_prompt))
        rows: list[dict[str, Any]] = []
        for pid, group in by_prompt.items():
            stats.add("prompts")
            if len(group) < 2:
                stats.add("single_candidate_prompts")
                continue
            if values is not None and max(c.score for c in group) - min(c.score for c in group) <= self.config.tie_tolerance:
                stats.add("all_tied_prompts")
                continue
            rng = np.random.default_rng([self.config.seed, int(schema.content_hash(pid)[:15], 16)])
            for prop in self.pairs_for_prompt(group, rng, stats, judge):
                if prop.margin <= self.config.tie_tolerance:
                    stats.add("ties_skipped")
                elif prop.margin < self.config.min_margin:
                    stats.add("below_margin")
                else:
                    rows.append(self._row(pid, prop))
        stats.counts["pairs"] = len(rows)
        stats.rows_out = len(rows)
        log.info("%s", stats.summary())
        if not rows and not allow_empty:
            raise PairError(f"builder {self.name!r} produced no pairs: {stats.counts}")
        return PairBuildResult(schema.frame(rows, "pairs"), stats)

    def _row(self, pid: str, prop: _Proposal) -> dict[str, Any]:
        meta = dict(prop.meta)
        if self._scored:
            meta.update(chosen_score=prop.chosen.score, rejected_score=prop.rejected.score)
        return {
            "pair_id": schema.pair_id(pid, prop.chosen.candidate_id, prop.rejected.candidate_id),
            "prompt_id": pid,
            "chosen_id": prop.chosen.candidate_id,
            "rejected_id": prop.rejected.candidate_id,
            "margin": float(prop.margin),
            "score": self.score_name,
            "builder": self.name,
            "label_source": self.score_name,
            "meta": schema.dumps(meta),
        }

    def pairs_for_prompt(
        self, group: list[Candidate], rng: np.random.Generator, stats: Stats, judge: PairwiseJudge | None
    ) -> list[_Proposal]:
        raise NotImplementedError


def _resolve_scores(
    candidates: pl.DataFrame, scores: pl.DataFrame | None, name: str | None, *, need: bool
) -> tuple[str | None, dict[str, float | None] | None]:
    """The candidates' values under scorer `name` (None = the only scorer present)."""
    ids = candidates.get_column("candidate_id")
    relevant = (
        scores.filter(pl.col("target_id").is_in(ids.implode())) if scores is not None and scores.height else None
    )
    present = sorted(relevant.get_column("scorer").unique().to_list()) if relevant is not None else []
    if not need and name is None:
        return None, None
    if name is None:
        if len(present) != 1:
            raise PairError(
                "set `score`: the candidates were scored by "
                + (f"several scorers ({', '.join(present)})" if present else "no scorer")
            )
        name = present[0]
    if name not in present:
        raise PairError(
            f"score {name!r} was not produced for these candidates; scores present: {', '.join(present) or '(none)'}"
        )
    rows = relevant.filter(pl.col("scorer") == name)
    dup = rows.group_by("target_id").len().filter(pl.col("len") > 1)
    if dup.height:
        raise PairError(f"score {name!r} has {dup.height} candidates with several values (first: {dup['target_id'][0]})")
    values: dict[str, float | None] = {}
    for tid, value in zip(rows["target_id"].to_list(), rows["value"].to_list()):
        if value is not None and not math.isfinite(value):
            raise PairError(f"score {name!r} is {value} for candidate {tid}: scores must be finite")
        values[tid] = value
    return name, values


def _first_best(group: list[Candidate]) -> Candidate:
    return max(group, key=lambda c: (c.score, -c.index))


def _first_worst(group: list[Candidate]) -> Candidate:
    return min(group, key=lambda c: (c.score, c.index))


def _oriented(a: Candidate, b: Candidate, value: float, meta: dict[str, Any] | None = None) -> _Proposal:
    """`value` > 0: a is chosen; < 0: b is chosen; 0 stays a tie (margin 0, skipped later)."""
    chosen, rejected = (a, b) if value >= 0 else (b, a)
    return _Proposal(chosen, rejected, abs(float(value)), meta or {})


@PAIR_BUILDERS.register("best_worst")
class BestWorst(PairBuilder):
    """One pair per prompt: the highest-scored candidate against the lowest (first in order on ties)."""

    def pairs_for_prompt(self, group, rng, stats, judge):
        best, worst = _first_best(group), _first_worst(group)
        return [_Proposal(best, worst, best.score - worst.score)]


@PAIR_BUILDERS.register("best_random")
class BestRandom(PairBuilder):
    """One pair per prompt: the best candidate against a random one scored at least `min_margin` lower."""

    def pairs_for_prompt(self, group, rng, stats, judge):
        best = _first_best(group)
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
        return [_Proposal(best, rejected, best.score - rejected.score)]


@PAIR_BUILDERS.register("all_pairs")
class AllPairs(PairBuilder):
    """Every two candidates of a prompt whose scores differ by at least `min_margin`."""

    class Config(PairBuilderConfig):
        max_pairs_per_prompt: int | None = Field(None, ge=1)

    def pairs_for_prompt(self, group, rng, stats, judge):
        out = [_oriented(a, b, a.score - b.score) for i, a in enumerate(group) for b in group[i + 1 :]]
        cap = self.config.max_pairs_per_prompt
        if cap is not None:
            keep = sorted(out, key=lambda p: -p.margin)[:cap]
            stats.add("over_cap", sum(1 for p in out if p.margin >= self.config.min_margin and p not in keep))
            out = keep
        return out


def _judge_or_scores(judge: PairwiseJudge | None) -> PairwiseJudge:
    return judge if judge is not None else (lambda a, b: a.score - b.score)


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
        compare = _judge_or_scores(judge)
        alive = list(group)
        if self.config.shuffle:
            alive = [alive[i] for i in rng.permutation(len(alive))]
        out: list[_Proposal] = []
        round_ = 0
        while len(alive) > 1:
            nxt = []
            for i in range(0, len(alive) - 1, 2):
                a, b = alive[i], alive[i + 1]
                value = float(compare(a, b))
                if not math.isfinite(value):
                    raise PairError(f"judge returned {value} comparing {a.candidate_id} and {b.candidate_id}")
                out.append(_oriented(a, b, value, {"round": round_}))
                nxt.append(a if value >= 0 else b)
            if len(alive) % 2:
                nxt.append(alive[-1])
            alive = nxt
            round_ += 1
        self.last_winner = alive[0]
        return out


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

        compare = _judge_or_scores(judge)
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
            out.append(_oriented(a, b, value, {"presented_swapped": swapped}))
        if len(accepted) % 2:
            stats.add("unpaired_samples")
        return out


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
