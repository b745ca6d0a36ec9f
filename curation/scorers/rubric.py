"""Rubric scoring: write a rubric per prompt, then grade each criterion (OpenRubrics-style).

A rubric is a short list of criteria, each a hard rule (an explicit requirement of the prompt;
failing one fails the response) or a principle (a quality that makes a response better), with a
weight. Pointwise (kind `rubric`): one rubric per prompt, written from the prompt alone, shared by all its
candidates. Pairwise (kind `pairwise_rubric`): the rubric is written contrastively from the pair (what the preferred
response does that the other does not) and kept only when grading with it prefers the labelled
chosen response; otherwise it is regenerated with another seed (and, after a greedy first try,
`retry_temperature`), up to `attempts` times, and the row fails if none
is consistent. Value: pointwise, the weighted total in [0, 1]; pairwise, 0.5 + (total(chosen) -
total(rejected)) / 2, so 0.5 means no preference like the judge's. `detail` keeps the rubric and
every per-criterion score.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import BaseModel, Field

from curation.scorers import SCORERS
from curation.scorers._llm import (
    LLMCalls,
    LLMScorerConfig,
    as_float,
    clip,
    get_key,
    json_objects,
    reply_model,
    with_structured_output,
)
from curation.scorers.base import Scorer
from curation.scorers.judge import render_conversation

SYSTEM = "You write and apply grading rubrics for AI assistant responses. Follow the output format exactly."

RUBRIC_PROMPT = """Write a grading rubric for responses to the conversation below: at most {k} criteria.
Each criterion is either a "hard_rule" (an explicit requirement of the request that a response must meet) or a "principle" (a quality that makes a response better), with a weight from 1 (minor) to 5 (essential).
{contrast}
[Conversation]
{conversation}
{examples}
Reply with one JSON object and nothing else: {{"criteria": [{{"criterion": "<one sentence>", "type": "hard_rule" or "principle", "weight": <1-5>}}, ...]}}"""

CONTRAST = (
    "Two responses are shown: the PREFERRED one was judged better than the OTHER. Write criteria that "
    "capture why, so that a grader applying them would prefer the PREFERRED response; keep them general "
    "enough to grade any response to this request."
)

GRADE_PROMPT = """Grade the response to the conversation below against each criterion of the rubric, from 0 (not met at all) to 10 (fully met).

[Conversation]
{conversation}

[Response]
{response}
[End of response]

[Rubric]
{rubric}

