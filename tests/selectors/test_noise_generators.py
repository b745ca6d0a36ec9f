"""The noise filter's `generators` signal: which model wrote each response, from the candidates table."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import yaml

from curation.rows import apply_flips
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError
from curation.sources import read_pair_rows, read_source

AE2 = "alpaca_eval2_gpt4turbo_pairs.jsonl.gz"


def noisy_slice(path, limit: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    """The first `limit` pairs with 20% of labels flipped, and the candidates (id, generator) they name."""
    pool = read_pair_rows(path, limit)
    cands = read_source(path, limit=limit + 50).candidates.select("candidate_id", "generator")
    truth = np.random.default_rng(seed).random(pool.height) < 0.2
    return apply_flips(pool, pl.DataFrame({"target_id": pool["pair_id"].filter(pl.Series(truth)), "flip": True})), cands, truth


def strength(config: dict, pool: pl.DataFrame, cands: pl.DataFrame | None):
    sel = SELECTORS.build("noise", {"kind": "noise", "folds": 4, "inner_folds": 2, **config})
    return sel.strength(pool, SelectionContext("pair_id", candidates=cands, stage="select.0:noise")), sel


def auroc(score: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score))


def test_who_wrote_each_response_ranks_injected_flips(shared_data):
    # AlpacaEval-2 pits ten models against one baseline: a weak model's win is suspect
    pool, cands, truth = noisy_slice(shared_data / AE2, 600)
    s, sel = strength({"signals": ["generators"]}, pool, cands)
    assert sel.report["members"] == ["generators"] and not sel.report["skipped_signals"]
    assert auroc(-s["mu"], truth) > 0.75  # chance is 0.5
    # looked up by candidate id: flipping one more pair swaps its generators, and its margin only changes sign
    moved = np.zeros(pool.height, dtype=bool)
    moved[np.flatnonzero(s["mu"] != 0)[0]] = True
    flipped = apply_flips(pool, pl.DataFrame({"target_id": pool["pair_id"].filter(pl.Series(moved)), "flip": True}))
    after, _ = strength({"signals": ["generators"]}, flipped, cands)
    assert np.allclose(after["mu"][moved], -s["mu"][moved], atol=1e-9)
    both, sel = strength({"signals": ["features", "generators"]}, pool, cands)
    assert sel.report["members"] == ["length", "features", "generators"]


def test_skipped_with_a_reason_when_generators_tell_nothing(shared_data):
    hh, hh_cands, _ = noisy_slice(shared_data / "hh_rlhf_test.jsonl.gz", 120)
    _, sel = strength({"signals": ["features", "generators"]}, hh, hh_cands)  # every response is "dataset:anthropic_hh_rlhf"
    assert sel.report["members"] == ["length", "features"]
    assert sel.report["skipped_signals"]["generators"] == "every response has the same generator ('dataset:anthropic_hh_rlhf')"
    _, sel = strength({"signals": ["features", "generators"]}, hh, None)
    assert "no candidates table" in sel.report["skipped_signals"]["generators"]
    with pytest.raises(SelectionError, match="no generator in the candidates table"):
        strength({"signals": ["generators"]}, hh, hh_cands.head(10))


def test_a_recipe_run_gives_the_filter_its_candidates_generators(tmp_path, shared_data):
    from curation.recipe import load_recipe
    from curation.stages import run_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ae2-small",
        "sources": [{"path": str(shared_data / AE2), "limit": 200}],
        "select": [{"kind": "noise", "folds": 3, "inner_folds": 2}],
    }))  # fmt: skip
    tables, _ = run_recipe(load_recipe(path), tmp_path / "catalog", until="select")
    step = json.loads(pl.read_parquet(tables["select_report"].path)["report"][0])["steps"][0]
    assert "generators" in step["selector"]["members"] and "generators" not in step["selector"]["skipped_signals"]
    generators = pl.read_parquet(tables["candidates"].path)["generator"]
    assert generators.n_unique() > 2 and generators.str.starts_with("dataset:").all()
