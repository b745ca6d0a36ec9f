"""Random subset: size, determinism, uniformity, budget clipping."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError


def pool(n):
    return pl.DataFrame({"candidate_id": [f"c{i}" for i in range(n)], "prompt_id": ["p"] * n, "text": ["t"] * n})


def run(p, **config):
    return SELECTORS.build("random", {"kind": "random", **config}).select(p, SelectionContext("candidate_id"))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 60), st.one_of(st.integers(1, 200), st.floats(0.01, 1.0)), st.integers(0, 1000))
def test_size_ranks_and_determinism(n, budget, seed):
    written = {"budget": budget} if isinstance(budget, int) else {"fraction": budget}
    d = run(pool(n), **written, seed=seed)
    expected = min(n, budget) if isinstance(budget, int) else max(1, round(budget * n))
    assert d["kept"].sum() == expected
    assert sorted(d.filter("kept")["rank"].to_list()) == list(range(expected))
    assert d.filter(~pl.col("kept"))["reason"].unique().to_list() in ([], ["budget"])
    assert d.equals(run(pool(n), **written, seed=seed))


def test_budget_larger_than_pool_is_clipped_to_the_pool():
    d = run(pool(5), budget=50)
    assert d["kept"].all()


def test_inclusion_is_uniform():
    counts = np.zeros(20)
    for seed in range(600):
        counts += run(pool(20), budget=5, seed=seed)["kept"].to_numpy()
    assert counts.min() > 100 and counts.max() < 200  # expectation 150 each


def test_needs_a_budget_and_a_pool():
    with pytest.raises(SelectionError, match="random needs a budget"):
        run(pool(3))
    with pytest.raises(SelectionError, match="empty"):
        run(pool(0), budget=1)
