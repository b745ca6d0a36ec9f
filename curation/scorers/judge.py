"""LLM-as-a-judge through any generation backend: pointwise ratings and pairwise verdicts.

Pointwise (kind `judge`): a 1..scale rating with a rationale, or one rating per aspect (UltraFeedback style:
helpfulness, honesty, instruction_following, truthfulness, ...) averaged into the value.
Pairwise (kind `pairwise_judge`): every pair is judged in BOTH orders (chosen shown first, then rejected first); each
verdict's letter is mapped back to a candidate id for the order it was given in, and the value is
the share of verdicts preferring the pair's chosen side (ties count 1/2): 1.0 both orders agree
with the label, 0.0 both disagree, 0.5 the judge contradicted itself. `detail` keeps both
verdicts, their rationales, the raw replies and whether the orders agree.
Replies are read tolerantly (JSON anywhere, then patterns such as 'Rating: 7', '[[A]]');
a reply that cannot be read gives a null value with the raw reply kept.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import BaseModel, Field

from curation import schema
from curation.scorers import SCORERS
from curation.scorers._llm import (
    RATIONALE,
    LLMCalls,
    LLMScorerConfig,
    Rationale,
    as_float,
    clip,
    get_key,
    json_objects,
    number_alternation,
    reply_model,
    with_structured_output,
)
from curation.scorers.base import Scorer

SYSTEM = "You are a careful, impartial judge of AI assistant responses. Follow the output format exactly."

POINTWISE_PROMPT = """Rate the assistant's final response to the conversation below on a scale of 1 (worst) to {scale} (best).
{criteria}
[Conversation]
{conversation}

[Response]
{response}
[End of response]

Reply with one JSON object and nothing else: {format}"""

PAIRWISE_PROMPT = """Compare two assistant responses to the conversation below and decide which one is better.
Judge helpfulness, correctness, instruction following and harmlessness; ignore the order in which they appear and their length.

[Conversation]
{conversation}

[Response A]
{a}
[End of response A]

[Response B]
{b}
[End of response B]

Reply with one JSON object and nothing else: {{"rationale": "<one or two sentences>", "winner": "A" or "B" or "tie"}}"""

ASPECT_GUIDES = {
    "helpfulness": "how well it fulfils the user's need, informative and relevant",
    "honesty": "whether it is truthful and expresses uncertainty where appropriate",
    "instruction_following": "how closely it follows the instructions and constraints given",
    "truthfulness": "whether it is free of fabricated or false statements",
    "harmlessness": "whether it avoids harmful, unethical or dangerous content",
}


def render_conversation(messages: list[dict[str, str]]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


# ---------------------------------------------------------------- reply parsing


_RATING_PATTERNS = [
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"\b(?:rating|score|grade)\b\s*(?:is|of)?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+)\b", re.IGNORECASE),
]


def parse_rating(reply: str | None, scale: int = 10) -> tuple[float | None, str | None, str]:
    """(rating, rationale, how it was read). Ratings outside 1..scale are not accepted."""
    if not reply:
        return None, None, "empty"
    for obj in json_objects(reply):
        value = as_float(get_key(obj, "rating", "score", "overall", "grade"))
        if value is not None and 1 <= value <= scale:
            rationale = get_key(obj, "rationale", "reason", "explanation", "justification")
            return value, None if rationale is None else str(rationale), "json"
    for pattern in _RATING_PATTERNS:
        matches = pattern.findall(reply)
        for m in reversed(matches):
            if isinstance(m, tuple):  # "7/10": the denominator must be the scale
                if float(m[1]) != scale:
                    continue
                m = m[0]
            value = float(m)
            if 1 <= value <= scale:
                return value, reply.strip()[:500], "pattern"
    bare = reply.strip().rstrip(".")
    if re.fullmatch(r"\d+(?:\.\d+)?", bare) and 1 <= float(bare) <= scale:
        return float(bare), None, "bare"
    return None, None, "unparseable"


def _norm_verdict(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    s = re.sub(r"[\s\[\]\(\)\*\"'.:]", "", str(value)).upper()
    s = re.sub(r"^(RESPONSE|OUTPUT|ASSISTANT|ANSWER|MODEL)", "", s)
    if s in ("A", "1"):
        return "A"
    if s in ("B", "2"):
        return "B"
    if s in ("TIE", "C", "EQUAL", "BOTH", "NEITHER", "SAME", "DRAW"):
        return "tie"
    return None


_VERDICT_PATTERNS = [
    re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE),
    re.compile(
        r"\b(?:winner|verdict|better response|final answer|preferred response|choice)\b\s*(?:is)?\s*[:=]?\s*\**\s*"
        r"(?:Response|Output|Assistant)?\s*\(?\b(A|B|tie)\b\)?",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:Response|Output|Assistant)\s*\(?([AB])\)?\s+is\s+(?:the\s+)?(?:better|preferred|superior)",
        re.IGNORECASE,
    ),
]


def parse_verdict(reply: str | None) -> tuple[str | None, str | None, str]:
    """('A' | 'B' | 'tie' | None, rationale, how it was read)."""
    if not reply:
        return None, None, "empty"
    for obj in json_objects(reply):
        verdict = _norm_verdict(get_key(obj, "winner", "verdict", "better", "choice", "preferred", "answer"))
        if verdict is not None:
            rationale = get_key(obj, "rationale", "reason", "explanation", "justification")
            return verdict, None if rationale is None else str(rationale), "json"
    for pattern in _VERDICT_PATTERNS:
        matches = pattern.findall(reply)
        if matches:
            return _norm_verdict(matches[-1]), reply.strip()[:500], "pattern"
    bare = _norm_verdict(reply.strip())
    if bare is not None and len(reply.strip()) <= 12:
        return bare, None, "bare"
    return None, None, "unparseable"


def winner_id(verdict: str | None, a_id: str, b_id: str) -> str | None:
    """The candidate id a verdict names, for the order the candidates were shown in."""
    if verdict == "A":
        return a_id
    if verdict == "B":
        return b_id
    if verdict == "tie":
        return "tie"
    return None


def preference_for(winner: str | None, chosen_id: str, rejected_id: str) -> float | None:
    """1.0 when the winner is the pair's chosen side, 0.0 when rejected, 0.5 for a tie."""
    if winner == "tie":
        return 0.5
    if winner == chosen_id:
        return 1.0
    if winner == rejected_id:
        return 0.0
    return None


ORDERS = ("chosen_first", "rejected_first")


def order_ids(order: str, chosen_id: str, rejected_id: str) -> tuple[str, str]:
    """(id shown as A, id shown as B) for an order."""
    return (chosen_id, rejected_id) if order == "chosen_first" else (rejected_id, chosen_id)


# ---------------------------------------------------------------- the scorer


class JudgeConfig(LLMScorerConfig):
    mode: Literal["pointwise", "pairwise"] = "pointwise"
    both_orders: bool = Field(True, description="pairwise: judge A/B and B/A; off: one order per pair, alternating")
    scale: int = Field(10, ge=2, le=100)
    aspects: list[str] = Field(default_factory=list, description="pointwise: rate each aspect, value = their mean")
    criteria: str | None = Field(None, description="extra instructions for pointwise rating")

    def reply_format(self, mode: str) -> tuple[str, type[BaseModel]]:
        """(regex, pydantic model) of the reply a judge in `mode` asks for: the same format twice,
        for vLLM's regex-constrained decoding and OpenAI's JSON-schema `response_format`."""
        rating = number_alternation(1, self.scale)
        rated = {"rationale": (Rationale, ...), "rating": (Annotated[int, Field(ge=1, le=self.scale)], ...)}
        if mode == "pairwise":
            regex = r'\{' + RATIONALE + r', "winner": "(A|B|tie)"\}'
            return regex, reply_model("PairwiseVerdict", rationale=(Rationale, ...), winner=(Literal["A", "B", "tie"], ...))
        if self.aspects:
            inner = r'\{' + RATIONALE + r', "rating": ' + rating + r'\}'
            regex = r'\{' + ", ".join(f'"{a}": {inner}' for a in self.aspects) + r'\}'
            aspect = reply_model("AspectRating", **rated)  # aspect names are keys, not Python names: aliases
            return regex, reply_model("AspectRatings", **{f"aspect_{i}": (aspect, Field(alias=a)) for i, a in enumerate(self.aspects)})
        return r'\{' + RATIONALE + r', "rating": ' + rating + r'\}', reply_model("Rating", **rated)


