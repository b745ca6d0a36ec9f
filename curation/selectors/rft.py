"""RFT: rejection-sampling fine-tuning data (Yuan et al., arXiv 2308.01825; spec §7.2).

Per question, keep sampled reasoning paths whose final answer equals the gold answer and whose
every `<<lhs=rhs>>` calculator annotation is arithmetically right (checked by a safe AST
evaluator, never `eval`); keep one path per distinct equation list, replacing a stored path by
a colliding one when that one is farther (summed edit distance) from the other kept paths.
The SFT set is the gold example plus the kept paths (`sft_rows`).
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from typing import Any

import polars as pl
from pydantic import Field

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_EQUATION = re.compile(r"<<([^<>]*)>>")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_EXPONENT = 64
_MAX_MAGNITUDE = 1e100


class NotArithmetic(ValueError):
    """An expression is not plain arithmetic, or cannot be evaluated."""


def safe_arithmetic(expression: str) -> float:
    """Value of an arithmetic expression: numbers, + - * / **, unary signs and parentheses only.

    Parsed with `ast` and walked node by node; names, calls, attributes and everything else are
    refused. Exponents and magnitudes are bounded so no input can stall the process.
    """
    text = expression.replace(",", "").strip()
    if not text or len(text) > 500:
        raise NotArithmetic(f"empty or too long expression {expression!r}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise NotArithmetic(f"not arithmetic: {expression!r}") from exc

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
                raise NotArithmetic(f"exponent {right} too large in {expression!r}")
            try:
                value = _BINARY[type(node.op)](left, right)
            except (ZeroDivisionError, OverflowError) as exc:
                raise NotArithmetic(f"{exc} in {expression!r}") from exc
            if isinstance(value, complex) or not math.isfinite(value) or abs(value) > _MAX_MAGNITUDE:
                raise NotArithmetic(f"value out of range in {expression!r}")
            return float(value)
        raise NotArithmetic(f"{type(node).__name__} is not allowed in {expression!r}")

    return walk(tree)


def equations(text: str) -> list[str]:
    """The `<<lhs=rhs>>` annotations of a path, spaces removed, in order."""
    return [m.group(1).replace(" ", "") for m in _EQUATION.finditer(text)]


def equations_correct(eqs: list[str], tolerance: float = 1e-3) -> bool:
    """Every equation's left side evaluates to its right side (within `tolerance`)."""
    for eq in eqs:
        if eq.count("=") != 1:
            return False
        lhs, rhs = eq.split("=")
        try:
            if abs(safe_arithmetic(lhs) - safe_arithmetic(rhs)) >= tolerance:
                return False
        except NotArithmetic:
            return False
    return True


def final_answer(text: str, markers: list[str]) -> float | None:
    """The number after the last answer marker (commas stripped), or None."""
    best = -1
    for marker in markers:
        best = max(best, text.rfind(marker) + len(marker) if marker in text else -1)
    if best < 0:
        return None
    m = _NUMBER.search(text[best:])
    if not m:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (characters)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def dedup_paths(paths: list[tuple[int, str, str]]) -> dict[str, tuple[int, str]]:
    """Key -> (index, text) after the "farthest" replacement rule; `paths` are (index, key, text)
    of correct paths in arrival order."""
    kept: dict[str, tuple[int, str]] = {}
    for index, key, text in paths:
        if key not in kept:
            kept[key] = (index, text)
            continue
        stored = kept[key][1]
        others = [t for k, (_, t) in kept.items() if k != key]
        incoming_score = sum(edit_distance(text, o) for o in others)
        stored_score = sum(edit_distance(stored, o) for o in others)
        if incoming_score > stored_score:
            kept[key] = (index, text)
    return kept


def _gold(meta: str | None, fields: list[str]) -> tuple[float | None, str | None]:
    data = json.loads(meta) if meta else {}
    answer = None
    for f in fields:
        if data.get(f) is not None:
            try:
                answer = float(str(data[f]).replace(",", ""))
            except ValueError:
                continue
            break
    return answer, data.get("solution")


