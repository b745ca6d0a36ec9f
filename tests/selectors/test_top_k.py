"""Top-k: order, ties by pool order, named scorer / margin / column, all-tied and missing scores."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError


def pool(margins):
    n = len(margins)
    return pl.DataFrame(
        {"pair_id": [f"x{i}" for i in range(n)], "prompt_id": ["p"] * n, "chosen_id": [f"c{i}" for i in range(n)],
         "rejected_id": [f"r{i}" for i in range(n)], "margin": margins}
    )


def run(p, scores=None, **config):
    ctx = SelectionContext("pair_id", scores if scores is not None else schema.empty("scores"))
    return SELECTORS.build("top_k", {"kind": "top_k", **config}).select(p, ctx)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=2, max_size=30).filter(lambda v: len(set(v)) > 1), st.integers(1, 40))
def test_keeps_the_highest_with_ties_broken_by_pool_order(values, budget):
    d = run(pool([float(v) for v in values]), budget=budget)
    k = min(budget, len(values))
    expected = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
    kept = d.filter("kept")
    assert sorted(zip(kept["rank"].to_list(), kept["target_id"].to_list())) == [(r, f"x{i}") for r, i in enumerate(expected)]


def test_ascending_and_named_scorer():
    p = pool([0.0, 1.0, 2.0, 3.0])
    scores = schema.frame([{"target_id": f"c{i}", "scorer": "rm", "value": v} for i, v in enumerate([5.0, 1.0, 9.0, 3.0])], "scores")
    assert run(p, scores, budget=2, by="rm")["kept"].to_list() == [True, False, True, False]
    assert run(p, budget=1, ascending=True)["kept"].to_list() == [True, False, False, False]


def test_all_tied_raises_and_missing_scorer_names_present():
    with pytest.raises(SelectionError, match="all 3 items have the same 'margin'"):
        run(pool([1.0, 1.0, 1.0]), budget=1)
    with pytest.raises(SelectionError, match="'judge' is neither a pool column nor a scorer"):
        run(pool([1.0, 2.0]), budget=1, by="judge")
    with pytest.raises(SelectionError, match="NaN or infinite"):
        run(pool([1.0, np.nan]), budget=1)
