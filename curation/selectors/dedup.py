"""Deduplication: exact, MinHash near-duplicates (datasketch LSH) and semantic (faiss, cosine).

Items are visited in pool order; an item is a duplicate when it matches an earlier item that
was kept, so the first occurrence always survives. Dropped rows say which item they
duplicate (`detail.duplicate_of`) and, for near and semantic duplicates, the similarity.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions, prompt_texts

Field_ = Literal["auto", "prompt", "response", "prompt+response", "pair"]


def dedup_texts(pool: pl.DataFrame, what: Field_) -> list[str]:
    """The text compared for each item. `auto`: the whole pair (prompt, chosen, rejected) for
    pairs pools, prompt + response for candidates pools."""
    is_pairs = "chosen" in pool.columns and "rejected" in pool.columns
    if what == "auto":
        what = "pair" if is_pairs else "prompt+response"
    prompts = prompt_texts(pool)
    if what == "prompt":
        return prompts
    response = pool.get_column("chosen" if is_pairs else "text").fill_null("").to_list()
    if what == "response":
        return response
    if what == "pair":
        if not is_pairs:
            raise SelectionError("dedup on 'pair' needs a pairs pool (chosen and rejected columns)")
        rejected = pool.get_column("rejected").fill_null("").to_list()
        return [f"{p}\x1e{c}\x1e{r}" for p, c, r in zip(prompts, response, rejected)]
    return [f"{p}\x1e{r}" for p, r in zip(prompts, response)]


def normalise(text: str) -> str:
    """Unicode NFKC, lower case, whitespace collapsed: formatting differences are not content."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().lower()


def shingles(text: str, size: int) -> set[bytes]:
    words = normalise(text).split(" ")
    if len(words) < size:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


@SELECTORS.register("dedup")
class Dedup(Selector):
    class Config(SelectorConfig):
        method: Literal["exact", "minhash", "semantic"] = "exact"
        field: Field_ = "auto"
        normalize: bool = True
        threshold: float = Field(0.8, gt=0, le=1)  # Jaccard (minhash) or cosine (semantic)
        num_perm: int = Field(128, ge=16)
        shingle_words: int = Field(3, ge=1)
        neighbors: int = Field(16, ge=1)  # semantic: nearest neighbours examined per item

    def select(self, pool: pl.DataFrame, context: SelectionContext) -> pl.DataFrame:
        self.check_pool(pool, context)
        if self.config.budget is not None:
            raise SelectionError(f"{context.stage}: dedup has no budget; it drops duplicates only (remove `budget`)")
        ids = context.ids(pool)
        texts = dedup_texts(pool, self.config.field)
        method = {"exact": self._exact, "minhash": self._minhash, "semantic": self._semantic}[self.config.method]
        of, sim = method(texts, context)
        kept = [o is None for o in of]
        details = [None if o is None else {"duplicate_of": ids[o], "similarity": s} for o, s in zip(of, sim)]
        return decisions(context, ids, kept, reason_dropped="duplicate", detail=details)

    def _exact(self, texts: list[str], context: SelectionContext):
        first: dict[str, int] = {}
        of: list[int | None] = []
        for i, t in enumerate(texts):
            key = schema.content_hash(normalise(t) if self.config.normalize else t)
            j = first.setdefault(key, i)
            of.append(None if j == i else j)
        return of, [None if o is None else 1.0 for o in of]

    def _minhash(self, texts: list[str], context: SelectionContext):
        from datasketch import MinHash, MinHashLSH

        c = self.config
        lsh = MinHashLSH(threshold=c.threshold, num_perm=c.num_perm)
        hashes: dict[int, MinHash] = {}
        of: list[int | None] = []
        sims: list[float | None] = []
        for i, t in enumerate(texts):
            m = MinHash(num_perm=c.num_perm, seed=c.seed)
            m.update_batch(list(shingles(t, c.shingle_words)))
            best, best_sim = None, 0.0
            for j in lsh.query(m):
                s = m.jaccard(hashes[j])
                if s >= c.threshold and (best is None or s > best_sim or (s == best_sim and j < best)):
                    best, best_sim = j, s
            of.append(best)
            sims.append(None if best is None else float(best_sim))
            if best is None:
                hashes[i] = m
                lsh.insert(i, m)
        return of, sims

    def _semantic(self, texts: list[str], context: SelectionContext):
        import faiss

        emb = np.ascontiguousarray(context.embeddings(texts), dtype=np.float32)
        faiss.normalize_L2(emb)
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        k = min(self.config.neighbors + 1, len(texts))
        sims, nbrs = index.search(emb, k)
        kept = np.zeros(len(texts), dtype=bool)
        of: list[int | None] = []
        out_sims: list[float | None] = []
        for i in range(len(texts)):
            match = None
            for s, j in zip(sims[i], nbrs[i]):
                if s < self.config.threshold:
                    break
                if j < i and kept[j] and (match is None or j < match[0]):
                    match = (int(j), float(s))
            if match is None:
                kept[i] = True
                of.append(None)
                out_sims.append(None)
            else:
                of.append(match[0])
                out_sims.append(min(match[1], 1.0))
        return of, out_sims
