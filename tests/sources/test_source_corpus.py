"""Import every file of the shared corpus and check the counts against its README."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import polars as pl
import pytest

from curation import schema
from curation.sources import read_source

# From /work/shared/data/README.md: rows, ties, identical pairs, empty chosen, empty rejected,
# duplicate-content rows (rows whose messages/chosen/rejected repeat an earlier row).
README = {
    "hh_rlhf_test.jsonl.gz": (2312, 0, 0, 4, 0, 0),
    "gsm8k_solution_pairs.jsonl.gz": (4153, 0, 0, 0, 0, 0),
    "llmbar.jsonl.gz": (1200, 0, 1, 0, 1, 7),
    "pandalm_testset.jsonl.gz": (999, 105, 0, 1, 53, 134),
    "alpaca_eval2_gpt4turbo_pairs.jsonl.gz": (8050, 29, 29, 0, 0, 64),
    "alpaca_eval1_gpt4_pairs.jsonl.gz": (8039, 64, 64, 0, 3, 53),
}


def raw_rows(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def expected_outcomes(rows: list[dict]) -> Counter:
    """Each row's fate by the corpus' own fields: bad rows first, then repeats of a kept row's content_hash."""
    out: Counter = Counter()
    kept: set[str] = set()
    for r in rows:
        if not r["chosen"].strip() or not r["rejected"].strip():
            out["empty response"] += 1
        elif r["chosen"] == r["rejected"]:
            out["chosen equals rejected"] += 1
        elif r["content_hash"] in kept:
            out["merged"] += 1
            out["merged ties"] += bool(r.get("tie"))
        else:
            kept.add(r["content_hash"])
            out["imported"] += 1
            out["ties"] += bool(r.get("tie"))
    return out


@pytest.mark.parametrize("name", sorted(README))
def test_pair_file_counts_match_the_readme(shared_data, name):
    rows_n, ties, identical, empty_chosen, empty_rejected, dup_content = README[name]
    rows = raw_rows(shared_data / name)
    # the README's numbers describe this file
    assert len(rows) == rows_n
    assert sum(bool(r.get("tie")) for r in rows) == ties
    assert sum(r["chosen"] == r["rejected"] for r in rows) == identical
    assert (sum(not r["chosen"] for r in rows), sum(not r["rejected"] for r in rows)) == (empty_chosen, empty_rejected)
    assert len(rows) - len({r["content_hash"] for r in rows}) == dup_content
    expected = expected_outcomes(rows)

    data = read_source(shared_data / name)
    c = data.counts
    assert data.format == "corpus" and data.detected
    assert data.rows_read == rows_n
    assert c["imported"] + c["quarantined"] + c["duplicates_merged"] + c["blank_lines"] == data.rows_read
    reasons = Counter(r.split(":")[0] for r in data.quarantine["reason"])
    assert reasons == Counter({k: expected[k] for k in ("empty response", "chosen equals rejected") if expected[k]})
    assert reasons["chosen equals rejected"] == identical
    assert reasons["empty response"] == empty_chosen + empty_rejected
    assert c["duplicates_merged"] == expected["merged"]
    assert c["imported"] == expected["imported"] == data.pairs.height
    assert c["ties"] == expected["ties"]
    assert set(data.quarantine["file"]) <= {str(shared_data / name)}
    assert data.quarantine["line"].is_between(1, rows_n).all()

    # the tables hang together
    pairs, cands, prompts = data.pairs, data.candidates, data.prompts
    assert pairs["pair_id"].is_unique().all() and cands["candidate_id"].is_unique().all()
    assert set(pairs["chosen_id"]) | set(pairs["rejected_id"]) == set(cands["candidate_id"])
    assert set(cands["prompt_id"]) == set(pairs["prompt_id"]) == set(prompts["prompt_id"])
    assert set(pairs["label_source"]) == {r["label_source"] for r in rows}
    assert set(pairs["builder"]) == {"dataset"}
    tie_conf = pairs.filter(pl.col("meta").str.json_path_match("$.tie") == "true")["confidence"]
    assert tie_conf.len() == c["ties"] and (tie_conf == 0.5).all()
    # every merged duplicate is recorded on the pair it was merged into
    merged_lines = [m["line"] for meta in pairs["meta"] for m in json.loads(meta).get("merged", [])]
    assert sorted(merged_lines) == sorted(data.lines["duplicates_merged"])
    assert len(merged_lines) == c["duplicates_merged"]


def test_ids_follow_the_content(shared_data):
    rows = raw_rows(shared_data / "llmbar.jsonl.gz")
    data = read_source(shared_data / "llmbar.jsonl.gz")
    first = rows[0]
    pid = schema.prompt_id(first["messages"])
    key = schema.pair_id(pid, schema.response_id(pid, first["chosen"]), schema.response_id(pid, first["rejected"]))
    pair = data.pairs.filter(pl.col("pair_id") == key).row(0, named=True)
    meta = json.loads(pair["meta"])
    assert meta["subset"] == first["subset"] and meta["id"] == first["id"]
    assert "prompt" not in meta and "chosen" not in meta


def test_soft_labels_become_confidence(shared_data):
    data = read_source(shared_data / "alpaca_eval2_gpt4turbo_pairs.jsonl.gz", limit=300)
    assert data.counts["imported"] == 300
    p_chosen = data.pairs["meta"].str.json_path_match("$.p_chosen").cast(pl.Float64)
    assert (data.pairs["confidence"] - p_chosen).abs().max() < 1e-12


@pytest.mark.parametrize(
    "name,n,meta_keys",
    [
        ("gsm8k_prompts_train.jsonl.gz", 2000, {"answer", "answer_number", "solution", "id", "split"}),
        ("gsm8k_prompts_test.jsonl.gz", 500, {"answer", "answer_number", "solution", "id", "split"}),
        ("humaneval_prompts.jsonl.gz", 164, {"test", "entry_point", "canonical_solution", "task_id", "id"}),
    ],
)
def test_prompt_files_are_prompts_with_meta(shared_data, name, n, meta_keys):
    rows = raw_rows(shared_data / name)
    data = read_source(shared_data / name)
    assert data.format == "prompts" and data.counts["imported"] == n == data.prompts.height
    assert data.quarantine.height == 0 and data.pairs.height == 0
    metas = [json.loads(m) for m in data.prompts["meta"]]
    assert all(meta_keys <= m.keys() for m in metas)
    assert set(data.prompts["source"]) == {rows[0]["source"]}
    # prompt text is kept byte for byte (HumanEval stubs end in a newline that completions rely on)
    assert [m[0]["content"] for m in data.prompts["messages"].to_list()] == [r["messages"][0]["content"] for r in rows]
    assert [m["answer" if "answer" in meta_keys else "test"] for m in metas] == [
        r["answer" if "answer" in meta_keys else "test"] for r in rows
    ]
