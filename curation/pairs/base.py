"""The pair builder protocol: the base checks candidates and scores, enforces ties and
`min_margin`, counts what it skips and writes the rows; a builder only proposes pairs per prompt."""

from __future__ import annotations

import json
import logging
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
        scored = usable.select("candidate_id", "prompt_id", "text")
        if values is None:
            scored = scored.with_columns(pl.lit(0.0).alias("score"))
        else:
            scored = scored.join(values, on="candidate_id", how="left", maintain_order="left")
            unscored = scored.get_column("score").null_count()
            if unscored:
                stats.add("unscored_candidates", unscored)
                scored = scored.filter(pl.col("score").is_not_null())
        scored = scored.with_columns(pl.int_range(pl.len()).over("prompt_id").alias("index"))
        if prompts is not None:
            stats.counts["prompts_without_candidates"] = (
                prompts.select("prompt_id").unique().join(scored.select("prompt_id"), on="prompt_id", how="anti").height)
        groups = scored.group_by("prompt_id", maintain_order=True).agg(
            pl.len().alias("n"), (pl.col("score").max() - pl.col("score").min()).alias("spread"))
        single = pl.col("n") < 2
        tied = ~single & (pl.col("spread") <= self.config.tie_tolerance) if self._scored else pl.lit(False)
        for name, count in (("prompts", groups.height), ("single_candidate_prompts", groups.filter(single).height),
                            ("all_tied_prompts", groups.filter(tied).height)):
            if count:
                stats.add(name, count)
        eligible = scored.join(groups.filter(~single & ~tied).select("prompt_id"), on="prompt_id", how="semi",
                               maintain_order="left")
        proposed = self.propose(eligible, stats, judge)
        tie = pl.col("margin") <= self.config.tie_tolerance
        low = ~tie & (pl.col("margin") < self.config.min_margin)
        for name, count in (("ties_skipped", proposed.filter(tie).height), ("below_margin", proposed.filter(low).height)):
            if count:
                stats.add(name, count)
        pairs = self._rows(proposed.filter(~tie & ~low))
        stats.counts["pairs"] = pairs.height
        stats.rows_out = pairs.height
        log.info("%s", stats.summary())
        if not pairs.height and not allow_empty:
            raise PairError(f"builder {self.name!r} produced no pairs: {stats.counts}")
        return PairBuildResult(pairs, stats)

    def propose(self, scored: pl.DataFrame, stats: Stats, judge: PairwiseJudge | None) -> pl.DataFrame:
        """Proposals for every prompt of `scored` (candidate_id, prompt_id, text, score, index; input
        order; prompts with two or more candidates not all tied): columns prompt_id, chosen_id,
        rejected_id, chosen_score, rejected_score, margin, meta (JSON of the builder's own details).

        This default calls `pairs_for_prompt` prompt by prompt; a builder that can propose from
        columns overrides it."""
        rows: list[dict[str, Any]] = []
        for (pid,), group_frame in scored.group_by("prompt_id", maintain_order=True):
            group = [Candidate(r["candidate_id"], pid, r["text"], r["score"], r["index"])
                     for r in group_frame.iter_rows(named=True)]
            rng = np.random.default_rng([self.config.seed, int(schema.content_hash(pid)[:15], 16)])
            for prop in self.pairs_for_prompt(group, rng, stats, judge):
                rows.append({"prompt_id": pid, "chosen_id": prop.chosen.candidate_id,
                             "rejected_id": prop.rejected.candidate_id, "chosen_score": prop.chosen.score,
                             "rejected_score": prop.rejected.score, "margin": float(prop.margin),
                             "meta": schema.dumps(prop.meta)})
        return pl.DataFrame(rows, schema=PROPOSALS)

    def _rows(self, proposed: pl.DataFrame) -> pl.DataFrame:
        """`pairs` rows of the kept proposals: ids, score names, meta with both scores when scored."""
        meta = pl.col("meta")
        if self._scored and (proposed["meta"] == "{}").all():  # keys sorted, floats as json writes them
            meta = pl.concat_str([pl.lit('{"chosen_score": '), json_floats(proposed["chosen_score"]),
                                  pl.lit(', "rejected_score": '), json_floats(proposed["rejected_score"]), pl.lit("}")])
        elif self._scored:  # a builder's own details beside the scores
            meta = pl.lit(pl.Series([schema.dumps({**json.loads(m), "chosen_score": c, "rejected_score": r})
                                     for m, c, r in proposed.select("meta", "chosen_score", "rejected_score").iter_rows()],
                                    dtype=pl.String))
        return schema.conform(proposed.select(
            pair_ids(proposed).alias("pair_id"), "prompt_id", "chosen_id", "rejected_id", "margin",
            pl.lit(self.score_name, dtype=pl.String).alias("score"), pl.lit(self.name).alias("builder"),
            pl.lit(self.score_name, dtype=pl.String).alias("label_source"), meta.alias("meta"),
        ), "pairs")

    def pairs_for_prompt(
        self, group: list[Candidate], rng: np.random.Generator, stats: Stats, judge: PairwiseJudge | None
    ) -> list[Proposal]:
        raise NotImplementedError


def _resolve_scores(
    candidates: pl.DataFrame, scores: pl.DataFrame | None, name: str | None, *, need: bool
) -> tuple[str | None, pl.DataFrame | None]:
    """The candidates' values under scorer `name` (None = the only scorer present): candidate_id, score."""
    relevant = (
        scores.join(candidates.select(pl.col("candidate_id").alias("target_id")), on="target_id", how="semi")
        if scores is not None and scores.height else None
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
    rows = relevant.filter(pl.col("scorer") == name).select(
        pl.col("target_id").alias("candidate_id"), pl.col("value").cast(pl.Float64).alias("score"))
    dup = rows.group_by("candidate_id").len().filter(pl.col("len") > 1)
    if dup.height:
        raise PairError(f"score {name!r} has {dup.height} candidates with several values (first: {dup['candidate_id'][0]})")
    bad = rows.filter(pl.col("score").is_nan() | pl.col("score").is_infinite())
    if bad.height:
        tid, value = bad.row(0)
        raise PairError(f"score {name!r} is {value} for candidate {tid}: scores must be finite")
    return name, rows


PROPOSALS = {"prompt_id": pl.String, "chosen_id": pl.String, "rejected_id": pl.String, "chosen_score": pl.Float64,
             "rejected_score": pl.Float64, "margin": pl.Float64, "meta": pl.String}


def json_floats(values: pl.Series) -> pl.Series:
    """Finite floats as `json.dumps` writes them (Python's repr). polars writes the same digits
    except in exponent notation, so those few (|x| < 1e-4 or >= 1e16) are written by Python."""
    out = values.cast(pl.String)
    magnitude = values.abs()
    odd = ((magnitude < 1e-4) & (magnitude > 0)) | (magnitude >= 1e16)
    if odd.any():
        where = odd.arg_true()
        out = out.scatter(where, [repr(v) for v in values.gather(where).to_list()])
    return out


def pair_ids(frame: pl.DataFrame) -> pl.Series:
    """`schema.pair_id` of every row (prompt_id, chosen_id, rejected_id), hashed as columns."""
    return schema.content_hashes(frame, "pair", pl.col("prompt_id"), pl.col("chosen_id"), pl.col("rejected_id"))


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
