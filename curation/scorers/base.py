"""The `Scorer` protocol: candidates (pointwise) or pairs (pairwise) in, score rows out.

Also the plumbing every scorer shares: building its input rows from the schema tables, writing
`scores` rows, checking a model path before anything loads, and `run_scorers` for a list.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl

from curation import schema
from curation.models import model_fingerprint
from curation.progress import tracked
from curation.registry import Component, ComponentConfig
from curation.rows import with_texts
from curation.scorers.fitness import FitnessThreshold, require_fitness

log = logging.getLogger("curation.scorers")

POINTWISE_COLUMNS = ("candidate_id", "prompt_id", "messages", "text")
PAIRWISE_COLUMNS = ("pair_id", "prompt_id", "messages", "chosen_id", "chosen", "rejected_id", "rejected")


class ScorerConfig(ComponentConfig):
    """Fields every scorer shares: `name` is how later stages refer to its scores.

    `fitness` names labelled pairs and a minimum agreement: a run measures the scorer on them
    and refuses it below the threshold, before it scores anything.
    """

    name: str
    kind: str
    fitness: FitnessThreshold | None = None


class ScorerError(ValueError):
    """A scorer cannot run at all (bad model path, missing columns): raised before heavy work."""


class Scorer(Component):
    """Scores rows and returns a frame of the `scores` table.

    Pointwise input columns: candidate_id, prompt_id, messages, text, meta.
    Pairwise input columns: pair_id, prompt_id, messages, chosen_id, chosen, rejected_id,
    rejected, meta. A failure on one row yields a null `value` with `error`, not a crash.
    Pairwise values are P(chosen is better) in [0, 1]: 0.5 means no preference.
    """

    Config = ScorerConfig
    mode: ClassVar[Literal["pointwise", "pairwise"]] = "pointwise"

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError

    def model_paths(self) -> tuple[str, ...]:
        """Local model folders the scores come from (none for heuristics)."""
        return ()

    def model_identity(self) -> str | None:
        if not hasattr(self, "_identity"):
            paths = self.model_paths()
            self._identity = local_model_identity(*paths) if paths else None
        return self._identity

    # ------------------------------------------------------------ helpers for implementations

    def check_rows(self, rows: pl.DataFrame) -> None:
        needed = POINTWISE_COLUMNS if self.mode == "pointwise" else PAIRWISE_COLUMNS
        missing = [c for c in needed if c not in rows.columns]
        if missing:
            raise ScorerError(
                f"scorer {self.config.name!r} ({self.name}, {self.mode}): input rows lack "
                f"columns {missing}; build them with curation.scorers.pointwise_rows / pairwise_rows"
            )

    def result(
        self,
        target_id: str,
        value: float | None,
        detail: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        """One `scores` row; a null value always carries an error."""
        if value is None and error is None:
            error = "no value"
        return {
            "target_id": target_id,
            "scorer": self.config.name,
            "scorer_fingerprint": self.fingerprint,
            "value": None if value is None else float(value),
            "detail": schema.dumps(detail or {}),
            "error": error,
        }

    def frame(self, results: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
        out = schema.frame(results, "scores")
        failed = out.get_column("value").null_count()
        log.info("scorer %s (%s): %d rows, %d failed", self.config.name, self.name, out.height, failed)
        return out


def check_model_path(path: str, field: str, owner: str) -> Path:
    """A local model folder with a config.json, else a clear error before any model loads."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ScorerError(f"{owner}: {field} {path!r} does not exist (models load from local folders)")
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ScorerError(f"{owner}: {field} {path!r} is not a model folder (no config.json in it)")
    return p


def local_model_identity(*paths: str) -> str:
    """Hash of the files of local model folders: weights saved in place change it."""
    return schema.content_hash("models", [model_fingerprint(p) for p in paths])


def meta_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's `meta` JSON as a dict (empty when absent or not an object)."""
    raw = row.get("meta")
    if not raw:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def conversation(messages: Sequence[Mapping[str, str]], response: str) -> list[dict[str, str]]:
    """The prompt conversation followed by the response as the final assistant turn."""
    return [{"role": m["role"], "content": m["content"]} for m in messages] + [
        {"role": "assistant", "content": response}
    ]


def pointwise_rows(prompts: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """Scorer input for candidates: each candidate joined with its prompt's messages and meta.

    Candidates whose generation failed (null text) are left out; their error is already recorded.
    """
    cands = candidates.filter(pl.col("text").is_not_null()).select("candidate_id", "prompt_id", "text")
    return cands.join(prompts.select("prompt_id", "messages", "meta"), on="prompt_id", how="left")


def pairwise_rows(prompts: pl.DataFrame, pairs: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """Scorer input for pairs: pair ids plus the prompt and both response texts."""
    ids = pairs.select("pair_id", "prompt_id", "chosen_id", "rejected_id")
    return with_texts(ids, candidates).join(prompts.select("prompt_id", "messages", "meta"), on="prompt_id", how="left")


def build_scorer(config: ScorerConfig | Mapping[str, Any]) -> Scorer:
    from curation.scorers import SCORERS

    if isinstance(config, ScorerConfig):
        return SCORERS.build(config.kind, config)
    return SCORERS.build(str(dict(config).get("kind")), dict(config))


def run_scorers(
    configs: Sequence[ScorerConfig | Mapping[str, Any]],
    prompts: pl.DataFrame,
    candidates: pl.DataFrame,
    pairs: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Run every scorer on what it scores (candidates or pairs) and return all score rows.

    All scorers are built (configs validated, model paths checked) and those with a `fitness`
    threshold measured against it before any of them runs.
    """
    scorers = [build_scorer(c) for c in configs]
    names = [s.config.name for s in scorers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ScorerError(f"scorer names must be unique; repeated: {dupes}")
    if any(s.mode == "pairwise" for s in scorers) and pairs is None:
        pairwise = [s.config.name for s in scorers if s.mode == "pairwise"]
        raise ScorerError(f"pairwise scorers {pairwise} need pairs, and none were given")
    for s in scorers:
        report = require_fitness(s)
        if report is not None:
            log.info("scorer %s is fit: agreement %.3f (95%% CI %.3f-%.3f) >= %s on %d labelled pairs",
                     s.config.name, report.agreement, *report.agreement_ci, s.config.fitness.min_agreement, report.scored)
    point_in = pointwise_rows(prompts, candidates)
    pair_in = pairwise_rows(prompts, pairs, candidates) if pairs is not None else None
    frames = []
    for s in tracked(scorers, "score", lambda s: f"score: {s.config.name} ({s.name})"):
        started = time.perf_counter()
        rows = point_in if s.mode == "pointwise" else pair_in
        out = s.score(rows)
        frames.append(out)
        log.info(
            "scored %d rows with %s in %.1f s (%d failed)",
            out.height,
            s.config.name,
            time.perf_counter() - started,
            out.get_column("value").null_count(),
        )
    return pl.concat(frames) if frames else schema.empty("scores")
