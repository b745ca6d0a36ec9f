"""Sequence-classification reward models, run by transformers or by vLLM's pooling runner.

Rows are tokenized once here (chat template, left truncation) whichever backend runs them, so
both score the same token ids. transformers: rows sorted by token length and cut into batches,
each padded only to its own longest row (dynamic padding); values put back in input order.
Sorting cuts the padding a naive batching wastes on mixed lengths (benchmarks/score.py).
vllm: the token ids go to `LLM.classify` on an engine started with `runner="pooling"` (the
process's one vLLM engine, as generation uses), which batches by its own token budget and
returns the raw logits (no sigmoid), so the values equal the transformers path's.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field

from curation.models import context_length
from curation.scorers import SCORERS
from curation.scorers.base import Scorer, ScorerConfig, check_model_path, conversation

log = logging.getLogger("curation.scorers.reward_model")

_MODELS: dict[tuple[str, str | None, str, str], tuple[Any, Any]] = {}  # loaded once per process
VLLM_CHUNK = 1024  # rows per LLM.classify call (the engine batches within it)


class RewardModelConfig(ScorerConfig):
    local_paths = ("model",)
    model: str = Field(description="local folder of a sequence-classification reward model")
    batch_size: int = Field(8, ge=1)
    sort_by_length: bool = True
    max_length: int | None = Field(
        None, ge=8, description="longer inputs lose the prompt's start (the response is what is scored); flagged per row"
    )
    label_index: int = Field(0, ge=0, description="which logit is the reward")
    chat_template: bool = Field(True, description="format prompt + response with the tokenizer's chat template")
    device: str = Field("cpu", description="transformers only: vLLM runs where its build runs (CPU here, CUDA on a GPU)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    backend: Literal["transformers", "vllm"] = "transformers"
    enforce_eager: bool = Field(False, description="vllm: skip graph compilation (a faster start, slower rows)")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="vllm: any other vllm.LLM argument")


@SCORERS.register("reward_model")
class RewardModel(Scorer):
    """Pointwise: value = the reward model's logit for (prompt, response)."""

    Config = RewardModelConfig
    config: RewardModelConfig

    def __init__(self, config: RewardModelConfig | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        check_model_path(self.config.model, "model", f"scorer {self.config.name!r}")

    def model_paths(self) -> tuple[str, ...]:
        return (self.config.model,)

    def load(self) -> tuple[Any, Any]:
        """(tokenizer, model): a transformers model, or the vLLM engine for backend vllm."""
        c = self.config
        if c.backend == "vllm":
            return self.load_vllm()
        key = (c.model, self.model_identity(), c.device, c.dtype)
        if key not in _MODELS:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(c.model)
            model = AutoModelForSequenceClassification.from_pretrained(c.model, dtype=getattr(torch, c.dtype))
            model.to(c.device).eval()
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            if model.config.pad_token_id is None:
                model.config.pad_token_id = tok.pad_token_id
            _MODELS[key] = (tok, model)
        return _MODELS[key]

    def load_vllm(self) -> tuple[Any, Any]:
        from transformers import AutoTokenizer

        from curation.generate.vllm_engine import get_engine

        c = self.config
        tok = AutoTokenizer.from_pretrained(c.model)
        args: dict[str, Any] = {"runner": "pooling", "dtype": c.dtype}
        if c.max_length is not None:
            args["max_model_len"] = c.max_length
        if c.enforce_eager:
            args["enforce_eager"] = True
        return tok, get_engine(Path(c.model), self.model_identity(), {**args, **c.engine_args})

    def encode(self, tok: Any, items: list[tuple[list, str]]) -> list[list[int]]:
        """Token ids of (messages, response) items: templates rendered, then one batched
        tokenizer call (the fast tokenizer's batch path is much quicker than row by row)."""
        if not items:
            return []
        if self.config.chat_template and tok.chat_template:
            texts = tok.apply_chat_template([conversation(m, t) for m, t in items], tokenize=False)
            return [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
        prompts = ["\n\n".join(m["content"] for m in msgs) for msgs, _ in items]
        return [list(x) for x in tok(prompts, [t for _, t in items], add_special_tokens=True)["input_ids"]]

    def prompt_lengths(self, tok: Any, conversations: list[list]) -> list[int]:
        """Tokens before the response, rendered as `encode` renders them."""
        if not conversations:
            return []
        if self.config.chat_template and tok.chat_template:
            texts = tok.apply_chat_template([[dict(m) for m in c] for c in conversations], tokenize=False, add_generation_prompt=True)
            return [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
        prompts = ["\n\n".join(m["content"] for m in msgs) for msgs in conversations]
        return [len(x) for x in tok(prompts, add_special_tokens=True)["input_ids"]]

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        self.check_rows(rows)
        tok, model = self.load()
        limit = self.limit(tok, model)
        records = rows.select("candidate_id", "messages", "text").to_dicts()
        errors: dict[int, str] = {}
        for i, r in enumerate(records):
            if r["text"] is None:
                errors[i] = "no response text"
            elif not r["messages"]:
                errors[i] = "no prompt messages"
        ok = [i for i in range(len(records)) if i not in errors]
        encoded = dict(zip(ok, self.encode(tok, [(records[i]["messages"], records[i]["text"]) for i in ok])))
        # over the limit: cut from the left, so the prompt's start goes and the response stays whole
        # (a reward for a cut-off response would score a text nobody wrote); flagged on the row
        long = [i for i, seq in encoded.items() if len(seq) > limit]
        prompt_tokens = dict(zip(long, self.prompt_lengths(tok, [records[i]["messages"] for i in long])))
        ids: list[list[int] | None] = []
        details: list[dict] = []
        for i in range(len(records)):
            seq = encoded.get(i)
            detail: dict[str, Any] = {}
            if seq is not None:
                detail["tokens"] = len(seq)
                if len(seq) > limit:
                    response_tokens = len(seq) - prompt_tokens[i]
                    detail["truncated"] = "prompt" if response_tokens < limit else "prompt and response start"
                    detail["truncated_to"] = limit
                    seq = seq[-limit:]
            ids.append(seq)
            details.append(detail)
        values = self.classify(model, ids) if self.config.backend == "vllm" else self.forward(tok, model, ids)
        out = [
            self.result(r["candidate_id"], values[i], details[i], errors.get(i))
            for i, r in enumerate(records)
        ]
        return self.frame(out)

    def limit(self, tok: Any, model: Any) -> int:
        """The longest input in tokens: the model's context, or `max_length` when shorter (an
        encoder's 512 positions are below the 1,024 evaluation asks for; past them it fails)."""
        if self.config.backend == "vllm":
            context = int(model.llm_engine.model_config.max_model_len)
        else:
            context = min(n for n in (context_length(model.config.to_dict()), tok.model_max_length) if n)
        return min(self.config.max_length, context) if self.config.max_length else context

    def classify(self, llm: Any, ids: list[list[int] | None]) -> list[float | None]:
        """Raw logits from vLLM's pooling runner, in chunks so that long inputs show progress."""
        from vllm import PoolingParams

        values: list[float | None] = [None] * len(ids)
        todo = [i for i, seq in enumerate(ids) if seq is not None]
        chunk = max(self.config.batch_size, VLLM_CHUNK)
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            outputs = llm.classify(
                [{"prompt_token_ids": ids[i]} for i in part],
                pooling_params=PoolingParams(use_activation=False),
                use_tqdm=False,
            )
            for i, out in zip(part, outputs):
                values[i] = float(out.outputs.probs[self.config.label_index])
            if len(todo) > chunk:
                log.info("%s: %d/%d rows", self.config.name, min(start + chunk, len(todo)), len(todo))
        return values

    def batches(self, ids: list[list[int] | None]) -> list[list[int]]:
        """Index batches: by ascending token length when sorting, else in input order."""
        order = [i for i, seq in enumerate(ids) if seq is not None]
        if self.config.sort_by_length:
            order.sort(key=lambda i: len(ids[i]))  # type: ignore[arg-type]
        b = self.config.batch_size
        return [order[k : k + b] for k in range(0, len(order), b)]

    def forward(self, tok: Any, model: Any, ids: list[list[int] | None]) -> list[float | None]:
        import torch

        values: list[float | None] = [None] * len(ids)
        takes_positions = "position_ids" in inspect.signature(model.forward).parameters
        batches = self.batches(ids)
        for n, batch in enumerate(batches):
            padded = tok.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            kwargs = {k: v.to(self.config.device) for k, v in padded.items()}
            if takes_positions:  # positions count real tokens only, whichever side pads
                mask = kwargs["attention_mask"]
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = model(**kwargs).logits
            for i, v in zip(batch, logits[:, self.config.label_index].float().tolist()):
                values[i] = v
            if (n + 1) % 50 == 0:
                log.info("%s: %d/%d batches", self.config.name, n + 1, len(batches))
        return values
