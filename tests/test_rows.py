"""The row rules: one flip rule for the selection pool and the published rows, ties, the text join."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest

from curation import schema
from curation.rows import (
    RowsError,
    apply_flips,
    flip,
    held_out_prompts,
    plan_version_rows,
    tie_mask,
    version_rows,
    with_texts,
)


def _tables(n: int = 4) -> dict[str, pl.DataFrame]:
    """n prompts, one pair each (good over bad) with a confidence, a reward model and a pairwise judge."""
    prompts, cands, pairs, scores = [], [], [], []
    for i in range(n):
        msgs = schema.user_prompt(f"question {i}")
        pid = schema.prompt_id(msgs)
        good, bad = f"good answer {i}", f"bad {i}"
        cg, cb = schema.response_id(pid, good), schema.response_id(pid, bad)
        pair = schema.pair_id(pid, cg, cb)
        prompts.append({"prompt_id": pid, "messages": msgs, "source": "synthetic"})
        cands += [{"candidate_id": cg, "prompt_id": pid, "text": good, "generator": "g"},
                  {"candidate_id": cb, "prompt_id": pid, "text": bad, "generator": "g"}]
        pairs.append({"pair_id": pair, "prompt_id": pid, "chosen_id": cg, "rejected_id": cb, "score": "rm",
                      "builder": "best_worst", "label_source": "rm", "confidence": 0.75,
                      "meta": schema.dumps({"k": i}) if i % 2 else None})
        scores += [{"target_id": cg, "scorer": "rm", "value": float(i + 2)},
                   {"target_id": cb, "scorer": "rm", "value": 0.5},
                   {"target_id": pair, "scorer": "judge", "value": 0.9}]
    return {"prompts": schema.frame(prompts, "prompts"), "candidates": schema.frame(cands, "candidates"),
            "pairs": schema.frame(pairs, "pairs"), "scores": schema.frame(scores, "scores")}


def _decisions(pair_ids: list[str], flips: list[bool], stage: str = "select.0:noise") -> pl.DataFrame:
    return schema.frame([{"target_id": p, "stage": stage, "kept": True, "flip": f, "weight": 1.0}
                         for p, f in zip(pair_ids, flips)], "decisions")


def test_a_published_flip_swaps_every_side_dependent_field():
    tables = _tables()
    before, _ = version_rows(tables)
    flips = [True, True, False, False]
    after, counts = version_rows({**tables, "decisions": _decisions(before["pair_id"].to_list(), flips)})
    assert counts["flipped"] == 2
    for i, flipped in enumerate(flips):
        b, a = before.row(i, named=True), after.row(i, named=True)
        if not flipped:
            assert a == b
            continue
        assert (a["chosen_id"], a["rejected_id"]) == (b["rejected_id"], b["chosen_id"])
        assert (a["chosen"], a["rejected"]) == (b["rejected"], b["chosen"])
        assert (a["chosen_score"], a["rejected_score"], a["margin"]) == (b["rejected_score"], b["chosen_score"], -b["margin"])
        assert a["confidence"] == 1.0 - b["confidence"]
        assert json.loads(a["meta"])["flipped"] is True
        sa, sb = json.loads(a["scores"]), json.loads(b["scores"])
        assert sa["rm"] == {"chosen": sb["rm"]["rejected"], "rejected": sb["rm"]["chosen"], "pair": None}
        assert sa["judge"]["pair"] == pytest.approx(1.0 - sb["judge"]["pair"])  # P(chosen is better) follows the swap


def test_the_pool_and_the_published_rows_flip_by_the_same_rule():
    """What select sees after a noise step's flips is what publish writes for the same decisions."""
    tables = _tables()
    pool, _ = version_rows(tables)
    decided = _decisions(pool["pair_id"].to_list(), [False, True, True, False])
    published, _ = version_rows({**tables, "decisions": decided})
    assert apply_flips(pool, decided).equals(published)


def test_two_flips_undo_each_other_in_the_pool_and_in_publish():
    tables = _tables()
    pool, _ = version_rows(tables)
    ids = pool["pair_id"].to_list()
    once = _decisions(ids, [True] * 4)
    assert apply_flips(apply_flips(pool, once), once).equals(pool)
    twice = pl.concat([once, _decisions(ids, [True] * 4, stage="select.1:noise")])
    assert version_rows({**tables, "decisions": twice})[0].equals(pool)


def test_flip_leaves_absent_columns_alone():
    frame = pl.DataFrame({"pair_id": ["a", "b"], "chosen_id": ["c1", "c2"], "rejected_id": ["r1", "r2"]})
    out = flip(frame, pl.Series([True, False]))
    assert out.columns == frame.columns
    assert out["chosen_id"].to_list() == ["r1", "c2"] and out["rejected_id"].to_list() == ["c1", "r2"]


def test_ties_and_the_text_join():
    rows = pl.DataFrame({"meta": ['{"tie": true}', None, '{"tie": false}', None], "confidence": [None, 0.5, 0.5001, None]})
    assert tie_mask(rows).to_list() == [True, True, False, False]
    pairs = pl.DataFrame({"pair_id": ["p"], "chosen_id": ["x"], "rejected_id": ["y"]})
    cands = pl.DataFrame({"candidate_id": ["y", "x", "x"], "text": ["why", "ex", "ex again"]})
    joined = with_texts(pairs, cands)
    assert joined.row(0, named=True) == {"pair_id": "p", "chosen_id": "x", "rejected_id": "y", "chosen": "ex", "rejected": "why"}


