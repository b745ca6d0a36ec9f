"""The pair builder protocol: the base checks candidates and scores, enforces ties and
`min_margin`, counts what it skips and writes the rows; a builder only proposes pairs per prompt."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import polars as pl
from pydantic import Field

from curation import schema
from curation.registry import Component, ComponentConfig
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


@dataclass
class Proposal:
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

    def _row(self, pid: str, prop: Proposal) -> dict[str, Any]:
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
    ) -> list[Proposal]:
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


def first_best(group: list[Candidate]) -> Candidate:
    return max(group, key=lambda c: (c.score, -c.index))


def first_worst(group: list[Candidate]) -> Candidate:
    return min(group, key=lambda c: (c.score, c.index))


def oriented(a: Candidate, b: Candidate, value: float, meta: dict[str, Any] | None = None) -> Proposal:
    """`value` > 0: a is chosen; < 0: b is chosen; 0 stays a tie (margin 0, skipped later)."""
    chosen, rejected = (a, b) if value >= 0 else (b, a)
    return Proposal(chosen, rejected, abs(float(value)), meta or {})


def judge_or_scores(judge: PairwiseJudge | None) -> PairwiseJudge:
    return judge if judge is not None else (lambda a, b: a.score - b.score)
