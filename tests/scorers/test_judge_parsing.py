"""Reading judge replies: JSON, patterns, garbage; and the A/B -> candidate id mapping."""

from __future__ import annotations

import pytest

from curation.scorers.judge import (
    order_ids,
    parse_rating,
    parse_verdict,
    preference_for,
    winner_id,
)


@pytest.mark.parametrize(
    "reply, rating, how",
    [
        ('{"rationale": "clear and correct", "rating": 8}', 8.0, "json"),
        ('Sure.\n```json\n{"rating": "7", "rationale": "ok"}\n```', 7.0, "json"),
        ('{"score": 9.5}', 9.5, "json"),
        ("The response is decent.\nRating: 7", 7.0, "pattern"),
        ("Overall score = **6**", 6.0, "pattern"),
        ("I'd give it [[4]].", 4.0, "pattern"),
        ("Verdict: 8/10, nice work", 8.0, "pattern"),
        ("9", 9.0, "bare"),
    ],
)
def test_parse_rating(reply, rating, how):
    value, _, got_how = parse_rating(reply, scale=10)
    assert (value, got_how) == (rating, how)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        None,
        "asdf qwer zxcv",
        '{"rating": 42}',  # out of range
        "I rate it 7/5",  # wrong denominator
        "<|im_start|>the the plus minus",
        '{"rationale": "no number"}',
    ],
)
def test_unreadable_ratings_are_none(reply):
    assert parse_rating(reply, scale=10)[0] is None


def test_rating_rationale_kept():
    value, rationale, _ = parse_rating('{"rating": 3, "rationale": "misses the question"}')
    assert value == 3.0 and rationale == "misses the question"


@pytest.mark.parametrize(
    "reply, verdict, how",
    [
        ('{"rationale": "B is accurate", "winner": "B"}', "B", "json"),
        ('{"winner": "Response A"}', "A", "json"),
        ('{"winner": "tie"}', "tie", "json"),
        ("After comparing, [[A]]", "A", "pattern"),
        ("[[C]]", "tie", "pattern"),
        ("The winner is: **B**", "B", "pattern"),
        ("Output (a) is better than output (b).", "A", "pattern"),
        ("Response B is better because it is correct.", "B", "pattern"),
        ("B", "B", "bare"),
        ("A.", "A", "bare"),
    ],
)
def test_parse_verdict(reply, verdict, how):
    got, _, got_how = parse_verdict(reply)
    assert (got, got_how) == (verdict, how)


@pytest.mark.parametrize("reply", ["", None, "lorem ipsum", '{"winner": "maybe"}', "Both have merits and flaws."])
def test_unreadable_verdicts_are_none(reply):
    assert parse_verdict(reply)[0] is None


def test_mapping_chosen_first():
    a, b = order_ids("chosen_first", "CH", "RJ")
    assert (a, b) == ("CH", "RJ")
    assert preference_for(winner_id("A", a, b), "CH", "RJ") == 1.0
    assert preference_for(winner_id("B", a, b), "CH", "RJ") == 0.0


def test_mapping_rejected_first_undoes_the_swap():
    a, b = order_ids("rejected_first", "CH", "RJ")
    assert (a, b) == ("RJ", "CH")
    assert winner_id("A", a, b) == "RJ"
    assert preference_for(winner_id("A", a, b), "CH", "RJ") == 0.0
    assert preference_for(winner_id("B", a, b), "CH", "RJ") == 1.0


def test_ties_and_unreadable():
    assert preference_for(winner_id("tie", "CH", "RJ"), "CH", "RJ") == 0.5
    assert winner_id(None, "CH", "RJ") is None and preference_for(None, "CH", "RJ") is None
