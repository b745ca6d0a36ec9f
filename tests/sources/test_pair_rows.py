"""read_pair_rows: the one reader of labelled pair files for benchmarks, tests and held-out files."""

from __future__ import annotations

import gzip
import json

import pytest

from curation import schema
from curation.sources import SourceError, read_pair_rows

PANDALM = "pandalm_testset.jsonl.gz"  # ties (rows 9, 15, 16, ...), repeated content (row 21 = row 6), empty responses


def expected(path, ties: bool) -> list[tuple]:
    """(messages, chosen, rejected) of each pair in file order, worked out from the corpus' own fields."""
    out, seen = [], set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if not r["chosen"].strip() or not r["rejected"].strip() or r["chosen"] == r["rejected"] or r["content_hash"] in seen:
                continue
            seen.add(r["content_hash"])
            if ties or not r.get("tie"):
                out.append((r["messages"], r["chosen"], r["rejected"]))
    return out


def texts(rows) -> list[tuple]:
    return [(m, c, r) for m, c, r in zip(rows["prompt"].to_list(), rows["chosen"].to_list(), rows["rejected"].to_list())]


@pytest.mark.parametrize("limit", [20, 300])
def test_the_first_pairs_in_file_order_ties_left_out_and_limit_counts_what_is_returned(shared_data, limit):
    rows = read_pair_rows(shared_data / PANDALM, limit)
    assert rows.height == limit  # three ties among the first 20 rows: the reader reads on past them
    assert texts(rows) == expected(shared_data / PANDALM, ties=False)[:limit]
    assert rows.columns == schema.VERSION_ROWS.names
    assert rows["pair_id"].n_unique() == limit


def test_ties_kept_when_asked_and_the_whole_file_without_a_limit(shared_data):
    with_ties = read_pair_rows(shared_data / PANDALM, ties=True)
    assert texts(with_ties) == expected(shared_data / PANDALM, ties=True)
    without = read_pair_rows(shared_data / PANDALM)
    assert texts(without) == expected(shared_data / PANDALM, ties=False)
    assert with_ties.height > without.height


def test_pair_ids_are_the_content_ids_a_recipe_gives_the_same_pairs(shared_data):
    rows = read_pair_rows(shared_data / "hh_rlhf_test.jsonl.gz", 5)
    for r in rows.iter_rows(named=True):
        pid = schema.prompt_id(r["prompt"])
        assert r["prompt_id"] == pid
        assert r["pair_id"] == schema.pair_id(pid, schema.response_id(pid, r["chosen"]), schema.response_id(pid, r["rejected"]))


def test_a_file_without_pairs_is_an_error_naming_it(shared_data):
    with pytest.raises(SourceError, match="humaneval_prompts.jsonl.gz: no pairs in it"):
        read_pair_rows(shared_data / "humaneval_prompts.jsonl.gz", 5)
