"""kMQ (spec §4): allocation, quality-weighted sampling, the code mode's quirks, refine, choose_k, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from curation.selectors import SELECTORS
from curation.selectors._kmeans import choose_k
from curation.selectors.base import SelectionError
from curation.selectors.kmq import allocate, kmq_sample, refine
from tests.selectors._synthetic import clustered, pairs_pool

sizes_st = st.lists(st.integers(0, 40), min_size=1, max_size=12).filter(lambda s: sum(s) > 0)


@settings(max_examples=150, deadline=None)
@given(sizes_st, st.data())
def test_proportional_allocation_is_within_one_of_the_share_and_sums_to_budget(sizes, data):
    sizes = np.array(sizes)
    budget = data.draw(st.integers(0, int(sizes.sum())))
    counts = allocate(sizes, budget, sizes)
    assert counts.sum() == budget
    assert (np.abs(counts - sizes * budget / sizes.sum()) < 1).all()
    assert (counts <= sizes).all()


@settings(max_examples=150, deadline=None)
@given(sizes_st, st.data())
def test_uniform_allocation_redistributes_the_shortfall_of_small_clusters(sizes, data):
    sizes = np.array(sizes)
    budget = data.draw(st.integers(0, int(sizes.sum())))
    counts = allocate(sizes, budget, np.ones(len(sizes)))
    assert counts.sum() == budget and (counts <= sizes).all()
    # water-filling: a cluster below another's count is full
    for i in range(len(sizes)):
        if counts[i] < counts.max() - 1:
            assert counts[i] == sizes[i]


def test_code_mode_gives_every_cluster_floor_b_over_k_and_drops_the_remainder():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    s = kmq_sample(labels, np.zeros(100), 23, k=4, seed=0, mode="code")
    assert s.counts.tolist() == [5, 5, 5, 5] and len(s.order) == 20
    assert np.bincount(labels[s.order], minlength=4).tolist() == [5, 5, 5, 5]
    small = kmq_sample(np.repeat(np.arange(3), [2, 30, 30]), np.zeros(62), 30, k=3, seed=0, mode="code")
    assert small.counts.tolist() == [2, 10, 10]  # capped at the cluster size, not redistributed


def test_code_mode_casts_quality_to_int_before_the_softmax():
    labels = np.zeros(2, dtype=np.int64)
    s = kmq_sample(labels, np.array([0.2, 0.9]), 1, k=1, seed=0, mode="code")
    assert np.allclose(s.probabilities, [0.5, 0.5])
    t = kmq_sample(labels, np.array([0.2, 0.9]), 1, k=1, seed=0)
    assert t.probabilities[1] > t.probabilities[0]


def test_equal_quality_samples_uniformly_within_a_cluster():
    labels = np.zeros(8, dtype=np.int64)
    hits = np.zeros(8)
    for seed in range(2000):
        hits[kmq_sample(labels, np.ones(8), 2, k=1, seed=seed).order] += 1
    assert stats.chisquare(hits).pvalue > 0.001


def test_a_much_better_item_is_almost_always_selected():
    labels = np.repeat(np.arange(2), 10)
    q = np.zeros(20)
    q[13] = 10.0
    got = sum(13 in kmq_sample(labels, q, 4, k=2, seed=s).order for s in range(300))
    assert got >= 297


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_no_duplicates_without_replacement_and_determinism(seed, proportional):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=80)
    q = rng.normal(size=80)
    kw = dict(k=5, seed=seed, allocation="proportional" if proportional else "uniform")
    a, b = kmq_sample(labels, q, 30, **kw), kmq_sample(labels, q, 30, **kw)
    assert len(set(a.order.tolist())) == 30 and a.order.tolist() == b.order.tolist()


def test_with_replacement_can_repeat_and_the_selector_weights_repeats():
    x = clustered(30, 8, 3, 0)
    pool, ctx = pairs_pool(x, np.zeros(30))
    d = SELECTORS.build("kmq", {"kind": "kmq", "k": 3, "budget": 25, "replace": True}).select(pool, ctx)
    kept = d.filter(d["kept"])
    assert kept["weight"].sum() == 25 and kept.height < 25
    assert all(json.loads(t).get("count", 1) == w for t, w in zip(kept["detail"], kept["weight"]))


def test_refine_weights_follow_cluster_scores_and_additions_are_new():
    labels = np.repeat(np.arange(4), 25)
    selected = np.array([0, 1, 25, 26, 50, 51])  # cluster 3 has no scored items
    scores = np.array([1.0, 1.0, 3.0, 3.0, -1.0, -1.0])
    r = refine(labels, selected, scores, 20, seed=0)
    assert r.weights.sum() == pytest.approx(1.0)
    assert int(np.argmax(r.weights)) == 1
    assert r.cluster_scores[3] == pytest.approx(np.mean([1.0, 3.0, -1.0]))
    assert len(r.additions) == 20 == len(set(r.additions.tolist()))
    assert not set(r.additions.tolist()) & set(selected.tolist())
    assert r.counts.tolist() == np.bincount(labels[r.additions], minlength=4).tolist()


def test_refine_never_asks_a_cluster_for_more_than_it_has_left():
    labels = np.repeat(np.arange(2), [3, 50])
    r = refine(labels, np.array([0]), np.array([100.0]), 20, seed=1)  # cluster 0 wants all but has 2 left
    assert r.counts[0] == 2 and r.counts.sum() == 20


def test_choose_k_finds_well_separated_clusters():
    x = clustered(400, 16, 5, 3, spread=0.02)
    k, scores = choose_k(x, [2, 5, 9, 20], seed=0, sample=300)
    assert k == 5 and set(scores) == {2, 5, 9, 20}


def test_selector_proportional_split_and_detail_clusters():
    x = clustered(200, 16, 4, 1, spread=0.02)
    pool, ctx = pairs_pool(x, np.random.default_rng(0).normal(size=200))
    d = SELECTORS.build("kmq", {"kind": "kmq", "k": 4, "budget": 0.1}).select(pool, ctx)
    kept = d.filter(d["kept"])
    assert kept.height == 20 and sorted(kept["rank"].to_list()) == list(range(20))
    clusters = [json.loads(t)["cluster"] for t in kept["detail"]]
    assert sorted(np.bincount(clusters).tolist()) == [5, 5, 5, 5]


def test_selector_k_auto_and_determinism():
    x = clustered(120, 8, 3, 2, spread=0.02)
    pool, ctx = pairs_pool(x)
    cfg = {"kind": "kmq", "k": "auto", "k_candidates": [2, 3, 6], "budget": 12}
    sel = SELECTORS.build("kmq", cfg)
    d = sel.select(pool, ctx)
    assert sel.report["k"] == 3
    assert d.equals(SELECTORS.build("kmq", cfg).select(pool, ctx))
    other = SELECTORS.build("kmq", {**cfg, "seed": 1}).select(pool, ctx)
    assert not d["kept"].equals(other["kept"])


def test_bad_inputs_are_clear_errors():
    x = clustered(10, 4, 2, 0)
    pool, ctx = pairs_pool(x)
    with pytest.raises(SelectionError, match="k=20 clusters but the pool has only 10"):
        SELECTORS.build("kmq", {"kind": "kmq", "k": 20}).select(pool, ctx)
    nan_pool, nan_ctx = pairs_pool(x, np.array([1.0] * 9 + [np.nan]))
    with pytest.raises(SelectionError, match="NaN"):
        SELECTORS.build("kmq", {"kind": "kmq", "k": 2}).select(nan_pool, nan_ctx)
    with pytest.raises(SelectionError, match="neither a pool column nor a scorer"):
        SELECTORS.build("kmq", {"kind": "kmq", "k": 2, "quality": "deita"}).select(pool, ctx)
    with pytest.raises(SelectionError, match="empty"):
        SELECTORS.build("kmq", {"kind": "kmq", "k": 2}).select(pool.head(0), ctx)


def test_budget_larger_than_the_pool_keeps_everything():
    pool, ctx = pairs_pool(clustered(12, 4, 3, 0))
    d = SELECTORS.build("kmq", {"kind": "kmq", "k": 3, "budget": 500}).select(pool, ctx)
    assert d["kept"].all()
