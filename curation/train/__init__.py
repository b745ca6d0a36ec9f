"""The bundled training step (TRL) and evaluation.

`train(source, config, catalog)` trains one method on a catalog version (or a frame) and records
the model; `evaluate(model_dir, pairs, config, catalog)` measures it on held-out pairs and prompts.
Both import TRL and torch only when called.
"""

from __future__ import annotations

from typing import Any

from curation.train.config import EvaluateConfig, TrainConfig

__all__ = ["EvaluateConfig", "TrainConfig", "evaluate", "next_round", "train"]


def train(*args: Any, **kwargs: Any) -> Any:
    from curation.train.trainer import train as _train

    return _train(*args, **kwargs)


def evaluate(*args: Any, **kwargs: Any) -> Any:
    from curation.train.evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def next_round(*args: Any, **kwargs: Any) -> Any:
    from curation.train.rounds import next_round as _next_round

    return _next_round(*args, **kwargs)
