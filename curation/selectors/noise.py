"""Preference-label noise filtering (spec §6): score how much each label is believed, then act.

Methods (how strength μ, spread σ and the flagged set are computed):
- `stacked` (default): every signal the pool has, combined by a cross-fitted stacked
  Bradley-Terry learner (`stacked_bt.py`): BT models on cheap response features (length,
  markdown structure, refusals, prompt overlap: `pair_features.py`), on TF-IDF word n-grams, on
  the other labels of responses that appear in several pairs (`shared_responses`), on which
  model wrote each response (`generators`: one BT strength per generator, from the candidates'
  `generator`; a flip swaps the candidate ids and so the generators) and on MiniLM
  embeddings of prompt + response, plus the margins of every scorer in the run (`scores`,
  default: all that scored every pair). μ = the stacked margin, σ = the spread of the
  standardised member margins, p = σ(μ), a calibrated P(label right) (the stacker is fitted on
  out-of-fold margins). Flagged: p <= `min_confidence` (default 0.5: the pool's own model prefers
  the other response), most doubtful first, until the expected share of right labels removed
  (Σ p over flagged / Σ p) would pass `max_good_loss` (default 0.15): where the model is weak
  (p near 0.5 everywhere) it flags fewer pairs instead of discarding a coin's worth of good ones.
  The estimate held on injected flips (hh-rlhf: 0.200 estimated, 0.199-0.202 measured at a cap
  of 0.2); 0.15 keeps the default clear of a 20% loss with room for the estimate's error.
  `signals` picks the signals (embeddings cost a MiniLM pass, cached on disk, and added nothing
  measurable on AlpacaEval-2 or hh-rlhf: benchmarks/results/noise_filter.json; the others take
  seconds). Each step also reports a naive baseline (`naive_baseline`): the
  same number of pairs flagged by a length-only cross-fitted BT model, and the agreement.
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

import json
import logging
import time
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from curation.selectors import SELECTORS
from curation.selectors.base import (
    SelectionContext,
    SelectionError,
    Selector,
    SelectorConfig,
    decisions,
)
from curation.selectors.bt_head import fold_assignment

log = logging.getLogger(__name__)

Method = Literal["stacked", "ensemble", "bt_heads", "confidence", "consistency", "confident_learning"]
Signal = Literal["features", "words", "shared_responses", "generators", "embeddings", "scores"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@SELECTORS.register("noise")
class NoiseFilter(Selector):
    pool_kinds = ("pairs",)

    class Config(SelectorConfig):
        method: Method = "stacked"
        action: Literal["drop", "flip", "soft", "margin"] = "drop"
        scores: list[str] = Field(
            default_factory=list,
            description="names of the scorers whose margins are compared (stacked: default every scorer of every pair)",
        )
        signals: list[Signal] = Field(
            default_factory=lambda: ["features", "words", "shared_responses", "generators", "scores"],
            min_length=1,
            description="stacked: the signals combined",
        )
        heads: int = Field(5, ge=1)
        folds: int = Field(5, ge=2)
        inner_folds: int = Field(3, ge=2, description="stacked: folds of the inner cross-fit that trains the stacker")
        l2: float = Field(1.0, gt=0)
        threshold: float = 0.0
        min_confidence: float = Field(0.5, ge=0, le=1)
        max_good_loss: float = Field(
            0.15, gt=0, le=1,
            description="stacked: stop flagging (most doubtful first) before the expected share of right labels removed, "
            "sum of p over flagged / sum of p, passes this",
        )  # fmt: skip
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
        if c.method == "stacked" and "scores" not in c.signals and c.scores:
            raise SelectionError(f"{context.stage}: `scores` {c.scores} given but 'scores' is not among `signals`")
        if c.min_agree is not None and c.min_agree > len(c.scores):
            raise SelectionError(f"{context.stage}: min_agree={c.min_agree} exceeds the {len(c.scores)} scorers")

    def strength(self, pool: pl.DataFrame, context: SelectionContext) -> dict[str, np.ndarray]:
        """μ, σ, p (P(label right)) and the flagged mask for every pair (before any action)."""
        self._check(pool, context)
        c = self.config
        n = pool.height
        if c.method == "stacked":
            return self._stacked(pool, context)
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
        from curation.selectors.bt_head import cross_fitted_margins, pair_embeddings

        c = self.config
        groups = pool.get_column("prompt_id").to_list()
        try:
            fold_assignment(groups, c.folds, 0)  # too few prompts fails here, before embedding
        except SelectionError as exc:
            raise SelectionError(f"{context.stage}: {exc}") from None
        chosen, rejected = pair_embeddings(pool, context)
        return cross_fitted_margins(chosen - rejected, groups, heads=c.heads, folds=c.folds, l2=c.l2, seed=c.seed)

    def _stacked(self, pool: pl.DataFrame, context: SelectionContext) -> dict[str, np.ndarray]:
        from curation.selectors.stacked_bt import cross_fit_stacked

        c = self.config
        started = time.perf_counter()
        groups = pool.get_column("prompt_id").to_list()
        try:
            fold_assignment(groups, c.folds, 0)
        except SelectionError as exc:
            raise SelectionError(f"{context.stage}: {exc}") from None
        direct, skipped = self._scorer_margins(pool, context) if "scores" in c.signals else ({}, {})
        blocks = self._learned_blocks(pool, context)
        if not blocks and not direct:
            raise SelectionError(f"{context.stage}: no signal to learn from: signals {c.signals}, no scorer scored every pair")
        fit = cross_fit_stacked(
            blocks, direct, groups, folds=c.folds, inner_folds=c.inner_folds, seed=c.seed,
            progress=lambda msg: log.info("%s: noise filter %s", context.stage, msg),
        )  # fmt: skip
        self.fit = fit  # the last stacked fit (member margins, weights), for reports and benchmarks
        agree = (fit.members > 0).mean(axis=1)
        flagged = loss_bounded_flags(fit.p_right, c.min_confidence, c.max_good_loss)
        self.report = {
            "method": "stacked",
            "members": fit.member_names,
            "skipped_scorers": skipped,
            "skipped_signals": self._skipped_signals,
            "stacker_weights": {k: float(np.mean(v)) for k, v in fit.weights.items()},
            "flagged": int(flagged.sum()),
            "flagged_by_min_confidence": int((fit.p_right <= c.min_confidence).sum()),
            "expected_good_lost": float(fit.p_right[flagged].sum() / fit.p_right.sum()),
            "seconds": time.perf_counter() - started,
        }
        return {"mu": fit.margin, "sigma": fit.members.std(axis=1), "p": fit.p_right, "agree": agree, "flagged": flagged}

    def _scorer_margins(self, pool: pl.DataFrame, context: SelectionContext) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Margins of the named scorers, or of every scorer that scored every pair (the others skipped, with why)."""
        if self.config.scores:
            return {s: context.margins(pool, s) for s in self.config.scores}, {}
        out, skipped = {}, {}
        for name in context.scorer_names():
            try:
                out[name] = context.margins(pool, name)
            except SelectionError as exc:
                skipped[name] = str(exc)
        return out, skipped

    def _learned_blocks(self, pool: pl.DataFrame, context: SelectionContext) -> dict[str, tuple]:
        """Pair differences φ(chosen) − φ(rejected) of each learned signal, with its L2 strength."""
        from curation.selectors.bt_head import last_user_turns, pair_embeddings
        from curation.selectors.pair_features import feature_matrix

        signals = self.config.signals
        blocks: dict[str, tuple] = {}
        self._skipped_signals: dict[str, str] = {}
        if not any(s in signals for s in ("features", "words", "shared_responses", "generators", "embeddings")):
            return blocks
        needed = ("chosen", "rejected") + (("chosen_id", "rejected_id") if "shared_responses" in signals else ())
        for col in needed:
            if col not in pool.columns:
                raise SelectionError(f"{context.stage}: the noise learner needs a pairs pool with a {col!r} column")
        chosen = [t or "" for t in pool["chosen"].to_list()]
        rejected = [t or "" for t in pool["rejected"].to_list()]
        if "features" in signals:
            prompts = last_user_turns(pool)
            d = feature_matrix(prompts, chosen) - feature_matrix(prompts, rejected)
            blocks["length"] = (d[:, :1] / _rms_columns(d[:, :1]), 1e-3)  # the naive model, so the stack never needs to lose to it
            blocks["features"] = (d / _rms_columns(d), self.config.l2 * 10.0)
        if "words" in signals:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True)
            vec.fit(chosen + rejected)
            blocks["words"] = ((vec.transform(chosen) - vec.transform(rejected)).tocsr(), self.config.l2 * 0.3)
        if "shared_responses" in signals:
            from curation.selectors.pair_features import shared_response_wins

            d = shared_response_wins(pool["chosen_id"].to_list(), pool["rejected_id"].to_list())[:, None]
            if d.any():
                blocks["shared_responses"] = (d / _rms_columns(d), 1e-3)
            else:
                self._skipped_signals["shared_responses"] = "no response appears in more than one pair"
        if "generators" in signals:
            d, why = _generator_differences(pool, context)
            if d is None:
                self._skipped_signals["generators"] = why
            else:
                blocks["generators"] = (d, self.config.l2 * 0.1)
        if "embeddings" in signals:
            emb_c, emb_r = pair_embeddings(pool, context)
            d = (emb_c - emb_r).astype(np.float64)
            blocks["embeddings"] = (d / _rms_columns(d).mean(), self.config.l2 * 10.0)
        return blocks

    def naive_baseline(self, pool: pl.DataFrame, context: SelectionContext, decided: pl.DataFrame) -> dict[str, Any]:
        """The same decision by a length-only cross-fitted BT model, flagging as many pairs, and the agreement.

        A user sees whether the filter is worth its cost: if it agrees with the length model on
        nearly every pair, a ten-line length rule would have done the same.
        """
        from curation.selectors.pair_features import log_length
        from curation.selectors.stacked_bt import cross_fitted_length_margins

        started = time.perf_counter()
        ours = np.array([bool(json.loads(d)["flagged"]) if d else False for d in decided["detail"].to_list()])
        k = int(ours.sum())
        out: dict[str, Any] = {"method": "length-only cross-fitted BT (log length difference)", "flagged": k}
        groups = pool.get_column("prompt_id").to_list()
        try:
            diff = log_length(pool["chosen"].to_list()) - log_length(pool["rejected"].to_list())
            margins = cross_fitted_length_margins(diff, groups, folds=self.config.folds, seed=self.config.seed)
        except (SelectionError, KeyError, pl.exceptions.ColumnNotFoundError) as exc:
            return {**out, "skipped": str(exc)}
        theirs = np.zeros(pool.height, dtype=bool)
        theirs[np.argsort(margins, kind="stable")[:k]] = True
        both, either = int((ours & theirs).sum()), int((ours | theirs).sum())
        return {
            **out,
            "overlap": both,
            "jaccard": both / either if either else 1.0,
            "kappa": cohen_kappa(ours, theirs),
            "chosen_longer_in_flagged": {
                "filter": float((diff[ours] > 0).mean()) if k else None,
                "baseline": float((diff[theirs] > 0).mean()) if k else None,
            },
            "seconds": time.perf_counter() - started,
        }

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
                **({"agree": float(s["agree"][i])} if "agree" in s else {}),
                **({"adaptive_margin": float(mu[i])} if c.action == "margin" else {}),
            }
            for i in range(n)
        ]
        return decisions(
            context, ids, kept, flip=flip, epsilon=epsilon, reason_kept=reason_kept, reason_dropped="noisy_label", detail=details
        )


