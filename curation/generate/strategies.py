"""Sampling strategies: how the n candidates of a prompt are asked for, and read back.

- `n_samples`: n independent samples with the configured sampling parameters.
- `temperature_ladder`: the n samples' temperatures spread evenly over `temperature_range`.
- `perturb`: DivSampling-style prompt perturbation; sample i gets instruction i (cycling)
  prepended to the last user turn, so the samples differ by more than sampling noise.
- `verbalized`: verbalized sampling; one call asks for k diverse responses with their
  probabilities, and the reply is parsed into k candidates (ceil(n / k) calls per prompt).
- on-policy generation is any strategy run with the policy being trained as the model: see
  `on_policy`.

Request seeds are `base + sample_index` with a per-prompt base derived from the config seed, so a
prompt's samples are reproducible one by one: asking for n=4 after n=2 reuses (and with the
cache, does not regenerate) samples 0 and 1.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

import polars as pl

from curation import schema
from curation.generate.base import Completion, GeneratorConfig, Request

if TYPE_CHECKING:
    from curation.generate.base import Generator

# Task-agnostic instruction perturbations in the spirit of DivSampling (role, style and approach
# prompts); users pass their own, for example task-specific ones, in `perturbations`.
DEFAULT_PERTURBATIONS = [
    "Answer the following as an expert in the field would.",
    "Think about the problem from an unusual angle before you answer.",
    "Answer concisely, in as few words as needed.",
    "Explain your answer step by step.",
    "Answer with a concrete example.",
    "Answer as a patient teacher speaking to a beginner.",
    "Consider a less common approach than the obvious one.",
    "Give a thorough, detailed answer.",
]

VERBALIZED_INSTRUCTION = (
    "Generate {k} different responses to the request below. The responses should be diverse, "
    "sampled from the full range of plausible responses. Give each response with its estimated "
    "probability (between 0 and 1) in this format, and nothing else:\n"
    "<response><text>RESPONSE</text><probability>PROBABILITY</probability></response>\n\n"
    "Request:\n{request}"
)

_SEED_SPACE = 2**31 - 2**20  # room for sample indices above every base seed


def prompt_seed(seed: int, prompt_id: str) -> int:
    """Per-prompt base seed: decorrelates prompts, reproducible from the config seed."""
    return int(schema.content_hash("seed", seed, prompt_id), 16) % _SEED_SPACE


def ladder_temperature(config: GeneratorConfig, index: int) -> float:
    lo, hi = config.temperature_range
    if config.n == 1:
        return round((lo + hi) / 2, 6)
    return round(lo + (hi - lo) * index / (config.n - 1), 6)


def _with_prefix(messages: list[dict[str, str]], prefix: str) -> list[dict[str, str]]:
    out = [dict(m) for m in messages]
    out[-1]["content"] = f"{prefix}\n\n{out[-1]['content']}"
    return out


def _verbalized(messages: list[dict[str, str]], k: int) -> list[dict[str, str]]:
    out = [dict(m) for m in messages]
    out[-1]["content"] = VERBALIZED_INSTRUCTION.format(k=k, request=out[-1]["content"])
    return out


def expand(prompts: list[dict[str, Any]], config: GeneratorConfig) -> list[Request]:
    """The model calls that produce `config.n` candidates for each prompt."""
    requests: list[Request] = []
    base_sampling = config.sampling
    perturbations = [p for p in (config.perturbations or DEFAULT_PERTURBATIONS) if p.strip()]
    for row in prompts:
        pid, messages = row["prompt_id"], [dict(m) for m in row["messages"]]
        base_seed = prompt_seed(base_sampling.seed, pid)
        if config.strategy == "verbalized":
            k = config.verbalized_k
            for call in range(math.ceil(config.n / k)):
                responses = min(k, config.n - call * k)
                requests.append(
                    Request(pid, _verbalized(messages, k), call, base_seed + call, base_sampling,
                            {"strategy": "verbalized", "k": k}, responses=responses)
                )
            continue
        for i in range(config.n):
            sampling, msgs, meta = base_sampling, messages, {"strategy": config.strategy}
            if config.strategy == "temperature_ladder":
                t = ladder_temperature(config, i)
                sampling = base_sampling.model_copy(update={"temperature": t})
                meta["temperature"] = t
            elif config.strategy == "perturb":
                j = i % len(perturbations)
                msgs = _with_prefix(messages, perturbations[j])
                meta.update(perturbation=j, instruction=perturbations[j])
            requests.append(Request(pid, msgs, i, base_seed + i, sampling, meta))
    return requests


# ------------------------------------------------ verbalized replies

_TAGGED = re.compile(
    r"<response>\s*<text>(.*?)</text>(?:\s*<probability>(.*?)</probability>)?\s*</response>",
    re.DOTALL,
)


def parse_verbalized(reply: str) -> list[tuple[str, float | None]]:
    """(response, probability) pairs from a verbalized-sampling reply, tolerant of format drift.

    Accepts the tagged format asked for, or a JSON list of {"text"/"response", "probability"}
    objects (bare or inside a ```json fence). Returns [] when neither is found.
    """
    found = [(t.strip(), _probability(p)) for t, p in _TAGGED.findall(reply)]
    if found:
        return [(t, p) for t, p in found if t]
    fenced = re.search(r"```(?:json)?\s*(.*?)```", reply, re.DOTALL)
    body = fenced.group(1) if fenced else reply
    start, end = body.find("["), body.rfind("]")
    if start < 0 or end <= start:
        return []
    try:
        items = json.loads(body[start : end + 1])
    except json.JSONDecodeError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            text = item.get("text", item.get("response"))
            if isinstance(text, str) and text.strip():
                out.append((text.strip(), _probability(item.get("probability"))))
    return out


def _probability(value: Any) -> float | None:
    try:
        s = str(value).strip()
        p = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except (TypeError, ValueError):
        return None
    return p if 0.0 <= p <= 1.0 else None


# ------------------------------------------------ candidates


def assemble(requests: list[Request], completions: list[Completion], generator: "Generator") -> pl.DataFrame:
    """The candidates frame: one row per asked-for candidate, errors included."""
    config = generator.config
    gen_fp, label, seed = generator.generation_fingerprint(), generator.label, config.sampling.seed
    rows: list[dict[str, Any]] = []

    def row(req: Request, index: int, comp: Completion, meta: dict[str, Any], **over: Any) -> None:
        rows.append(
            {
                "candidate_id": schema.candidate_id(req.prompt_id, gen_fp, seed, index),
                "prompt_id": req.prompt_id,
                "text": comp.text if comp.error is None else None,
                "generator": label,
                "seed": seed,
                "sample_index": index,
                "n_tokens": comp.n_tokens,
                "logprob": comp.logprob if config.sampling.logprobs else None,
                "finish_reason": comp.finish_reason,
                "error": comp.error,
                "meta": schema.dumps(meta),
                **over,
            }
        )

    for req, comp in zip(requests, completions):
        if req.responses == 1 and config.strategy != "verbalized":
            row(req, req.sample_index, comp, req.meta)
            continue
        first = req.sample_index * config.verbalized_k
        parsed = parse_verbalized(comp.text or "") if comp.error is None else []
        for j in range(req.responses):
            meta = {**req.meta, "call": req.sample_index, "call_tokens": comp.n_tokens}
            if j < len(parsed):
                meta["verbalized_probability"] = parsed[j][1]
                row(req, first + j, comp, meta, text=parsed[j][0], n_tokens=None, logprob=None)
            else:
                error = comp.error or (
                    f"verbalized reply held {len(parsed)} of {req.responses} responses; raw reply: "
                    f"{(comp.text or '')[:200]!r}"
                )
                row(req, first + j, comp, meta, text=None, n_tokens=None, logprob=None, error=error)
    return schema.frame(rows, "candidates")


def on_policy(config: GeneratorConfig, policy: str) -> GeneratorConfig:
    """The same generation settings, sampling from `policy` (the model being trained)."""
    return config.model_copy(update={"model": str(policy)})
