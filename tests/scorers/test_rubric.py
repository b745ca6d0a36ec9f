from __future__ import annotations

import json

import polars as pl
import pytest

from curation.scorers import SCORERS
from curation.scorers.rubric import parse_grades, parse_rubric, total

from .conftest import ScriptedJudge, between, candidate_rows, pair_rows, read_jsonl

RUBRIC = {
    "criteria": [
        {"criterion": "The response must mention bread.", "type": "hard_rule", "weight": 5},
        {"criterion": "The response is polite.", "type": "principle", "weight": 2},
        {"criterion": "The response is concise.", "type": "principle", "weight": 1},
    ]
}


def grading_rule(style="lines"):
    def rule(prompt: str) -> str:
        if "Write a grading rubric" in prompt:
            return "Here it is:\n" + json.dumps(RUBRIC)
        response = between(prompt, "[Response]", "[End of response]")
        scores = [10 if "bread" in response.lower() else 0, 8 if "please" in response.lower() else 3, 10 if len(response) < 50 else 4]
        if style == "json":
            return json.dumps({"scores": scores})
        return "\n".join(f"Criterion {i + 1}: {s}/10" for i, s in enumerate(scores))

    return rule


def rubric(kind="rubric", **kw):
    cfg = {"name": "rubric", "kind": kind, "generator": {"backend": "openai", "model": "m"}}
    return SCORERS.build(kind, {**cfg, **kw})


def rows(texts, prompts=None):
    prompts = prompts or ["Ask for bread"] * len(texts)
    return pl.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(len(texts))],
            "prompt_id": [f"p{hash(p) % 1000}" for p in prompts],
            "messages": [[{"role": "user", "content": p}] for p in prompts],
            "text": texts,
        }
    )


def test_parsers():
    assert [c["type"] for c in parse_rubric(json.dumps(RUBRIC), 6)] == ["hard_rule", "principle", "principle"]
    lines = "Rubric:\n1. [Hard Rule] Must answer in French.\n2. [Principle] Explains the reasoning clearly."
    parsed = parse_rubric(lines, 6)
    assert parsed == [
        {"criterion": "Must answer in French.", "type": "hard_rule", "weight": 1.0},
        {"criterion": "Explains the reasoning clearly.", "type": "principle", "weight": 1.0},
    ]
    assert parse_rubric("nothing useful", 6) == []
    assert parse_grades('{"scores": [1, 10, 5]}', 3) == [1.0, 10.0, 5.0]
    assert parse_grades("1: 7\n2: 9/10\n3 - 0", 3) == [7.0, 9.0, 0.0]
    assert parse_grades("1: 7", 3) is None and parse_grades('{"scores": [11, 2, 3]}', 3) is None
    assert total(parse_rubric(json.dumps(RUBRIC), 6), [10, 8, 10], gate=True) == pytest.approx(76 / 80)


def test_pointwise_one_rubric_per_prompt_and_per_criterion_scores():
    scorer = rubric()
    scorer.generator = ScriptedJudge(grading_rule())
    out = scorer.score(rows(["Bread, please.", "No.", "Some bread " + "x" * 60], ["Ask for bread"] * 2 + ["Other"]))
    values = out.get_column("value").to_list()
    assert values == pytest.approx([76 / 80, 0.0, (50 + 6 + 4) / 80])
    writes = [p for p in scorer.generator.prompts if "Write a grading rubric" in p]
    assert len(writes) == 2  # two distinct prompts
    detail = json.loads(out.get_column("detail")[1])
    assert [c["score"] for c in detail["criteria"]] == [0, 3, 10] and detail["total"] == 0.0


def test_hard_rule_gate_can_be_turned_off():
    scorer = rubric(hard_rule_gate=False)
    scorer.generator = ScriptedJudge(grading_rule("json"))
    assert scorer.score(rows(["No."])).get_column("value").to_list() == pytest.approx([(0 + 6 + 10) / 80])


def test_pairwise_contrastive_keeps_only_label_consistent_rubrics():
    pairs = [
        {"messages": [{"role": "user", "content": "Ask for bread"}], "chosen": "Bread, please.", "rejected": "No.", "id": "1"},
        {"messages": [{"role": "user", "content": "Say no"}], "chosen": "No.", "rejected": "Bread please", "id": "2"},
    ]
    scorer = rubric(kind="pairwise_rubric", attempts=2)
    scorer.generator = ScriptedJudge(grading_rule())
    out = scorer.score(pair_rows(pairs))
    v = out.get_column("value").to_list()
    assert v[0] == pytest.approx(0.5 + (76 / 80) / 2) and v[1] is None
    assert out.get_column("error")[1] == "no rubric consistent with the label"
    failed = json.loads(out.get_column("detail")[1])["attempts"]
    assert [a["consistent"] for a in failed] == [False, False]
    writes = [p for p in scorer.generator.prompts if "Write a grading rubric" in p]
    assert len(writes) == 3  # pair 1 once, pair 2 twice
    # the PREFERRED example is the pair's chosen response, never the rejected one
    assert between(writes[1], "[PREFERRED response]", "[OTHER response]") == "No."


