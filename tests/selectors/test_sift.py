"""SIFT (spec §1): the §1.6 sanity tests, the mini-batch hierarchy, targets and repeats in the selector."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.selectors import SELECTORS
from curation.selectors._inputs import l2_normalize
from curation.selectors.base import SelectionError
from curation.selectors.sift import adaptive_mask, preselect, read_targets, sift_select, vtl
from tests.selectors._synthetic import clustered, pairs_pool


def unit(rng, n, d):
    return l2_normalize(rng.standard_normal((n, d)))


def posterior_total_variance(x, a, picks, lam):
    """Σ_a σ²(a | picks) from the closed form, rebuilt from scratch (spec §1.2)."""
    if not picks:
        return float(np.einsum("ij,ij->", a, a))
    xs = x[picks]
    k_xa = xs @ a.T
    return float(np.einsum("ij,ij->", a, a) - np.einsum("ij,ij->", k_xa, np.linalg.solve(xs @ xs.T + lam * np.eye(len(picks)), k_xa)))


def brute_force_vtl(x, a, n_select, lam):
    """Each step: the candidate whose addition leaves the least total target variance (ties: lowest index)."""
    x, a = x.astype(np.float64), a.astype(np.float64)
    picks: list[int] = []
    for _ in range(n_select):
        after = [posterior_total_variance(x, a, picks + [j], lam) for j in range(len(x))]
        picks.append(int(np.argmin(np.round(after, 10))))
    return picks


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.sampled_from([1e-3, 0.01, 1.0]))
def test_vtl_matches_a_brute_force_posterior_variance_greedy(seed, m, lam):
    rng = np.random.default_rng(seed)
    x, a = unit(rng, 25, 6), unit(rng, m, 6)
    assert vtl(x, a, 8, lam).picks.tolist() == brute_force_vtl(x, a, 8, lam)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 80), st.integers(2, 16))
def test_first_pick_is_the_nearest_neighbour_by_absolute_cosine(seed, n, d):
    rng = np.random.default_rng(seed)
    x, a = unit(rng, n, d), unit(rng, 1, d)
    res = vtl(x, a, 1, 0.01)
    cos = np.abs(x.astype(np.float64) @ a[0].astype(np.float64))
    assert cos[res.picks[0]] == pytest.approx(cos.max(), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_duplicating_candidates_leaves_the_selected_embeddings_unchanged(seed, m):
    rng = np.random.default_rng(seed)
    x, a = unit(rng, 30, 12), unit(rng, m, 12)
    copies = rng.choice(30, size=10, replace=False)
    x_dup = np.vstack([x, x[copies]])
    original_of = np.concatenate([np.arange(30), copies])
    base = vtl(x, a, 8, 0.01).picks
    dup = vtl(x_dup, a, 8, 0.01).picks
    assert original_of[dup].tolist() == base.tolist() == brute_force_vtl(x, a, 8, 0.01)
    # nearest-neighbour top-N, by contrast, spends budget on the copies
    nn = np.argsort(-np.abs(x_dup @ a.mean(0)), kind="stable")[:8]
    top = np.argsort(-np.abs(x @ a.mean(0)), kind="stable")[:8]
    if len(set(top[:4]) & set(copies.tolist())) > 0:
        assert len(set(original_of[nn].tolist())) < 8


def test_large_lambda_repeats_the_most_relevant_point():
    rng = np.random.default_rng(0)
    x, a = unit(rng, 40, 8), unit(rng, 1, 8)
    res = vtl(x, a, 6, 100.0)
    best = int(np.argmax(np.abs(x @ a[0])))
    assert res.picks.tolist() == [best] * 6


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_tiny_lambda_never_repeats_while_rank_is_below_d(seed, m):
    rng = np.random.default_rng(seed)
    x, a = unit(rng, 50, 16), unit(rng, m, 16)
    picks = vtl(x, a, 12, 1e-6).picks
    assert len(set(picks.tolist())) == 12


def test_orthogonal_pool_follows_nearest_neighbour_order():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    x = q.T[:8]  # 8 orthonormal candidates
    a = l2_normalize(rng.standard_normal((1, 10)))
    picks = vtl(x, a, 5, 0.01).picks
    assert picks.tolist() == np.argsort(-np.abs(x @ a[0]))[:5].tolist()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1e-4, 0.01, 1.0]), st.integers(1, 4))
def test_total_target_variance_never_increases_and_stays_non_negative(seed, lam, m):
    rng = np.random.default_rng(seed)
    x, a = unit(rng, 40, 8), unit(rng, m, 8)
    res = vtl(x, a, 15, lam)
    totals = np.concatenate([[float(m)], res.total_variance])
    assert (np.diff(totals) <= 1e-12).all()
    assert (res.total_variance >= -1e-9).all()
    assert np.allclose(res.values, -res.total_variance)
    # and each step took the largest reduction available, not just any reduction
    for t in range(1, 15):
        best = min(posterior_total_variance(x.astype(np.float64), a.astype(np.float64), res.picks[:t].tolist() + [j], lam)
                   for j in range(40))
        assert res.total_variance[t] == pytest.approx(best, rel=1e-7, abs=1e-9)


def test_conditioning_matches_the_closed_form_posterior_variance():
    rng = np.random.default_rng(2)
    x, a = unit(rng, 20, 6).astype(np.float64), unit(rng, 3, 6).astype(np.float64)
    lam = 0.05
    res = vtl(x, a, 5, lam)
    xs = x[res.picks].astype(np.float64)
    k_xx = xs @ xs.T + lam * np.eye(5)
    k_xa = xs @ a.T.astype(np.float64)
    post = np.einsum("ij,ij->i", a, a) - np.einsum("ji,ji->i", k_xa, np.linalg.solve(k_xx, k_xa))
    assert res.total_variance[-1] == pytest.approx(post.sum(), rel=1e-9)


def test_preselection_keeps_the_largest_absolute_inner_products():
    rng = np.random.default_rng(3)
    x, q = unit(rng, 300, 8), unit(rng, 1, 8)[0]
    got = preselect(x, q, 20)
    want = np.argsort(-np.abs(x @ q), kind="stable")[:20]
    assert sorted(got.tolist()) == sorted(want.tolist())
    assert (np.diff(np.abs(x[got] @ q)) <= 1e-6).all()


def test_hierarchy_shrinks_to_the_budget_and_is_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    x, a = unit(rng, 700, 12), unit(rng, 2, 12)
    r1 = sift_select(x, a, 10, mini_batch_size=100, seed=7)
    r2 = sift_select(x, a, 10, mini_batch_size=100, seed=7)
    assert r1.levels >= 2 and len(r1.picks) == 10
    assert r1.picks.tolist() == r2.picks.tolist()
    single = sift_select(x, a, 10, mini_batch_size=1000)
    order = preselect(x, a.mean(0), None)
    assert single.levels == 1 and single.picks.tolist() == order[vtl(x[order], a, 10, 0.01).picks].tolist()
    with pytest.raises(SelectionError, match="mini_batch_size/2"):
        sift_select(x, a, 60, mini_batch_size=100)


def test_adaptive_mask_removes_positions_elementwise():
    totals = np.array([0.5, 0.01, 0.2, 0.001])  # sqrt: .707, .1, .447, .0316 vs 1/(2i): .5, .25, .167, .125
    assert adaptive_mask(totals, 2.0).tolist() == [False, True, False, True]


# ---------------------------------------------------------------- the selector


def test_selector_repeats_become_one_kept_item_with_a_count_weight():
    x = clustered(60, 16, 3, 0)
    pool, ctx = pairs_pool(x)
    d = SELECTORS.build("sift", {"kind": "sift", "budget": 6, "targets": ["prompt 5"], "lam": 100.0}).select(pool, ctx)
    kept = d.filter(d["kept"])
    assert kept.height == 1 and kept["weight"][0] == 6.0
    assert kept["target_id"][0] == pool["pair_id"][5]  # the target itself is its nearest neighbour
    assert json.loads(kept["detail"][0])["count"] == 6


def test_selector_reads_targets_from_files(tmp_path):
    x = clustered(50, 8, 5, 1)
    pool, ctx = pairs_pool(x)
    txt = tmp_path / "targets.txt"
    txt.write_text("prompt 3\nprompt 4\n")
    jsonl = tmp_path / "targets.jsonl"
    jsonl.write_text(json.dumps({"prompt": "prompt 3"}) + "\n" + json.dumps({"messages": [{"role": "user", "content": "prompt 4"}]}) + "\n")
    assert read_targets(str(txt)) == read_targets(str(jsonl)) == ["prompt 3", "prompt 4"]
    cfg = {"kind": "sift", "budget": 4, "lam": 1e-4}
    a = SELECTORS.build("sift", {**cfg, "targets": str(txt)}).select(pool, ctx)
    b = SELECTORS.build("sift", {**cfg, "targets": ["prompt 3", "prompt 4"]}).select(pool, ctx)
    assert a.equals(b)
    assert {pool["pair_id"][3], pool["pair_id"][4]} <= set(a.filter(a["kept"])["target_id"].to_list())


def test_bad_targets_are_clear_errors(tmp_path):
    pool, ctx = pairs_pool(clustered(10, 4, 2, 0))
    with pytest.raises(SelectionError, match="does not exist"):
        SELECTORS.build("sift", {"kind": "sift", "targets": str(tmp_path / "nope.txt")}).select(pool, ctx)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(SelectionError, match="bad.jsonl:1"):
        SELECTORS.build("sift", {"kind": "sift", "targets": str(bad)}).select(pool, ctx)


def test_undirected_selection_covers_the_clusters():
    order = np.random.default_rng(0).permutation(120)  # clusters not laid out in index order
    x = clustered(120, 16, 6, 2)[order]
    pool, ctx = pairs_pool(x)
    d = SELECTORS.build("sift", {"kind": "sift", "budget": 6}).select(pool, ctx)
    ids = pool["pair_id"].to_list()
    picked = sorted(int(order[ids.index(t)]) % 6 for t in d.filter(d["kept"])["target_id"].to_list())
    assert picked == [0, 1, 2, 3, 4, 5]


def test_budget_beyond_the_pool_is_clamped_to_the_pool():
    x = clustered(8, 4, 2, 0, spread=0.3)
    pool, ctx = pairs_pool(x)
    d = SELECTORS.build("sift", {"kind": "sift", "budget": 100, "lam": 0.05, "targets": ["prompt 6"]}).select(pool, ctx)
    want = brute_force_vtl(l2_normalize(x), l2_normalize(x[[6]]), 8, 0.05)  # 8 picks, repeats allowed
    weights = np.bincount(want, minlength=8)
    assert d.height == 8 and d["kept"].to_list() == (weights > 0).tolist()
    assert d.filter(d["kept"])["weight"].to_list() == weights[weights > 0].astype(float).tolist()


def test_objective_is_the_posterior_variance_the_selection_leaves():
    rng = np.random.default_rng(9)
    x = clustered(40, 8, 4, 3, spread=0.4)
    pool, ctx = pairs_pool(x)
    sel = SELECTORS.build("sift", {"kind": "sift", "budget": 6, "lam": 0.1, "targets": ["prompt 2", "prompt 9"]})
    d = sel.select(pool, ctx)
    kept = np.flatnonzero(d["kept"].to_numpy())
    weights = d["weight"].to_numpy()[kept]
    picks = np.repeat(kept, weights.astype(int)).tolist()
    want = posterior_total_variance(l2_normalize(x).astype(np.float64), l2_normalize(x[[2, 9]]).astype(np.float64), picks, 0.1)
    assert sel.objective(kept, weights) == pytest.approx(want, rel=1e-6)
    assert sel.report["final_total_variance"] == pytest.approx(want, rel=1e-6)
    assert sel.objective(rng.choice(40, size=len(kept), replace=False)) > want - 1e-9
