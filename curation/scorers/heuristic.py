r"""Cheap text heuristics: length, repetition and refusal detection.

They need no model, so they run first and give the baselines that other scorers must beat
(length is the classic confound of preference labels and judges). Rows are scored in bounded
batches of Arrow columns: lengths in chars and words are counted by polars (words with Python's
own `\w`/`\s` classes, so counts equal `re`'s), tokens by one tokenizer call per batch;
repetition and refusal run Python's `re` on one batch of texts at a time (refusal patterns are
written in Python's regex syntax).
"""

from __future__ import annotations

import functools
import re
from typing import Literal

import polars as pl
from pydantic import Field

from curation import schema
from curation.scorers import SCORERS
from curation.scorers.base import Scorer, ScorerConfig, ScorerError, check_model_path, log

WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
BATCH_ROWS = 50_000  # rows per batch: bounds the Python strings alive at once (repetition, refusal, tokens)

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
        batches = [self._score_batch(rows.slice(start, BATCH_ROWS).select("candidate_id", pl.col("text").cast(pl.String)))
                   for start in range(0, rows.height, BATCH_ROWS)]
        out = pl.concat(batches) if batches else schema.empty("scores")
        log.info("scorer %s (%s): %d rows, %d failed", self.config.name, self.name, out.height,
                 out.get_column("value").null_count())
        return out

    def _score_batch(self, batch: pl.DataFrame) -> pl.DataFrame:
        """One batch's `scores` rows: value and detail columns, a null text an error."""
        c = self.config
        text = batch.get_column("text")
        if c.measure == "length" and c.unit != "tokens":
            value = text.str.len_chars() if c.unit == "chars" else text.str.count_matches(python_word_pattern())
            detail = pl.lit(schema.dumps({"unit": c.unit}))
        else:
            values, details = self._measure_texts(text)
            value, detail = pl.Series(values, dtype=pl.Float64), pl.Series(details, dtype=pl.String)
        return batch.select(
            pl.col("candidate_id").alias("target_id"),
            pl.lit(c.name).alias("scorer"),
            pl.lit(self.fingerprint).alias("scorer_fingerprint"),
            pl.when(pl.col("text").is_not_null()).then(pl.lit(value).cast(pl.Float64)).alias("value"),
            pl.when(pl.col("text").is_not_null()).then(detail).otherwise(pl.lit("{}")).alias("detail"),
            pl.when(pl.col("text").is_null()).then(pl.lit("no response text")).alias("error"),
        ).select(schema.SCORES.names)

    def _measure_texts(self, text: pl.Series) -> tuple[list[float | None], list[str | None]]:
        """Values and detail JSON of one batch where polars cannot count (tokens, repetition, refusal)."""
        texts = text.to_list()
        if self.config.measure == "length":
            lengths = self.token_lengths([t for t in texts if t is not None])
            unit = schema.dumps({"unit": "tokens"})
            it = iter(lengths)
            return [None if t is None else float(next(it)) for t in texts], [unit] * len(texts)
        values: list[float | None] = []
        details: list[str | None] = []
        for t in texts:
            value, detail = (None, {}) if t is None else self.measure(t)
            values.append(value)
            details.append(schema.dumps(detail))
        return values, details

    def measure(self, text: str) -> tuple[float, dict]:
        """Repetition or refusal of one text, and its detail."""
        c = self.config
        if c.measure == "repetition":
            rate, total = repeat_rate(text, c.ngram)
            return rate, {"ngram": c.ngram, "ngrams": total}
        for pattern in self._refusals:
            m = pattern.search(text)
            if m:
                return 1.0, {"match": m.group(0), "pattern": pattern.pattern}
        return 0.0, {}

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Token counts of `texts` in one tokenizer call (no special tokens)."""
        if not texts:
            return []
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.config.tokenizer)
        return [len(ids) for ids in self._tok(texts, add_special_tokens=False)["input_ids"]]


@functools.cache
def python_word_pattern() -> str:
    """`WORD` for polars' (Rust) regex, with Python's `\\w` and `\\s` (so counts equal `re`'s)."""
    word, space = schema.python_regex_class(r"\w"), schema.python_regex_class(r"\s")
    return f"[{word}]+|[^{word}{space}]"


def repeat_rate(text: str, n: int) -> tuple[float, int]:
    """Share of word n-grams that repeat an earlier one, and the n-gram count."""
    words = [w.lower() for w in WORD.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1.0 - len(set(grams)) / len(grams), len(grams)
