"""Dedup: exact, MinHash near-duplicates (recall on constructed near-duplicates) and semantic."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import polars as pl
import pytest

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError, minilm_embed


def pairs_pool(prompts, chosen, rejected=None):
    n = len(prompts)
    return pl.DataFrame(
        {
            "pair_id": [f"x{i}" for i in range(n)],
            "prompt_id": [f"p{i}" for i in range(n)],
            "prompt": [schema.user_prompt(p) for p in prompts],
            "chosen": chosen,
            "rejected": rejected or ["no"] * n,
        }
    )


def run(pool, embed=None, **config):
    return SELECTORS.build("dedup", {"kind": "dedup", **config}).select(pool, SelectionContext("pair_id", embed=embed, stage="select.0:dedup"))


def test_exact_keeps_first_occurrence_and_ignores_case_and_spacing():
    pool = pairs_pool(["Q", "q ", "Q", "other"], ["Answer  one", "answer one", "Answer one!", "Answer one"])
    d = run(pool)
    assert d["kept"].to_list() == [True, False, True, True]
    assert json.loads(d["detail"][1])["duplicate_of"] == "x0"
    assert d["reason"][1] == "duplicate"
    strict = run(pool, normalize=False)
    assert strict["kept"].all()


def test_exact_on_real_pandalm_matches_upstream_content_hashes(shared_data):
    with gzip.open(shared_data / "pandalm_testset.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    pool = pl.DataFrame(
        {
            "pair_id": [r["id"] for r in rows],
            "prompt_id": [r["id"] for r in rows],
            "prompt": [r["messages"] for r in rows],
            "chosen": [r["chosen"] for r in rows],
            "rejected": [r["rejected"] for r in rows],
        }
    )
    d = run(pool, normalize=False)
    upstream_dups = len(rows) - len({r["content_hash"] for r in rows})
    assert (~d["kept"]).sum() == upstream_dups == 134  # README: 134 duplicate-content rows


def _perturb(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(max(1, len(words) // 40)):  # about 2.5% of words changed
        words[rng.randrange(len(words))] = rng.choice(["the", "indeed", "really", "x"])
    return " ".join(words)


def test_minhash_finds_constructed_near_duplicates(shared_data):
    with gzip.open(shared_data / "alpaca_eval1_gpt4_pairs.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(1500), fh)]
    rng = random.Random(0)
    originals = [r for r in rows if len(r["chosen"].split()) >= 80]
    originals = list({r["chosen"]: r for r in originals}.values())[:150]
    near = [_perturb(r["chosen"], rng) for r in originals[:100]]
    texts = [r["chosen"] for r in originals] + near
    pool = pairs_pool(["same prompt"] * len(texts), texts)
    d = run(pool, method="minhash", field="response", threshold=0.7)
    kept = d["kept"].to_list()
    recall = sum(1 for k in kept[150:] if not k) / 100
    false_drops = sum(1 for k in kept[:150] if not k)
    assert recall >= 0.95
    assert false_drops <= 3  # distinct AlpacaEval answers are rarely near-duplicates
    for detail in d.filter(~pl.col("kept"))["detail"].to_list():
        assert json.loads(detail)["similarity"] >= 0.7


def test_semantic_dedup_with_minilm_drops_paraphrases_only():
    texts = [
        "The capital of France is Paris.",
        "Paris is the capital city of France.",
        "Photosynthesis converts light into chemical energy in plants.",
        "Plants turn sunlight into chemical energy through photosynthesis.",
        "A haiku has three lines of five, seven and five syllables.",
    ]
    pool = pairs_pool(["q"] * 5, texts)
    d = run(pool, embed=minilm_embed, method="semantic", field="response", threshold=0.8)
    assert d["kept"].to_list() == [True, False, True, False, True]
    assert json.loads(d["detail"][1])["duplicate_of"] == "x0"


def test_semantic_first_kept_item_is_the_anchor():
    # a ~ b and b ~ c but a !~ c: b is dropped as a's duplicate, c survives (b was not kept)
    emb = np.array([[1.0, 0.0], [np.cos(0.5), np.sin(0.5)], [np.cos(1.0), np.sin(1.0)]], dtype=np.float32)
    pool = pairs_pool(["a", "b", "c"], ["a", "b", "c"])
    lookup = {"a": emb[0], "b": emb[1], "c": emb[2]}
    d = run(pool, embed=lambda texts: np.stack([lookup[t] for t in texts]), method="semantic", field="response", threshold=0.85)
    assert d["kept"].to_list() == [True, False, True]


def brute_force_semantic(emb, threshold):
    """The rule written out: in order, item i duplicates the lowest earlier kept j with cos ≥ τ."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    kept, of = [], []
    for i in range(len(x)):
        match = next((j for j in kept if float(x[i] @ x[j]) >= threshold), None)
        of.append(match)
        if match is None:
            kept.append(i)
    return of


