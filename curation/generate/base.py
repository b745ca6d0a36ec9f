"""The `Generator` protocol: prompts in, candidates out.

A backend implements two small methods: `model_identity()` (what makes its outputs differ from
another model's: a hash of the model files, or the model a server reports) and
`complete(requests)` (one completion per request, errors per request). Everything else, the
sampling strategy, the request cache, long-prompt handling, ids and the candidates frame, is
shared here so that every backend behaves the same.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
from pydantic import Field, model_validator

from curation import models, schema
from curation.models import is_hub_id, model_fingerprint
from curation.registry import Component, ComponentConfig
from curation.stats import Stats

if TYPE_CHECKING:
    from curation.generate.cache import RequestCache

log = logging.getLogger("curation.generate")


class GenerationError(ValueError):
    """Bad generation input or set-up (no prompts, no model, no server), raised before heavy work."""


class SamplingParams(ComponentConfig):
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)  # -1: no top-k cut
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0
    logprobs: bool = False  # record the sum of the sampled tokens' log-probabilities


class GeneratorConfig(ComponentConfig):
    """Fields every backend shares; a backend subclasses this with its own."""

    backend: str
    model: str
    n: int = Field(1, ge=1)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    strategy: Literal["n_samples", "temperature_ladder", "perturb", "verbalized"] = "n_samples"
    on_long_prompt: Literal["truncate", "skip"] = "skip"
    # temperature_ladder: the n samples' temperatures are spread evenly over this range
    temperature_range: tuple[float, float] = (0.3, 1.2)
    # perturb: sample i gets perturbations[i % len] prepended to its last user turn; None: built-in set
    perturbations: list[str] | None = None
    # verbalized: responses asked for in one call; ceil(n / k) calls per prompt
    verbalized_k: int = Field(5, ge=1, le=20)
    # prompt-token limit; None: the model's context length minus sampling.max_tokens
    max_prompt_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_strategy_fields(self) -> "GeneratorConfig":
        lo, hi = self.temperature_range
        if lo < 0 or hi < lo:
            raise ValueError(f"temperature_range must be 0 <= low <= high, got {self.temperature_range}")
        if self.perturbations is not None and not [p for p in self.perturbations if p.strip()]:
            raise ValueError("perturbations must hold at least one non-empty instruction (or be left out)")
        return self


@dataclass
class Request:
    """One model call: a conversation, its sampling parameters and its seed."""

    prompt_id: str
    messages: list[dict[str, str]]
    sample_index: int  # the call's index among the prompt's calls
    seed: int  # the request seed, derived from the config seed, the prompt and the sample index
    sampling: SamplingParams  # with the strategy's temperature applied
    meta: dict[str, Any] = field(default_factory=dict)
    responses: int = 1  # candidates this call yields (verbalized sampling: up to k)
    prompt_token_ids: list[int] | None = None  # set by local backends in `prepare`
    skip_reason: str | None = None  # set when the prompt cannot be sent (too long)


@dataclass
class Completion:
    text: str | None = None
    n_tokens: int | None = None
    logprob: float | None = None
    finish_reason: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {"text": self.text, "n_tokens": self.n_tokens, "logprob": self.logprob, "finish_reason": self.finish_reason}
        )

    @classmethod
    def from_json(cls, payload: str) -> "Completion":
        return cls(**json.loads(payload))


class Generator(Component):
    """Batched generation of `n` candidates per prompt.

    `generate(prompts)` takes a frame of the `prompts` table and returns a frame of the
    `candidates` table. A failure on one prompt gives rows with `error` set, not an exception.
    Engines load once per process and are reused by every call.
    """

    Config = GeneratorConfig
    config: GeneratorConfig

    def __init__(self, config: ComponentConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        if isinstance(config, dict):
            config = self.Config(**config)
        elif config is not None and not isinstance(config, self.Config):
            # a base GeneratorConfig, re-validated against this backend's fields
            config = self.Config(**config.model_dump())
        super().__init__(config, **kwargs)
        self.last_stats: Stats | None = None

    # ------------------------------------------------ what a backend implements

    def check(self) -> None:
        """Cheap up-front checks (model path, server health); raise GenerationError."""

    def model_identity(self) -> str:
        raise NotImplementedError

    def output_settings(self) -> dict[str, Any]:
        """Backend settings beyond sampling that change what the model says (structured-output
        constraints, dtype, context length, quantization): part of candidate ids and cache keys."""
        return {}

    def prepare(self, requests: list[Request]) -> None:
        """Tokenize and apply the long-prompt rule (local backends); sets `skip_reason`."""

    def complete(self, requests: list[Request], stats: Stats) -> list[Completion]:
        raise NotImplementedError

    # ------------------------------------------------ shared

    @property
    def label(self) -> str:
        """Readable generator name for the `generator` column: backend, model, fingerprint."""
        model = self.config.model.rstrip("/").rsplit("/", 1)[-1]
        return f"{self.name}:{model}#{self.generation_fingerprint()[:8]}"

    def generation_fingerprint(self) -> str:
        """Everything that changes what a given sample says; part of every candidate id."""
        if not hasattr(self, "_generation_fp"):
            c = self.config
            self._generation_fp = schema.content_hash(
                "generator",
                self.name,
                self.model_identity(),
                self.output_settings(),
                c.sampling.model_dump(mode="json"),
                c.strategy,
                _strategy_fields(c),
                c.on_long_prompt,
                c.max_prompt_tokens,
            )
        return self._generation_fp

    def generate(self, prompts: pl.DataFrame) -> pl.DataFrame:
        candidates, self.last_stats = self.run(prompts)
        return candidates

    def run(self, prompts: pl.DataFrame, cache: RequestCache | None = None) -> tuple[pl.DataFrame, Stats]:
        """Generate candidates for `prompts`, answering from `cache` where it can."""
        from curation.generate.strategies import assemble, expand

        started = time.perf_counter()
        stats = Stats()
        rows = check_prompts(prompts, stats)
        self.check()
        requests = expand(rows, self.config)
        self.prepare(requests)
        stats.skipped_long = sum(r.skip_reason is not None for r in requests)
        stats.truncated = sum(bool(r.meta.get("truncated_from")) for r in requests)

        identity = schema.content_hash("model", self.model_identity(), self.output_settings())
        completions: list[Completion | None] = [None] * len(requests)
        todo: list[int] = []
        keys: list[str | None] = [None] * len(requests)
        for i, req in enumerate(requests):
            if req.skip_reason is not None:
                completions[i] = Completion(error=req.skip_reason, finish_reason="skipped")
                continue
            if cache is not None:
                keys[i] = cache.key(self.name, identity, req)
                hit = cache.get(keys[i])
                if hit is not None:
                    completions[i] = hit
                    stats.cache_hits += 1
                    continue
            todo.append(i)

        if todo:
            log.info("%s: %d calls to %s (%d answered by the cache)", self.name, len(todo), self.config.model, stats.cache_hits)
            fresh = self.complete([requests[i] for i in todo], stats)
            if len(fresh) != len(todo):
                raise RuntimeError(f"{self.name} returned {len(fresh)} completions for {len(todo)} requests")
            stats.calls = len(todo)
            for i, comp in zip(todo, fresh):
                completions[i] = comp
                if comp.error is not None:
                    stats.failed_calls += 1
                else:
                    stats.tokens += comp.n_tokens or 0
            if cache is not None:
                cache.put_many((keys[i], completions[i]) for i in todo if completions[i].error is None)  # type: ignore[union-attr]

        candidates = assemble(requests, completions, self)  # type: ignore[arg-type]
        stats.candidates = candidates.height
        stats.errors = candidates.height - candidates.get_column("error").null_count()
        stats.seconds = time.perf_counter() - started
        log.info("%s: %s", self.name, stats.summary())
        return candidates, stats


def _strategy_fields(c: GeneratorConfig) -> dict[str, Any]:
    if c.strategy == "temperature_ladder":
        return {"temperature_range": list(c.temperature_range)}
    if c.strategy == "perturb":
        return {"perturbations": c.perturbations}
    if c.strategy == "verbalized":
        return {"verbalized_k": c.verbalized_k}
    return {}


def check_prompts(prompts: pl.DataFrame, stats: Stats) -> list[dict[str, Any]]:
    """Validated, de-duplicated prompt rows; a clear error names the row and the problem."""
    if not isinstance(prompts, pl.DataFrame):
        raise GenerationError(f"prompts must be a polars DataFrame of the prompts table, got {type(prompts).__name__}")
    if prompts.height == 0:
        raise GenerationError("no prompts to generate for: the prompts frame is empty")
    missing = [c for c in ("prompt_id", "messages") if c not in prompts.columns]
    if missing:
        raise GenerationError(f"prompts frame lacks column(s) {missing}; it has {prompts.columns}")
    rows, seen = [], set()
    for i, row in enumerate(prompts.select("prompt_id", "messages").iter_rows(named=True)):
        problem = schema.check_messages(row["messages"])
        if problem:
            raise GenerationError(f"prompts row {i} (prompt_id {row['prompt_id']}): field 'messages' {problem}")
        if not row["prompt_id"]:
            raise GenerationError(f"prompts row {i}: field 'prompt_id' is empty")
        if row["prompt_id"] in seen:
            stats.duplicate_prompts += 1
            continue
        seen.add(row["prompt_id"])
        rows.append(row)
    stats.prompts = len(rows)
    return rows


# ------------------------------------------------ local models (vllm, transformers)

class LocalModelGenerator(Generator):
    """A backend that loads a model folder in this process (vllm, transformers)."""

    def check(self) -> None:
        self.model_dir = resolve_model(self.config.model)

    def model_identity(self) -> str:
        """A fingerprint of the folder's files, so a model saved in place gets new candidate ids."""
        if not hasattr(self, "_identity"):
            self._identity = model_fingerprint(resolve_model(self.config.model))
        return self._identity

    def output_settings(self) -> dict[str, Any]:
        return {"dtype": getattr(self.config, "dtype", None)}


