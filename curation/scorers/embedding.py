"""Embedding similarity: how close a response is to a reference text (or to its prompt).

With `reference: "prompt"` it is a cheap relevance signal; with a meta field (a gold answer,
a reference response) it is a soft match to the reference. Uses `curation.embed.Embedder`
(MiniLM by default, cached on disk).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import Field

from curation.scorers import SCORERS
from curation.scorers.base import Scorer, ScorerConfig, ScorerError, meta_of


class EmbeddingConfig(ScorerConfig):
    local_paths = ("model",)
    model: str | None = Field(None, description="sentence-transformers folder; default all-MiniLM-L6-v2")
    reference: str = Field("prompt", description="'prompt' (last user turn) or a meta field holding the reference")
    cache_dir: str | None = None


@SCORERS.register("embedding")
class EmbeddingSimilarity(Scorer):
    """Pointwise: value = cosine similarity of response and reference embeddings, in [-1, 1]."""

    Config = EmbeddingConfig
    config: EmbeddingConfig

    def __init__(self, config: EmbeddingConfig | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        from curation.embed import Embedder

        try:
            self.embedder = Embedder(self.config.model, cache_dir=self.config.cache_dir)
        except ValueError as exc:
            raise ScorerError(f"scorer {self.config.name!r}: {exc}") from exc

    def model_paths(self) -> tuple[str, ...]:
        return (self.embedder.model_path,)

    def reference(self, row: dict) -> str | None:
        if self.config.reference == "prompt":
            users = [m["content"] for m in row["messages"] or [] if m["role"] == "user"]
            return users[-1] if users else None
        value = meta_of(row).get(self.config.reference)
        return None if value is None else str(value)

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        self.check_rows(rows)
        records = rows.to_dicts()
        refs = [self.reference(r) for r in records]
        ok = [i for i, r in enumerate(records) if r["text"] is not None and refs[i] is not None]
        sims: dict[int, float] = {}
        if ok:
            a = self.embedder.embed([records[i]["text"] for i in ok])
            b = self.embedder.embed([refs[i] for i in ok])  # type: ignore[misc]
            cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            sims = dict(zip(ok, cos.tolist()))
        out = []
        for i, r in enumerate(records):
            if i in sims:
                out.append(self.result(r["candidate_id"], sims[i], {"reference": self.config.reference}))
            elif r["text"] is None:
                out.append(self.result(r["candidate_id"], None, error="no response text"))
            else:
                out.append(self.result(r["candidate_id"], None, error=f"no reference ({self.config.reference!r})"))
        return self.frame(out)
