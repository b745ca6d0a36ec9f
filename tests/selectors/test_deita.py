"""Deita's repr filter (spec §8): the §8.6 sanity tests and equality with the plain sequential filter."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.selectors import SELECTORS
from curation.selectors._inputs import l2_normalize
from curation.selectors.deita import deita_filter
from tests.selectors._synthetic import clustered, pairs_pool


def sequential_reference(x, scores, budget, tau):
    """The reference's batch-size-1 loop, written plainly."""
    kept = []
    for i in np.argsort(-scores, kind="stable"):
        if len(kept) == budget:
            break
        if not kept or (x[kept] @ x[i]).max() <= tau:
            kept.append(int(i))
    return kept


def random_case(seed, n=120, d=6):
    rng = np.random.default_rng(seed)
    x = l2_normalize(rng.standard_normal((n, d)))
    return x, rng.normal(size=n)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.3, 0.6, 0.9]), st.integers(1, 120), st.sampled_from([1, 7, 1024]))
def test_blocked_filter_equals_the_sequential_reference(seed, tau, budget, block):
    x, s = random_case(seed)
    assert deita_filter(x, s, budget, tau, block=block).kept.tolist() == sequential_reference(x, s, budget, tau)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.3, 0.6, 0.9]))
def test_output_is_diverse_sorted_by_score_and_starts_at_the_argmax(seed, tau):
    x, s = random_case(seed)
    kept = deita_filter(x, s, 50, tau).kept
    sims = x[kept] @ x[kept].T
    np.fill_diagonal(sims, -1)
    assert sims.max() <= tau + 1e-6
    assert (np.diff(s[kept]) <= 0).all()
    assert kept[0] == int(np.argmax(s))


def test_tau_one_degenerates_to_top_n_by_score():
    x, s = random_case(3)
    assert deita_filter(x, s, 30, 1.0).kept.tolist() == np.argsort(-s, kind="stable")[:30].tolist()


def test_a_duplicated_row_never_appears_twice_and_names_the_kept_twin():
    x, s = random_case(4, n=30)
    x = np.vstack([x, x[:10]])
    s = np.concatenate([s, s[:10] + 0.5])
    pool, ctx = pairs_pool(x, s)
    d = SELECTORS.build("deita", {"kind": "deita", "threshold": 0.9}).select(pool, ctx)
    kept = set(d.filter(d["kept"])["target_id"].to_list())
    ids = pool["pair_id"].to_list()
    for i in range(10):
        assert not {ids[i], ids[30 + i]} <= kept
    dropped = d.filter(d["reason"] == "similar_to_kept")
    assert dropped.height > 0 and all(json.loads(t)["similar_to"] in kept for t in dropped["detail"])


def test_stops_at_the_budget_and_the_rest_is_budget():
    x = clustered(100, 16, 10, 5, spread=0.01)
    pool, ctx = pairs_pool(x, np.linspace(1, 0, 100))
    d = SELECTORS.build("deita", {"kind": "deita", "budget": 10, "threshold": 0.9}).select(pool, ctx)
    assert d["kept"].to_list()[:10] == [True] * 10  # one per cluster, in score order
    assert d["kept"].sum() == 10 and set(d.filter(~d["kept"])["reason"].to_list()) == {"budget"}
    d2 = SELECTORS.build("deita", {"kind": "deita", "budget": 15, "threshold": 0.9}).select(pool, ctx)
    assert d2["kept"].sum() == 10  # fewer diverse items than the budget: documented, not padded
    assert set(d2.filter(~d2["kept"])["reason"].to_list()) == {"similar_to_kept"}
