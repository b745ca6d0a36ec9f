"""Cross-fitted, stacked Bradley-Terry learner: P(label right) for every pair from every signal.

Base learners are linear BT reward models r(x, y) = w · φ(x, y), each on one block of pair
differences φ(chosen) − φ(rejected) (cheap features, TF-IDF n-grams, embeddings), fitted by
logistic regression on each pair in both orders (no intercept, so no side bias). A stacker
combines their margins with the margins of the run's scorers: a BT logistic fitted on the base
learners' out-of-fold margins, so its σ(m) is a calibrated P(the label is right) on pairs it
never saw (checked by reliability / ECE on held-out folds in benchmarks/noise_filter.py).

Cross-fitting holds out strictly: pairs are dealt into folds by prompt; for each outer fold, the
base learners' margins that train the stacker come from an inner cross-fit on the other folds,
and every model that scores a pair saw neither its label nor its prompt's other pairs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from curation.selectors.bt_head import fold_assignment

log = logging.getLogger(__name__)

Matrix = np.ndarray | sp.csr_matrix


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def fit_symmetric_bt(diff: Matrix, l2: float) -> np.ndarray:
    """Weights of a BT reward model fitted on rows d = φ_w − φ_l, each shown both ways."""
    from sklearn.linear_model import LogisticRegression

    x = sp.vstack([diff, -diff]).tocsr() if sp.issparse(diff) else np.concatenate([diff, -diff])
    y = np.concatenate([np.ones(diff.shape[0]), np.zeros(diff.shape[0])])
    model = LogisticRegression(C=1.0 / l2, fit_intercept=False, max_iter=1000, tol=1e-4)
    model.fit(x, y)
    return model.coef_[0]


@dataclass
class StackedFit:
    """Out-of-fold results for every pair."""

    margin: np.ndarray  # stacked margin m = w · (member margins)
    p_right: np.ndarray  # P(the label is right) = σ(m)
    members: np.ndarray  # (n, members) standardised out-of-fold margins of each base learner and scorer
    member_names: list[str]
    weights: dict[str, list[float]] = field(default_factory=dict)  # stacker weight per member, per fold


def _rms(x: np.ndarray) -> float:
    v = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    return v if v > 0 else 1.0


def _base_margins(blocks: dict[str, tuple[Matrix, float]], train: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(len(score), blocks) margins of each block's BT model fitted on rows `train`."""
    out = np.empty((score.size, len(blocks)))
    for j, (d, l2) in enumerate(blocks.values()):
        w = fit_symmetric_bt(d[train], l2)
        out[:, j] = d[score] @ w
    return out


def cross_fit_stacked(
    blocks: dict[str, tuple[Matrix, float]],
    direct: dict[str, np.ndarray],
    groups: list[str],
    *,
    folds: int = 5,
    inner_folds: int = 3,
    seed: int = 0,
    stacker_l2: float = 1e-3,
    progress: Callable[[str], None] | None = None,
) -> StackedFit:
    """Stacked out-of-fold margins and P(label right).

    `blocks`: name -> (pair difference matrix, L2 strength) of each learned base model.
    `direct`: name -> margins of a scorer (not learned here; the stacker weighs them).
    """
    if not blocks and not direct:
        raise ValueError("the stacked learner needs at least one signal")
    n = len(groups)
    names = list(blocks) + list(direct)
    direct_z = np.column_stack([v / _rms(v) for v in direct.values()]) if direct else np.zeros((n, 0))
    fold = fold_assignment(groups, folds, seed)
    margin = np.empty(n)
    members = np.empty((n, len(names)))
    weights: dict[str, list[float]] = {name: [] for name in names}
    garr = np.asarray(groups, dtype=object)
    for k in range(folds):
        started = time.perf_counter()
        held, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        inner = fold_assignment(list(garr[train]), inner_folds, seed + 1 + k)
        z_train = np.empty((train.size, len(blocks)))
        for i in range(inner_folds):
            z_train[inner == i] = _base_margins(blocks, train[inner != i], train[inner == i])
        z_held = _base_margins(blocks, train, held)
        scale = np.array([_rms(z_train[:, j]) for j in range(len(blocks))])
        z_train = np.column_stack([z_train / scale, direct_z[train]])
        z_held = np.column_stack([z_held / scale, direct_z[held]])
        w = fit_symmetric_bt(z_train, l2=stacker_l2)
        margin[held], members[held] = z_held @ w, z_held
        for name, wj in zip(names, w):
            weights[name].append(float(wj))
        if progress:
            progress(f"fold {k + 1}/{folds} ({time.perf_counter() - started:.1f}s)")
    return StackedFit(margin, _sigmoid(margin), members, names, weights)


def cross_fitted_length_margins(log_len_diff: np.ndarray, groups: list[str], folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold margins of a BT model on the log length difference alone (the naive baseline)."""
    d = log_len_diff.reshape(-1, 1)
    fold = fold_assignment(groups, folds, seed)
    out = np.empty(len(groups))
    for k in range(folds):
        held = fold == k
        out[held] = d[held] @ fit_symmetric_bt(d[~held], l2=1e-3)
    return out


def expected_calibration_error(p: np.ndarray, outcome: np.ndarray, bins: int = 10) -> tuple[float, list[dict]]:
    """ECE of probabilities `p` against 0/1 `outcome` over equal-width bins, and the reliability table."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        conf, acc = float(p[m].mean()), float(outcome[m].mean())
        ece += m.mean() * abs(conf - acc)
        table.append({"bin": [float(edges[b]), float(edges[b + 1])], "count": int(m.sum()), "mean_p": conf, "observed": acc})
    return float(ece), table
