"""Length filter: bounds, ratio, budget preference, reasons."""

from __future__ import annotations

import polars as pl
import pytest

from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError


def pool(chosen, rejected):
    n = len(chosen)
    return pl.DataFrame({"pair_id": [f"x{i}" for i in range(n)], "prompt_id": ["p"] * n, "chosen": chosen, "rejected": rejected})


def run(p, id_column="pair_id", **config):
    return SELECTORS.build("length", {"kind": "length", **config}).select(p, SelectionContext(id_column))


def test_bounds_and_ratio_with_reasons():
    p = pool(["a" * 10, "a" * 3, "a" * 500, "a" * 100, "a" * 20], ["a" * 10, "a" * 10, "a" * 10, "a" * 10, "a" * 15])
    d = run(p, min_length=5, max_length=200, max_ratio=3)
    assert d["kept"].to_list() == [True, False, False, False, True]
    assert d["reason"].to_list() == ["kept", "too_short", "too_long", "length_ratio", "kept"]


def test_budget_prefers_shortest_or_longest_among_survivors():
    p = pool(["a" * n for n in (50, 10, 30, 2)], ["b" * 20] * 4)
    shortest = run(p, min_length=5, budget=2)
    assert shortest["kept"].to_list() == [False, True, True, False]
    assert shortest["reason"].to_list() == ["budget", "kept", "kept", "too_short"]
    longest = run(p, min_length=5, budget=2, prefer="longest")
    assert longest["kept"].to_list() == [True, False, True, False]


def test_words_unit_and_candidates_pool():
    p = pl.DataFrame({"candidate_id": ["a", "b"], "prompt_id": ["p", "p"], "text": ["one two three", "one"]})
    assert run(p, "candidate_id", unit="words", min_length=2)["kept"].to_list() == [True, False]
    with pytest.raises(SelectionError, match="max_ratio needs a pairs pool"):
        run(p, "candidate_id", max_ratio=2)


def test_inverted_bounds_raise():
    with pytest.raises(SelectionError, match="max_length 3 < min_length 5"):
        run(pool(["abc"], ["abc"]), min_length=5, max_length=3)
