"""Sampling strategies: which calls are made for n candidates, and how verbalized replies are read."""

from __future__ import annotations

import pytest

from curation import schema
from curation.generate import GeneratorConfig
from curation.generate.strategies import (
    DEFAULT_PERTURBATIONS,
    expand,
    on_policy,
    parse_verbalized,
    prompt_seed,
)


def _rows(*texts):
    return [{"prompt_id": schema.prompt_id(schema.user_prompt(t)), "messages": schema.user_prompt(t)} for t in texts]


def _config(**kw):
    return GeneratorConfig(backend="vllm", model="m", **kw)


def test_n_samples_get_consecutive_seeds_per_prompt():
    reqs = expand(_rows("a", "b"), _config(n=3, sampling={"seed": 7}))
    assert [(r.sample_index, r.responses) for r in reqs] == [(0, 1), (1, 1), (2, 1)] * 2
    a, b = reqs[:3], reqs[3:]
    assert [r.seed for r in a] == [a[0].seed + i for i in range(3)]
    assert a[0].seed == prompt_seed(7, a[0].prompt_id) != b[0].seed  # prompts decorrelated
    assert expand(_rows("a"), _config(n=1, sampling={"seed": 8}))[0].seed != a[0].seed  # config seed matters
    assert all(r.messages == _rows("a")[0]["messages"] for r in a)


def test_temperature_ladder_spans_the_range():
    reqs = expand(_rows("a"), _config(n=5, strategy="temperature_ladder", temperature_range=(0.2, 1.0)))
    temps = [r.sampling.temperature for r in reqs]
    assert temps == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [r.meta["temperature"] for r in reqs] == temps
    single = expand(_rows("a"), _config(n=1, strategy="temperature_ladder", temperature_range=(0.2, 1.0)))
    assert single[0].sampling.temperature == pytest.approx(0.6)


def test_perturbations_cycle_and_keep_the_prompt_id():
    rows = _rows("What is 2+2?")
    reqs = expand(rows, _config(n=3, strategy="perturb", perturbations=["Be brief.", "Be thorough."]))
    assert [r.prompt_id for r in reqs] == [rows[0]["prompt_id"]] * 3
    assert [r.messages[-1]["content"] for r in reqs] == [
        "Be brief.\n\nWhat is 2+2?",
        "Be thorough.\n\nWhat is 2+2?",
        "Be brief.\n\nWhat is 2+2?",
    ]
    assert [r.meta["perturbation"] for r in reqs] == [0, 1, 0]
    default = expand(rows, _config(n=2, strategy="perturb"))
    assert default[1].messages[-1]["content"].startswith(DEFAULT_PERTURBATIONS[1])
    assert rows[0]["messages"][-1]["content"] == "What is 2+2?"  # the input is not modified


def test_verbalized_asks_k_per_call():
    reqs = expand(_rows("Tell a joke"), _config(n=7, strategy="verbalized", verbalized_k=3))
    assert [(r.sample_index, r.responses) for r in reqs] == [(0, 3), (1, 3), (2, 1)]
    content = reqs[0].messages[-1]["content"]
    assert "Generate 3 different responses" in content and content.endswith("Tell a joke")


def test_parse_verbalized_tagged_json_and_garbage():
    tagged = (
        "Sure!\n<response><text>First one</text><probability>0.5</probability></response>\n"
        "<response>\n<text>Second\nline</text>\n<probability> 30% </probability>\n</response>"
        "<response><text>Third</text><probability>high</probability></response>"
    )
    assert parse_verbalized(tagged) == [("First one", 0.5), ("Second\nline", 0.3), ("Third", None)]
    fenced = 'Here:\n```json\n[{"text": "a", "probability": 0.7}, {"response": "b", "probability": 2}]\n```'
    assert parse_verbalized(fenced) == [("a", 0.7), ("b", None)]  # 2 is no probability
    assert parse_verbalized("no structure at all") == []
    assert parse_verbalized("[not json") == []
    assert parse_verbalized('[{"text": ""}, 3]') == []


def test_on_policy_swaps_only_the_model():
    config = _config(n=4, strategy="perturb", sampling={"temperature": 0.7})
    policy = on_policy(config, "/runs/round2/policy")
    assert policy.model == "/runs/round2/policy"
    assert policy.model_dump(exclude={"model"}) == config.model_dump(exclude={"model"})