@pytest.mark.parametrize("seed", [0, 1])
def test_semantic_finds_every_near_copy_however_many(seed):
    """Clusters of 40 near-copies (cosine well above τ): a 16-nearest-neighbour search misses
    earlier kept items that are not among an item's 16 nearest and keeps copies."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, 32))
    emb = np.repeat(centres, 40, axis=0) + 0.12 * rng.standard_normal((240, 32))
    emb = emb[rng.permutation(240)].astype(np.float32)
    texts = [f"t{i}" for i in range(240)]
    pool = pairs_pool(["q"] * 240, texts)
    lookup = dict(zip(texts, emb))
    d = run(pool, embed=lambda ts: np.stack([lookup[t] for t in ts]), method="semantic", field="response",
            threshold=0.85, block=50)
    want = brute_force_semantic(emb.astype(np.float64), 0.85)
    got = [json.loads(t)["duplicate_of"] if t else None for t in d["detail"]]
    assert got == [None if j is None else f"x{j}" for j in want]
    assert d["kept"].sum() == sum(j is None for j in want) <= 12


def test_semantic_without_embedder_raises_and_budget_is_refused():
    pool = pairs_pool(["a", "b"], ["x", "y"])
    with pytest.raises(SelectionError, match="no embedder"):
        run(pool, method="semantic")
    with pytest.raises(SelectionError, match="dedup takes no budget"):
        run(pool, budget=1)


def test_candidates_pool_dedups_prompt_plus_text():
    pool = pl.DataFrame(
        {
            "candidate_id": ["a", "b", "c"],
            "prompt_id": ["p", "p", "q"],
            "messages": [schema.user_prompt("P"), schema.user_prompt("P"), schema.user_prompt("Q")],
            "text": ["same", "same", "same"],
        }
    )
    d = SELECTORS.build("dedup", {"kind": "dedup"}).select(pool, SelectionContext("candidate_id"))
    assert d["kept"].to_list() == [True, False, True]


def test_exact_hand_checked_on_shuffled_ids_across_batches(monkeypatch):
    """Copies land in other batches (2 items per batch) and ids are not in index order: every copy
    points at the first occurrence of its content, never at a later one."""
    import curation.selectors.dedup as dedup_module

    monkeypatch.setattr(dedup_module, "BATCH_ROWS", 2)
    prompts = ["Q1", "q1 ", "Q2", "Q1", "Q2", "q1", "Q2"]
    chosen = ["ans A", "ANS  a", "ans B", "ans A!", "ans\tb", "ans a", "ans b"]
    pool = pairs_pool(prompts, chosen).with_columns(pl.Series("pair_id", ["x6", "x2", "x9", "x0", "x4", "x1", "x3"]))
    d = run(pool)
    assert d["target_id"].to_list() == pool["pair_id"].to_list()
    assert d["kept"].to_list() == [True, False, True, True, False, False, False]
    of = [json.loads(x)["duplicate_of"] if x else None for x in d["detail"].to_list()]
    assert of == [None, "x6", None, None, "x9", "x6", "x9"]
    assert d["reason"].to_list() == ["kept", "duplicate", "kept", "kept", "duplicate", "duplicate", "duplicate"]


def test_exact_field_boundaries_do_not_move():
    """('a b', 'c') and ('a', 'b c') are different pairs; joined into one text and normalised
    (the separator is whitespace to Python) they looked equal."""
    pool = pairs_pool(["a b", "a", "a b"], ["c", "b c", "C"])
    assert run(pool)["kept"].to_list() == [True, True, False]


def test_exact_multi_turn_prompt_differs_from_its_last_turn():
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Q"}]
    pool = pairs_pool(["Q", "Q"], ["a", "a"]).with_columns(
        pl.Series("prompt", [schema.user_prompt("Q"), turns], dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String}))))
    assert run(pool)["kept"].to_list() == [True, True]
    assert run(pool.vstack(pool))["kept"].to_list() == [True, True, False, False]
