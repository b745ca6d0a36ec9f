"""Sequence-classification reward models (transformers), batched by length.

Rows are tokenized once, sorted by token length and cut into batches, each padded only to its
own longest row (dynamic padding); values are put back in input order. Sorting cuts the padding
a naive batching wastes on mixed lengths (benchmarks/score.py measures it).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Literal

import polars as pl
from pydantic import Field

from curation.scorers import SCORERS
from curation.scorers.base import Scorer, ScorerConfig, check_model_path, conversation

log = logging.getLogger("curation.scorers.reward_model")

_MODELS: dict[tuple[str, str | None, str, str], tuple[Any, Any]] = {}  # loaded once per process


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
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


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
        c = self.config
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
        c = self.config
        limit = c.max_length or getattr(model.config, "max_position_embeddings", None) or tok.model_max_length
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
        values = self.forward(tok, model, ids)
        out = [
            self.result(r["candidate_id"], values[i], details[i], errors.get(i))
            for i, r in enumerate(records)
        ]
        return self.frame(out)

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
