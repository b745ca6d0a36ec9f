"""Request cache: a re-run makes no model calls and returns the same candidates; keys see every input."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from curation import schema
from curation.generate import run_generation
from curation.generate.base import Completion, Request, SamplingParams
from curation.generate.cache import RequestCache
from curation.models import model_fingerprint
from tests.generate.conftest import make_prompts


def _config(model, **kw):
    return {"backend": "transformers", "model": str(model), "n": 2, "sampling": {"max_tokens": 12, "seed": 3}, **kw}


def test_second_run_makes_no_calls_and_returns_identical_candidates(tiny_chat, tmp_path):
    prompts = make_prompts(["one", "two", "three"])
    first, s1 = run_generation(prompts, _config(tiny_chat), tmp_path / "cache")
    assert (s1.calls, s1.cache_hits, s1.cache_misses) == (6, 0, 6)
    assert s1.tokens == first["n_tokens"].sum() > 0

    second, s2 = run_generation(prompts, _config(tiny_chat), tmp_path / "cache")
    assert (s2.calls, s2.cache_hits, s2.tokens) == (0, 6, 0)
    assert second.equals(first)
    assert len(RequestCache(tmp_path / "cache")) == 6


def test_more_samples_reuse_the_cached_ones(tiny_chat, tmp_path):
    prompts = make_prompts(["one", "two"])
    two, _ = run_generation(prompts, _config(tiny_chat, n=2), tmp_path / "cache")
    three, stats = run_generation(prompts, _config(tiny_chat, n=3), tmp_path / "cache")
    assert (stats.cache_hits, stats.calls) == (4, 2)
    assert three.filter(pl.col("sample_index") < 2).select("prompt_id", "sample_index", "text").sort(
        "prompt_id", "sample_index"
    ).equals(two.select("prompt_id", "sample_index", "text").sort("prompt_id", "sample_index"))


def test_changed_sampling_or_model_misses(tiny_chat, tmp_path):
    prompts = make_prompts(["one"])
    run_generation(prompts, _config(tiny_chat), tmp_path / "cache")
    _, hotter = run_generation(
        prompts, _config(tiny_chat, sampling={"max_tokens": 12, "seed": 3, "temperature": 0.5}), tmp_path / "cache"
    )
    _, reseeded = run_generation(prompts, _config(tiny_chat, sampling={"max_tokens": 12, "seed": 4}), tmp_path / "cache")
    assert hotter.cache_hits == 0 and reseeded.cache_hits == 0


def test_model_fingerprint_follows_content_not_location(tiny_chat, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_chat, copy)
    assert model_fingerprint(copy) == model_fingerprint(tiny_chat)
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a retrained model: same size, different weights
    weights.write_bytes(bytes(data))
    assert model_fingerprint(copy) != model_fingerprint(tiny_chat)


def test_candidate_ids_follow_the_model(tiny_chat, tmp_path):
    """Same path, new weights (an on-policy round): new candidate ids, no stale cache hits."""
    policy = tmp_path / "policy"
    shutil.copytree(tiny_chat, policy)
    prompts = make_prompts(["one"])
    before, _ = run_generation(prompts, _config(policy), tmp_path / "cache")
    weights = next(policy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    after, stats = run_generation(prompts, _config(policy), tmp_path / "cache")
    assert stats.cache_hits == 0
    assert set(before["candidate_id"]).isdisjoint(after["candidate_id"])


def test_keys_cover_every_input():
    messages = schema.user_prompt("hi")
    base = Request("p", messages, 0, 11, SamplingParams())
    key = RequestCache.key("vllm", "model-a", base)
    variants = [
        RequestCache.key("transformers", "model-a", base),
        RequestCache.key("vllm", "model-b", base),
        RequestCache.key("vllm", "model-a", Request("p", messages, 0, 12, SamplingParams())),
        RequestCache.key("vllm", "model-a", Request("p", messages, 1, 11, SamplingParams())),
        RequestCache.key("vllm", "model-a", Request("p", schema.user_prompt("ho"), 0, 11, SamplingParams())),
        RequestCache.key("vllm", "model-a", Request("p", messages, 0, 11, SamplingParams(top_p=0.9))),
        RequestCache.key("vllm", "model-a", Request("p", messages, 0, 11, SamplingParams(stop=["x"]))),
    ]
    assert len({key, *variants}) == len(variants) + 1
    assert RequestCache.key("vllm", "model-a", Request("p", messages, 0, 11, SamplingParams())) == key


def test_failed_calls_are_not_cached(tmp_path):
    with RequestCache(tmp_path) as cache:
        cache.put_many([("ok", Completion(text="t", n_tokens=1, finish_reason="stop"))])
        assert cache.get("ok") == Completion(text="t", n_tokens=1, finish_reason="stop")
        assert cache.get("missing") is None


@pytest.mark.parametrize("rule", ["skip", "truncate"])
def test_long_prompts_counted_end_to_end(tiny_chat, tmp_path, rule):
    prompts = make_prompts(["short", "word " * 3000])  # over the tiny model's 2048-token context
    cands, stats = run_generation(prompts, _config(tiny_chat, n=1, on_long_prompt=rule), tmp_path / "cache")
    long_id = schema.prompt_id(schema.user_prompt("word " * 3000))
    long_row = cands.filter(pl.col("prompt_id") == long_id).row(0, named=True)
    if rule == "skip":
        assert (stats.skipped_long, stats.truncated, stats.calls, stats.errors) == (1, 0, 1, 1)
        assert long_row["text"] is None and "prompt too long" in long_row["error"]
        assert long_row["finish_reason"] == "skipped"
    else:
        assert (stats.skipped_long, stats.truncated, stats.calls, stats.errors) == (0, 1, 2, 0)
        assert long_row["error"] is None and long_row["text"] is not None
        assert '"truncated_from"' in long_row["meta"]
    assert cands.height == 2  # nothing is lost silently: the skipped prompt has its row