def test_missing_text_names_the_table_and_the_id():
    tables = _tables(2)
    tables["candidates"] = tables["candidates"].head(3)
    with pytest.raises(RowsError, match="rejected_id .* no row .* `candidates`"):
        version_rows(tables)


def test_batches_of_any_size_make_the_same_rows():
    """The published rows are written a batch at a time: any cut gives the rows of one frame."""
    tables = _tables(5)
    pool, _ = version_rows(tables)
    decided = _decisions(pool["pair_id"].to_list(), [True, False, True, False, False])
    plan = plan_version_rows({**tables, "decisions": decided}, test_fraction=0.4, seed=2)
    whole = plan.collect()
    assert whole.height == 5 and whole["split"].n_unique() == 2
    for size in (1, 2, 5, 7):
        assert pl.concat(list(plan.batches(size))).equals(whole)
    assert sum(json.loads(m or "{}").get("flipped", False) for m in whole["meta"]) == 2


def test_a_target_scored_twice_counts_its_last_value():
    tables = _tables(2)
    chosen = version_rows(tables)[0]["chosen_id"][0]
    again = schema.frame([{"target_id": chosen, "scorer": "rm", "value": 40.0},
                          {"target_id": chosen, "scorer": "rm", "value": None}], "scores")  # a failed re-score
    rows, _ = version_rows({**tables, "scores": pl.concat([tables["scores"], again])})
    assert rows["chosen_score"][0] == 40.0 and json.loads(rows["scores"][0])["rm"]["chosen"] == 40.0
    assert rows["margin"][0] == 40.0 - 0.5


def test_lazy_scans_give_the_rows_of_frames(tmp_path):
    tables = _tables(4)
    tables["decisions"] = _decisions(version_rows(tables)[0]["pair_id"].to_list(), [False, True, False, True])
    scans = {}
    for name, frame in tables.items():
        frame.write_parquet(tmp_path / f"{name}.parquet")
        scans[name] = pl.scan_parquet(tmp_path / f"{name}.parquet")
    assert version_rows(scans, test_fraction=0.5, seed=1)[0].equals(version_rows(tables, test_fraction=0.5, seed=1)[0])


def test_the_split_is_the_sha256_rule():
    """A prompt is a test prompt when sha256("<seed>:<prompt_id>")'s first 4 bytes fall under the cut."""
    ids = pl.Series(["p1", "p2", "é✓", ""] + [f"q{i}" for i in range(200)])
    cut = int(0.3 * 2**32)
    expected = [int.from_bytes(hashlib.sha256(f"7:{p}".encode()).digest()[:4], "big") < cut for p in ids]
    assert held_out_prompts(ids, 0.3, 7).to_list() == expected and 30 < sum(expected) < 90


def _scans(tables: dict[str, pl.DataFrame], folder) -> dict[str, pl.LazyFrame]:
    scans = {}
    for name, frame in tables.items():
        frame.write_parquet(folder / f"{name}.parquet", row_group_size=3)  # reads cross row groups
        scans[name] = pl.scan_parquet(folder / f"{name}.parquet")
    return scans


def test_batches_of_scans_in_any_order_hold_every_row_once(tmp_path, monkeypatch):
    """Rows gathered a slice at a time from scans (prompts and candidates shuffled, so gathers are
    out of order and span several slices; drops, so kept rows skip pair rows): each kept pair once,
    in order, with its own texts, whatever the batch and slice sizes."""
    import curation.rows

    tables = _tables(9)
    tables["prompts"] = tables["prompts"].sample(fraction=1.0, shuffle=True, seed=3)
    tables["candidates"] = tables["candidates"].sample(fraction=1.0, shuffle=True, seed=4)
    ids = tables["pairs"]["pair_id"].to_list()
    dropped = {ids[0], ids[3], ids[4], ids[8]}
    tables["decisions"] = schema.frame([{"target_id": p, "stage": "s", "kept": p not in dropped, "flip": i % 3 == 1}
                                        for i, p in enumerate(ids)], "decisions")
    whole, counts = version_rows(tables, test_fraction=0.3, seed=1)
    assert whole["pair_id"].to_list() == [p for p in ids if p not in dropped] and counts["rows"] == 5
    texts = dict(tables["candidates"].select("candidate_id", "text").iter_rows())
    assert all(texts[c] == t for c, t in whole.select("chosen_id", "chosen").iter_rows())
    scans = _scans(tables, tmp_path)
    for read_rows, score_rows, batch in ((1, 1, 1), (2, 3, 2), (4, 5, 3), (1_000, 1_000, 4)):
        monkeypatch.setattr(curation.rows, "READ_ROWS", read_rows)
        monkeypatch.setattr(curation.rows, "SCORE_ROWS", score_rows)
        plan = plan_version_rows(scans, test_fraction=0.3, seed=1)
        assert plan.counts == counts
        assert pl.concat(list(plan.batches(batch))).equals(whole), (read_rows, score_rows, batch)


def test_ids_that_share_a_hash_still_find_their_own_rows(monkeypatch):
    """Ids are joined on 64-bit hashes, then checked: where two ids share one, the strings decide."""
    import curation.rows

    tables = _tables(6)
    tables["decisions"] = _decisions(version_rows(tables)[0]["pair_id"].to_list(), [True, False] * 3)
    expected = version_rows(tables, test_fraction=0.5, seed=1)
    few = lambda ids: ids.str.len_bytes().cast(pl.UInt64) % 2  # noqa: E731 - every id shares its hash with others
    monkeypatch.setattr(curation.rows, "_hashed", few)
    rows, counts = version_rows(tables, test_fraction=0.5, seed=1)
    assert rows.equals(expected[0]) and counts == expected[1]