@SELECTORS.register("rft")
class RFT(Selector):
    """Keep correct, distinct reasoning paths per question (candidates pool).

    The gold answer comes from the pool's `meta` JSON (first of `answer_fields` present);
    a prompt without one raises before any work. Reasons: `kept`, `wrong_answer`,
    `no_answer`, `bad_equation`, `duplicate_path`.
    """

    pool_kinds = ("candidates",)

    class Config(SelectorConfig):
        answer_fields: list[str] = Field(default_factory=lambda: ["answer_number", "answer", "reference_answer"])
        answer_markers: list[str] = Field(default_factory=lambda: ["####", "The answer is", "A:"])
        tolerance: float = Field(1e-3, gt=0)

    budget_use = "none"

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        if "meta" not in pool.columns:
            raise SelectionError(f"{context.stage}: rft needs a 'meta' column with the gold answer")
        ids = context.ids(pool)
        gold: dict[str, float] = {}
        for pid, meta in zip(pool["prompt_id"].to_list(), pool["meta"].to_list()):
            if pid in gold:
                continue
            answer, _ = _gold(meta, self.config.answer_fields)
            if answer is None:
                raise SelectionError(
                    f"{context.stage}: prompt {pid} has no gold answer in meta fields {self.config.answer_fields}"
                )
            gold[pid] = answer
        reasons = ["kept"] * len(ids)
        details: list[dict[str, Any] | None] = [None] * len(ids)
        correct: dict[str, list[tuple[int, str, str]]] = {}
        for i, (pid, text) in enumerate(zip(pool["prompt_id"].to_list(), pool["text"].to_list())):
            text = text or ""
            answer = final_answer(text, self.config.answer_markers)
            eqs = equations(text)
            if answer is None:
                reasons[i] = "no_answer"
            elif abs(answer - gold[pid]) > 1e-9:
                reasons[i] = "wrong_answer"
            elif not equations_correct(eqs, self.config.tolerance):
                reasons[i] = "bad_equation"
            else:
                key = "|".join(eqs)
                details[i] = {"key": key}
                correct.setdefault(pid, []).append((i, key, text))
        kept = [False] * len(ids)
        for paths in correct.values():
            for index, _ in dedup_paths(paths).values():
                kept[index] = True
            for index, _, _ in paths:
                if not kept[index]:
                    reasons[index] = "duplicate_path"
        return decisions(context, ids, kept, reason_dropped=reasons, detail=details)


def sft_rows(pool: pl.DataFrame, decided: pl.DataFrame) -> pl.DataFrame:
    """SFT data: per question the gold example (meta `solution`) plus every kept path.

    Columns: prompt_id, messages, completion, origin ("gold" or "rft"), candidate_id.
    """
    kept = set(decided.filter(pl.col("kept"))["target_id"].to_list())
    rows: list[dict[str, Any]] = []
    seen_gold: set[str] = set()
    for row in pool.iter_rows(named=True):
        pid = row["prompt_id"]
        if pid not in seen_gold:
            seen_gold.add(pid)
            _, solution = _gold(row.get("meta"), [])
            if not solution:
                raise SelectionError(f"rft: prompt {pid} has no gold `solution` in meta; the SFT set must include it")
            rows.append({"prompt_id": pid, "messages": row["messages"], "completion": solution, "origin": "gold", "candidate_id": None})
        if row["candidate_id"] in kept:
            rows.append({"prompt_id": pid, "messages": row["messages"], "completion": row["text"], "origin": "rft", "candidate_id": row["candidate_id"]})
    return pl.DataFrame(
        rows,
        schema={"prompt_id": pl.String, "messages": pl.from_arrow(schema.PROMPTS.empty_table())["messages"].dtype,
                "completion": pl.String, "origin": pl.String, "candidate_id": pl.String},
    )
