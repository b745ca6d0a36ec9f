"""Cheap text heuristics: length, repetition and refusal detection.

They need no model, so they run first and give the baselines that other scorers must beat
(length is the classic confound of preference labels and judges).
"""

from __future__ import annotations

import re
from typing import Literal

import polars as pl
from pydantic import Field

from curation.scorers import SCORERS
from curation.scorers.base import Scorer, ScorerConfig, ScorerError, check_model_path

WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)

DEFAULT_REFUSALS = [
    r"\bI(?:'m| am) (?:sorry|afraid)\b",
    (r"\bI (?:can(?:no|')t|cannot|won't|will not|am not able to|'m not able to|am unable to|'m unable to)\b"
    r"(?: \w+){0,3} (?:help|assist|provide|do|comply|answer|fulfil|fulfill|support|create|write|share)"),
    r"\bAs an AI(?: language model)?\b",
    r"\bI apologi[sz]e,? but\b",
    r"\b(?:is|would be) (?:illegal|unethical|inappropriate|harmful)\b",
    r"\bI (?:must|have to) (?:decline|refuse)\b",
]


class HeuristicConfig(ScorerConfig):
    measure: Literal["length", "repetition", "refusal"] = "length"
    unit: Literal["chars", "words", "tokens"] = Field(
        "words", description="length unit; 'tokens' needs `tokenizer` (a local model folder)"
    )
    tokenizer: str | None = None
    ngram: int = Field(3, ge=1, description="n of the n-gram repeat rate")
    refusal_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSALS))


@SCORERS.register("heuristic")
class Heuristic(Scorer):
    """Pointwise. length: size in `unit`; repetition: share of repeated word n-grams (0 = none);
    refusal: 1.0 when a refusal pattern matches (the matched text goes in detail), else 0.0."""

    Config = HeuristicConfig
    config: HeuristicConfig

    def __init__(self, config: HeuristicConfig | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        c = self.config
        if c.unit == "tokens" and c.measure == "length":
            if not c.tokenizer:
                raise ScorerError(f"scorer {c.name!r}: unit 'tokens' needs `tokenizer` (a model folder)")
            check_model_path(c.tokenizer, "tokenizer", f"scorer {c.name!r}")
        try:
            self._refusals = [re.compile(p, re.IGNORECASE) for p in c.refusal_patterns]
        except re.error as exc:
            raise ScorerError(f"scorer {c.name!r}: bad refusal pattern: {exc}") from exc
        self._tok = None

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        self.check_rows(rows)
        out = []
        for row in rows.select("candidate_id", "text").iter_rows(named=True):
            text = row["text"]
            if text is None:
                out.append(self.result(row["candidate_id"], None, error="no response text"))
                continue
            value, detail = self.measure(text)
            out.append(self.result(row["candidate_id"], value, detail))
        return self.frame(out)

    def measure(self, text: str) -> tuple[float, dict]:
        c = self.config
        if c.measure == "length":
            return float(self.length(text)), {"unit": c.unit}
        if c.measure == "repetition":
            rate, total = repeat_rate(text, c.ngram)
            return rate, {"ngram": c.ngram, "ngrams": total}
        for pattern in self._refusals:
            m = pattern.search(text)
            if m:
                return 1.0, {"match": m.group(0), "pattern": pattern.pattern}
        return 0.0, {}

    def length(self, text: str) -> int:
        unit = self.config.unit
        if unit == "chars":
            return len(text)
        if unit == "words":
            return len(WORD.findall(text))
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.config.tokenizer)
        return len(self._tok(text, add_special_tokens=False)["input_ids"])


def repeat_rate(text: str, n: int) -> tuple[float, int]:
    """Share of word n-grams that repeat an earlier one, and the n-gram count."""
    words = [w.lower() for w in WORD.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1.0 - len(set(grams)) / len(grams), len(grams)
