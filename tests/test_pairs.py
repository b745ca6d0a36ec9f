"""Pair builders: directions, margins, ties, tournaments, RSO first-round-rank, bad input."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation import schema
from curation.pairs import PAIR_BUILDERS, PairError, build_pairs, build_pairs_counted


def make(scores_by_prompt: dict[str, list[float | None]], scorer: str = "rm"):
    cands, scores = [], []
    for pid, values in scores_by_prompt.items():
        for i, v in enumerate(values):
            cid = f"{pid}-c{i}"
            cands.append({"candidate_id": cid, "prompt_id": pid, "text": f"answer {i} " + "x" * i})
            scores.append({"target_id": cid, "scorer": scorer, "value": v})
    return schema.frame(cands, "candidates"), schema.frame(scores, "scores")


def test_registry_lists_every_builder():
    assert PAIR_BUILDERS.names() == ["all_pairs", "best_random", "best_worst", "first_round_rank", "tournament"]


def test_best_worst_records_margin_score_and_direction():
    cands, scores = make({"p": [0.5, 2.0, -1.0, 1.0]})
    pairs = build_pairs(cands, scores, "best_worst")
    assert pairs.height == 1
    row = pairs.row(0, named=True)
    assert (row["chosen_id"], row["rejected_id"]) == ("p-c1", "p-c2")
    assert row["margin"] == pytest.approx(3.0)
    assert row["score"] == "rm" and row["builder"] == "best_worst" and row["label_source"] == "rm"
    assert row["pair_id"] == schema.pair_id("p", "p-c1", "p-c2")
    assert json.loads(row["meta"]) == {"chosen_score": 2.0, "rejected_score": -1.0}
    assert pairs.columns == schema.PAIRS.names


def test_all_tied_prompt_is_counted_and_never_paired():
    cands, scores = make({"tied": [1.0, 1.0, 1.0], "ok": [0.0, 1.0]})
    result = build_pairs_counted(cands, scores, "best_worst")
    assert result.pairs["prompt_id"].to_list() == ["ok"]
    assert result.counts["all_tied_prompts"] == 1


def test_only_ties_raise_instead_of_an_empty_dataset():
    cands, scores = make({"a": [1.0, 1.0], "b": [2.0, 2.0]})
    with pytest.raises(PairError, match="no pairs.*all_tied_prompts"):
        build_pairs(cands, scores, "all_pairs")
    empty = build_pairs_counted(cands, scores, "all_pairs", allow_empty=True)
    assert empty.pairs.height == 0 and empty.counts["all_tied_prompts"] == 2


def test_all_pairs_skips_ties_and_low_margins_and_counts_them():
    cands, scores = make({"p": [0.0, 0.0, 1.0, 3.0]})
    result = build_pairs_counted(cands, scores, "all_pairs", min_margin=1.5)
    got = {(r["chosen_id"], r["rejected_id"]) for r in result.pairs.iter_rows(named=True)}
    assert got == {("p-c3", "p-c0"), ("p-c3", "p-c1"), ("p-c3", "p-c2")}
    assert result.counts["ties_skipped"] == 1  # c0 vs c1
    assert result.counts["below_margin"] == 2  # c2 vs c0, c2 vs c1
    assert (result.pairs["margin"] >= 1.5).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=2, max_size=7))
def test_all_pairs_every_pair_points_up_and_no_tie_survives(values):
    cands, scores = make({"p": [float(v) for v in values]})
    result = build_pairs_counted(cands, scores, "all_pairs", allow_empty=True)
    by_id = {f"p-c{i}": v for i, v in enumerate(values)}
    for row in result.pairs.iter_rows(named=True):
        assert by_id[row["chosen_id"]] > by_id[row["rejected_id"]]
        assert row["margin"] == by_id[row["chosen_id"]] - by_id[row["rejected_id"]]
    n = len(values)
    distinct = sum(1 for i in range(n) for j in range(i + 1, n) if values[i] != values[j])
    assert result.pairs.height == distinct
    if len(set(values)) > 1:
        assert result.counts.get("ties_skipped", 0) == n * (n - 1) // 2 - distinct


def test_best_random_is_deterministic_for_a_seed_and_respects_margin():
    cands, scores = make({f"p{j}": [0.0, 1.0, 2.0, 3.0, 10.0] for j in range(20)})
    a = build_pairs(cands, scores, "best_random", seed=3, min_margin=8.0)
    b = build_pairs(cands, scores, "best_random", seed=3, min_margin=8.0)
    assert a.equals(b)
    assert (a["margin"] >= 8.0).all() and set(a["chosen_id"].str.slice(-2).to_list()) == {"c4"}
    c = build_pairs(cands, scores, "best_random", seed=4)
    assert not c["rejected_id"].equals(build_pairs(cands, scores, "best_random", seed=3)["rejected_id"])


def by_length(a, b):
    """A deterministic pairwise judge: the longer text wins by its extra characters."""
    return float(len(a.text) - len(b.text))


def test_tournament_with_a_judge_finds_the_winner_in_n_minus_one_matches():
    cands, scores = make({"p": [0.0] * 7})  # scores are irrelevant: the judge decides
    result = build_pairs_counted(cands, None, "tournament", judge=by_length)
    pairs = result.pairs
    assert pairs.height == 6
    losers = set(pairs["rejected_id"].to_list())
    winners = {f"p-c{i}" for i in range(7)} - losers
    assert winners == {"p-c6"}  # the longest text
    assert set(pairs["score"].to_list()) == {"by_length"}
    assert (pairs["margin"] > 0).all()
    rounds = [json.loads(m)["round"] for m in pairs["meta"].to_list()]
    assert rounds == [0, 0, 0, 1, 1, 2]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=2, max_size=12, unique=True), st.integers(0, 5))
def test_tournament_winner_is_the_best_under_a_transitive_judge(values, seed):
    cands, scores = make({"p": values})
    pairs = build_pairs(cands, scores, "tournament", shuffle=True, seed=seed)
    assert pairs.height == len(values) - 1
    champion = f"p-c{max(range(len(values)), key=lambda i: values[i])}"
    assert champion not in pairs["rejected_id"].to_list()
    assert len(set(pairs["rejected_id"].to_list())) == len(values) - 1


def test_tournament_tied_match_gives_no_pair_and_first_advances():
    cands, _ = make({"p": [0, 0, 0]})
    result = build_pairs_counted(cands, None, "tournament", judge=lambda a, b: 0.0 if {a.index, b.index} == {0, 1} else 1.0)
    assert result.counts["ties_skipped"] == 1
    assert result.pairs.rows(named=True)[0]["chosen_id"] == "p-c0"  # c0 advanced and beat c2


def test_judge_is_refused_by_builders_that_do_not_use_one():
    cands, scores = make({"p": [0.0, 1.0]})
    with pytest.raises(PairError, match="does not take a judge"):
        build_pairs(cands, scores, "best_worst", judge=by_length)


def test_first_round_rank_pairs_rso_accepted_samples_labelled_by_score():
    cands, scores = make({f"p{j}": [float(i) for i in range(10)] for j in range(5)})
    result = build_pairs_counted(cands, scores, "first_round_rank", k=4, beta=0.5, seed=1)
    pairs = result.pairs
    assert pairs.height == 5 * 2  # k/2 pairs per prompt
    for row in pairs.iter_rows(named=True):
        meta = json.loads(row["meta"])
        assert meta["chosen_score"] > meta["rejected_score"]
        assert isinstance(meta["presented_swapped"], bool)
    for pid, group in pairs.group_by("prompt_id"):
        members = group["chosen_id"].to_list() + group["rejected_id"].to_list()
        assert len(set(members)) == 4  # distinct accepted samples
    # near-greedy β keeps the top 4 of every prompt
    greedy = build_pairs(cands, scores, "first_round_rank", k=4, beta=1e-6, seed=1)
    used = set(greedy["chosen_id"].to_list() + greedy["rejected_id"].to_list())
    assert used == {f"p{j}-c{i}" for j in range(5) for i in (6, 7, 8, 9)}


def test_first_round_rank_flips_presentation_order_for_the_judge():
    cands, _ = make({f"p{j}": [0.0] * 8 for j in range(10)})
    seen = []

    def judge(a, b):
        seen.append((a.index, b.index))
        return by_length(a, b)

    pairs = build_pairs(cands, None, "first_round_rank", judge=judge, seed=0)
    swapped = [json.loads(m)["presented_swapped"] for m in pairs["meta"].to_list()]
    assert len(swapped) == 40 and 10 < sum(swapped) < 30
    assert sum(1 for a, b in seen if a > b) > 0 and sum(1 for a, b in seen if a < b) > 0
    for row in pairs.iter_rows(named=True):  # labels follow the judge whatever the order shown
        assert int(row["chosen_id"][-1]) > int(row["rejected_id"][-1])


def test_missing_score_names_it_and_lists_present():
    cands, scores = make({"p": [0.0, 1.0]}, scorer="judge")
    with pytest.raises(PairError, match=r"'rm' was not produced.*present: judge"):
        build_pairs(cands, scores, "best_worst", score="rm")


def test_several_scorers_need_an_explicit_score():
    cands, s1 = make({"p": [0.0, 1.0]}, scorer="a")
    _, s2 = make({"p": [1.0, 0.0]}, scorer="b")
    both = pl.concat([s1, s2])
    with pytest.raises(PairError, match=r"set `score`.*a, b"):
        build_pairs(cands, both)
    assert build_pairs(cands, both, score="b")["chosen_id"].to_list() == ["p-c0"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_raise(bad):
    cands, scores = make({"p": [0.0, bad]})
    with pytest.raises(PairError, match="must be finite"):
        build_pairs(cands, scores)


def test_unscored_failed_and_missing_candidates_are_counted():
    cands, scores = make({"p": [0.0, None, 2.0], "q": [1.0]})
    failed = schema.frame([{"candidate_id": "p-bad", "prompt_id": "p", "text": None, "error": "timeout"}], "candidates")
    prompts = schema.frame([{"prompt_id": pid, "messages": schema.user_prompt(pid)} for pid in ("p", "q", "r")], "prompts")
    result = build_pairs_counted(pl.concat([cands, failed]), scores, "best_worst", prompts=prompts)
    assert result.pairs.height == 1
    assert result.counts["unscored_candidates"] == 1
    assert result.counts["failed_candidates"] == 1
    assert result.counts["single_candidate_prompts"] == 1
    assert result.counts["prompts_without_candidates"] == 1


def test_empty_candidates_raise():
    with pytest.raises(PairError, match="no candidates"):
        build_pairs(schema.empty("candidates"), schema.empty("scores"))


def test_unknown_builder_and_config_typo_fail_fast():
    cands, scores = make({"p": [0.0, 1.0]})
    with pytest.raises(KeyError, match="unknown pair builder 'best'"):
        build_pairs(cands, scores, "best")
    with pytest.raises(ValueError, match="min_margn"):
        build_pairs(cands, scores, "best_worst", min_margn=1)


def test_best_worst_on_shuffled_prompts_hand_checked():
    """Candidates of three prompts interleaved out of order; ties go to the first in input order."""
    rows = [("q", "q-a", 2.0), ("p", "p-a", 1.0), ("q", "q-b", 5.0), ("r", "r-a", 3.0), ("p", "p-b", 4.0),
            ("q", "q-c", 5.0), ("p", "p-c", 1.0), ("r", "r-b", 3.0), ("q", "q-d", 2.0)]
    cands = schema.frame([{"candidate_id": c, "prompt_id": p, "text": c} for p, c, _ in rows], "candidates")
    scores = schema.frame([{"target_id": c, "scorer": "rm", "value": v} for _, c, v in reversed(rows)], "scores")
    result = build_pairs_counted(cands, scores, "best_worst")
    got = result.pairs.select("prompt_id", "chosen_id", "rejected_id", "margin").rows()
    assert got == [("q", "q-b", "q-a", 3.0), ("p", "p-b", "p-a", 3.0)]  # q first seen; r all tied
    assert result.counts["all_tied_prompts"] == 1 and result.counts["prompts"] == 3
    assert result.pairs["pair_id"].to_list() == [schema.pair_id("q", "q-b", "q-a"), schema.pair_id("p", "p-b", "p-a")]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([-1e-7, -2.5, 0.0, 1.0, 1.0, 3.25, 1e17, 7.0])),
                min_size=1, max_size=30),
       st.sampled_from([0.0, 1.0]), st.sampled_from([0.0, 2.0]))
def test_best_worst_from_columns_equals_the_rule_prompt_by_prompt(rows, tie_tolerance, min_margin):
    """The column path (one group-by) gives the same rows and counts as `pairs_for_prompt` per prompt."""
    from curation.pairs.base import PairBuilder

    cands = schema.frame([{"candidate_id": f"c{i}", "prompt_id": f"p{p}", "text": "t"} for i, (p, _) in enumerate(rows)],
                         "candidates")
    scores = schema.frame([{"target_id": f"c{i}", "scorer": "rm", "value": v} for i, (_, v) in enumerate(rows)], "scores")
    builder = PAIR_BUILDERS.build("best_worst", {"builder": "best_worst", "tie_tolerance": tie_tolerance,
                                                 "min_margin": min_margin})
    columns = builder.build(cands, scores, allow_empty=True)
    builder.propose = lambda scored, stats, judge: PairBuilder.propose(builder, scored, stats, judge)
    per_prompt = builder.build(cands, scores, allow_empty=True)
    assert columns.pairs.equals(per_prompt.pairs)
    assert columns.counts == per_prompt.counts


def test_pair_ids_and_meta_from_columns_match_python_on_awkward_values():
    from curation.pairs.base import json_floats, pair_ids

    ids = ['a"b', "c\\d", "e\nf\x01\x1e", "ü→😀", "plain", "\t"]
    frame = pl.DataFrame({"prompt_id": ids, "chosen_id": ids[1:] + ids[:1], "rejected_id": ids[2:] + ids[:2]})
    assert pair_ids(frame).to_list() == [schema.pair_id(*r) for r in frame.rows()]
    values = [0.0, -0.0, 1e-05, -3.5e-07, 1e16, 2.5e20, 0.1, 123.0, -1e-4, 9999999999999998.0]
    assert json_floats(pl.Series(values)).to_list() == [json.dumps(v) for v in values]
