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
    """Drop exact, near (MinHash) or semantic (cosine ≥ threshold, by radius search) duplicates."""

    version = "2"  # semantic: radius search (was: 16 nearest neighbours)

    class Config(SelectorConfig):
        method: Literal["exact", "minhash", "semantic"] = "exact"
        field: Field_ = "auto"
        normalize: bool = True
        threshold: float = Field(0.8, gt=0, le=1)  # Jaccard (minhash) or cosine (semantic)
        num_perm: int = Field(128, ge=16)
        shingle_words: int = Field(3, ge=1)
        block: int = Field(4096, ge=1)  # semantic: items per radius search (bounds memory)

    budget_use = "none"  # it drops duplicates only

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
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
        """Radius search: every earlier item at cosine ≥ threshold is found, however many there are."""
        import faiss

        emb = np.ascontiguousarray(context.embeddings(texts), dtype=np.float32)
        faiss.normalize_L2(emb)
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        threshold = self.config.threshold
        radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))  # faiss keeps sim > radius
        kept = np.zeros(len(texts), dtype=bool)
        of: list[int | None] = []
        out_sims: list[float | None] = []
        for start in range(0, len(texts), self.config.block):
            lims, sims, nbrs = index.range_search(emb[start : start + self.config.block], radius)
            for t in range(lims.size - 1):
                i = start + t
                s, j = sims[lims[t] : lims[t + 1]], nbrs[lims[t] : lims[t + 1]]
                earlier = (j < i) & (s >= threshold)
                earlier[earlier] = kept[j[earlier]]
                if not earlier.any():
                    kept[i] = True
                    of.append(None)
                    out_sims.append(None)
                    continue
                first = int(np.argmin(np.where(earlier, j, len(texts))))
                of.append(int(j[first]))
                out_sims.append(min(float(s[first]), 1.0))
        return of, out_sims
