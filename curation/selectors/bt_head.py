"""Cross-fitted Bradley-Terry heads on frozen embeddings: reward models that need no external model.

A head is a linear reward r(x, y) = w · φ(x, y) over an embedding φ of prompt + response, fitted
by logistic regression on the embedding differences of the pool's own pairs
(P(chosen ≻ rejected) = σ(w · (φ_w − φ_l)), symmetrised, no intercept). Cross-fitting: the
pairs are split into folds by prompt; the head that scores a fold never saw it (nor any pair
of the same prompt). Repeating with other random splits gives several out-of-fold margins
per pair: the ensemble the noise filter takes mean and spread over.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from curation import schema
from curation.selectors.base import SelectionContext, SelectionError, prompt_texts


def last_user_turns(pool: pl.DataFrame) -> list[str]:
    """The last user message of each item's prompt (the whole prompt when it is plain text)."""
    if "prompt" not in pool.columns and "messages" not in pool.columns:
        return prompt_texts(pool)
    col = pool.get_column("prompt" if "prompt" in pool.columns else "messages").to_list()
    out = []
    for m in col:
        if isinstance(m, list):
            users = [t["content"] for t in m if t["role"] == "user"]
            out.append(users[-1] if users else schema.messages_to_text(m))
        else:
            out.append(m or "")
    return out


def pair_embeddings(pool: pl.DataFrame, context: SelectionContext) -> tuple[np.ndarray, np.ndarray]:
    """φ(x, chosen) and φ(x, rejected): embeddings of "last user turn\\n\\nresponse", each text once.

    The last user turn rather than the whole conversation: MiniLM reads 256 word pieces, and a
    long conversation would push the response, the part that differs, out of the window.
    """
    for col in ("chosen", "rejected"):
        if col not in pool.columns:
            raise SelectionError(f"{context.stage}: Bradley-Terry heads need a pairs pool with a {col!r} column")
    prompts = last_user_turns(pool)
    chosen = [f"{p}\n\n{r or ''}" for p, r in zip(prompts, pool["chosen"].to_list())]
    rejected = [f"{p}\n\n{r or ''}" for p, r in zip(prompts, pool["rejected"].to_list())]
    key = ("pair_embeddings", tuple(context.ids(pool)))
    if key in context.cache:
        return context.cache[key]
    unique: dict[str, int] = {}
    index = [unique.setdefault(t, len(unique)) for t in chosen + rejected]
    emb = context.embeddings(list(unique))[np.array(index)]
    out = (emb[: len(chosen)], emb[len(chosen) :])
    context.cache[key] = out
    return out


def fit_bt_head(diff: np.ndarray, l2: float = 1.0, seed: int = 0) -> np.ndarray:
    """Weights w of a Bradley-Terry head fitted on rows d = φ_w − φ_l (label: chosen wins)."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([diff, -diff]).astype(np.float64)
    y = np.concatenate([np.ones(len(diff)), np.zeros(len(diff))])
    model = LogisticRegression(C=1.0 / l2, fit_intercept=False, max_iter=2000, random_state=seed)
    model.fit(x, y)
    return model.coef_[0]


def fold_assignment(groups: list[str], folds: int, seed: int) -> np.ndarray:
    """Fold of each row; rows of one group (prompt) share a fold; groups are dealt at random."""
    distinct = sorted(set(groups))
    if len(distinct) < folds:
        raise SelectionError(
            f"cross-fitting needs at least {folds} distinct prompts (one per fold), got {len(distinct)}; lower `folds`"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(distinct))
    fold_of = {distinct[g]: i % folds for i, g in enumerate(order)}
    return np.array([fold_of[g] for g in groups])


def cross_fitted_margins(
    diff: np.ndarray, groups: list[str], *, heads: int = 5, folds: int = 5, l2: float = 1.0, seed: int = 0
) -> np.ndarray:
    """(n, heads) out-of-fold margins r(x, y_w) − r(x, y_l); head h uses its own random split."""
    n = diff.shape[0]
    out = np.empty((n, heads))
    for h in range(heads):
        fold = fold_assignment(groups, folds, int(schema.content_hash("bt", seed, h)[:8], 16))
        for k in range(folds):
            held = fold == k
            w = fit_bt_head(diff[~held], l2=l2, seed=seed + h)
            out[held, h] = diff[held] @ w
    return out
