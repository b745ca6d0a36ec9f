"""Scorer plumbing: rows built from the schema tables, `run_scorers`, modes by kind."""

from __future__ import annotations

import json

import polars as pl
import pytest

from curation import schema
from curation.scorers import (
    SCORERS,
    ScorerError,
    pairwise_rows,
    pointwise_rows,
    run_scorers,
)


def tables(shared_data):
    from curation.sources import read_source

    return read_source(shared_data / "gsm8k_solution_pairs.jsonl.gz", limit=5)


def test_modes_of_built_scorers():
    gen = {"backend": "openai", "model": "m"}
    pairwise = [
        SCORERS.build("pairwise_judge", {"name": "a", "kind": "pairwise_judge", "generator": gen}),
        SCORERS.build("judge", {"name": "b", "kind": "judge", "mode": "pairwise", "generator": gen}),
        SCORERS.build("pairwise_rubric", {"name": "c", "kind": "pairwise_rubric", "generator": gen}),
    ]
    assert [s.mode for s in pairwise] == ["pairwise"] * 3
    pointwise = [
        SCORERS.build("judge", {"name": "d", "kind": "judge", "generator": gen}),
        SCORERS.build("rubric", {"name": "e", "kind": "rubric", "generator": gen}),
        SCORERS.build("heuristic", {"name": "f", "kind": "heuristic"}),
        SCORERS.build("verify", {"name": "g", "kind": "verify"}),
    ]
    assert [s.mode for s in pointwise] == ["pointwise"] * 4


def test_run_scorers_on_imported_tables(shared_data, tiny_rm):
    data = tables(shared_data)
    # reference answers live in the prompt meta, as an imported gsm8k prompt file carries them
    answer = {p["prompt_id"]: json.loads(p["meta"])["reference_answer"] for p in data.pairs.iter_rows(named=True)}
    prompts = data.prompts.with_columns(meta=pl.Series([json.dumps({"answer": answer[i]}) for i in data.prompts["prompt_id"]]))
    configs = [
        {"name": "len", "kind": "heuristic", "unit": "chars"},
        {"name": "rm", "kind": "reward_model", "model": str(tiny_rm)},
        {"name": "correct", "kind": "verify"},
    ]
    scores = run_scorers(configs, prompts, data.candidates)
    assert scores.columns == schema.SCORES.names
    n = data.candidates.height
    assert scores.group_by("scorer").len().sort("scorer").to_dicts() == sorted(
        [{"scorer": c["name"], "len": n} for c in configs], key=lambda d: d["scorer"]
    )
    assert set(scores["target_id"]) == set(data.candidates["candidate_id"])
    assert scores.filter(pl.col("scorer") == "len")["value"].null_count() == 0
    correct = dict(scores.filter(pl.col("scorer") == "correct").select("target_id", "value").iter_rows())
    for p in data.pairs.iter_rows(named=True):  # upstream is_correct: chosen right, rejected wrong
        assert (correct[p["chosen_id"]], correct[p["rejected_id"]]) == (1.0, 0.0)


def test_pairwise_rows_join_texts(shared_data):
    data = tables(shared_data)
    rows = pairwise_rows(data.prompts, data.pairs, data.candidates)
    texts = dict(zip(data.candidates["candidate_id"], data.candidates["text"]))
    assert rows.height == data.pairs.height
    for r in rows.iter_rows(named=True):
        assert r["chosen"] == texts[r["chosen_id"]] and r["rejected"] == texts[r["rejected_id"]]
        assert r["messages"]
    assert pointwise_rows(data.prompts, data.candidates).height == data.candidates.height


def test_run_scorers_checks_before_running(shared_data):
    data = tables(shared_data)
    with pytest.raises(ScorerError, match="unique"):
        run_scorers([{"name": "x", "kind": "heuristic"}] * 2, data.prompts, data.candidates)
    judge = {"name": "j", "kind": "pairwise_judge", "generator": {"backend": "openai", "model": "m"}}
    with pytest.raises(ScorerError, match="need pairs"):
        run_scorers([judge], data.prompts, data.candidates)
    with pytest.raises(ScorerError, match="does not exist"):
        run_scorers([{"name": "len", "kind": "heuristic"}, {"name": "rm", "kind": "reward_model", "model": "/no/model"}], data.prompts, data.candidates)
