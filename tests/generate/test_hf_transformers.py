"""The transformers fallback with the tiny chat model: counts, ids, determinism, logprobs, stop strings."""

from __future__ import annotations

import math

import polars as pl

from curation import schema
from curation.generate import GENERATORS
from tests.generate.conftest import make_prompts


def _gen(model, **kw):
    sampling = {"max_tokens": 16, "seed": 5, **kw.pop("sampling", {})}
    return GENERATORS.build("transformers", {"model": str(model), "n": 3, "batch_size": 4, "sampling": sampling, **kw})


def test_n_candidates_per_prompt_with_provenance(tiny_chat):
    prompts = make_prompts(["What is 2+2?", "Name a colour.", "Sort 3 1 2"])
    gen = _gen(tiny_chat)
    cands = gen.generate(prompts)
    assert cands.columns == schema.CANDIDATES.names
    assert cands.height == 9 and cands["candidate_id"].n_unique() == 9
    assert cands["error"].null_count() == 9
    counts = cands.group_by("prompt_id").agg(pl.col("sample_index").sort()).sort("prompt_id")
    assert counts["sample_index"].to_list() == [[0, 1, 2]] * 3
    row = cands.row(0, named=True)
    assert row["candidate_id"] == schema.candidate_id(row["prompt_id"], gen.generation_fingerprint(), 5, row["sample_index"])
    assert row["generator"].startswith(f"transformers:{tiny_chat.name}#")
    assert all(1 <= n <= 16 for n in cands["n_tokens"])
    assert set(cands["finish_reason"]) <= {"stop", "length"}
    assert cands["logprob"].null_count() == 9  # not asked for
    assert gen.last_stats.calls == 9 and gen.last_stats.tokens == cands["n_tokens"].sum()


def test_same_seed_same_text_other_seed_other_text(tiny_chat):
    prompts = make_prompts(["What is 2+2?", "Name a colour."])
    a = _gen(tiny_chat, n=2).generate(prompts)
    b = _gen(tiny_chat, n=2).generate(prompts)
    c = _gen(tiny_chat, n=2, sampling={"seed": 6}).generate(prompts)
    assert a.select("candidate_id", "text").equals(b.select("candidate_id", "text"))
    assert set(a["candidate_id"]).isdisjoint(c["candidate_id"])
    assert a["text"].to_list() != c["text"].to_list()


def test_logprobs_when_asked(tiny_chat):
    cands = _gen(tiny_chat, sampling={"logprobs": True}).generate(make_prompts(["hello"]))
    assert cands["logprob"].null_count() == 0
    assert all(lp < 0 and math.isfinite(lp) for lp in cands["logprob"])


def test_greedy_samples_agree(tiny_chat):
    cands = _gen(tiny_chat, sampling={"temperature": 0.0}).generate(make_prompts(["hello"]))
    assert cands["text"].n_unique() == 1


def test_stop_strings_end_the_text(tiny_chat):
    cands = _gen(tiny_chat, n=4, sampling={"stop": [" "], "max_tokens": 24}).generate(
        make_prompts(["one", "two", "three"])
    )
    stopped = cands.filter(pl.col("finish_reason") == "stop")
    assert stopped.height > 0  # random text holds spaces: most samples stop early
    assert not any(" " in t for t in cands["text"])
