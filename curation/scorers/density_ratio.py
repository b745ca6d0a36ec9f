"""CDR, the contrastive density ratio: log p_strong(response | prompt) - log p_weak(response | prompt).

A response that a stronger (e.g. aligned) model finds more likely than a weaker (e.g. base) model
carries what the stronger one learned; the ratio is a reward without a reward model. Both are
causal LMs run with transformers; each uses its own tokenizer and chat template, and by default
the log-probabilities are per-token means, so different tokenizations stay comparable.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl
from pydantic import Field

from curation.scorers import SCORERS
from curation.scorers.base import Scorer, ScorerConfig, check_model_path, local_model_identity

_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}


class DensityRatioConfig(ScorerConfig):
    local_paths = ("strong_model", "weak_model")
    strong_model: str = Field(description="local folder of the stronger causal LM")
    weak_model: str = Field(description="local folder of the weaker causal LM")
    reduce: Literal["mean", "sum"] = Field("mean", description="per-token mean or total log-probability")
    batch_size: int = Field(4, ge=1)
    max_length: int = Field(2048, ge=8, description="longer prompt + response are cut from the left")
    device: str = "cpu"


def load_causal_lm(path: str, device: str) -> tuple[Any, Any]:
    """Loaded once per process and per content: weights saved in place load again."""
    key = (path, local_model_identity(path), device)
    if key not in _MODELS:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        _MODELS[key] = (tok, model)
    return _MODELS[key]


def response_logprobs(
    tok: Any, model: Any, items: list[tuple[list[dict[str, str]], str]], batch_size: int, max_length: int, device: str
) -> list[tuple[float, int]]:
    """(sum of log p(response tokens | prompt), response token count) for each (messages, text)."""
    import torch

    seqs: list[tuple[list[int], int]] = []
    for messages, text in items:
        if tok.chat_template:
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if hasattr(prompt, "keys"):
                prompt = prompt["input_ids"]
            prompt = list(prompt)
        else:
            prompt = tok("\n\n".join(m["content"] for m in messages) + "\n\n")["input_ids"]
        response = tok(text, add_special_tokens=False)["input_ids"]
        ids = (prompt + response)[-max_length:]
        seqs.append((ids, min(len(response), len(ids) - 1)))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for k in range(0, len(order), batch_size):
        batch = order[k : k + batch_size]
        width = max(len(seqs[i][0]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            s = seqs[i][0]
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        for row, i in enumerate(batch):
            length, n_resp = len(seqs[i][0]), seqs[i][1]
            out[i] = (float(logp[row, length - 1 - n_resp : length - 1].sum()), n_resp)
    return out


@SCORERS.register("density_ratio")
class DensityRatio(Scorer):
    """Pointwise: value = reduced log p_strong - reduced log p_weak of the response."""

    Config = DensityRatioConfig
    config: DensityRatioConfig

    def __init__(self, config: DensityRatioConfig | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        owner = f"scorer {self.config.name!r}"
        check_model_path(self.config.strong_model, "strong_model", owner)
        check_model_path(self.config.weak_model, "weak_model", owner)

    def model_paths(self) -> tuple[str, ...]:
        return (self.config.strong_model, self.config.weak_model)

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        self.check_rows(rows)
        c = self.config
        records = rows.to_dicts()
        ok = [i for i, r in enumerate(records) if r["text"] and r["messages"]]
        items = [(records[i]["messages"], records[i]["text"]) for i in ok]
        sides = {}
        for side, path in (("strong", c.strong_model), ("weak", c.weak_model)):
            tok, model = load_causal_lm(path, c.device)
            sides[side] = response_logprobs(tok, model, items, c.batch_size, c.max_length, c.device)
        by_row = {i: k for k, i in enumerate(ok)}
        out = []
        for i, r in enumerate(records):
            if i not in by_row:
                out.append(self.result(r["candidate_id"], None, error="empty response or prompt"))
                continue
            (s_sum, s_n), (w_sum, w_n) = sides["strong"][by_row[i]], sides["weak"][by_row[i]]
            if min(s_n, w_n) == 0:
                out.append(self.result(r["candidate_id"], None, error="response has no tokens left to score"))
                continue
            strong = s_sum / s_n if c.reduce == "mean" else s_sum
            weak = w_sum / w_n if c.reduce == "mean" else w_sum
            detail = {"strong_logprob": strong, "weak_logprob": weak, "tokens": {"strong": s_n, "weak": w_n}}
            out.append(self.result(r["candidate_id"], strong - weak, detail))
        return self.frame(out)
