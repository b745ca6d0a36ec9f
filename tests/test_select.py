"""apply_selectors: chaining, decisions for every item and step, flips between steps, the random control."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from curation import schema
from curation.select import apply_selectors
from curation.selectors.base import SelectionContext, SelectionError


def make_pool(n=120, n_prompts=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pid = f"p{i % n_prompts}"
        rows.append(
            {
                "pair_id": f"x{i:03d}",
                "prompt_id": pid,
                "chosen_id": f"c{i}",
                "rejected_id": f"r{i}",
                "prompt": schema.user_prompt(f"question {pid}"),
                "chosen": "c" * int(rng.integers(5, 200)),
                "rejected": "r" * int(rng.integers(5, 200)),
                "margin": float(rng.normal()),
            }
        )
    return pl.DataFrame(rows)


def prompt_embed(texts):
    """Deterministic per-text vectors: 6 well-separated groups of prompts."""
    out = []
    for t in texts:
        g = int(t.split("p")[-1]) % 6
        v = np.zeros(8, dtype=np.float32)
        v[g] = 1.0
        v[6:] = np.random.default_rng(abs(hash(t)) % 2**32).normal(scale=0.01, size=2)
        out.append(v)
    return np.stack(out)


def test_steps_chain_and_every_item_gets_a_row_per_step():
    pool = make_pool()
    steps = [{"kind": "length", "min_length": 20}, {"kind": "top_k", "budget": 30}, {"kind": "random", "budget": 10, "seed": 1}]
    res = apply_selectors(pool, steps, embed=None)
    d = res.decisions
    assert d.height == pool.height * 3
    assert d["stage"].unique().sort().to_list() == ["select.0:length", "select.1:top_k", "select.2:random"]
    steps_report = res.report["steps"]
    assert [s["input"] for s in steps_report] == [pool.height, steps_report[0]["kept"], 30]
    assert [s["kept"] for s in steps_report][1:] == [30, 10]
    # kept iff every decision keeps it
    all_kept = d.group_by("target_id").agg(pl.col("kept").all()).filter("kept")["target_id"].sort().to_list()
    assert all_kept == sorted(res.kept_ids) and len(res.kept_ids) == 10
    # items dropped earlier are not seen again: their later rows say so
    dropped_first = set(d.filter((pl.col("stage") == "select.0:length") & ~pl.col("kept"))["target_id"].to_list())
    later = d.filter((pl.col("stage") == "select.2:random") & pl.col("target_id").is_in(list(dropped_first)))
    assert set(later["reason"].to_list()) == {"not_considered"}
    assert res.kept(pool).height == 10


def test_every_step_reports_a_same_size_random_control_with_a_spread():
    pool = make_pool()
    res = apply_selectors(pool, [{"kind": "top_k", "budget": 24}], embed=None)
    step = res.report["steps"][0]
    control = step["random_control"]
    assert step["selection"]["size"] == control["size"] == 24 and control["draws"] == 20
    for key in ("prompt_coverage", "mean_margin", "chosen_longer", "mean_length_diff"):
        assert key in step["selection"] and set(control[key]) == {"mean", "std", "ci95"}
    margins = pool["margin"].to_numpy()
    assert step["selection"]["mean_margin"] == pytest.approx(np.sort(margins)[-24:].mean())
    # the control is 20 uniform draws of 24: its mean margin sits near the pool's, with the
    # spread of a sample mean, and top-k lies far above its 95% interval
    spread = control["mean_margin"]
    assert abs(spread["mean"] - margins.mean()) < 3 * margins.std() / np.sqrt(24 * 20)
    assert 0.3 * margins.std() / np.sqrt(24) < spread["std"] < 2 * margins.std() / np.sqrt(24)
    assert spread["ci95"][0] < spread["mean"] < spread["ci95"][1] < step["selection"]["mean_margin"]
    assert res.report["coverage"] == "prompts"


def test_a_random_step_is_not_its_own_control():
    """The control's draws are seeded independently of the selector: a random step lands inside
    their interval instead of equalling them (the old control reused the step's seed)."""
    pool = make_pool()
    ctx = SelectionContext("pair_id", embed=prompt_embed)
    for seed in (5, 42):
        res = apply_selectors(pool, [{"kind": "random", "budget": 30, "seed": seed}], ctx)
        step = res.report["steps"][0]
        assert res.report["coverage"] == "clusters"
        control = step["random_control"]
        assert control["mean_margin"]["std"] > 0 and control["cluster_coverage"]["ci95"][0] <= 1
        lo, hi = control["mean_margin"]["ci95"]
        assert lo <= step["selection"]["mean_margin"] <= hi
        assert step["selection"]["mean_margin"] != control["mean_margin"]["mean"]
    # the control does not move with the selector's seed
    a = apply_selectors(pool, [{"kind": "random", "budget": 30, "seed": 1}], ctx).report["steps"][0]["random_control"]
    b = apply_selectors(pool, [{"kind": "random", "budget": 30, "seed": 2}], ctx).report["steps"][0]["random_control"]
    assert a == b


def test_selection_metrics_are_weighted_by_the_decisions_weights():
    pool = make_pool(n=60, n_prompts=20)
    ctx = SelectionContext("pair_id", embed=prompt_embed)
    res = apply_selectors(pool, [{"kind": "kmq", "k": 6, "budget": 40, "replace": True, "seed": 3}], ctx)
    d = res.decisions.filter(pl.col("kept"))
    kept = [int(t[1:]) for t in d["target_id"].to_list()]  # pair id x007 is pool row 7
    w = d["weight"].to_numpy()
    assert w.max() > 1  # drawn with replacement: some items count more than once
    margins = pool["margin"].to_numpy()[kept]
    step = res.report["steps"][0]
    assert step["selection"]["mean_margin"] == pytest.approx(np.average(margins, weights=w))
    assert step["selection"]["mean_margin"] != pytest.approx(margins.mean())


def test_each_selectors_objective_is_reported_for_selection_and_control():
    pool = make_pool()
    ctx = SelectionContext("pair_id", embed=prompt_embed)
    res = apply_selectors(pool, [{"kind": "kmq", "k": 6, "budget": 12}], ctx)
    step = res.report["steps"][0]
    assert step["objective"] == "cluster_coverage"
    assert step["selection"]["objective"] == 1.0  # 12 over 6 clusters: every cluster gets two
    control = step["random_control"]["objective"]
    assert control["mean"] < 1.0 and control["ci95"][0] < 1.0
    top = apply_selectors(pool, [{"kind": "top_k", "budget": 12}], ctx).report["steps"][0]
    assert top["objective"] is None and "objective" not in top["random_control"]


def test_flips_from_a_noise_step_reach_the_next_step():
    pool = make_pool(n=40, n_prompts=10)
    scores = schema.frame(
        [{"target_id": f"c{i}", "scorer": "rm", "value": float(m)} for i, m in enumerate(pool["margin"])]
        + [{"target_id": f"r{i}", "scorer": "rm", "value": 0.0} for i in range(40)],
        "scores",
    )
    ctx = SelectionContext("pair_id", scores)
    negative = int((pool["margin"] < 0).sum())
    res = apply_selectors(pool, [{"kind": "noise", "method": "confidence", "scores": ["rm"], "action": "flip"},
                                 {"kind": "top_k", "budget": 40}], ctx)
    first = res.report["steps"][0]
    assert first["flipped"] == negative and first["kept"] == 40
    top = res.decisions.filter(pl.col("stage") == "select.1:top_k")
    details = [float(json.loads(x)["margin"]) for x in top["detail"].to_list()]
    assert min(details) >= 0  # the next step saw flipped pairs, whose margins are now positive


def test_a_typo_in_a_later_step_fails_before_the_first_runs():
    pool = make_pool(n=10, n_prompts=5)

    def explode(texts):
        raise AssertionError("step 0 ran")

    with pytest.raises(ValueError, match="budgt"):
        apply_selectors(pool, [{"kind": "dedup", "method": "semantic"}, {"kind": "top_k", "budgt": 3}],
                        SelectionContext("pair_id", embed=explode))
    with pytest.raises(KeyError, match="unknown selector 'topk'"):
        apply_selectors(pool, [{"kind": "topk"}], embed=None)


def test_empty_pool_and_everything_dropped_raise():
    pool = make_pool(n=10, n_prompts=5)
    with pytest.raises(SelectionError, match="empty"):
        apply_selectors(pool.head(0), [{"kind": "random", "budget": 1}], embed=None)
    with pytest.raises(SelectionError, match=r"no item survived.*select.0:length kept 0 of 10"):
        apply_selectors(pool, [{"kind": "length", "min_length": 10_000}], embed=None)
    res = apply_selectors(pool, [{"kind": "length", "min_length": 10_000}], embed=None, allow_empty=True)
    assert res.kept_ids == [] and res.decisions.height == 10


def test_budget_larger_than_the_pool_is_clipped_and_reported():
    pool = make_pool(n=10, n_prompts=5)
    res = apply_selectors(pool, [{"kind": "top_k", "budget": 50}], embed=None)
    step = res.report["steps"][0]
    assert step["budget"] == {"requested": 50, "resolved": 10, "clipped": True}
    assert step["warnings"] == ["budget 50 exceeds the 10 items this step saw; it kept at most 10"]
    assert len(res.kept_ids) == 10
    fits = apply_selectors(pool, [{"kind": "top_k", "budget": "50%"}], embed=None).report["steps"][0]
    assert fits["budget"] == {"requested": "50%", "resolved": 5, "clipped": False} and fits["warnings"] == []


@pytest.mark.parametrize(("written", "kept"), [({"budget": 3}, 3), ({"budget": "30%"}, 3), ({"budget": "100%"}, 10),
                                               ({"fraction": 0.3}, 3), ({"fraction": 1.0}, 10), ({"budget": 1}, 1)])
def test_budget_is_a_count_a_percentage_or_a_fraction(written, kept):
    pool = make_pool(n=10, n_prompts=5)
    assert len(apply_selectors(pool, [{"kind": "top_k", **written}], embed=None).kept_ids) == kept


@pytest.mark.parametrize("written", [{"budget": 1.0}, {"budget": 0.5}, {"budget": "150%"}, {"budget": "half"},
                                     {"budget": 0}, {"fraction": 1.5}, {"budget": 3, "fraction": 0.5}])
def test_ambiguous_or_bad_budgets_are_refused_when_the_step_is_built(written):
    pool = make_pool(n=10, n_prompts=5)
    with pytest.raises(ValueError, match="budget|fraction"):
        apply_selectors(pool, [{"kind": "top_k", **written}], embed=None)


def test_selectors_without_a_budget_refuse_one_and_those_that_need_one_say_so():
    pool = make_pool(n=10, n_prompts=5)
    with pytest.raises(SelectionError, match="dedup takes no budget"):
        apply_selectors(pool, [{"kind": "dedup", "budget": 3}], embed=None)
    with pytest.raises(SelectionError, match="random needs a budget"):
        apply_selectors(pool, [{"kind": "random"}], embed=None)


def test_duplicate_ids_are_refused():
    pool = make_pool(n=4, n_prompts=2)
    with pytest.raises(SelectionError, match="duplicate pair_id"):
        apply_selectors(pl.concat([pool, pool.head(1)]), [{"kind": "random", "budget": 2}], embed=None)


def test_deterministic_for_a_seed():
    pool = make_pool()
    steps = [{"kind": "random", "fraction": 0.5, "seed": 3}, {"kind": "length", "budget": 20}]
    a = apply_selectors(pool, steps, embed=None)
    b = apply_selectors(pool, steps, embed=None)
    assert a.decisions.equals(b.decisions) and a.report == b.report


def test_a_selectors_own_summary_reaches_the_step_report():
    pool = make_pool().with_columns(pl.Series("tags", [[f"t{i % 4}"] for i in range(120)]))

    def any_text_embed(texts):  # tag strings and prompts alike: one random unit vector per text
        vecs = [np.random.default_rng(sum(map(ord, t))).normal(size=16) for t in texts]
        return np.stack([v / np.linalg.norm(v) for v in vecs]).astype(np.float32)

    steps = [{"kind": "mig", "budget": 12, "labels": "tags", "threshold": 1.1}]
    res = apply_selectors(pool, steps, embed=any_text_embed)
    [step] = res.report["steps"]
    assert step["selector"]["label_source"] == "tags"
    assert step["kept"] == 12