def resolve_model(model: str) -> Path:
    """The local folder of `model` (a path, or a Hub id already in the local cache); clear errors."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise GenerationError(f"model {model!r} is a file, not a model folder (a folder with config.json)")
        if not (path / "config.json").is_file():
            raise GenerationError(f"model {model!r} is not a model: {path / 'config.json'} is missing")
        return path.resolve()
    if is_hub_id(model):
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        try:
            return Path(snapshot_download(model, local_files_only=offline))
        except Exception as exc:
            where = "not in the local Hugging Face cache (offline mode)" if offline else f"download failed: {exc}"
            raise GenerationError(f"model {model!r} not found: no such folder, and {where}") from None
    raise GenerationError(f"model {model!r} not found: no such folder")


def context_length(model_dir: Path) -> int | None:
    """The model's context window from its config.json, when it says."""
    return models.context_length(json.loads((model_dir / "config.json").read_text()))


def apply_length_rule(requests: list[Request], tokenizer: Any, context: int | None, config: GeneratorConfig) -> None:
    """Tokenize each request with the chat template and cut or skip prompts over the limit."""
    limit = config.max_prompt_tokens
    if limit is None and context is not None:
        limit = context - config.sampling.max_tokens
        if limit < 1:
            raise GenerationError(
                f"sampling.max_tokens={config.sampling.max_tokens} leaves no room for a prompt in the "
                f"model's context of {context} tokens"
            )
    encoded: dict[str, list[int]] = {}
    for req in requests:
        key = json.dumps(req.messages)
        if key not in encoded:
            text = tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
            encoded[key] = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = encoded[key]
        if limit is not None and len(ids) > limit:
            if config.on_long_prompt == "skip":
                req.skip_reason = (
                    f"prompt too long: {len(ids)} tokens > limit {limit} (on_long_prompt=skip)"
                )
                continue
            req.meta["truncated_from"] = len(ids)
            ids = ids[-limit:]  # keep the end: the latest turn and the assistant header
        req.prompt_token_ids = ids
