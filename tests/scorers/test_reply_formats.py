"""The reply formats LLM scorers ask for: each pydantic model is the twin of its vLLM regex (what the
regex lets through, the model accepts; what it refuses, the model refuses), and its JSON schema
meets OpenAI's strict `response_format` rules. Then the tolerant JSON finder."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from curation.scorers import SCORERS
from curation.scorers._llm import json_objects
from curation.scorers.rubric import grades_format, rubric_format

GEN = {"backend": "openai", "model": "m", "health_check": False}


def formats() -> dict[str, tuple]:
    """name -> (vLLM regex, pydantic model) of every reply format."""
    out = {}
    for name, kw in {"pairwise": {"mode": "pairwise"}, "rating": {"scale": 5},
                     "aspects": {"aspects": ["helpfulness", "instruction_following"], "scale": 7}}.items():
        judge = SCORERS.build("judge", {"name": "j", "kind": "judge", "generator": GEN, **kw})
        out[name] = judge.config.reply_format(judge.mode)
    out["rubric"] = rubric_format(2)
    out["grades"] = grades_format(3)
    return out


REPLIES = {
    "pairwise": ['{"rationale": "A is right", "winner": "A"}', '{"rationale": "", "winner": "tie"}'],
    "rating": ['{"rationale": "ok", "rating": 5}', '{"rationale": "ok", "rating": 1}'],
    "aspects": ['{"helpfulness": {"rationale": "a", "rating": 7}, "instruction_following": {"rationale": "b", "rating": 1}}'],
    "rubric": ['{"criteria": [{"criterion": "Answers the question", "type": "hard_rule", "weight": 5}]}',
               '{"criteria": [{"criterion": "Is brief.", "type": "principle", "weight": 1}, '
               '{"criterion": "Cites a source", "type": "principle", "weight": 2}]}'],
    "grades": ['{"scores": [0, 10, 7]}'],
}
REFUSED = {
    "pairwise": ['{"rationale": "x", "winner": "C"}', '{"winner": "A"}', '{"rationale": "' + "x" * 301 + '", "winner": "A"}'],
    "rating": ['{"rationale": "ok", "rating": 6}', '{"rationale": "ok", "rating": 0}', '{"rationale": "ok", "rating": 3, "extra": 1}'],
    "aspects": ['{"helpfulness": {"rationale": "a", "rating": 8}, "instruction_following": {"rationale": "b", "rating": 1}}',
                '{"helpfulness": {"rationale": "a", "rating": 3}}'],
    "rubric": ['{"criteria": [{"criterion": "Answers it", "type": "rule", "weight": 5}]}',
               '{"criteria": [{"criterion": "Answers it", "type": "principle", "weight": 6}]}',
               '{"criteria": [' + ", ".join(['{"criterion": "Answers it", "type": "principle", "weight": 1}'] * 3) + "]}"],
    "grades": ['{"scores": [1, 2]}', '{"scores": [1, 2, 11]}', '{"scores": [1, 2, 3, 4]}'],
}


@pytest.fixture(scope="module")
def built() -> dict[str, tuple]:
    return formats()


@pytest.mark.parametrize("name", list(REPLIES))
def test_model_and_regex_agree(built, name):
    regex, model = built[name]
    for reply in REPLIES[name]:
        assert re.fullmatch(regex, reply), reply
        model.model_validate_json(reply)
    for reply in REFUSED[name]:
        assert not re.fullmatch(regex, reply), reply
        with pytest.raises(ValidationError):
            model.model_validate_json(reply)


@pytest.mark.parametrize("name", list(REPLIES))
def test_schema_meets_openai_strict_mode(built, name):
    """Every object closed and every property required (OpenAI refuses a strict schema otherwise)."""
    schema = built[name][1].model_json_schema()

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for v in node.values():
                yield from objects(v)
        elif isinstance(node, list):
            for v in node:
                yield from objects(v)

    found = list(objects(schema))
    assert found
    for obj in found:
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])


def test_the_request_carries_the_models_schema():
    judge = SCORERS.build("judge", {"name": "j", "kind": "judge", "generator": GEN, "structured_output": "openai", "scale": 4})
    fmt = judge.llm.config["extra_body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["properties"]["rating"]["maximum"] == 4


@pytest.mark.parametrize(
    "text, objects",
    [
        ('Reasoning... {"rating": 3} then {"rating": 7}', [{"rating": 7}, {"rating": 3}]),  # last first
        ('{"outer": {"inner": 1}}', [{"outer": {"inner": 1}}]),  # nested objects are one object
        ('{"rationale": "a } and { inside \\" quotes", "rating": 2}', [{"rationale": 'a } and { inside " quotes', "rating": 2}]),
        ("```json\n{\"winner\": \"A\"}\n``` but inline {\"winner\": \"B\"}", [{"winner": "A"}]),  # fenced blocks win
        ("{'python': 'dict'} {broken {\"ok\": true}", [{"ok": True}]),  # not JSON, then an unclosed brace
        ('{"a": 1', []),
        ("{" * 3000, []),
    ],
)
def test_json_objects(text, objects):
    assert json_objects(text) == objects
    assert json.loads(json.dumps(objects)) == objects

