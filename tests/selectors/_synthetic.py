"""Synthetic pools for selector tests: pairs whose prompt embeddings are given vectors."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from curation import schema
from curation.selectors.base import SelectionContext


def hashed_vector(text: str, d: int) -> np.ndarray:
    """A deterministic pseudo-random vector for any string (stands in for an embedding model)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


def pairs_pool(
    emb: np.ndarray,
    margin: np.ndarray | None = None,
    *,
    tags: list[list[str]] | None = None,
    chosen_score: np.ndarray | None = None,
    scores: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, SelectionContext]:
    """A pairs pool whose item i has prompt "prompt i", embedded as emb[i]; other texts are hashed."""
    emb = np.asarray(emb, dtype=np.float32)
    n, d = emb.shape
    margin = np.linspace(0.0, 1.0, n) if margin is None else np.asarray(margin, dtype=np.float64)
    rows = []
    for i in range(n):
        messages = schema.user_prompt(f"prompt {i}")
        pid = schema.prompt_id(messages)
        c, r = schema.response_id(pid, f"good {i}"), schema.response_id(pid, f"bad {i}")
        rows.append(
            {
                "pair_id": schema.pair_id(pid, c, r), "prompt_id": pid, "chosen_id": c, "rejected_id": r,
                "prompt": messages, "chosen": f"good {i}", "rejected": f"bad {i}", "margin": float(margin[i]),
                "chosen_score": None if chosen_score is None else float(chosen_score[i]),
                "meta": schema.dumps({"tags": tags[i]}) if tags is not None else None,
            }
        )
    pool = schema.frame(rows, "version_rows")
    lookup = {f"prompt {i}": emb[i] for i in range(n)}

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([lookup[t] if t in lookup else hashed_vector(t, d) for t in texts])

    ctx = SelectionContext(id_column="pair_id", scores=scores if scores is not None else schema.empty("scores"), embed=embed)
    return pool, ctx


def clustered(n: int, d: int, centers: int, seed: int, spread: float = 0.05) -> np.ndarray:
    """n points around `centers` random unit directions (well separated clusters)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[np.arange(n) % centers] + spread * rng.standard_normal((n, d))
    return x.astype(np.float32)


def all_pairs_pool(prompt_emb: np.ndarray, candidate_scores: np.ndarray) -> tuple[pl.DataFrame, SelectionContext]:
    """Pairs from the real `all_pairs` builder: prompt j has candidates scored candidate_scores[j]
    (every two with different scores form a pair, margin = their difference); prompt j is
    embedded as prompt_emb[j]. Rows come grouped by prompt, as the builder writes them."""
    from curation.pairs import build_pairs

    prompt_emb = np.asarray(prompt_emb, dtype=np.float32)
    prompts, candidates, scores, texts = [], [], [], {}
    for j, row in enumerate(np.asarray(candidate_scores, dtype=np.float64)):
        messages = schema.user_prompt(f"prompt {j}")
        pid = schema.prompt_id(messages)
        prompts.append({"prompt_id": pid, "messages": messages, "source": "test", "meta": "{}"})
        for c, value in enumerate(row):
            cid = schema.candidate_id(pid, "test", 0, c)
            texts[cid] = f"answer {c} to prompt {j}"
            candidates.append({"candidate_id": cid, "prompt_id": pid, "text": texts[cid], "generator": "test",
                               "seed": 0, "sample_index": c})
            scores.append({"target_id": cid, "scorer": "rm", "value": float(value)})
    pairs = build_pairs(schema.frame(candidates, "candidates"), schema.frame(scores, "scores"), "all_pairs", score="rm")
    message_of = {p["prompt_id"]: p["messages"] for p in prompts}
    rows = [{**r, "prompt": message_of[r["prompt_id"]], "chosen": texts[r["chosen_id"]], "rejected": texts[r["rejected_id"]]}
            for r in pairs.to_dicts()]
    pool = schema.frame(rows, "version_rows")
    lookup = {f"prompt {j}": prompt_emb[j] for j in range(len(prompt_emb))}

    def embed(texts_: list[str]) -> np.ndarray:
        return np.stack([lookup[t] if t in lookup else hashed_vector(t, prompt_emb.shape[1]) for t in texts_])

    return pool, SelectionContext(id_column="pair_id", scores=schema.frame(scores, "scores"), embed=embed)