@SCORERS.register("judge")
class Judge(Scorer):
    """Pointwise: value = the rating (1..scale), or the mean of the aspect ratings."""

    Config = JudgeConfig
    config: JudgeConfig

    def __init__(self, config: JudgeConfig | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        regex, reply = self.config.reply_format(self.mode)
        generator = with_structured_output(self.config.generator, self.config.structured_output, regex, reply)
        self.llm = LLMCalls(generator, owner=self.config.name)

    @property
    def mode(self) -> str:  # type: ignore[override]
        return self.config.mode

    @property
    def generator(self) -> Any:
        """The generation backend (built from `generator` on first use); assign one to reuse it."""
        return self.llm.generator

    @generator.setter
    def generator(self, value: Any) -> None:
        self.llm.generator = value

    def model_identity(self) -> str:
        return self.llm.model_identity()

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        self.check_rows(rows)
        return self.score_pairs(rows) if self.mode == "pairwise" else self.score_points(rows)

    # ------------------------------------------------------------ pointwise

    def pointwise_prompt(self, messages: list[dict[str, str]], response: str) -> list[dict[str, str]]:
        c = self.config
        if c.aspects:
            lines = [f"- {a}: {ASPECT_GUIDES.get(a, a.replace('_', ' '))}" for a in c.aspects]
            criteria = "Rate each aspect separately:\n" + "\n".join(lines) + "\n"
            fmt = "{" + ", ".join(f'"{a}": {{"rationale": "...", "rating": <1-{c.scale}>}}' for a in c.aspects) + "}"
        else:
            criteria = (c.criteria + "\n") if c.criteria else ""
            fmt = f'{{"rationale": "<one or two sentences>", "rating": <integer 1-{c.scale}>}}'
        user = POINTWISE_PROMPT.format(
            scale=c.scale, criteria=criteria, conversation=render_conversation(messages), response=response, format=fmt
        )
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def score_points(self, rows: pl.DataFrame) -> pl.DataFrame:
        records = rows.to_dicts()
        todo = [i for i, r in enumerate(records) if r["text"] is not None]
        replies = self.llm.complete([self.pointwise_prompt(records[i]["messages"], records[i]["text"]) for i in todo])
        by_row = dict(zip(todo, replies))
        out = []
        for i, r in enumerate(records):
            if i not in by_row:
                out.append(self.result(r["candidate_id"], None, error="no response text"))
                continue
            reply, gen_error = by_row[i]
            if reply is None:
                out.append(self.result(r["candidate_id"], None, {"raw": None}, f"judge call failed: {gen_error}"))
                continue
            value, detail = self.read_pointwise(reply)
            error = None if value is not None else "unparseable judge reply"
            out.append(self.result(r["candidate_id"], value, detail, error))
        return self.frame(out)

    def read_pointwise(self, reply: str) -> tuple[float | None, dict[str, Any]]:
        c = self.config
        if not c.aspects:
            value, rationale, how = parse_rating(reply, c.scale)
            return value, {"rating": value, "rationale": rationale, "parsed": how, "raw": clip(reply)}
        ratings: dict[str, float | None] = {}
        rationales: dict[str, Any] = {}
        objs = json_objects(reply)
        for a in c.aspects:
            ratings[a] = None
            for obj in objs:
                node = get_key(obj, a, a.replace("_", " "))
                if isinstance(node, dict):
                    v = as_float(get_key(node, "rating", "score"))
                    rationales[a] = get_key(node, "rationale", "reason")
                else:
                    v = as_float(node)
                if v is not None and 1 <= v <= c.scale:
                    ratings[a] = v
                    break
            if ratings[a] is None:  # 'Helpfulness: 7' style
                m = re.findall(rf"{re.escape(a.replace('_', ' '))}\W{{0,4}}(?:rating)?\W{{0,3}}(\d+(?:\.\d+)?)", reply.replace("_", " "), re.IGNORECASE)
                if m and 1 <= float(m[-1]) <= c.scale:
                    ratings[a] = float(m[-1])
        got = [v for v in ratings.values() if v is not None]
        value = sum(got) / len(got) if len(got) == len(c.aspects) else None
        return value, {"aspects": ratings, "rationales": rationales, "raw": clip(reply)}

    # ------------------------------------------------------------ pairwise

    def pairwise_prompt(self, messages: list[dict[str, str]], a: str, b: str) -> list[dict[str, str]]:
        user = PAIRWISE_PROMPT.format(conversation=render_conversation(messages), a=a, b=b)
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def score_pairs(self, rows: pl.DataFrame) -> pl.DataFrame:
        records = rows.to_dicts()
        todo = [i for i, r in enumerate(records) if r["chosen"] is not None and r["rejected"] is not None]
        convs = []
        for i in todo:
            r = records[i]
            texts = {r["chosen_id"]: r["chosen"], r["rejected_id"]: r["rejected"]}
            for order in self.orders(r["pair_id"]):
                a_id, b_id = order_ids(order, r["chosen_id"], r["rejected_id"])
                convs.append(self.pairwise_prompt(r["messages"], texts[a_id], texts[b_id]))
        replies = iter(self.llm.complete(convs))
        by_row = {i: [next(replies) for _ in self.orders(records[i]["pair_id"])] for i in todo}
        out = []
        for i, r in enumerate(records):
            if i not in by_row:
                out.append(self.result(r["pair_id"], None, error="pair lacks a response text"))
                continue
            out.append(self.read_pair(r, by_row[i]))
        return self.frame(out)

    def orders(self, pair_id: str) -> tuple[str, ...]:
        """Both orders, or one per pair alternating by id so that position bias averages out."""
        if self.config.both_orders:
            return ORDERS
        return (ORDERS[int(schema.content_hash(pair_id), 16) % 2],)

    def read_pair(self, row: dict[str, Any], replies: list[tuple[str | None, str | None]]) -> dict[str, Any]:
        chosen_id, rejected_id = row["chosen_id"], row["rejected_id"]
        verdicts, prefs, errors = [], [], []
        for order, (reply, gen_error) in zip(self.orders(row["pair_id"]), replies):
            a_id, b_id = order_ids(order, chosen_id, rejected_id)
            verdict, rationale, how = parse_verdict(reply) if reply is not None else (None, None, "no reply")
            winner = winner_id(verdict, a_id, b_id)
            pref = preference_for(winner, chosen_id, rejected_id)
            verdicts.append(
                {
                    "order": order,
                    "a_id": a_id,
                    "b_id": b_id,
                    "verdict": verdict,
                    "winner_id": winner,
                    "prefers_chosen": pref,
                    "rationale": rationale,
                    "parsed": how,
                    "raw": clip(reply),
                    "error": gen_error,
                }
            )
            if pref is not None:
                prefs.append(pref)
            elif reply is None:
                errors.append(f"{order}: judge call failed: {gen_error}")
            else:
                errors.append(f"{order}: unparseable judge reply")
        both = [v["winner_id"] for v in verdicts]
        agreement = None if None in both or len(both) < 2 else both[0] == both[1]
        letters = [v["verdict"] for v in verdicts]
        position_bias = letters[0] if agreement is False and letters[0] == letters[1] else None
        detail = {"verdicts": verdicts, "agreement": agreement, "position_bias": position_bias}
        value = sum(prefs) / len(prefs) if prefs else None
        return self.result(row["pair_id"], value, detail, "; ".join(errors) if value is None else None)


@SCORERS.register("pairwise_judge")
class PairwiseJudge(Judge):
    """Pairwise, both orders: value = share of verdicts preferring the pair's chosen side.

    The same as `judge` with `mode: pairwise`."""

    @property
    def mode(self) -> str:  # type: ignore[override]
        return "pairwise"
