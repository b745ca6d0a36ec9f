"""RSO statistical rejection sampling (Liu et al., ICLR 2024, arXiv 2309.06657, Algorithm 1).

Draws k of a prompt's candidates approximately from the optimal policy
π_r(y|x) ∝ π_sft(y|x) exp(r(x,y)/β), using the sampled candidates as proposals: a candidate is
accepted with probability exp((r - r_max)/β), r_max the best reward still in the pool.
β → 0 keeps the top-k by reward; β → ∞ keeps the first k in scan order (a uniform subsample
of shuffled candidates).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import Field

from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions


def rso_sample(rewards: np.ndarray, k: int, beta: float, rng: np.random.Generator) -> list[int]:
    """Indices of k distinct accepted candidates, in acceptance order (spec §7.1)."""
    return rso_passes(rewards, k, beta, rng)[0]


def rso_passes(rewards: np.ndarray, k: int, beta: float, rng: np.random.Generator) -> tuple[list[int], int]:
    """`rso_sample` and the number of passes it took.

    Each pass recomputes r_max over the remaining candidates and scans them in order with a
    fresh uniform draw per candidate, stopping as soon as k are accepted. The current maximum
    is always accepted, so at most k passes run. Candidates are indices, never strings.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    n = rewards.shape[0]
    if k > n:
        raise SelectionError(f"rso: k={k} is larger than the {n} candidates available")
    if k < 1:
        raise SelectionError(f"rso: k must be at least 1, got {k}")
    if not np.isfinite(rewards).all():
        raise SelectionError("rso: rewards must be finite")
    if beta <= 0:
        raise SelectionError(f"rso: beta must be positive, got {beta}")
    remaining = list(range(n))
    accepted: list[int] = []
    passes = 0
    while len(accepted) < k:
        passes += 1
        r_max = rewards[remaining].max()
        taken = []
        for i in remaining:
            if rng.random() < np.exp((rewards[i] - r_max) / beta):
                taken.append(i)
                accepted.append(i)
                if len(accepted) == k:
                    break
        taken_set = set(taken)
        remaining = [i for i in remaining if i not in taken_set]
    return accepted, passes


@SELECTORS.register("rso")
class RSO(Selector):
    """Per prompt, keep k candidates drawn by RSO rejection sampling under the reward `score`.

    Works on a candidates pool. Prompts with fewer than k candidates: `on_short="keep_all"`
    keeps them all (reason `short_prompt`), `"raise"` raises (the spec's k > N error).
    `rank` is the acceptance order within the prompt.
    """

    pool_kinds = ("candidates",)

    class Config(SelectorConfig):
        score: str
        k: int = Field(8, ge=1)
        beta: float = Field(0.5, gt=0.0)
        on_short: str = Field("raise", pattern="^(raise|keep_all)$")

    budget_use = "none"

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        ids = context.ids(pool)
        rewards = context.values(self.config.score, ids)
        prompts = pool.get_column("prompt_id").to_list()
        groups: dict[str, list[int]] = {}
        for i, pid in enumerate(prompts):
            groups.setdefault(pid, []).append(i)
        short = [pid for pid, g in groups.items() if len(g) < self.config.k]
        if short and self.config.on_short == "raise":
            raise SelectionError(
                f"{context.stage}: k={self.config.k} but {len(short)} prompts have fewer candidates "
                f"(first: {short[0]} with {len(groups[short[0]])}); lower k or set on_short: keep_all"
            )
        kept = [False] * len(ids)
        rank: list[int | None] = [None] * len(ids)
        reason_kept = ["kept"] * len(ids)
        rng = np.random.default_rng(self.config.seed)
        for pid, members in groups.items():
            if len(members) < self.config.k:
                chosen = members
                for i in members:
                    reason_kept[i] = "short_prompt"
            else:
                chosen = [members[j] for j in rso_sample(rewards[members], self.config.k, self.config.beta, rng)]
            for r, i in enumerate(chosen):
                kept[i], rank[i] = True, r
        return decisions(context, ids, kept, rank=rank, reason_kept=reason_kept, reason_dropped="rejected_sample")
