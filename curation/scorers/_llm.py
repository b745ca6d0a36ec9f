"""What LLM-based scorers (judge, rubric) share: calling a generation backend, reading replies.

Any backend in `curation.generate.GENERATORS` works (vLLM engine, an OpenAI-compatible server,
transformers): the scorer sends chat prompts as a `prompts` frame and reads the candidates' text.
Replies are parsed tolerantly: JSON anywhere in the reply first, then patterns. The JSON a
scorer asks for is a pydantic model (`reply_model`); its JSON schema is what structured output
sends. Reading stays tolerant rather than `model_validate`: small or unconstrained judges write
'7/10', "Rating" or an extra key, which a strict model would turn into lost rows.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from curation import schema
from curation.scorers.base import ScorerConfig

JUDGE_SAMPLING = {"temperature": 0.0, "max_tokens": 512}


def validate_generator(config: dict[str, Any]) -> dict[str, Any]:
    """Check a backend config against its registered `Config` (recipe load time, no model loads)."""
    from curation.generate import GENERATORS

    if not isinstance(config, dict) or "backend" not in config:
        raise ValueError("generator must be a mapping with a `backend` (and the backend's own fields)")
    try:
        cfg = GENERATORS.config_model(str(config["backend"]))
    except KeyError as exc:  # unknown backend: the message lists the known ones
        raise ValueError(str(exc)) from None
    cfg(**judge_generator_config(config))
    return config


def judge_generator_config(config: dict[str, Any]) -> dict[str, Any]:
    """One deterministic sample per prompt unless the recipe says otherwise."""
    out = dict(config)
    out["n"] = 1
    out["sampling"] = {**JUDGE_SAMPLING, **dict(config.get("sampling") or {})}
    return out


StructuredOutput = Literal["off", "vllm", "openai"]
RATIONALE = r'"rationale": "[^"\\\n]{0,300}"'
Rationale = Annotated[str, Field(max_length=300)]  # the JSON schema's twin of RATIONALE


def reply_model(name: str, **fields: Any) -> type[BaseModel]:
    """A reply format: these fields (`name=(type, ...)`), all required and no others, as OpenAI's
    strict `response_format` wants."""
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def with_structured_output(
    config: dict[str, Any], mode: StructuredOutput, regex: str, reply: type[BaseModel] | None
) -> dict[str, Any]:
    """Constrain replies to the expected JSON through the `openai` backend's request body:
    'vllm' sends vLLM's `structured_outputs.regex` (exact layout, even a random model complies),
    'openai' sends OpenAI's `response_format` JSON schema (OpenAI API and servers that copy it)."""
    if mode == "off":
        return config
    if config.get("backend") != "openai":
        raise ValueError(f"structured_output {mode!r} works through the `openai` backend, not {config.get('backend')!r}")
    extra = dict(config.get("extra_body") or {})
    if mode == "vllm":
        extra["structured_outputs"] = {"regex": regex}
    else:
        extra["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "judgement", "schema": reply.model_json_schema() if reply else {}, "strict": True},
        }
    return {**config, "extra_body": extra}


def number_alternation(low: int, high: int) -> str:
    return "(" + "|".join(str(n) for n in range(high, low - 1, -1)) + ")"


class LLMCalls:
    """Sends chat conversations to a generation backend; one call per distinct conversation."""

    def __init__(self, generator_config: dict[str, Any], owner: str) -> None:
        self.config = judge_generator_config(generator_config)
        self.owner = owner
        self.generator: Any = None  # built on first use; assign any Generator to reuse one
        self.calls = 0

    def _generator(self) -> Any:
        if self.generator is None:
            from curation.generate import GENERATORS

            self.generator = GENERATORS.build(self.config["backend"], self.config)
        return self.generator

    def model_identity(self) -> str:
        """The backend's model identity (its files, or what its server reports)."""
        return str(self._generator().model_identity())

    def retry_generator(self, attempt: int, temperature: float) -> Any:
        """The backend for retry `attempt` (>= 1): another seed, and when the first try was greedy,
        `temperature`, since a greedy retry would repeat the first reply word for word."""
        base = self._generator()
        s = base.config.sampling
        sampling = s.model_copy(update={"seed": s.seed + attempt, "temperature": s.temperature or temperature})
        retry = copy.copy(base)  # shares the loaded engine and the model identity
        retry.config = base.config.model_copy(update={"sampling": sampling})
        retry.__dict__.pop("_generation_fp", None)
        return retry

    def complete(
        self, conversations: list[list[dict[str, str]]], generator: Any = None
    ) -> list[tuple[str | None, str | None]]:
        """(reply text, error) for each conversation, in order; `generator` overrides the backend."""
        ids = [schema.prompt_id(c) for c in conversations]
        unique = dict(zip(ids, conversations))
        if not unique:
            return []
        prompts = schema.frame(
            [
                {"prompt_id": pid, "messages": msgs, "source": f"scorer:{self.owner}", "meta": "{}"}
                for pid, msgs in unique.items()
            ],
            "prompts",
        )
        out = (generator or self._generator()).generate(prompts)
        self.calls += len(unique)
        replies: dict[str, tuple[str | None, str | None]] = {}
        for r in out.sort("sample_index").iter_rows(named=True):
            if r["prompt_id"] not in replies:
                replies[r["prompt_id"]] = (r.get("text"), r.get("error"))
        missing = (None, "the generation backend returned no reply")
        return [replies.get(pid, missing) for pid in ids]


# ---------------------------------------------------------------- tolerant reply parsing

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def json_objects(text: str) -> list[dict[str, Any]]:
    """Top-level JSON objects in `text` (fenced or inline), last first: replies often end with one."""
    found: list[dict[str, Any]] = []
    for chunk in [m.group(1) for m in _FENCE.finditer(text)] or [text]:
        i = chunk.find("{")
        while i >= 0:
            try:  # the JSON value starting at this brace, and where it ends
                obj, end = _DECODER.raw_decode(chunk, i)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                found.append(obj)
                i = chunk.find("{", end)
            else:
                i = chunk.find("{", i + 1)
    return found[::-1]


def get_key(obj: dict[str, Any], *names: str) -> Any:
    lowered = {str(k).lower().strip(): v for k, v in obj.items()}
    for n in names:
        if n in lowered:
            return lowered[n]
    return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+)?\s*", value)
        return float(m.group(1)) if m else None
    return None


def clip(text: str | None, limit: int = 2000) -> str | None:
    return None if text is None else text[:limit]


class LLMScorerConfig(ScorerConfig):
    """What judge and rubric configs share: a generation backend and structured output.

    Recipes may give the backend's fields flat (backend, base_url, model, ...) beside the
    scorer's own, or nested under `generator`.
    """

    generator: dict[str, Any] = Field(description="generation backend config, e.g. {backend: openai, model: ..., base_url: ...}")
    structured_output: StructuredOutput = Field(
        "off", description="constrain replies to the JSON format: 'vllm' (vLLM server) or 'openai' (response_format)"
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_generator(cls, data: Any) -> Any:
        if isinstance(data, dict) and "generator" not in data and "backend" in data:
            data = dict(data)
            data["generator"] = {k: data.pop(k) for k in list(data) if k not in cls.model_fields}
        return data

    @field_validator("generator")
    @classmethod
    def _check_generator(cls, v: dict[str, Any]) -> dict[str, Any]:
        return validate_generator(v)

    @model_validator(mode="after")
    def _check_structured(self) -> "LLMScorerConfig":
        with_structured_output(self.generator, self.structured_output, "", None)
        return self
