"""Generation backends (one module each) behind the `Generator` protocol in `base`.

    from curation.generate import run_generation
    candidates, stats = run_generation(prompts, {"backend": "vllm", "model": "path/to/model", "n": 4},
                                       cache_dir="cache/generate")

Backends: `vllm` (offline engine), `openai` (any OpenAI-compatible server), `transformers`
(fallback without vLLM). Strategies and the request cache are shared by all of them.
"""

from __future__ import annotations

import os
from typing import Any

import polars as pl

from curation.generate.base import GenerationError, Generator, GeneratorConfig
from curation.registry import Registry
from curation.stats import Stats

GENERATORS: Registry = Registry("generation backend", "curation.generate")

__all__ = ["GENERATORS", "GenerationError", "Generator", "GeneratorConfig", "run_generation"]


def build_generator(config: GeneratorConfig | dict[str, Any]) -> Generator:
    """The backend named by `config.backend`, its config validated against that backend's fields."""
    if isinstance(config, GeneratorConfig):
        return GENERATORS.get(config.backend)(config)  # type: ignore[no-any-return]
    if "backend" not in config:
        raise GenerationError("generation config needs a `backend`; known: " + ", ".join(GENERATORS.names()))
    return GENERATORS.build(config["backend"], dict(config))


def run_generation(
    prompts: pl.DataFrame,
    config: GeneratorConfig | dict[str, Any],
    cache_dir: str | os.PathLike | None = None,
) -> tuple[pl.DataFrame, Stats]:
    """Candidates for `prompts` and what the run cost; completions cached under `cache_dir`."""
    from curation.generate.cache import RequestCache

    generator = build_generator(config)
    if cache_dir is None:
        return generator.run(prompts)
    with RequestCache(cache_dir) as cache:
        return generator.run(prompts, cache=cache)