def loss_bounded_flags(p: np.ndarray, min_confidence: float, max_good_loss: float) -> np.ndarray:
    """Pairs with p <= `min_confidence`, most doubtful first, while Σ p over them / Σ p <= `max_good_loss`.

    p is P(label right), so Σ p over the flagged pairs is the number of right labels expected
    among them: the cap bounds the share of good pairs a step throws away by its own estimate.
    """
    order = np.argsort(p, kind="stable")
    order = order[p[order] <= min_confidence]
    expected_lost = np.cumsum(p[order]) / max(float(p.sum()), 1e-12)
    flagged = np.zeros(p.size, dtype=bool)
    flagged[order[expected_lost <= max_good_loss]] = True
    return flagged


def _generator_differences(pool: pl.DataFrame, context: SelectionContext) -> tuple[np.ndarray | None, str]:
    """One-hot(generator of chosen) − one-hot(generator of rejected): a BT model on it fits one
    strength per generator (how often its responses win); None and why when it cannot tell anything."""
    found = context.pair_generators(pool)
    if found is None:
        return None, "the selection context has no candidates table naming who wrote each response"
    chosen, rejected = found
    names = sorted(set(chosen) | set(rejected))
    if len(names) < 2:
        return None, f"every response has the same generator ({names[0]!r})"
    index = {g: i for i, g in enumerate(names)}
    d = np.zeros((len(chosen), len(names)))
    rows = np.arange(len(chosen))
    np.add.at(d, (rows, [index[g] for g in chosen]), 1.0)
    np.add.at(d, (rows, [index[g] for g in rejected]), -1.0)
    return d, ""


def _rms_columns(d: np.ndarray) -> np.ndarray:
    rms = np.sqrt((d**2).mean(axis=0))
    return np.where(rms > 0, rms, 1.0)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's κ of two boolean decisions over the same items (1.0 when both are constant and equal)."""
    po = float((a == b).mean())
    pe = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return 1.0 if pe == 1.0 else (po - pe) / (1.0 - pe)

