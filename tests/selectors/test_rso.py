"""RSO rejection sampling: the spec §7.1 sanity tests and the selector over a candidates pool."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError
from curation.selectors.rso import rso_passes, rso_sample

rewards_st = st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=30, unique=True), st.data())
def test_beta_to_zero_gives_top_k_in_descending_order(rewards, data):
    r = np.array(rewards) / 10.0  # distinct rewards: ties have no unique top-k order
    k = data.draw(st.integers(1, len(r)))
    got = rso_sample(r, k, 1e-9, np.random.default_rng(0))
    assert [r[i] for i in got] == sorted(r, reverse=True)[:k]


@settings(max_examples=80, deadline=None)
@given(rewards_st, st.data())
def test_beta_to_infinity_gives_first_k_in_scan_order(rewards, data):
    r = np.array(rewards)
    k = data.draw(st.integers(1, len(r)))
    assert rso_sample(r, k, 1e12, np.random.default_rng(1)) == list(range(k))


@settings(max_examples=80, deadline=None)
@given(rewards_st, st.data(), st.floats(0.01, 10), st.integers(0, 100))
def test_at_most_k_passes_and_no_duplicates(rewards, data, beta, seed):
    r = np.array(rewards)
    k = data.draw(st.integers(1, len(r)))
    accepted, passes = rso_passes(r, k, beta, np.random.default_rng(seed))
    assert len(accepted) == k == len(set(accepted))
    assert 1 <= passes <= k
    assert all(0 <= i < len(r) for i in accepted)


def test_k_larger_than_n_raises():
    with pytest.raises(SelectionError, match="k=5 is larger than the 3"):
        rso_sample(np.zeros(3), 5, 0.5, np.random.default_rng(0))


def test_duplicate_rewards_are_distinct_indices():
    got = rso_sample(np.ones(6), 6, 0.5, np.random.default_rng(0))
    assert sorted(got) == list(range(6))


def test_acceptance_favours_high_rewards_at_moderate_beta():
    r = np.linspace(0, 3, 16)
    counts = np.zeros(16)
    rng = np.random.default_rng(0)
    for _ in range(400):
        counts[rso_sample(r, 4, 0.5, rng)] += 1
    assert counts[-4:].sum() > counts[:4].sum() * 5
    assert counts[:12].sum() > 0  # not pure greedy


def pool(n_prompts: int, n: int):
    cands, scores = [], []
    for p in range(n_prompts):
        for i in range(n):
            cid = f"p{p}-c{i}"
            cands.append({"candidate_id": cid, "prompt_id": f"p{p}", "text": "t"})
            scores.append({"target_id": cid, "scorer": "rm", "value": float(i)})
    return schema.frame(cands, "candidates"), schema.frame(scores, "scores")


def test_selector_keeps_k_per_prompt_with_ranks_and_is_deterministic():
    cands, scores = pool(4, 10)
    sel = SELECTORS.build("rso", {"kind": "rso", "score": "rm", "k": 3, "beta": 0.5, "seed": 7})
    ctx = SelectionContext("candidate_id", scores, stage="select.0:rso")
    d = sel.select(cands, ctx)
    assert d.height == 40 and d["target_id"].to_list() == cands["candidate_id"].to_list()
    kept = d.filter("kept")
    assert kept.height == 12
    assert sorted(kept["rank"].to_list()) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert set(d.filter(~d["kept"])["reason"].to_list()) == {"rejected_sample"}
    assert set(d["stage"].to_list()) == {"select.0:rso"}
    assert d.equals(sel.select(cands, ctx))


def test_selector_short_prompt_raises_or_keeps_all():
    cands, scores = pool(2, 3)
    ctx = SelectionContext("candidate_id", scores)
    with pytest.raises(SelectionError, match="fewer candidates"):
        SELECTORS.build("rso", {"kind": "rso", "score": "rm", "k": 4}).select(cands, ctx)
    d = SELECTORS.build("rso", {"kind": "rso", "score": "rm", "k": 4, "on_short": "keep_all"}).select(cands, ctx)
    assert d["kept"].all() and set(d["reason"].to_list()) == {"short_prompt"}


def test_selector_missing_and_nan_scores_raise_before_sampling():
    cands, scores = pool(1, 4)
    sel = SELECTORS.build("rso", {"kind": "rso", "score": "judge", "k": 2})
    with pytest.raises(SelectionError, match="'judge'.*present: rm"):
        sel.select(cands, SelectionContext("candidate_id", scores))
    bad = scores.with_columns(value=np.array([0.0, np.nan, 1.0, 2.0]))
    with pytest.raises(SelectionError, match="non-finite"):
        SELECTORS.build("rso", {"kind": "rso", "score": "rm", "k": 2}).select(cands, SelectionContext("candidate_id", bad))
