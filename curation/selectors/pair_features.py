"""Cheap per-response features for the noise filter: length, structure, refusals, prompt overlap.

Why these: a preference label often follows style as much as content (longer, structured answers
win AI-judged sets; refusals win harmlessness sets; truncated or echoing answers lose), and these
cost microseconds per text. Each is computed from the response and its prompt alone, so no label
leaks in; the noise learner fits their weights on the pool's own pairs, cross-fitted.
"""

from __future__ import annotations

import math
import re

import numpy as np

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_BULLET = re.compile(r"^\s*[-*•+]\s", re.MULTILINE)
_NUMBERED = re.compile(r"^\s*\d+[.)]\s", re.MULTILINE)
_HEADER = re.compile(r"^\s*#{1,6}\s", re.MULTILINE)
_REFUSAL = re.compile(
    r"\b(sorry|apologi[sz]e|cannot|can't|can not|unable to|not able to|won't|as an ai|language model|"
    r"inappropriate|not appropriate|illegal|unethical|harmful|dangerous|i don't think|i do not think|"
    r"i'm not sure|i am not sure|i don't know|i do not know|instead|please don't|not okay)\b",
    re.IGNORECASE,
)

FEATURES = (
    "log_chars", "log_words", "log_lines", "log_paragraphs", "log_sentences", "log_words_per_sentence",
    "bullets", "numbered_items", "headers", "bold", "code_blocks", "inline_code",
    "refusal_phrases", "refusal_opening", "questions", "exclamations", "colons",
    "prompt_coverage", "prompt_echo", "type_token_ratio", "mean_word_length", "repeated_lines",
    "ends_cleanly", "digit_share", "non_ascii_share", "upper_share",
)  # fmt: skip


def response_features(prompt: str, response: str) -> list[float]:
    """The `FEATURES` of one response to `prompt` (counts on a log1p scale, shares in [0, 1])."""
    r = response or ""
    words = _WORD.findall(r.lower())
    prompt_words = set(_WORD.findall((prompt or "").lower()))
    lines = [ln for ln in r.split("\n") if ln.strip()]
    sentences = max(len(_SENTENCE_END.findall(r)), 1 if r.strip() else 0)
    n_chars, n_words = max(len(r), 1), max(len(words), 1)
    stripped = r.rstrip()
    return [
        math.log1p(len(r)),
        math.log1p(len(words)),
        math.log1p(len(lines)),
        math.log1p(len([p for p in re.split(r"\n\s*\n", r) if p.strip()])),
        math.log1p(sentences),
        math.log1p(len(words)) - math.log1p(sentences),
        math.log1p(len(_BULLET.findall(r))),
        math.log1p(len(_NUMBERED.findall(r))),
        math.log1p(len(_HEADER.findall(r))),
        math.log1p(r.count("**") // 2),
        math.log1p(r.count("```") // 2),
        math.log1p(r.count("`")),
        math.log1p(len(_REFUSAL.findall(r))),
        float(bool(_REFUSAL.search(r[:200]))),
        math.log1p(r.count("?")),
        math.log1p(r.count("!")),
        math.log1p(r.count(":")),
        len(prompt_words & set(words)) / max(len(prompt_words), 1),
        sum(w in prompt_words for w in words) / n_words,
        len(set(words)) / n_words,
        sum(len(w) for w in words) / n_words,
        1.0 - len(set(lines)) / max(len(lines), 1),
        float(bool(stripped) and stripped[-1] in ".!?)]}\"'`*:"),
        sum(map(str.isdigit, r)) / n_chars,  # map over str methods: 2.5x faster than a generator, same counts
        (len(r) - len(r.encode("ascii", "ignore"))) / n_chars,  # characters past ASCII
        sum(map(str.isupper, r)) / n_chars,
    ]


def feature_matrix(prompts: list[str], responses: list[str]) -> np.ndarray:
    """(n, len(FEATURES)) float64 features of each response given its prompt."""
    return np.array([response_features(p, r) for p, r in zip(prompts, responses)], dtype=np.float64).reshape(
        len(responses), len(FEATURES)
    )


def log_length(responses: list[str]) -> np.ndarray:
    """log(1 + characters) of each response: the one feature of the naive length baseline."""
    return np.log1p(np.array([len(r or "") for r in responses], dtype=np.float64))


def shared_response_wins(chosen_ids: list[str], rejected_ids: list[str]) -> np.ndarray:
    """Net wins (times chosen minus times rejected) of each pair's chosen response minus those of
    its rejected response, counted over the pool's OTHER pairs that contain the same responses.

    Why: when one response appears in several pairs (a baseline answer compared with many
    models, k candidates paired all ways), the other labels say how strong it is; a label that
    contradicts them is suspect. A pair's own label is left out, so flipping it only flips the
    sign of its own value (the noise learner's cross-fitting promise holds).
    """
    net: dict[str, int] = {}
    for c, r in zip(chosen_ids, rejected_ids):
        net[c] = net.get(c, 0) + 1
        net[r] = net.get(r, 0) - 1
    return np.array([(net[c] - 1) - (net[r] + 1) for c, r in zip(chosen_ids, rejected_ids)], dtype=np.float64)
