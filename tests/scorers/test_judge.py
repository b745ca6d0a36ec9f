"""The judge end to end: a scripted in-process backend for exact mapping checks, then the real
vLLM OpenAI-compatible server with the tiny model."""

from __future__ import annotations

import json
import re

import pytest

from curation.generate.base import GenerationError
from curation.scorers import SCORERS

from .conftest import ScriptedJudge, between, candidate_rows, pair_rows, read_jsonl


def longer_wins(prompt: str) -> str:
    a = between(prompt, "[Response A]", "[End of response A]")
    b = between(prompt, "[Response B]", "[End of response B]")
    return json.dumps({"rationale": "longer", "winner": "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"})


def judge(kind="pairwise_judge", **kw):
    cfg = {"name": "judge", "kind": kind, "generator": {"backend": "openai", "model": "m"}}
    return SCORERS.build(kind, {**cfg, **kw})


@pytest.fixture(scope="module")
def llmbar(shared_data):
    return read_jsonl(shared_data / "llmbar.jsonl.gz", limit=40)


def test_both_orders_map_back_to_the_right_candidates(llmbar):
    pairs = [p for p in llmbar if len(p["chosen"]) != len(p["rejected"])][:8]
    j = judge()
    j.generator = ScriptedJudge(longer_wins)
    out = j.score(pair_rows(pairs))
    assert len(j.generator.prompts) == 16  # two orders per pair
    for p, row in zip(pairs, out.iter_rows(named=True)):
        detail = json.loads(row["detail"])
        first, second = detail["verdicts"]
        assert (first["order"], second["order"]) == ("chosen_first", "rejected_first")
        longer_is_chosen = len(p["chosen"]) > len(p["rejected"])
        # the letter flips with the order, the winning candidate does not
        assert first["verdict"] == ("A" if longer_is_chosen else "B")
        assert second["verdict"] == ("B" if longer_is_chosen else "A")
        assert first["winner_id"] == second["winner_id"]
        assert first["winner_id"] == (first["a_id"] if longer_is_chosen else first["b_id"])
        assert detail["agreement"] is True and detail["position_bias"] is None
        assert row["value"] == (1.0 if longer_is_chosen else 0.0)


def test_recipe_style_flat_config_with_mode_pairwise():
    """The issue's recipe line: backend fields flat beside the judge's, `mode: pairwise`."""
    j = SCORERS.build("judge", {"name": "judge", "kind": "judge", "backend": "openai",
                                "base_url": "http://127.0.0.1:8000/v1", "model": "judge",
                                "mode": "pairwise", "both_orders": True})
    assert j.mode == "pairwise"
    assert j.config.generator == {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "judge"}
    assert judge(kind="judge").mode == "pointwise"
    with pytest.raises(ValueError, match="base_ur"):
        SCORERS.build("judge", {"name": "j", "kind": "judge", "backend": "openai", "model": "m", "base_ur": "x"})


def test_one_order_per_pair_alternates_and_still_maps_back(llmbar):
    pairs = [p for p in llmbar if len(p["chosen"]) != len(p["rejected"])][:12]
    j = judge(both_orders=False)
    j.generator = ScriptedJudge(longer_wins)
    out = j.score(pair_rows(pairs))
    assert len(j.generator.prompts) == 12  # one call per pair
    orders = set()
    for p, row in zip(pairs, out.iter_rows(named=True)):
        [verdict] = json.loads(row["detail"])["verdicts"]
        orders.add(verdict["order"])
        assert row["value"] == (1.0 if len(p["chosen"]) > len(p["rejected"]) else 0.0)
    assert orders == {"chosen_first", "rejected_first"}


def test_a_position_biased_judge_is_caught(llmbar):
    j = judge()
    j.generator = ScriptedJudge(lambda prompt: "[[A]]")
    out = j.score(pair_rows(llmbar[:5]))
    assert out.get_column("value").to_list() == [0.5] * 5
    for d in map(json.loads, out.get_column("detail")):
        assert d["agreement"] is False and d["position_bias"] == "A"


def test_unparseable_replies_keep_the_raw_text(llmbar):
    j = judge()
    j.generator = ScriptedJudge(lambda prompt: "hmm, both are fine I guess")
    out = j.score(pair_rows(llmbar[:2]))
    assert out.get_column("value").to_list() == [None, None]
    detail = json.loads(out.get_column("detail")[0])
    assert [v["raw"] for v in detail["verdicts"]] == ["hmm, both are fine I guess"] * 2
    assert "unparseable" in out.get_column("error")[0]


def test_pointwise_aspects_are_averaged(llmbar):
    j = judge(kind="judge", aspects=["helpfulness", "honesty"])
    j.generator = ScriptedJudge(
        lambda prompt: "Helpfulness: 8\nHonesty: 5" if "[Response]" in prompt else "?"
    )
    out = j.score(candidate_rows(llmbar[:2]))
    assert out.get_column("value").to_list() == [6.5] * 4
    assert json.loads(out.get_column("detail")[0])["aspects"] == {"helpfulness": 8.0, "honesty": 5.0}


def test_bad_config_fails_at_validation():
    with pytest.raises(ValueError, match="unknown generation backend"):
        judge(generator={"backend": "nope", "model": "m"})
    with pytest.raises(ValueError, match="works through the `openai` backend"):
        judge(structured_output="vllm", generator={"backend": "vllm", "model": "m"})


@pytest.mark.slow
def test_against_the_real_vllm_server(tiny_chat, llmbar):
    from tests.servers import shared_vllm_server

    server = shared_vllm_server(tiny_chat)
    gen = {"backend": "openai", "model": server.model, "base_url": server.base_url, "sampling": {"max_tokens": 160}}
    short = [p for p in llmbar if len(p["prompt"]) + len(p["chosen"]) + len(p["rejected"]) < 1200]
    pairs = pair_rows(short[:3])

    structured = judge(generator=gen, structured_output="vllm").score(pairs)
    for row in structured.iter_rows(named=True):
        detail = json.loads(row["detail"])
        ids = {p for p in (detail["verdicts"][0]["a_id"], detail["verdicts"][0]["b_id"])}
        for v in detail["verdicts"]:
            assert v["parsed"] == "json" and v["verdict"] in ("A", "B", "tie"), v
            assert v["winner_id"] in ids | {"tie"}
        prefs = [v["prefers_chosen"] for v in detail["verdicts"]]
        assert row["value"] == sum(prefs) / 2 and detail["agreement"] == (prefs[0] == prefs[1])

    free = judge(generator=gen).score(pairs)  # a random model writing freely: parsed or kept raw
    for row in free.iter_rows(named=True):
        for v in json.loads(row["detail"])["verdicts"]:
            assert v["raw"] is not None
            assert (v["verdict"] is None) == (v["parsed"] == "unparseable")
        if row["value"] is None:
            assert "unparseable judge reply" in row["error"]

    rated = judge(kind="judge", generator=gen, structured_output="vllm").score(candidate_rows(short[:2]))
    assert rated.get_column("value").null_count() == 0
    assert all(1 <= v <= 10 for v in rated.get_column("value"))
    assert all(re.search(r'"rating"', json.loads(d)["raw"]) for d in rated.get_column("detail"))


def test_no_server_is_a_clear_error(llmbar):
    from tests.servers import free_port

    gen = {"backend": "openai", "model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    with pytest.raises(GenerationError, match="no OpenAI-compatible server answers"):
        judge(generator=gen).score(pair_rows(llmbar[:1]))
