"""`vllm`: the offline vLLM engine, loaded once per process and reused by every batch.

Prompts are rendered with the model's chat template and tokenized here (so long prompts are cut
or skipped before the engine sees them), then sent as token ids. A prompt's consecutive samples
go out as one request with `n` samples: vLLM seeds sample i of a seeded request with seed + i,
which is the per-sample seed the strategies assign, so batching changes no text.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from curation.generate import GENERATORS
from curation.generate.base import (
    Completion,
    GeneratorConfig,
    LocalModelGenerator,
    Request,
    apply_length_rule,
    context_length,
)
from curation.stats import Stats

log = logging.getLogger("curation.generate")

_engine: tuple[str, Any] | None = None  # (key, vllm.LLM): one engine per process
engine_loads = 0  # how many engines this process has started (tests assert reuse)


def _cpu_defaults() -> None:
    """vLLM's CPU build needs a KV-cache size and thread binding; keep what the user set."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    contiguous = cpus == list(range(cpus[0], cpus[-1] + 1))
    for key, value in {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": f"{cpus[0]}-{cpus[-1]}" if contiguous else ",".join(map(str, cpus)),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }.items():
        os.environ.setdefault(key, value)


def get_engine(model_dir: Path, identity: str, engine_args: dict[str, Any]) -> Any:
    """The process's engine for this model (its files) and arguments; a different one replaces it."""
    global _engine, engine_loads
    key = json.dumps([str(model_dir), identity, engine_args], sort_keys=True)
    if _engine is not None and _engine[0] == key:
        return _engine[1]
    release_engine()
    import torch

    if not torch.cuda.is_available():
        _cpu_defaults()
    from vllm import LLM

    log.info("vllm: starting an engine for %s (%s)", model_dir, engine_args)
    llm = LLM(model=str(model_dir), **engine_args)
    engine_loads += 1
    _engine = (key, llm)
    return llm


def release_engine() -> None:
    """Shut the process's engine down (another model is wanted, or the work is over)."""
    global _engine
    if _engine is None:
        return
    llm = _engine[1]
    _engine = None
    shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if shutdown is not None and hasattr(shutdown, "shutdown"):
        shutdown.shutdown()
    del llm
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


OUTPUT_ENGINE_ARGS = (
    "dtype", "max_model_len", "quantization", "kv_cache_dtype", "tokenizer", "tokenizer_mode", "revision",
    "tokenizer_revision", "hf_overrides", "generation_config", "override_generation_config", "seed",
)


@GENERATORS.register("vllm")
class VLLMGenerator(LocalModelGenerator):
    class Config(GeneratorConfig):
        local_paths = ("model",)
        backend: str = "vllm"
        tensor_parallel_size: int = Field(1, ge=1)
        dtype: str = "auto"
        max_model_len: int | None = Field(None, ge=16)
        gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0)
        enforce_eager: bool = False
        engine_args: dict[str, Any] = Field(default_factory=dict)  # any other vllm.LLM argument

    config: Config

    def output_settings(self) -> dict[str, Any]:
        """Engine arguments that change outputs; memory and parallelism settings do not."""
        args = self.engine_args()
        return {k: args[k] for k in OUTPUT_ENGINE_ARGS if args.get(k) is not None}

    def engine_args(self) -> dict[str, Any]:
        c = self.config
        args: dict[str, Any] = {"tensor_parallel_size": c.tensor_parallel_size, "dtype": c.dtype}
        if c.max_model_len is not None:
            args["max_model_len"] = c.max_model_len
        if c.gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = c.gpu_memory_utilization
        if c.enforce_eager:
            args["enforce_eager"] = True
        import torch

        if not torch.cuda.is_available():
            # vLLM's CPU build crashes on a seeded request whose prefill is split across steps
            # ("CPU Generator does not use offset"): schedule every prompt whole.
            args["enable_chunked_prefill"] = False
        return {**args, **c.engine_args}

    def prepare(self, requests: list[Request]) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        context = self.config.max_model_len or self.config.engine_args.get("max_model_len") or context_length(self.model_dir)
        apply_length_rule(requests, tokenizer, context, self.config)

    def complete(self, requests: list[Request], stats: Stats) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        llm = get_engine(self.model_dir, self.model_identity(), self.engine_args())
        groups = _seed_runs(requests)
        prompts, params = [], []
        for group in groups:
            first = requests[group[0]]
            s = first.sampling
            prompts.append(TokensPrompt(prompt_token_ids=first.prompt_token_ids))
            params.append(
                SamplingParams(
                    n=len(group),
                    seed=first.seed,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    top_k=s.top_k if s.top_k > 0 else 0,
                    max_tokens=s.max_tokens,
                    stop=list(s.stop) or None,
                    logprobs=0 if s.logprobs else None,
                )
            )
        outputs = llm.generate(prompts, params, use_tqdm=len(prompts) > 1)
        completions: list[Completion | None] = [None] * len(requests)
        for group, out in zip(groups, outputs):
            for index, sample in zip(group, out.outputs):
                completions[index] = Completion(
                    text=sample.text,
                    n_tokens=len(sample.token_ids),
                    logprob=sample.cumulative_logprob if requests[index].sampling.logprobs else None,
                    finish_reason=sample.finish_reason,
                )
        return [c or Completion(error="vllm returned no output for this request") for c in completions]


def _seed_runs(requests: list[Request]) -> list[list[int]]:
    """Indices grouped into runs that one n-sample request reproduces: same prompt and
    sampling, consecutive seeds (greedy requests stay single)."""
    by_prompt: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        key = json.dumps([r.prompt_token_ids, r.sampling.model_dump(mode="json")])
        by_prompt.setdefault(key, []).append(i)
    runs: list[list[int]] = []
    for indices in by_prompt.values():
        if requests[indices[0]].sampling.temperature == 0:  # vLLM allows greedy requests only with n=1
            runs += [[i] for i in indices]
            continue
        indices.sort(key=lambda i: requests[i].seed)
        run = [indices[0]]
        for i in indices[1:]:
            if requests[i].seed == requests[run[-1]].seed + 1:
                run.append(i)
            else:
                runs.append(run)
                run = [i]
        runs.append(run)
    return runs
