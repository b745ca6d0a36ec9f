"""The selector template: the base checks pool, budget and the decisions a subclass returns."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest

from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions


def pool(n=6):
    return pl.DataFrame({"pair_id": [f"x{i}" for i in range(n)], "prompt_id": [f"p{i}" for i in range(n)]})


class Scripted(Selector):
    """Keeps the first `budget` items (all when unset), then applies `damage` to its own output."""

    name = "scripted"
    damage = None

    def decide(self, pool, context, budget):
        ids = context.ids(pool)
        size = len(ids) if budget is None else budget
        out = decisions(context, ids, [i < size for i in range(len(ids))])
        return self.damage(out) if self.damage else out


def run(selector_cls=Scripted, n=6, **config):
    sel = selector_cls(SelectorConfig(kind="scripted", **config))
    return sel.select(pool(n), SelectionContext("pair_id", stage="select.0:scripted"))


def test_decide_gets_the_resolved_budget():
    assert run(budget=4)["kept"].sum() == 4
    assert run(budget="50%")["kept"].sum() == 3
    assert run(fraction=0.2)["kept"].sum() == 1  # round(1.2), never below one item
    assert run()["kept"].all()


def test_a_budget_beyond_the_pool_is_clipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="curation.selectors.base"):
        assert run(budget=50)["kept"].all()
    assert "budget 50 exceeds the pool of 6" in caplog.text


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d.reverse(), "one decision per pool item, in pool order"),
    (lambda d: d.head(5), "one decision per pool item, in pool order"),
    (lambda d: d.with_columns(stage=pl.lit("select.9:other")), "stage"),
    (lambda d: d.with_columns(weight=pl.lit(-1.0)), "weight"),
    (lambda d: d.with_columns(weight=pl.lit(float("nan"))), "weight"),
    (lambda d: d.with_columns(kept=pl.lit(True)), "kept 6 items over a budget of 2"),
])
def test_decisions_that_break_the_contract_are_refused(damage, message):
    class Broken(Scripted):
        pass

    Broken.damage = staticmethod(damage)
    with pytest.raises(SelectionError, match=message):
        run(Broken, budget=2)


def test_pool_kind_budget_use_and_empty_pool_are_checked_before_decide():
    class NeedsBudget(Scripted):
        budget_use = "required"

    class NoBudget(Scripted):
        budget_use = "none"

    class CandidatesOnly(Scripted):
        pool_kinds = ("candidates",)

    with pytest.raises(SelectionError, match="scripted needs a budget"):
        run(NeedsBudget)
    with pytest.raises(SelectionError, match="scripted takes no budget"):
        run(NoBudget, fraction=0.5)
    with pytest.raises(SelectionError, match="works on candidates pools, not on a pairs pool"):
        run(CandidatesOnly)
    with pytest.raises(SelectionError, match="empty"):
        run(n=0)


def test_objective_defaults_to_none():
    sel = Scripted(SelectorConfig(kind="scripted"))
    assert sel.objective_name is None and sel.objective(np.arange(3)) is None
