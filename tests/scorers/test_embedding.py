from __future__ import annotations

import json

import polars as pl

from curation.scorers import SCORERS


def test_similarity_to_prompt_and_to_a_reference(tmp_path):
    rows = pl.DataFrame(
        {
            "candidate_id": ["a", "b", "c"],
            "prompt_id": ["p", "p", "q"],
            "messages": [[{"role": "user", "content": "How do I bake banana bread?"}]] * 2
            + [[{"role": "user", "content": "Name a colour."}]],
            "text": ["Mash ripe bananas, mix with flour and bake for an hour.", "Paris is in France.", "Blue"],
            "meta": [json.dumps({"gold": "Bake bananas with flour."}), json.dumps({}), json.dumps({"gold": "Blue"})],
        }
    )
    to_prompt = SCORERS.build("embedding", {"name": "rel", "kind": "embedding", "cache_dir": str(tmp_path)})
    v = to_prompt.score(rows).get_column("value").to_list()
    assert v[0] > v[1] and all(-1 <= x <= 1 for x in v)
    to_gold = SCORERS.build(
        "embedding", {"name": "gold", "kind": "embedding", "reference": "gold", "cache_dir": str(tmp_path)}
    )
    out = to_gold.score(rows)
    v = out.get_column("value").to_list()
    assert v[2] > 0.999 and v[1] is None and "no reference" in out.get_column("error")[1]
    assert to_gold.embedder.stats.hits > 0  # texts embedded by the first scorer come from the cache
