"""kMQ (spec §4): allocation, quality-weighted sampling, the code mode's quirks, refine, choose_k, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors._kmeans import choose_k, kmeans
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
    order = np.random.default_rng(1).permutation(30)
    margin = np.random.default_rng(2).normal(size=30) * 2
    pool, ctx = pairs_pool(x[order], margin)
    d = SELECTORS.build("kmq", {"kind": "kmq", "k": 3, "budget": 25, "replace": True}).select(pool, ctx)
    labels = np.array([json.loads(t)["cluster"] for t in d["detail"]])
    # the public sampler on the same clusters, quality and seed: its draws are the weights
    draws = np.bincount(kmq_sample(labels, margin, 25, k=3, seed=42, replace=True).order, minlength=30)
    assert d["kept"].to_list() == (draws > 0).tolist()
    assert d.filter(d["kept"])["weight"].to_list() == draws[draws > 0].astype(float).tolist()
    assert draws.max() > 1 and d["kept"].sum() < 25


def test_restarts_keep_the_lowest_inertia_and_defaults_are_the_references():
    cfg = SELECTORS.build("kmq", {"kind": "kmq"}).config
    assert (cfg.niter, cfg.nredo) == (300, 5)
    x = clustered(600, 8, 12, 4, spread=0.25)
    worse = 0
    for seed in range(6):
        one = kmeans(x, 12, seed=seed, niter=300, nredo=1).sq_distances.sum()
        five = kmeans(x, 12, seed=seed, niter=300, nredo=5).sq_distances.sum()
        assert five <= one * (1 + 1e-6)  # the first restart is the single run; the best is kept
        worse += five < one * (1 - 1e-4)
    assert worse >= 1  # and on some seeds a restart finds a better clustering


def test_iterative_kmq_from_a_recipe_config_keeps_the_last_round_and_adds_by_cluster_score():
    x = clustered(80, 8, 4, 5, spread=0.02)
    pool, ctx = pairs_pool(x[np.random.default_rng(0).permutation(80)], np.zeros(80))
    first = SELECTORS.build("kmq", {"kind": "kmq", "k": 4, "budget": 8}).select(pool, ctx)
    previous = np.flatnonzero(first["kept"].to_numpy())
    labels = np.array([json.loads(t)["cluster"] for t in first["detail"]])
    gap = np.where(labels[previous] == labels[previous[0]], 5.0, 0.0)  # one cluster is far from learned
    scores = schema.frame([{"target_id": pool["pair_id"][int(i)], "scorer": "gap", "value": float(v)}
                           for i, v in zip(previous, gap)], "scores")
    ctx.scores = scores
    sel = SELECTORS.build("kmq", {"kind": "kmq", "k": 4, "budget": 28, "refine": "gap"})
    d = sel.select(pool, ctx)
    kept = np.flatnonzero(d["kept"].to_numpy())
    assert len(kept) == 28 and set(previous) <= set(kept)
    assert set(d.filter(d["reason"] == "previous_round")["target_id"].to_list()) == {pool["pair_id"][int(i)] for i in previous}
    added = np.setdiff1d(kept, previous)
    assert np.bincount(labels[added], minlength=4).argmax() == labels[previous[0]]
    assert sel.report["refined_from"] == 8
    with pytest.raises(SelectionError, match="budget 8 leaves no room beyond the 8 items"):
        SELECTORS.build("kmq", {"kind": "kmq", "k": 4, "budget": 8, "refine": "gap"}).select(pool, ctx)
    with pytest.raises(SelectionError, match="'nothing'"):
        SELECTORS.build("kmq", {"kind": "kmq", "k": 4, "budget": 20, "refine": "nothing"}).select(pool, ctx)


def test_objective_is_cluster_coverage():
    x = clustered(60, 8, 6, 6, spread=0.02)
    pool, ctx = pairs_pool(x, np.zeros(60))
    sel = SELECTORS.build("kmq", {"kind": "kmq", "k": 6, "budget": 6})
    d = sel.select(pool, ctx)
    assert sel.objective(np.flatnonzero(d["kept"].to_numpy())) == 1.0
    labels = np.array([json.loads(t)["cluster"] for t in d["detail"]])
    one_cluster = np.flatnonzero(labels == labels[0])[:3]
    assert sel.objective(one_cluster) == pytest.approx(1 / 6)


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
    d = SELECTORS.build("kmq", {"kind": "kmq", "k": 4, "fraction": 0.1}).select(pool, ctx)
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
