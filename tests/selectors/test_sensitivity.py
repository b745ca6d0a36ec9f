"""Sensitivity sampling (spec §5): unbiasedness, the uniform limit, distance weighting, weights in decisions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curation.selectors import SELECTORS
from curation.selectors._kmeans import kmeans
from curation.selectors.base import SelectionError
from curation.selectors.sensitivity import representatives_of, sensitivity_sample
from tests.selectors._synthetic import clustered, pairs_pool


@pytest.mark.parametrize("include_representatives", [True, False])
@pytest.mark.parametrize("outlier", [False, True])
def test_weighted_loss_is_an_unbiased_estimate_of_the_total(include_representatives, outlier):
    x = clustered(150, 8, 5, 0, spread=0.3)
    x[3] += 30.0 * outlier  # its inclusion probability is capped at 1
    loss = np.random.default_rng(1).gamma(2.0, 1.0, size=150) + np.linalg.norm(x, axis=1)
    oracle = lambda idx: loss[idx]
    clustering = kmeans(x, 5, seed=0)
    estimates = []
    for seed in range(1500):
        s = sensitivity_sample(
            x, 30, k=5, seed=seed, loss_fn=oracle, include_representatives=include_representatives, clustering=clustering
        )
        estimates.append((s.item_weights(150) * loss).sum())
    estimates = np.array(estimates)
    stderr = estimates.std() / np.sqrt(len(estimates))
    assert abs(estimates.mean() - loss.sum()) < 4 * stderr


@pytest.mark.parametrize("include_representatives", [True, False])
def test_a_budget_of_m_keeps_m_distinct_items(include_representatives):
    """i.i.d. draws repeat items (58 distinct for m = 60 of 600 pairs); the sample is drawn without replacement."""
    x = clustered(600, 8, 6, 9, spread=0.3)
    pool, ctx = pairs_pool(x, np.ones(600))
    for m in (60, 120, 300, 590):
        sel = SELECTORS.build("sensitivity", {"kind": "sensitivity", "budget": m, "lipschitz": 5.0,
                                              "include_representatives": include_representatives})
        d = sel.select(pool, ctx)
        assert d["kept"].sum() == m and sel.report["distinct"] == m
        ranks = d.filter(d["kept"])["rank"].to_list()
        assert sorted(ranks) == list(range(m))


def test_inclusion_probabilities_are_proportional_to_sensitivity_and_capped_at_one():
    x = clustered(200, 8, 4, 10, spread=0.3)
    cl = kmeans(x, 4, seed=0)
    far = np.array([5, 50, 150])
    cl.sq_distances[far] = 400.0  # far from their centres: (m − k)·p would pass 1
    sample = lambda seed: sensitivity_sample(x, 40, k=4, seed=seed, lipschitz=1.0, include_representatives=False, clustering=cl)
    s = sample(0)
    assert (s.inclusion[far] == 1.0).all() and s.inclusion.sum() == pytest.approx(40)
    free = (s.inclusion < 1) & (s.probabilities > 0)
    ratio = s.inclusion[free] / s.sensitivities[free]
    assert np.allclose(ratio, ratio[0])
    hits = np.zeros(200)
    for seed in range(400):
        hits[sample(seed).draws] += 1
    assert (hits[far] == 400).all()
    assert np.abs(hits / 400 - s.inclusion).max() < 0.12


def test_lambda_zero_with_constant_loss_is_uniform_with_weights_n_over_m():
    x = clustered(100, 8, 4, 2, spread=0.3)
    s = sensitivity_sample(x, 20, k=4, seed=0, lipschitz=0.0, include_representatives=False)
    assert np.allclose(s.probabilities, 1 / 100)
    assert np.allclose(s.draw_weights, 100 / 20)


def test_points_far_from_their_centre_are_sampled_in_proportion_to_distance_power_z():
    x = clustered(200, 8, 2, 3, spread=0.3)
    for z in (1.0, 2.0):
        s = sensitivity_sample(x, 50, k=2, seed=0, z=z, lipschitz=10.0, include_representatives=False)
        cl = kmeans(x, 2, seed=0)
        dist_z = np.sqrt(cl.sq_distances.astype(np.float64)) ** z
        expected = (1 + 10 * dist_z) / (1 + 10 * dist_z).sum()
        assert np.allclose(s.probabilities, expected, rtol=1e-5)
        assert np.corrcoef(s.probabilities, dist_z)[0, 1] > 0.99


def test_probabilities_are_positive_sum_to_one_and_weights_finite():
    x = clustered(80, 6, 3, 4)
    s = sensitivity_sample(x, 16, k=3, seed=5)
    eligible = np.ones(80, bool)
    eligible[s.representatives] = False
    assert (s.probabilities[eligible] > 0).all() and s.probabilities.sum() == pytest.approx(1.0)
    assert np.isfinite(s.draw_weights).all() and len(s.draws) == 13 and len(s.representatives) == 3


def test_representatives_are_the_members_nearest_their_centre():
    labels = np.array([0, 0, 1, 1, 1, 2])
    sq = np.array([0.5, 0.1, 0.3, 0.3, 0.9, 0.0])
    assert representatives_of(labels, sq, 4).tolist() == [1, 2, 5, -1]


def test_lipschitz_is_estimated_from_the_oracle():
    x = clustered(120, 6, 3, 6, spread=0.3)
    cl = kmeans(x, 3, seed=0)
    loss = 2.0 + 3.0 * cl.sq_distances.astype(np.float64)  # |ℓ(e) − ℓ(rep)| ≈ 3·d² (z = 2)
    s = sensitivity_sample(x, 12, k=3, seed=0, loss_fn=lambda i: loss[i])
    assert s.lipschitz == pytest.approx(3.0, rel=0.25)


def test_selector_weights_are_the_importance_weights_scaled_to_mean_one():
    x = clustered(100, 8, 4, 7, spread=0.3)
    pool, ctx = pairs_pool(x, np.ones(100), chosen_score=np.linspace(1, 2, 100))
    sel = SELECTORS.build("sensitivity", {"kind": "sensitivity", "budget": 20, "k": 4, "loss": "chosen_score"})
    d = sel.select(pool, ctx)
    detail = [json.loads(t) for t in d["detail"]]
    kept = d["kept"].to_numpy()
    reps = d.filter(d["reason"] == "representative")
    assert reps.height == 4
    # each drawn item's unbiased weight is the spec's 1 / ((m − k)·p) = 1/π, from its own detail
    importance = np.array([t.get("importance_weight", 0.0) for t in detail])
    drawn = [(t, w) for t, w in zip(detail, importance) if w > 0 and not t.get("representative")]
    assert len(drawn) == 16 and kept.sum() == 20
    for t, w in drawn:
        assert w == pytest.approx(1 / (16 * t["p"])) and t["inclusion"] == pytest.approx(16 * t["p"])
    # the weight column is that, divided by its mean over the kept items
    weights = d["weight"].to_numpy()
    assert weights[kept].mean() == pytest.approx(1.0)
    assert np.allclose(weights[kept], importance[kept] / importance[kept].mean())
    assert sel.report["weight_scale"] == pytest.approx(importance[kept].mean())
    assert sel.report["loss_oracle"] == "chosen_score"
    assert d.equals(SELECTORS.build("sensitivity", sel.config).select(pool, ctx))


def test_weight_scale_does_not_depend_on_the_budget():
    """Unscaled, the weights are about n/m: a DPO loss weighted by them would shrink as the budget grows."""
    x = clustered(400, 8, 4, 8, spread=0.3)
    pool, ctx = pairs_pool(x, np.ones(400))
    means, scales = [], []
    for m in (40, 160):
        sel = SELECTORS.build("sensitivity", {"kind": "sensitivity", "budget": m, "k": 4, "lipschitz": 0.0,
                                              "include_representatives": False})
        d = sel.select(pool, ctx)
        means.append(d.filter(d["kept"])["weight"].mean())
        scales.append(sel.report["weight_scale"])
    assert means == pytest.approx([1.0, 1.0])
    assert scales[0] > 3 * scales[1]  # the unbiased weights differ by about the budget ratio


def test_bad_inputs_are_clear_errors():
    pool, ctx = pairs_pool(clustered(20, 4, 2, 0))
    with pytest.raises(SelectionError, match="k < m"):
        SELECTORS.build("sensitivity", {"kind": "sensitivity", "budget": 5, "k": 5}).select(pool, ctx)
    with pytest.raises(SelectionError, match="k < m"):
        SELECTORS.build("sensitivity", {"kind": "sensitivity", "budget": 1}).select(pool, ctx)
    with pytest.raises(SelectionError, match="neither a pool column nor a scorer"):
        SELECTORS.build("sensitivity", {"kind": "sensitivity", "budget": 10, "loss": "dpo_loss"}).select(pool, ctx)
    with pytest.raises(SelectionError, match="non-negative"):
        sensitivity_sample(clustered(20, 4, 2, 0), 8, k=2, seed=0, loss_fn=lambda i: -np.ones(len(i)))
