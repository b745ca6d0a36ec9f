"""What the embedding-based selectors read from a pool: item texts, embeddings, a quality vector.

Shared by kmq, sensitivity, mig, sift, fifa and deita so that `embed` and `quality` mean the
same thing in every one of them (spec §0: embed the prompt by default, optionally prompt plus
response; quality is the margin, a pool column such as `chosen_score`, or a named scorer).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from curation.selectors.base import SelectionContext, SelectionError, prompt_texts, response_texts

EmbedWhat = Literal["prompt", "prompt+response"]


def item_texts(pool: pl.DataFrame, what: EmbedWhat) -> list[str]:
    """The text that stands for each item: its prompt, or its prompt and (chosen) response."""
    prompts = prompt_texts(pool)
    if what == "prompt":
        return prompts
    return [f"{p}\n\n{r}" for p, r in zip(prompts, response_texts(pool))]


def item_embeddings(pool: pl.DataFrame, context: SelectionContext, what: EmbedWhat) -> np.ndarray:
    """(n, d) float32 embeddings of the pool items; each distinct text is embedded once."""
    texts = item_texts(pool, what)
    unique: dict[str, int] = {}
    inverse = np.fromiter((unique.setdefault(t, len(unique)) for t in texts), dtype=np.int64, count=len(texts))
    key = ("item_embeddings", what, tuple(context.ids(pool)))
    if key in context.cache:
        return context.cache[key]
    out = context.embeddings(list(unique))[inverse]
    context.cache[key] = out
    return out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero), float32 and C-contiguous for faiss."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def quality(pool: pl.DataFrame, context: SelectionContext, name: str) -> np.ndarray:
    """Per-item quality (float64): `margin`, a numeric pool column, or a scorer's values.

    A scorer's value is read for the item id; on a pairs pool with only pointwise scores, for
    the chosen response. Missing, null, NaN or infinite values raise `SelectionError` naming the
    first offending item, before any embedding is computed.
    """
    if name == "margin" and context.pool_kind == "pairs":
        return context.margins(pool)
    if name in pool.columns:
        col = pool.get_column(name)
        if not col.dtype.is_numeric():
            raise SelectionError(f"{context.stage}: quality column {name!r} is {col.dtype}, not numeric")
        values = col.cast(pl.Float64).to_numpy().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            ids = context.ids(pool)
            raise SelectionError(
                f"{context.stage}: quality {name!r} is null, NaN or infinite for {bad.size} of {len(values)} "
                f"items (first: {context.id_column}={ids[bad[0]]}); score them or drop them first"
            )
        return values
    if name in context.scorer_names():
        ids = context.ids(pool)
        scored = set(context.scores.filter(pl.col("scorer") == name)["target_id"].to_list())
        if context.pool_kind == "pairs" and not any(i in scored for i in ids):
            ids = pool.get_column("chosen_id").to_list()
        return context.values(name, ids)
    numeric = [c for c, t in pool.schema.items() if t.is_numeric()]
    raise SelectionError(
        f"{context.stage}: quality {name!r} is neither a pool column nor a scorer; "
        f"numeric columns: {', '.join(numeric) or '(none)'}; scorers: {', '.join(context.scorer_names()) or '(none)'}"
    )
