"""The `Generator` protocol: prompts in, candidates out."""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field

from curation.registry import Component, ComponentConfig, ModelRef


class SamplingParams(ComponentConfig):
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0
    logprobs: bool = False


class GeneratorConfig(ComponentConfig):
    """Fields every backend shares; a backend subclasses this with its own."""

    backend: str
    model: ModelRef
    n: int = Field(1, ge=1)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    strategy: Literal["n_samples", "temperature_ladder", "perturb", "verbalized"] = "n_samples"
    on_long_prompt: Literal["truncate", "skip"] = "skip"


class Generator(Component):
    """Batched generation of `n` candidates per prompt.

    `generate(prompts)` takes a frame of the `prompts` table and returns a frame of the
    `candidates` table. A failure on one prompt gives rows with `error` set, not an exception.
    Engines load once per process and are reused by every call.
    """

    Config = GeneratorConfig

    def generate(self, prompts: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError
