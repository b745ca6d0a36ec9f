"""Benchmark: which label-graph threshold T suits MiniLM tag embeddings (MIG, spec §2.2).

The paper links InsTag tags whose e5-mistral-7b embeddings have cosine ≥ 0.9. MiniLM's cosines
sit on another scale, so T = 0.9 is not the same graph. This measures MiniLM cosines between
InsTag-style tags written in groups: within a group the tags name one intent (paraphrases) or
closely related intents of one domain (which the paper's graph links, so that information
spreads between them); across groups they name different intents. For each T it reports
precision and recall of "linked" against "same group", and the T with the best F1.

The tag list is hand-written (no InsTag tags or tagger is available offline); it stands for the
kind of tags a tagger writes, and the figures hold for such tags, not for any vocabulary.

Usage:  python benchmarks/mig_threshold.py     # writes benchmarks/results/mig_threshold.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUPS = {
    "python": ["python programming", "python coding", "python script", "debugging python code"],
    "web": ["javascript programming", "web development", "html and css", "frontend development"],
    "sql": ["sql query", "database query", "writing sql", "relational database"],
    "math_word": ["math word problem", "arithmetic word problem", "mathematical problem solving", "math calculation"],
    "algebra": ["algebra", "solving equations", "linear equations", "quadratic equation"],
    "recipe": ["recipe request", "cooking instructions", "cooking recipe", "meal preparation"],
    "travel": ["travel recommendation", "travel planning", "trip itinerary", "tourist destinations"],
    "health": ["medical advice", "health information", "symptom inquiry", "medical question"],
    "fitness": ["workout plan", "exercise routine", "fitness advice", "strength training"],
    "writing": ["creative writing", "story writing", "short story", "fiction writing"],
    "poetry": ["poem writing", "poetry", "write a poem", "haiku"],
    "email": ["email writing", "business email", "formal letter", "professional correspondence"],
    "translation": ["translation", "translate to french", "language translation", "spanish translation"],
    "summary": ["summarization", "text summary", "summarize article", "condense text"],
    "history": ["historical question", "world history", "history of europe", "historical events"],
    "finance": ["personal finance", "budgeting advice", "investment advice", "saving money"],
    "career": ["career advice", "job interview", "resume writing", "job search"],
    "grammar": ["grammar correction", "proofreading", "spelling correction", "sentence editing"],
    "physics": ["physics question", "physics explanation", "classical mechanics", "laws of motion"],
    "pets": ["pet care", "dog training", "cat behavior", "pet health"],
}


def main() -> None:
    from curation.selectors.base import minilm_embed

    tags = [t for g in GROUPS.values() for t in g]
    group = np.array([i for i, g in enumerate(GROUPS.values()) for _ in g])
    x = minilm_embed(tags).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cos = x @ x.T
    iu = np.triu_indices(len(tags), 1)
    sims, same = cos[iu], (group[:, None] == group[None, :])[iu]
    rows = []
    for t in np.round(np.arange(0.3, 0.96, 0.05), 2):
        linked = sims >= t
        tp = int((linked & same).sum())
        precision = tp / max(int(linked.sum()), 1)
        recall = tp / int(same.sum())
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        rows.append({"threshold": float(t), "edges": int(linked.sum()), "precision": round(precision, 3),
                     "recall": round(recall, 3), "f1": round(f1, 3)})
    best = max(rows, key=lambda r: (r["f1"], r["threshold"]))
    q = lambda v: {p: round(float(np.quantile(v, p / 100)), 3) for p in (10, 50, 90)}
    out = {
        "model": "all-MiniLM-L6-v2",
        "tags": len(tags), "groups": len(GROUPS), "pairs_same_group": int(same.sum()), "pairs_other": int((~same).sum()),
        "cosine_same_group_quantiles": q(sims[same]), "cosine_other_group_quantiles": q(sims[~same]),
        "at_0.9": next(r for r in rows if r["threshold"] == 0.9),
        "best_f1": best,
        "by_threshold": rows,
        "pairs_at_or_above_0.9": [[tags[i], tags[j], round(float(cos[i, j]), 3)] for i, j in zip(*iu) if cos[i, j] >= 0.9],
    }
    path = ROOT / "benchmarks" / "results" / "mig_threshold.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("cosine_same_group_quantiles", "cosine_other_group_quantiles", "at_0.9", "best_f1")}, indent=2))


if __name__ == "__main__":
    main()
