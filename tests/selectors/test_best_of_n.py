"""Best-of-N: top n per prompt, ties by pool order and visible, missing scores."""

from __future__ import annotations

import polars as pl
import pytest

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError


def case(values_by_prompt):
    cands, scores = [], []
    for pid, values in values_by_prompt.items():
        for i, v in enumerate(values):
            cands.append({"candidate_id": f"{pid}{i}", "prompt_id": pid, "text": "t"})
            scores.append({"target_id": f"{pid}{i}", "scorer": "rm", "value": v})
    return pl.DataFrame(cands), schema.frame(scores, "scores")


def test_keeps_the_best_n_per_prompt():
    pool, scores = case({"a": [1.0, 3.0, 2.0], "b": [0.0, -1.0]})
    d = SELECTORS.build("best_of_n", {"kind": "best_of_n", "score": "rm", "n": 2}).select(pool, SelectionContext("candidate_id", scores))
    assert d["kept"].to_list() == [False, True, True, True, True]
    assert d["rank"].to_list() == [None, 0, 1, 0, 1]
    assert d["reason"][0] == "not_best"


def test_all_tied_prompt_keeps_first_and_says_so():
    pool, scores = case({"a": [2.0, 2.0, 2.0]})
    d = SELECTORS.build("best_of_n", {"kind": "best_of_n", "score": "rm"}).select(pool, SelectionContext("candidate_id", scores))
    assert d["kept"].to_list() == [True, False, False]
    assert d["reason"][0] == "kept_tied"


def test_missing_values_raise():
    pool, scores = case({"a": [1.0, None]})
    with pytest.raises(SelectionError, match="no value for 1 of 2"):
        SELECTORS.build("best_of_n", {"kind": "best_of_n", "score": "rm"}).select(pool, SelectionContext("candidate_id", scores))
