"""Deduplication: exact, MinHash near-duplicates (datasketch LSH) and semantic (faiss, cosine).

Items are visited in pool order; an item is a duplicate when it matches an earlier item that
was kept, so the first occurrence always survives. Dropped rows say which item they
duplicate (`detail.duplicate_of`) and, for near and semantic duplicates, the similarity.

Exact dedup works on columns: each compared field (prompt, responses) is normalised by polars
in bounded batches and the tuple of fields hashed (two 64-bit hashes, so a field boundary cannot
move and a collision is out of reach at any pool size), and the first occurrence of each key is
found by one group-by; no per-row Python.
"""

from __future__ import annotations

import json
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
BATCH_ROWS = 50_000  # items hashed per batch: bounds the normalised texts alive at once
SPEAKERS = {"user": "Human", "assistant": "Assistant", "system": "System"}  # as schema.messages_to_text writes them


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


def dedup_fields(pool: pl.DataFrame, what: Field_) -> list[pl.Expr]:
    """The fields `dedup_texts` joins, as column expressions (prompt flattened as `prompt_texts` does)."""
    is_pairs = "chosen" in pool.columns and "rejected" in pool.columns
    if what == "auto":
        what = "pair" if is_pairs else "prompt+response"
    if what == "pair" and not is_pairs:
        raise SelectionError("dedup on 'pair' needs a pairs pool (chosen and rejected columns)")
    prompt = prompt_text_column(pool)
    response = pl.col("chosen" if is_pairs else "text").fill_null("")
    return {"prompt": [prompt], "response": [response], "pair": [prompt, response, pl.col("rejected").fill_null("")],
            "prompt+response": [prompt, response]}[what]


def prompt_text_column(pool: pl.DataFrame) -> pl.Expr:
    """`prompt_texts` as an expression: a lone user turn is its content, else 'Human: ...' turns."""
    col = "prompt" if "prompt" in pool.columns else "messages" if "messages" in pool.columns else None
    if col is None:
        raise SelectionError("the pool has neither a 'prompt' nor a 'messages' column")
    m = pl.col(col)
    if not isinstance(pool.schema[col], pl.List):
        return m.cast(pl.String).fill_null("")
    role, content = pl.element().struct.field("role"), pl.element().struct.field("content")
    speaker = role.replace_strict(SPEAKERS, default=role.str.slice(0, 1).str.to_uppercase() + role.str.slice(1).str.to_lowercase())
    turns = m.list.eval(pl.concat_str([speaker, pl.lit(": "), content.fill_null("None")])).list.join("\n\n")
    lone_user = (m.list.len() == 1) & (m.list.first().struct.field("role") == "user")
    return pl.when(m.is_null()).then(pl.lit("")).when(lone_user).then(m.list.first().struct.field("content").fill_null("None")) \
        .otherwise(turns)


def normalised(text: pl.Expr) -> pl.Expr:
    """`normalise` as an expression: NFKC, Python's whitespace collapsed to one space, stripped, lower case."""
    space = schema.python_regex_class(r"\s")
    space = f"[{space}]{{2,}}|[{space}&&[^ ]]"  # runs and other whitespace: a lone space is already " "
    nfkc = pl.when(text.str.contains(r"[^\x00-\x7f]")).then(text.str.normalize("NFKC")).otherwise(text)  # ASCII is NFKC
    return nfkc.str.replace_all(space, " ").str.strip_chars(" ").str.to_lowercase()


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
        if self.config.method == "exact":
            return self._exact(pool, context)
        ids = context.ids(pool)
        texts = dedup_texts(pool, self.config.field)
        method = {"minhash": self._minhash, "semantic": self._semantic}[self.config.method]
        of, sim = method(texts, context)
        kept = [o is None for o in of]
        details = [None if o is None else {"duplicate_of": ids[o], "similarity": s} for o, s in zip(of, sim)]
        return decisions(context, ids, kept, reason_dropped="duplicate", detail=details)

    def _exact(self, pool: pl.DataFrame, context: SelectionContext) -> pl.DataFrame:
        """Hash every item's normalised fields batch by batch; an item repeating an earlier hash is dropped."""
        ids = pl.Series("target_id", context.ids(pool), dtype=pl.String)
        fields = dedup_fields(pool, self.config.field)
        if self.config.normalize:
            fields = [normalised(f) for f in fields]
        item = pl.struct([f.alias(f"f{i}") for i, f in enumerate(fields)])
        key = pl.col("item").hash(0).alias("h0"), pl.col("item").hash(1).alias("h1")
        keys = pl.concat([pool.slice(start, BATCH_ROWS).select(item.alias("item")).select(*key)
                          for start in range(0, pool.height, BATCH_ROWS)])
        first = keys.with_row_index("row").select(pl.col("row").first().over("h0", "h1")).to_series()
        dropped = first != pl.int_range(pool.height, eager=True)
        of = ids.gather(first)
        detail = pl.concat_str([pl.lit('{"duplicate_of": '), schema.json_strings(pl.col("of")), pl.lit(', "similarity": 1.0}')])
        frame = pl.DataFrame({"target_id": ids, "of": of, "dropped": dropped}).select(
            "target_id", pl.lit(context.stage).alias("stage"), (~pl.col("dropped")).alias("kept"),
            pl.lit(None, dtype=pl.Int64).alias("rank"), pl.lit(1.0).alias("weight"), pl.lit(False).alias("flip"),
            pl.lit(None, dtype=pl.Float64).alias("epsilon"),
            pl.when(pl.col("dropped")).then(pl.lit("duplicate")).otherwise(pl.lit("kept")).alias("reason"),
            pl.when(pl.col("dropped")).then(detail).alias("detail"))
        wide = (dropped & ~of.str.contains(r"^[\x00-\x7f]*$")).arg_true()
        if len(wide):  # json escapes non-ASCII ids as \uXXXX; polars does not
            frame = frame.with_columns(frame["detail"].scatter(
                wide, [json.dumps({"duplicate_of": o, "similarity": 1.0}, sort_keys=True) for o in of.gather(wide).to_list()]))
        return schema.conform(frame, "decisions")

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
