"""Scorers (one module each) behind the `Scorer` protocol in `base`.

    SCORERS.build("heuristic", {"name": "len", "kind": "heuristic"}).score(rows) -> scores frame
    run_scorers(configs, prompts, candidates, pairs) -> scores of every scorer
"""

from curation.registry import Registry

SCORERS: Registry = Registry("scorer", "curation.scorers")

from curation.scorers.base import (  # noqa: E402 - after SCORERS: scorer modules import it
    Scorer,
    ScorerConfig,
    ScorerError,
    build_scorer,
    pairwise_rows,
    pointwise_rows,
    run_scorers,
)

__all__ = [
    "SCORERS",
    "Scorer",
    "ScorerConfig",
    "ScorerError",
    "build_scorer",
    "pairwise_rows",
    "pointwise_rows",
    "run_scorers",
]
