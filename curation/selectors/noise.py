"""Preference-label noise filtering (spec §6): score how much each label is believed, then act.

Methods (how strength μ, spread σ and the flagged set are computed):
- `ensemble`: margins of several named scorers; μ = mean, σ = std (Secrets of RLHF II).
  Flagged: μ < `threshold`.
- `bt_heads`: the same over `heads` Bradley-Terry heads on MiniLM embeddings of prompt +
  response, cross-fitted on the pool itself so no pair is scored by a head that saw it.
- `confidence`: one scorer (or the pool's `margin`); p = σ(margin / temperature) (Skywork-V2).
  Flagged: p <= `min_confidence`.
- `consistency`: several scorers; flagged when fewer than `min_agree` (default: all) agree
  with the label's direction.
- `confident_learning`: cleanlab's `find_label_issues` on out-of-sample P(chosen ≻ rejected)
  (from `scores` if named, else the cross-fitted heads); each pair is shown in a random order
  so both classes exist.

Actions on flagged pairs: `drop` (reason `noisy_label`), `flip` (kept, `flip` = true, reason
`flipped`), `soft` (the toolkit default policy: flip flagged pairs and give ε = `epsilon` to
ambiguous ones, 0 <= μ < the `ambiguous_quantile` of μ; reason `soft_label`, for a cDPO loss),
`margin` (keep all; the adaptive margin μ goes into `detail.adaptive_margin` for a margin-BT
loss). Every row's `detail` carries μ, σ, p and whether it was flagged.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions

Method = Literal["ensemble", "bt_heads", "confidence", "consistency", "confident_learning"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@SELECTORS.register("noise")
class NoiseFilter(Selector):
    pool_kinds = ("pairs",)

    class Config(SelectorConfig):
        method: Method = "bt_heads"
        action: Literal["drop", "flip", "soft", "margin"] = "drop"
        scores: list[str] = Field(default_factory=list, description="names of the scorers whose margins are compared")
        heads: int = Field(5, ge=1)
        folds: int = Field(5, ge=2)
        l2: float = Field(1.0, gt=0)
        threshold: float = 0.0
        min_confidence: float = Field(0.5, ge=0, le=1)
        temperature: float = Field(1.0, gt=0)
        min_agree: int | None = Field(None, ge=1)
        epsilon: float = Field(0.1, ge=0, lt=0.5)
        ambiguous_quantile: float = Field(0.25, gt=0, lt=1)

    budget_use = "none"  # it flags by threshold

    def _check(self, pool: pl.DataFrame, context: SelectionContext) -> None:
        c = self.config
        if c.method in ("ensemble", "consistency") and len(c.scores) < 2:
            raise SelectionError(f"{context.stage}: method {c.method!r} needs at least two `scores`, got {c.scores}")
        if c.method == "confidence" and len(c.scores) > 1:
            raise SelectionError(f"{context.stage}: method 'confidence' takes one scorer, got {c.scores}")
        if c.min_agree is not None and c.min_agree > len(c.scores):
            raise SelectionError(f"{context.stage}: min_agree={c.min_agree} exceeds the {len(c.scores)} scorers")

    def strength(self, pool: pl.DataFrame, context: SelectionContext) -> dict[str, np.ndarray]:
        """μ, σ, p (P(label right)) and the flagged mask for every pair (before any action)."""
        self._check(pool, context)
        c = self.config
        n = pool.height
        if c.method in ("ensemble", "consistency") or (c.method == "confident_learning" and c.scores):
            margins = np.column_stack([context.margins(pool, s) for s in c.scores])
        elif c.method == "confidence":
            margins = context.margins(pool, c.scores[0] if c.scores else None)[:, None]
        else:
            margins = self._head_margins(pool, context)
        mu = margins.mean(axis=1)
        sigma = margins.std(axis=1)
        p = _sigmoid(mu / c.temperature)
        if c.method in ("ensemble", "bt_heads"):
            flagged = mu < c.threshold
        elif c.method == "confidence":
            flagged = p <= c.min_confidence
        elif c.method == "consistency":
            flagged = (margins > 0).sum(axis=1) < (c.min_agree or margins.shape[1])
        else:
            flagged = self._confident_learning(p, n)
        return {"mu": mu, "sigma": sigma, "p": p, "flagged": flagged}

    def _head_margins(self, pool: pl.DataFrame, context: SelectionContext) -> np.ndarray:
        from curation.selectors.bt_head import cross_fitted_margins, fold_assignment, pair_embeddings

        c = self.config
        groups = pool.get_column("prompt_id").to_list()
        try:
            fold_assignment(groups, c.folds, 0)  # too few prompts fails here, before embedding
        except SelectionError as exc:
            raise SelectionError(f"{context.stage}: {exc}") from None
        chosen, rejected = pair_embeddings(pool, context)
        return cross_fitted_margins(chosen - rejected, groups, heads=c.heads, folds=c.folds, l2=c.l2, seed=c.seed)

    def _confident_learning(self, p: np.ndarray, n: int) -> np.ndarray:
        from cleanlab.filter import find_label_issues

        rng = np.random.default_rng(self.config.seed)
        shown_first = rng.random(n) < 0.5  # label 1: the chosen response is shown first
        labels = shown_first.astype(int)
        p_first = np.where(shown_first, p, 1.0 - p)
        probs = np.clip(np.column_stack([1.0 - p_first, p_first]), 1e-6, 1 - 1e-6)
        if labels.min() == labels.max():
            labels[0] = 1 - labels[0]
            probs[0] = probs[0, ::-1]
        return np.asarray(find_label_issues(labels=labels, pred_probs=probs, filter_by="prune_by_noise_rate"))

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        s = self.strength(pool, context)
        c = self.config
        ids = context.ids(pool)
        mu, flagged = s["mu"], s["flagged"]
        n = len(ids)
        kept = np.ones(n, dtype=bool)
        flip = np.zeros(n, dtype=bool)
        epsilon: list[float | None] = [None] * n
        reason_kept = ["kept"] * n
        if c.action == "drop":
            kept = ~flagged
        elif c.action in ("flip", "soft"):
            flip = flagged.copy()
            for i in np.flatnonzero(flagged):
                reason_kept[i] = "flipped"
        if c.action == "soft":
            cut = float(np.quantile(mu, c.ambiguous_quantile))
            for i in np.flatnonzero(~flagged & (mu >= 0) & (mu < cut)):
                epsilon[i] = c.epsilon
                reason_kept[i] = "soft_label"
        details = [
            {
                "method": c.method,
                "mu": float(s["mu"][i]),
                "sigma": float(s["sigma"][i]),
                "p": float(s["p"][i]),
                "flagged": bool(flagged[i]),
                **({"adaptive_margin": float(mu[i])} if c.action == "margin" else {}),
            }
            for i in range(n)
        ]
        return decisions(
            context, ids, kept, flip=flip, epsilon=epsilon, reason_kept=reason_kept, reason_dropped="noisy_label", detail=details
        )
