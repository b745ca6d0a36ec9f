"""FiFA (spec §3): the §3.6 sanity tests, the k-th neighbour distance, weights and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionError
from curation.selectors.fifa import fifa_importance, kth_neighbour_distance, top_k
from tests.selectors._synthetic import all_pairs_pool, clustered, pairs_pool


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_kth_neighbour_distance_matches_brute_force(seed, k):
    x = np.random.default_rng(seed).standard_normal((40, 5)).astype(np.float32)
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    want = np.sort(d, axis=1)[:, k - 1]
    assert np.allclose(kth_neighbour_distance(x, k), want, atol=1e-4)


def test_copies_count_as_neighbours_at_distance_zero():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [9.0, 0.0]], dtype=np.float32)
    assert kth_neighbour_distance(x, 1).tolist() == [0.0, 0.0, 4.0, 4.0]


def test_ivf_index_approximates_the_exact_distances():
    x = clustered(3000, 16, 20, 0, spread=0.2)
    exact = kth_neighbour_distance(x, 5, index="flat")
    approx = kth_neighbour_distance(x, 5, index="ivf", nprobe=16)
    assert (approx >= exact - 1e-5).all() and np.median(approx / exact) < 1.05


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30))
def test_alpha_gamma_zero_is_top_k_by_margin_and_negative_margins_rank_last(seed, k):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=30)
    scores = fifa_importance(m, rng.normal(size=30), rng.normal(size=30), alpha=0.0, gamma=0.0)
    order = top_k(scores, k)
    assert order.tolist() == np.argsort(-m, kind="stable")[:k].tolist()
    full = top_k(scores, 30)
    positive = [i for i in full if m[i] > 0]
    assert full[: len(positive)].tolist() == positive
    assert len(set(order.tolist())) == k


def test_duplicated_prompts_get_the_lowest_diversity_and_need_a_large_margin():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 8)).astype(np.float32)
    x[10:16] = x[3]  # seven copies of one prompt
    pool, ctx = pairs_pool(x, np.zeros(20))
    d = SELECTORS.build("fifa", {"kind": "fifa", "budget": 5, "k": 5}).select(pool, ctx)
    log_d = np.array([json.loads(t)["log_knn_distance"] for t in d["detail"]])
    copies = [3, 10, 11, 12, 13, 14, 15]
    assert np.allclose(log_d[copies], log_d.min()) and log_d.min() == pytest.approx(np.log(1e-6), abs=1e-3)
    assert not d["kept"].to_numpy()[copies].any()
    margin = np.zeros(20)
    margin[12] = 50.0
    pool, ctx = pairs_pool(x, margin)
    d = SELECTORS.build("fifa", {"kind": "fifa", "budget": 5}).select(pool, ctx)
    assert d["kept"][12] and d["rank"][12] == 0


def brute_force_fifa(pool, emb_of_prompt, k, budget, eps=1e-6):
    """Spec §3.2 written out: per distinct prompt the k-th nearest other distinct prompt (exact,
    float64), I = z(margin) + z(log(d + ε)), top-K by I with ties to the lowest index."""
    pids = pool["prompt_id"].to_list()
    distinct = list(dict.fromkeys(pids))
    x = np.stack([emb_of_prompt[p] for p in distinct]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    kth = dict(zip(distinct, np.sort(dist, axis=1)[:, k - 1]))
    log_d = np.log(np.array([kth[p] for p in pids]) + eps)
    m = pool["margin"].to_numpy()
    z = lambda v: (v - v.mean()) / v.std()
    importance = z(m) + z(log_d)
    return sorted(range(len(pids)), key=lambda i: (-importance[i], i))[:budget]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_pairs_pool_measures_diversity_over_distinct_prompts_not_top_k_by_margin(seed):
    """all_pairs on 4 candidates: 6 pairs per prompt. Over pool rows every pair would find 5
    copies of its prompt (k = 5: log ε for all) and FiFA would be top-K by margin."""
    rng = np.random.default_rng(seed)
    prompt_emb = clustered(24, 8, 4, seed, spread=0.4)
    pool, ctx = all_pairs_pool(prompt_emb, rng.normal(size=(24, 4)) * rng.uniform(0.5, 3.0, size=(24, 1)))
    assert pool.height == 24 * 6
    order = rng.permutation(pool.height)  # no layout the implementation could lean on
    pool = pool[order.tolist()]
    budget = 40
    d = SELECTORS.build("fifa", {"kind": "fifa", "budget": budget, "k": 5}).select(pool, ctx)
    got = d.filter(d["kept"]).sort("rank")["target_id"].to_list()
    ids = pool["pair_id"].to_list()
    emb_of_prompt = {schema.prompt_id(schema.user_prompt(f"prompt {j}")): prompt_emb[j] for j in range(24)}
    want = [ids[i] for i in brute_force_fifa(pool, emb_of_prompt, 5, budget)]
    assert got == want
    by_margin = set(np.argsort(-pool["margin"].to_numpy(), kind="stable")[:budget].tolist())
    assert len(by_margin & {ids.index(t) for t in got}) < budget - 5
    log_d = np.array([json.loads(t)["log_knn_distance"] for t in d["detail"]])
    assert log_d.min() > np.log(1e-6) + 1  # no pair is anyone's zero-distance neighbour


def test_selector_uses_prompt_quality_with_its_weight():
    x = clustered(30, 8, 3, 1, spread=0.3)
    q = np.zeros(30)
    q[7] = 10.0
    pool, ctx = pairs_pool(x, np.zeros(30), chosen_score=q)
    base = {"kind": "fifa", "budget": 1, "gamma": 0.0, "prompt_quality": "chosen_score"}
    assert SELECTORS.build("fifa", base).select(pool, ctx)["kept"][7]
    assert not SELECTORS.build("fifa", {**base, "alpha": -1.0}).select(pool, ctx)["kept"][7]


def test_output_size_is_exactly_k_and_deterministic():
    x = clustered(50, 8, 5, 2, spread=0.3)
    pool, ctx = pairs_pool(x, np.random.default_rng(1).normal(size=50))
    d = SELECTORS.build("fifa", {"kind": "fifa", "budget": 12}).select(pool, ctx)
    assert d["kept"].sum() == 12 and sorted(d.filter(d["kept"])["rank"].to_list()) == list(range(12))
    assert d.equals(SELECTORS.build("fifa", {"kind": "fifa", "budget": 12}).select(pool, ctx))


def test_bad_inputs_are_clear_errors():
    pool, ctx = pairs_pool(clustered(5, 4, 2, 0))
    with pytest.raises(SelectionError, match="k=5 neighbours needs more than 5 distinct prompts; the pool has 5"):
        SELECTORS.build("fifa", {"kind": "fifa"}).select(pool, ctx)
    pool, ctx = pairs_pool(clustered(10, 4, 2, 0), np.array([np.nan] + [1.0] * 9))
    with pytest.raises(SelectionError, match="NaN"):
        SELECTORS.build("fifa", {"kind": "fifa"}).select(pool, ctx)


def test_ivf_rows_whose_lists_are_too_small_are_searched_exactly():
    """k = 100 with 14 lists of 200 rows and one list probed: faiss finds fewer than k + 1 rows (id -1,
    a huge distance); those rows must get their exact distance, not an inflated one."""
    x = clustered(200, 8, 10, 0, spread=0.3)
    exact = kth_neighbour_distance(x, 100, index="flat")
    assert np.allclose(kth_neighbour_distance(x, 100, index="ivf", nprobe=1), exact, atol=1e-4)
