"""`transformers`: the fallback for machines without vLLM: batched `model.generate`, left padding.

Requests with the same sampling parameters are batched (sorted by length, so padding stays
small). Each batch seeds torch from its requests' seeds: the same requests give the same text,
though unlike vLLM a sample's text can change when it is batched with other requests.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from curation import schema
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

_model: tuple[str, Any, Any] | None = None  # (key, model, tokenizer): one per process


def get_model(model_dir: Path, identity: str, device: str, dtype: str) -> tuple[Any, Any]:
    """The process's model; reloaded when the files change (an on-policy round saved in place)."""
    global _model
    key = f"{model_dir}|{identity}|{device}|{dtype}"
    if _model is not None and _model[0] == key:
        return _model[1], _model[2]
    _model = None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("transformers: loading %s on %s", model_dir, device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    _model = (key, model, tokenizer)
    return model, tokenizer


@GENERATORS.register("transformers")
class TransformersGenerator(LocalModelGenerator):
    class Config(GeneratorConfig):
        local_paths = ("model",)
        backend: str = "transformers"
        batch_size: int = Field(16, ge=1)
        device: str = "auto"  # "auto": cuda when available, else cpu
        dtype: str = "auto"

    config: Config

    def _device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def prepare(self, requests: list[Request]) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        apply_length_rule(requests, tokenizer, context_length(self.model_dir), self.config)

    def complete(self, requests: list[Request], stats: Stats) -> list[Completion]:
        from curation.progress import tracked

        model, tokenizer = get_model(self.model_dir, self.model_identity(), self._device(), self.config.dtype)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(schema.dumps(r.sampling.model_dump(mode="json")), []).append(i)
        batches = []
        for indices in groups.values():
            indices.sort(key=lambda i: len(requests[i].prompt_token_ids or []))
            size = self.config.batch_size
            batches += [indices[j : j + size] for j in range(0, len(indices), size)]
        completions: list[Completion | None] = [None] * len(requests)
        for batch in tracked(batches, f"transformers: {self.config.model}", min_total=4):
            for i, comp in zip(batch, _generate_batch(model, tokenizer, [requests[i] for i in batch])):
                completions[i] = comp
        return completions  # type: ignore[return-value]


def _generate_batch(model: Any, tokenizer: Any, requests: list[Request]) -> list[Completion]:
    import torch

    s = requests[0].sampling
    torch.manual_seed(int(schema.content_hash("batch", [r.seed for r in requests]), 16) % 2**63)
    width = max(len(r.prompt_token_ids or []) for r in requests)
    pad = tokenizer.pad_token_id
    ids = [[pad] * (width - len(r.prompt_token_ids or [])) + list(r.prompt_token_ids or []) for r in requests]
    mask = [[0] * (width - len(r.prompt_token_ids or [])) + [1] * len(r.prompt_token_ids or []) for r in requests]
    input_ids = torch.tensor(ids, device=model.device)
    kwargs: dict[str, Any] = {
        "max_new_tokens": s.max_tokens,
        "pad_token_id": pad,
        "return_dict_in_generate": True,
        "output_logits": s.logprobs,
    }
    if s.temperature > 0:
        kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else None)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if s.stop:
        kwargs.update(stop_strings=list(s.stop), tokenizer=tokenizer)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.tensor(mask, device=model.device), **kwargs)
    generated = out.sequences[:, width:]
    logprobs = None
    if s.logprobs:
        steps = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # raw model log-probabilities
        logprobs = steps.gather(-1, generated[:, : steps.shape[1], None]).squeeze(-1)
    eos = set(_as_list(model.generation_config.eos_token_id)) | {tokenizer.eos_token_id}
    completions = []
    for row in range(len(requests)):
        tokens = generated[row].tolist()
        length, finish = len(tokens), "length"
        for j, t in enumerate(tokens):
            if t in eos:
                length, finish = j + 1, "stop"
                break
            if t == pad:  # the row ended earlier (a stop string) and was padded
                length = j
                break
        text = tokenizer.decode(tokens[:length], skip_special_tokens=True)
        cut = [text.find(stop) for stop in s.stop if stop in text]
        if cut:
            text, finish = text[: min(cut)], "stop"
        completions.append(
            Completion(
                text=text,
                n_tokens=length,
                logprob=float(logprobs[row, :length].sum()) if logprobs is not None else None,
                finish_reason=finish,
            )
        )
    return completions


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]
