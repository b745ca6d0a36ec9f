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
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curation.scorers.base import (
    Scorer,
    ScorerConfig,
    build_scorer,
    pairwise_rows,
    pointwise_rows,
)


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
    length_correlation: float | None
    prefers_longer: float | None  # share of verdicts (unequal lengths, no tie) that pick the longer side
    seconds: float
    where: dict[str, str] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # most common errors and their counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _vote(diff: float) -> float:
    return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


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
        length_correlation=spearman(signals, length_diffs),
        prefers_longer=mean(longer),
        seconds=round(time.perf_counter() - started, 3),
        where=dict(where or {}),
        errors=dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
    )
