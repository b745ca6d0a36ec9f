"""The offline vLLM engine (CPU build) with the tiny chat model; one engine for the whole session."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from curation import schema
from curation.generate import GENERATORS, run_generation
from tests.generate.conftest import make_prompts

pytestmark = pytest.mark.slow

PROMPTS = ["What is 2+2?", "Name a colour.", "Sort 3 1 2", "Say hello."]


@pytest.fixture(scope="session")
def vllm_config(tiny_chat):
    """Engine arguments shared by every test here, so the process keeps one engine."""

    def make(**kw):
        sampling = {"max_tokens": 24, "seed": 1, **kw.pop("sampling", {})}
        return {"backend": "vllm", "model": str(tiny_chat), "enforce_eager": True, "max_model_len": 512,
                "n": 3, "sampling": sampling, **kw}  # fmt: skip

    yield make
    from curation.generate.vllm_engine import release_engine

    release_engine()  # shut down while logging still works, not at interpreter exit


@pytest.fixture(scope="session")
def first_run(vllm_config):
    """One n=3 run with log-probabilities; the engine starts here (30-90 s)."""
    gen = GENERATORS.build("vllm", vllm_config(sampling={"logprobs": True}))
    return gen, gen.generate(make_prompts(PROMPTS))


def test_n_samples_ids_and_provenance(first_run, tiny_chat):
    gen, cands = first_run
    assert cands.columns == schema.CANDIDATES.names
    assert cands.height == 12 and cands["candidate_id"].n_unique() == 12
    assert cands["error"].null_count() == 12
    per_prompt = cands.group_by("prompt_id").agg(pl.col("sample_index").sort()).sort("prompt_id")
    assert per_prompt.height == 4 and per_prompt["sample_index"].to_list() == [[0, 1, 2]] * 4
    row = cands.row(0, named=True)
    assert row["candidate_id"] == schema.candidate_id(row["prompt_id"], gen.generation_fingerprint(), 1, row["sample_index"])
    assert row["generator"].startswith(f"vllm:{tiny_chat.name}#") and row["seed"] == 1
    assert all(1 <= n <= 24 for n in cands["n_tokens"])
    assert set(cands["finish_reason"]) <= {"stop", "length"}
    assert gen.last_stats.calls == 12 and gen.last_stats.tokens == cands["n_tokens"].sum()


def test_logprobs_present_when_asked(first_run, vllm_config):
    _, cands = first_run
    assert cands["logprob"].null_count() == 0
    assert all(lp < 0 and math.isfinite(lp) for lp in cands["logprob"])
    plain = GENERATORS.build("vllm", vllm_config(n=1)).generate(make_prompts(PROMPTS[:1]))
    assert plain["logprob"].null_count() == 1


def test_same_seed_same_text_and_samples_one_by_one(first_run, vllm_config):
    _, cands = first_run
    again = GENERATORS.build("vllm", vllm_config()).generate(make_prompts(PROMPTS))
    key = ["prompt_id", "sample_index"]
    assert again.sort(key)["text"].to_list() == cands.sort(key)["text"].to_list()
    # a sample's text does not depend on how many were asked for (n=3 goes out as one request)
    single = GENERATORS.build("vllm", vllm_config(n=1)).generate(make_prompts(PROMPTS))
    first_samples = cands.filter(pl.col("sample_index") == 0).sort("prompt_id")
    assert single.sort("prompt_id")["text"].to_list() == first_samples["text"].to_list()
    other = GENERATORS.build("vllm", vllm_config(sampling={"seed": 2})).generate(make_prompts(PROMPTS))
    assert other.sort(key)["text"].to_list() != cands.sort(key)["text"].to_list()


def test_greedy_samples(vllm_config):
    cands = GENERATORS.build("vllm", vllm_config(n=2, sampling={"temperature": 0.0})).generate(make_prompts(PROMPTS[:2]))
    assert cands["error"].null_count() == 4
    assert cands.group_by("prompt_id").agg(pl.col("text").n_unique())["text"].to_list() == [1, 1]


def test_stop_strings(vllm_config):
    cands = GENERATORS.build("vllm", vllm_config(n=4, sampling={"stop": [" "]})).generate(make_prompts(PROMPTS))
    assert cands.filter(pl.col("finish_reason") == "stop").height > 0
    assert not any(" " in t for t in cands["text"])


def test_long_prompts_skipped_or_cut(vllm_config):
    prompts = make_prompts(["short", "word " * 1000])  # over max_model_len=512
    skipped, s1 = run_generation(prompts, vllm_config(n=1, on_long_prompt="skip"))
    assert (s1.skipped_long, s1.calls, s1.errors) == (1, 1, 1)
    assert skipped.filter(pl.col("error").is_not_null())["finish_reason"].to_list() == ["skipped"]
    cut, s2 = run_generation(prompts, vllm_config(n=1, on_long_prompt="truncate"))
    assert (s2.truncated, s2.calls, s2.errors) == (1, 2, 0)
    assert cut["text"].null_count() == 0


def test_a_batch_larger_than_one_step(vllm_config):
    """Many long seeded prompts: more prompt tokens than one engine step takes (a CPU-build crash)."""
    prompts = make_prompts([f"{i} " + "word " * 150 for i in range(8)])  # ~460 tokens each
    cands = GENERATORS.build("vllm", vllm_config(n=2, sampling={"max_tokens": 4})).generate(prompts)
    assert cands.height == 16 and cands["error"].null_count() == 16


def test_strategies_on_the_engine(vllm_config):
    ladder = GENERATORS.build("vllm", vllm_config(n=3, strategy="temperature_ladder", temperature_range=(0.0, 1.0)))
    cands = ladder.generate(make_prompts(PROMPTS[:2]))
    temps = sorted({json.loads(m)["temperature"] for m in cands["meta"]})
    assert temps == [0.0, 0.5, 1.0] and cands["error"].null_count() == 6
    perturbed = GENERATORS.build("vllm", vllm_config(n=2, strategy="perturb")).generate(make_prompts(PROMPTS[:2]))
    assert perturbed.height == 4 and perturbed["prompt_id"].n_unique() == 2
    assert {json.loads(m)["perturbation"] for m in perturbed["meta"]} == {0, 1}


def test_cached_rerun_needs_no_engine_call(vllm_config, tmp_path):
    import curation.generate.vllm_engine as vllm_engine

    prompts = make_prompts(PROMPTS)
    first, s1 = run_generation(prompts, vllm_config(), tmp_path)
    second, s2 = run_generation(prompts, vllm_config(), tmp_path)
    assert (s1.calls, s2.calls, s2.cache_hits, s2.tokens) == (12, 0, 12, 0)
    assert second.equals(first)
    assert vllm_engine.engine_loads == 1  # every test in this session shared one engine