Reply with one JSON object and nothing else, one score per criterion in rubric order: {{"scores": [<0-10>, ...]}}"""


def parse_rubric(reply: str | None, limit: int) -> list[dict[str, Any]]:
    """Criteria [{criterion, type, weight}] from a reply: JSON first, then '- [Hard Rule] ...' lines."""
    if not reply:
        return []
    for obj in json_objects(reply):
        items = get_key(obj, "criteria", "rubric", "rubrics")
        if isinstance(items, list):
            out = [_criterion(i) for i in items]
            out = [c for c in out if c is not None]
            if out:
                return out[:limit]
    out = []
    for line in reply.splitlines():
        m = re.match(r"\s*(?:[-*]|\d+[.)])\s+(.{8,})", line)
        if m:
            text = m.group(1).strip()
            kind = "hard_rule" if re.search(r"hard[ _-]?rule|\bmust\b", text, re.IGNORECASE) else "principle"
            text = re.sub(r"^\[?(hard[ _-]?rule|principle)\]?[:\s-]*", "", text, flags=re.IGNORECASE)
            out.append({"criterion": text, "type": kind, "weight": 1.0})
    return out[:limit]


def _criterion(item: Any) -> dict[str, Any] | None:
    if isinstance(item, str):
        return {"criterion": item, "type": "principle", "weight": 1.0} if item.strip() else None
    if not isinstance(item, dict):
        return None
    text = get_key(item, "criterion", "description", "text", "rule")
    if not isinstance(text, str) or not text.strip():
        return None
    kind = str(get_key(item, "type", "kind") or "principle").lower()
    weight = as_float(get_key(item, "weight"))
    return {
        "criterion": text.strip(),
        "type": "hard_rule" if "hard" in kind else "principle",
        "weight": min(max(weight if weight is not None else 1.0, 0.0), 5.0),
    }


def parse_grades(reply: str | None, n: int) -> list[float] | None:
    """n scores in 0..10 from a reply: {"scores": [...]}, else '1: 7' lines; None if not all found."""
    if not reply:
        return None
    for obj in json_objects(reply):
        scores = get_key(obj, "scores", "grades")
        if isinstance(scores, list) and len(scores) >= n:
            values = [as_float(get_key(s, "score") if isinstance(s, dict) else s) for s in scores[:n]]
            if all(v is not None and 0 <= v <= 10 for v in values):
                return values  # type: ignore[return-value]
    found: dict[int, float] = {}
    for m in re.finditer(r"(?:criterion\s*)?(\d+)\s*[:.)=-]\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?", reply, re.IGNORECASE):
        idx, value = int(m.group(1)), float(m.group(2))
        if 1 <= idx <= n and 0 <= value <= 10:
            found[idx] = value
    if len(found) == n:
        return [found[i] for i in range(1, n + 1)]
    return None


def total(criteria: list[dict[str, Any]], scores: list[float], gate: bool) -> float:
    """Weighted score in [0, 1]; with `gate`, a failed hard rule (score < 5) makes it 0."""
    hard = [s for c, s in zip(criteria, scores) if c["type"] == "hard_rule"]
    if gate and any(s < 5 for s in hard):
        return 0.0
    weights = [c["weight"] for c in criteria]
    if sum(weights) <= 0:
        return sum(scores) / (10 * len(scores))
    return sum(w * s for w, s in zip(weights, scores)) / (10 * sum(weights))


def rubric_format(k: int) -> tuple[str, type[BaseModel]]:
    """(vLLM regex, pydantic model) of a rubric reply with 1..k criteria."""
    item = r'\{"criterion": "[^"\\\n]{5,120}", "type": "(hard_rule|principle)", "weight": [1-5]\}'
    regex = r'\{"criteria": \[' + item + r"(, " + item + r"){0," + str(k - 1) + r"}\]\}"
    criterion = reply_model("Criterion", criterion=(str, ...), type=(Literal["hard_rule", "principle"], ...),
                            weight=(Annotated[int, Field(ge=1, le=5)], ...))
    return regex, reply_model("RubricReply", criteria=(Annotated[list[criterion], Field(max_length=k)], ...))  # type: ignore[valid-type]


def grades_format(n: int) -> tuple[str, type[BaseModel]]:
    """(vLLM regex, pydantic model) of a grading reply: exactly n scores in 0..10."""
    regex = r'\{"scores": \[(10|[0-9])(, (10|[0-9])){' + str(n - 1) + r"}\]\}"
    score = Annotated[int, Field(ge=0, le=10)]
    return regex, reply_model("Grades", scores=(Annotated[list[score], Field(min_length=n, max_length=n)], ...))


class RubricConfig(LLMScorerConfig):
    max_criteria: int = Field(6, ge=1, le=20)
    contrastive: bool = Field(True, description="pairwise: write the rubric from the pair and keep it only if consistent with the label")
    attempts: int = Field(2, ge=1, le=5)
    retry_temperature: float = Field(
        0.7, gt=0.0, le=2.0, description="pairwise: a retry's temperature when the first try is greedy (each retry also gets its own seed)"
    )
    hard_rule_gate: bool = True


@SCORERS.register("rubric")
class Rubric(Scorer):
    """Pointwise: value = the weighted rubric total in [0, 1]."""

    Config = RubricConfig
    config: RubricConfig

    def __init__(self, config: RubricConfig | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        c = self.config
        self.writer = LLMCalls(with_structured_output(c.generator, c.structured_output, *rubric_format(c.max_criteria)), c.name)
        self.graders: dict[int, LLMCalls] = {}  # the grading format depends on the criteria count
        self.generator: Any = None  # set to any Generator to use it for writing and grading

    def model_identity(self) -> str:
        if self.generator is not None:
            return str(self.generator.model_identity())
        return self.writer.model_identity()

    def grader(self, n: int) -> LLMCalls:
        if n not in self.graders:
            c = self.config
            self.graders[n] = LLMCalls(with_structured_output(c.generator, c.structured_output, *grades_format(n)), c.name)
        if self.generator is not None:
            self.graders[n].generator = self.generator
        return self.graders[n]

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        self.check_rows(rows)
        return self.score_pairs(rows) if self.mode == "pairwise" else self.score_points(rows)

    # ------------------------------------------------------------ steps

    def write_rubrics(
        self, requests: list[tuple[list[dict], tuple[str, str] | None]], attempt: int = 0
    ) -> list[tuple[list[dict], str | None, str | None]]:
        """(criteria, raw reply, error) for each (messages, (preferred, other) or None); a retry
        (`attempt` > 0) samples with another seed."""
        convs = []
        for messages, contrast in requests:
            examples = ""
            if contrast is not None:
                examples = f"\n[PREFERRED response]\n{contrast[0]}\n\n[OTHER response]\n{contrast[1]}\n"
            user = RUBRIC_PROMPT.format(
                k=self.config.max_criteria,
                contrast=CONTRAST if contrast is not None else "",
                conversation=render_conversation(messages),
                examples=examples,
            )
            convs.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])
        if self.generator is not None:
            self.writer.generator = self.generator
        retry = self.writer.retry_generator(attempt, self.config.retry_temperature) if attempt else None
        out = []
        for reply, error in self.writer.complete(convs, retry):
            criteria = parse_rubric(reply, self.config.max_criteria)
            err = None if criteria else (f"rubric call failed: {error}" if reply is None else "unparseable rubric")
            out.append((criteria, reply, err))
        return out

    def grade(self, jobs: list[tuple[list[dict], str, list[dict]]]) -> list[tuple[list[float] | None, str | None, str | None]]:
        """(scores, raw reply, error) for each (messages, response, criteria)."""
        by_n: dict[int, list[int]] = {}
        for i, (_, _, criteria) in enumerate(jobs):
            by_n.setdefault(len(criteria), []).append(i)
        out: list[Any] = [None] * len(jobs)
        for n, idx in by_n.items():
            convs = []
            for i in idx:
                messages, response, criteria = jobs[i]
                rubric = "\n".join(
                    f"{k + 1}. [{'Hard rule' if c['type'] == 'hard_rule' else 'Principle'}] {c['criterion']}"
                    for k, c in enumerate(criteria)
                )
                user = GRADE_PROMPT.format(conversation=render_conversation(messages), response=response, rubric=rubric)
                convs.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])
            for i, (reply, error) in zip(idx, self.grader(n).complete(convs)):
                scores = parse_grades(reply, n)
                err = None if scores else (f"grading call failed: {error}" if reply is None else "unparseable grades")
                out[i] = (scores, reply, err)
        return out

    def graded(self, criteria: list[dict], scores: list[float]) -> dict[str, Any]:
        return {
            "criteria": [{**c, "score": s} for c, s in zip(criteria, scores)],
            "total": total(criteria, scores, self.config.hard_rule_gate),
        }

    # ------------------------------------------------------------ pointwise

    def score_points(self, rows: pl.DataFrame) -> pl.DataFrame:
        records = rows.to_dicts()
        prompts: dict[str, list[dict]] = {}
        for r in records:
            prompts.setdefault(r["prompt_id"], r["messages"])
        written = dict(zip(prompts, self.write_rubrics([(m, None) for m in prompts.values()])))
        jobs, job_rows = [], []
        for i, r in enumerate(records):
            criteria = written[r["prompt_id"]][0]
            if criteria and r["text"] is not None:
                jobs.append((r["messages"], r["text"], criteria))
                job_rows.append(i)
        grades = dict(zip(job_rows, self.grade(jobs)))
        out = []
        for i, r in enumerate(records):
            criteria, rubric_raw, rubric_err = written[r["prompt_id"]]
            if rubric_err:
                out.append(self.result(r["candidate_id"], None, {"rubric_raw": clip(rubric_raw)}, rubric_err))
            elif i not in grades:
                out.append(self.result(r["candidate_id"], None, error="no response text"))
            else:
                scores, raw, err = grades[i]
                if scores is None:
                    out.append(self.result(r["candidate_id"], None, {"rubric": criteria, "raw": clip(raw)}, err))
                else:
                    detail = self.graded(criteria, scores)
                    out.append(self.result(r["candidate_id"], detail["total"], detail))
        return self.frame(out)

    # ------------------------------------------------------------ pairwise

    def score_pairs(self, rows: pl.DataFrame) -> pl.DataFrame:
        records = rows.to_dicts()
        results: dict[int, dict[str, Any]] = {}
        attempts: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(records))}
        pending = [i for i, r in enumerate(records) if r["chosen"] is not None and r["rejected"] is not None]
        for i in set(range(len(records))) - set(pending):
            results[i] = self.result(records[i]["pair_id"], None, error="pair lacks a response text")
        c = self.config
        for attempt in range(c.attempts if c.contrastive else 1):
            if not pending:
                break
            requests = [
                (records[i]["messages"], (records[i]["chosen"], records[i]["rejected"]) if c.contrastive else None)
                for i in pending
            ]
            written = self.write_rubrics(requests, attempt)
            jobs, owners = [], []
            for i, (criteria, _, _) in zip(pending, written):
                if criteria:
                    for side in ("chosen", "rejected"):
                        jobs.append((records[i]["messages"], records[i][side], criteria))
                        owners.append(i)
            grades = self.grade(jobs)
            graded: dict[int, list[Any]] = {}
            for i, g in zip(owners, grades):
                graded.setdefault(i, []).append(g)
            still = []
            for i, (criteria, raw, err) in zip(pending, written):
                note: dict[str, Any] = {"attempt": attempt + 1}
                if err:
                    note.update(error=err, rubric_raw=clip(raw))
                    attempts[i].append(note)
                    still.append(i)
                    continue
                (s_c, raw_c, err_c), (s_r, raw_r, err_r) = graded[i]
                if s_c is None or s_r is None:
                    note.update(error=err_c or err_r, rubric=criteria, raw=[clip(raw_c), clip(raw_r)])
                    attempts[i].append(note)
                    still.append(i)
                    continue
                chosen, rejected = self.graded(criteria, s_c), self.graded(criteria, s_r)
                consistent = chosen["total"] > rejected["total"]
                note.update(chosen=chosen, rejected=rejected, consistent=consistent)
                attempts[i].append(note)
                if c.contrastive and not consistent:
                    still.append(i)
                    continue
                value = 0.5 + (chosen["total"] - rejected["total"]) / 2
                detail = {"chosen": chosen, "rejected": rejected, "contrastive": c.contrastive, "attempts": len(attempts[i])}
                results[i] = self.result(records[i]["pair_id"], value, detail)
            pending = still
        for i in pending:
            # a label conflict, once seen, is the row's reason: a later sampled retry that fails to
            # parse does not hide it (every attempt stays in the detail)
            conflict = any(note.get("consistent") is False for note in attempts[i])
            last = attempts[i][-1] if attempts[i] else {}
            why = "no rubric consistent with the label" if conflict else last.get("error") or "no rubric consistent with the label"
            results[i] = self.result(records[i]["pair_id"], None, {"attempts": attempts[i]}, why)
        return self.frame(results[i] for i in range(len(records)))


@SCORERS.register("pairwise_rubric")
class PairwiseRubric(Rubric):
    """Pairwise: value = 0.5 + (total(chosen) - total(rejected)) / 2, with label-consistent rubrics."""

    mode = "pairwise"