def test_a_label_conflict_stays_the_reason_when_a_retry_then_fails_to_parse():
    writes = []
    consistent_rule = grading_rule()

    def rule(prompt: str) -> str:
        if "Write a grading rubric" in prompt:
            writes.append(prompt)
            if len(writes) > 1:  # the sampled retry rambles past its token budget
                return '{"criteria": [{"criterion": "The resp'
        return consistent_rule(prompt)

    pairs = [{"messages": [{"role": "user", "content": "Say no"}], "chosen": "No.", "rejected": "Bread please", "id": "2"}]
    scorer = rubric(kind="pairwise_rubric", attempts=2)
    scorer.generator = ScriptedJudge(rule)
    out = scorer.score(pair_rows(pairs))
    assert out.get_column("value")[0] is None and len(writes) == 2
    assert out.get_column("error")[0] == "no rubric consistent with the label"
    tried = json.loads(out.get_column("detail")[0])["attempts"]
    assert tried[0]["consistent"] is False and tried[1]["error"] == "unparseable rubric"


def test_unparseable_rubric_is_a_row_error():
    scorer = rubric()
    scorer.generator = ScriptedJudge(lambda prompt: "I cannot do that")
    out = scorer.score(rows(["Bread"]))
    assert out.get_column("value")[0] is None and out.get_column("error")[0] == "unparseable rubric"
    assert json.loads(out.get_column("detail")[0])["rubric_raw"] == "I cannot do that"


@pytest.mark.slow
def test_rubrics_with_the_real_vllm_server(tiny_chat, shared_data):
    from tests.servers import shared_vllm_server

    server = shared_vllm_server(tiny_chat)
    gen = {"backend": "openai", "model": server.model, "base_url": server.base_url, "sampling": {"max_tokens": 256}}
    short = [p for p in read_jsonl(shared_data / "llmbar.jsonl.gz", limit=80) if len(p["prompt"]) + len(p["chosen"]) + len(p["rejected"]) < 800][:2]
    scorer = rubric(generator=gen, structured_output="vllm", max_criteria=3)
    out = scorer.score(candidate_rows(short))
    for row in out.iter_rows(named=True):
        detail = json.loads(row["detail"])
        assert row["value"] is not None and 0 <= row["value"] <= 1, (row["error"], row["detail"][:600])
        assert 1 <= len(detail["criteria"]) <= 3 and all(0 <= c["score"] <= 10 for c in detail["criteria"])
    pairwise = rubric(generator=gen, structured_output="vllm", max_criteria=3, kind="pairwise_rubric").score(pair_rows(short))
    for row in pairwise.iter_rows(named=True):
        if row["value"] is None:
            assert row["error"] == "no rubric consistent with the label"
        else:
            assert row["value"] > 0.5


class SeedRecorder(ScriptedJudge):
    """Records the seed and temperature of every rubric-writing request."""

    def __init__(self, rule):
        super().__init__(rule)
        greedy = self.config.sampling.model_copy(update={"temperature": 0.0})  # as judges sample
        self.config = self.config.model_copy(update={"sampling": greedy})
        self.writes: list[tuple[int, float]] = []

    def complete(self, requests, stats):
        for req in requests:
            if "Write a grading rubric" in req.messages[-1]["content"]:
                self.writes.append((req.seed, req.sampling.temperature))
        return super().complete(requests, stats)


def test_a_rubric_retry_samples_with_another_seed_not_the_same_greedy_call():
    pairs = [{"messages": [{"role": "user", "content": "Say no"}], "chosen": "No.", "rejected": "Bread please", "id": "2"}]
    scorer = rubric(kind="pairwise_rubric", attempts=3, retry_temperature=0.9)
    scorer.generator = SeedRecorder(grading_rule())  # its rubric always prefers the rejected response
    out = scorer.score(pair_rows(pairs))
    assert out.get_column("error")[0] == "no rubric consistent with the label"
    seeds, temperatures = zip(*scorer.generator.writes)
    assert len(seeds) == 3 and len(set(seeds)) == 3
    assert temperatures == (0.0, 0.9, 0.9)  # greedy first, sampled retries
