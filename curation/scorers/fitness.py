"""Fitness check: how well a scorer agrees with human labels before anyone trusts it.

    report = check_scorer({"name": "len", "kind": "heuristic", "unit": "chars"},
                          "../shared/data/llmbar.jsonl.gz", where={"subset": "LLMBar/Natural"})
    report.agreement, report.position_consistency, report.length_correlation

Pointwise scorers score both responses of each labelled pair and vote for the higher one;
pairwise scorers vote with their value (> 0.5: the labelled chosen side). Ties count 1/2, as in
the corpus README's longer-is-better accuracy, which `longer_is_better` reports for the same pairs
as the baseline to beat. `length_correlation` is the Spearman correlation between the scorer's
preference for the chosen side and how much longer the chosen side is: near 1 means the scorer
is mostly measuring length. Tied pairs (meta `tie`) are left out.

Agreement, the length baseline and position consistency carry 95% Wilson intervals (ties count
1/2 of a success), so a judge is compared with the baseline inside its noise. A scorer's
`fitness` field (`FitnessThreshold`) makes a run refuse the scorer when its measured agreement
on a labelled file is below the threshold, before it scores anything (`require_fitness`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import polars as pl
from pydantic import AfterValidator, Field, ValidationInfo

from curation.registry import ComponentConfig, resolve_local_path

if TYPE_CHECKING:  # curation.scorers.base imports this module for ScorerConfig.fitness
    from curation.scorers.base import Scorer, ScorerConfig

Z95 = 1.959963984540054


def _labelled_file(value: str, info: ValidationInfo) -> str:
    base = (info.context or {}).get("base_dir")
    return resolve_local_path(value, Path(base) if base else Path.cwd())


class FitnessThreshold(ComponentConfig):
    """A scorer's entry `fitness: {data: FILE, min_agreement: 0.6}`: measured before it is used.

    `data` is a file of human-labelled pairs (relative to the recipe), `where` keeps pairs whose
    meta fields match, `limit` caps how many are scored (the check costs a scoring pass).
    """

    data: Annotated[str, AfterValidator(_labelled_file)]
    min_agreement: float = Field(ge=0.0, le=1.0)
    min_position_consistency: float | None = Field(None, ge=0.0, le=1.0, description="pairwise scorers judging both orders")
    where: dict[str, str] = Field(default_factory=dict)
    limit: int | None = Field(None, ge=1)


@dataclass
class FitnessReport:
    scorer: str
    kind: str
    mode: str
    source: str
    pairs: int  # labelled, non-tie pairs checked
    scored: int  # pairs with a verdict
    failed: int  # pairs without one (a null value on either side)
    failed_rows: int  # score rows with a null value
    agreement: float | None
    longer_is_better: float | None
    position_consistency: float | None  # pairwise scorers that judge both orders
    agreement_ci: tuple[float, float] | None  # 95% Wilson interval
    longer_is_better_ci: tuple[float, float] | None
    position_consistency_ci: tuple[float, float] | None
    length_correlation: float | None
    prefers_longer: float | None  # share of verdicts (unequal lengths, no tie) that pick the longer side
    seconds: float
    where: dict[str, str] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # most common errors and their counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (successes may be fractional: ties count 1/2)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def _vote(diff: float) -> float:
    return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (ties get average ranks); None under 3 points or when one side is constant."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def load_pairs(path: str | Path, where: Mapping[str, str] | None = None, limit: int | None = None):
    """(prompts, candidates, pairs) of a labelled file, filtered on pair meta fields, ties dropped."""
    from curation.sources import read_source

    data = read_source(path)
    if data.pairs.height == 0:
        raise ValueError(f"{path}: no preference pairs in it (format {data.format})")
    metas = [json.loads(m) if m else {} for m in data.pairs.get_column("meta").to_list()]
    keep = []
    for m in metas:
        ok = not m.get("tie") and all(str(m.get(k)) == str(v) for k, v in (where or {}).items())
        keep.append(ok)
    pairs = data.pairs.filter(pl.Series(keep))
    if where and pairs.height == 0:
        fields = sorted({k for m in metas for k in m})
        raise ValueError(f"{path}: no pair matches {dict(where)}; pair meta fields: {fields}")
    if limit is not None:
        pairs = pairs.head(limit)
    return data.prompts, data.candidates, pairs


def check_scorer(
    scorer: Scorer | ScorerConfig | Mapping[str, Any],
    pairs: str | Path,
    *,
    limit: int | None = None,
    where: Mapping[str, str] | None = None,
) -> FitnessReport:
    """Score a labelled slice and measure agreement, position consistency and length bias."""
    from curation.scorers.base import (
        Scorer,
        build_scorer,
        pairwise_rows,
        pointwise_rows,
    )

    scorer = scorer if isinstance(scorer, Scorer) else build_scorer(scorer)  # config errors before reading
    started = time.perf_counter()
    prompts, candidates, labelled = load_pairs(pairs, where, limit)
    texts = dict(zip(candidates.get_column("candidate_id"), candidates.get_column("text")))
    if scorer.mode == "pairwise":
        scores = scorer.score(pairwise_rows(prompts, labelled, candidates))
        by_id = {r["target_id"]: r for r in scores.iter_rows(named=True)}
    else:
        needed = set(labelled.get_column("chosen_id")) | set(labelled.get_column("rejected_id"))
        scores = scorer.score(pointwise_rows(prompts, candidates.filter(pl.col("candidate_id").is_in(list(needed)))))
        by_id = {r["target_id"]: r for r in scores.iter_rows(named=True)}
    votes, signals, length_diffs, longer, consistent = [], [], [], [], []
    baseline = []
    failed = 0
    for p in labelled.iter_rows(named=True):
        lc, lr = len(texts[p["chosen_id"]] or ""), len(texts[p["rejected_id"]] or "")
        baseline.append(_vote(lc - lr))
        if scorer.mode == "pairwise":
            row = by_id.get(p["pair_id"])
            signal = None if row is None or row["value"] is None else row["value"] - 0.5
            if row is not None and row["detail"]:
                agreement = json.loads(row["detail"]).get("agreement")
                if agreement is not None:
                    consistent.append(1.0 if agreement else 0.0)
        else:
            c, r = by_id.get(p["chosen_id"]), by_id.get(p["rejected_id"])
            ok = c is not None and r is not None and c["value"] is not None and r["value"] is not None
            signal = c["value"] - r["value"] if ok else None  # type: ignore[index]
        if signal is None:
            failed += 1
            continue
        votes.append(_vote(signal))
        signals.append(signal)
        length_diffs.append(float(lc - lr))
        if lc != lr and signal != 0:
            longer.append(1.0 if (signal > 0) == (lc > lr) else 0.0)
    errors: dict[str, int] = {}
    for e in scores.get_column("error").drop_nulls().to_list():
        errors[e] = errors.get(e, 0) + 1
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    interval = lambda xs: wilson_interval(sum(xs), len(xs))
    return FitnessReport(
        scorer=scorer.config.name,
        kind=scorer.name,
        mode=scorer.mode,
        source=str(pairs),
        pairs=labelled.height,
        scored=len(votes),
        failed=failed,
        failed_rows=scores.get_column("value").null_count(),
        agreement=mean(votes),
        longer_is_better=mean(baseline),
        position_consistency=mean(consistent),
        agreement_ci=interval(votes),
        longer_is_better_ci=interval(baseline),
        position_consistency_ci=interval(consistent),
        length_correlation=spearman(signals, length_diffs),
        prefers_longer=mean(longer),
        seconds=round(time.perf_counter() - started, 3),
        where=dict(where or {}),
        errors=dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
    )


_checked: dict[tuple[str, str], FitnessReport] = {}


def require_fitness(scorer: Scorer) -> FitnessReport | None:
    """Measure a scorer that names a `fitness` threshold; raise ScorerError when it falls short.

    Measured once per process for a scorer fingerprint (shards of one run share the result).
    """
    from curation.scorers.base import ScorerError

    threshold: FitnessThreshold | None = getattr(scorer.config, "fitness", None)
    if threshold is None:
        return None
    key = (scorer.fingerprint, threshold.model_dump_json())
    if key not in _checked:
        _checked[key] = check_scorer(scorer, threshold.data, limit=threshold.limit, where=threshold.where)
    report = _checked[key]
    label = f"scorer {report.scorer!r} ({report.kind})"
    on = f"on {report.scored} labelled pairs of {Path(threshold.data).name}" + (f" where {threshold.where}" if threshold.where else "")
    if report.agreement is None:
        raise ScorerError(f"{label}: no verdict {on} ({report.failed} failed); its fitness cannot be measured")
    ci = report.agreement_ci or (report.agreement, report.agreement)
    if report.agreement < threshold.min_agreement:
        raise ScorerError(
            f"{label}: agreement with human labels {report.agreement:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}) {on} "
            f"is below the recipe's fitness.min_agreement {threshold.min_agreement}; longer-is-better scores "
            f"{report.longer_is_better:.3f} on the same pairs. Use a better scorer or lower the threshold."
        )
    need = threshold.min_position_consistency
    if need is not None:
        if report.position_consistency is None:
            raise ScorerError(f"{label}: fitness.min_position_consistency is set, but the scorer does not judge both orders")
        if report.position_consistency < need:
            raise ScorerError(
                f"{label}: position consistency {report.position_consistency:.3f} {on} is below the recipe's "
                f"fitness.min_position_consistency {need}: its verdicts change when the responses swap places"
            )
    return report
