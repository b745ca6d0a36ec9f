from __future__ import annotations

import json

import polars as pl
import pytest

from curation.scorers import SCORERS, ScorerError
from curation.scorers.heuristic import WORD, repeat_rate

from .conftest import candidate_rows


def heuristic(**kw):
    return SCORERS.build("heuristic", {"name": "h", "kind": "heuristic", **kw})


def rows_of(*texts):
    return pl.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(len(texts))],
            "prompt_id": ["p"] * len(texts),
            "messages": [[{"role": "user", "content": "hi"}]] * len(texts),
            "text": list(texts),
        }
    )


def test_length_units(tiny_chat, hh_pairs):
    rows = candidate_rows(hh_pairs)
    chars = heuristic(unit="chars").score(rows).get_column("value").to_list()
    assert chars == [float(len(t)) for t in rows.get_column("text")]
    words = heuristic(unit="words").score(rows_of("Hello, world!")).get_column("value").to_list()
    assert words == [4.0]  # Hello , world !
    toks = heuristic(unit="tokens", tokenizer=str(tiny_chat)).score(rows).get_column("value").to_list()
    assert all(0 < t <= c for t, c in zip(toks, chars) if c > 0)


def test_repetition():
    assert repeat_rate("a b c d e f", 2) == (0.0, 5)
    rate, n = repeat_rate("yes yes yes yes yes", 1)
    assert (rate, n) == (0.8, 5)
    out = heuristic(measure="repetition", ngram=2).score(rows_of("one two three", "go go go go go go", ""))
    values = out.get_column("value").to_list()
    assert values[0] == 0.0 and values[1] > 0.7 and values[2] == 0.0


def test_refusal_detection_on_real_responses(hh_pairs):
    texts = [
        "I'm sorry, but I can't help with that request.",
        "As an AI language model, I do not have opinions.",
        "I cannot provide instructions for making weapons.",
        "Sure! Here is a recipe for banana bread.",
        "The capital of France is Paris.",
    ]
    out = heuristic(measure="refusal").score(rows_of(*texts))
    assert out.get_column("value").to_list() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert "sorry" in json.loads(out.get_column("detail")[0])["match"].lower()


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(ScorerError, match="needs `tokenizer`"):
        heuristic(unit="tokens")
    with pytest.raises(ScorerError, match="bad refusal pattern"):
        heuristic(measure="refusal", refusal_patterns=["(unclosed"])
    with pytest.raises(ScorerError, match="lack columns"):
        heuristic().score(pl.DataFrame({"text": ["x"]}))


def test_word_counts_follow_pythons_re_where_rusts_classes_differ():
    # hand-counted with Python's re: a combining mark (U+093F, U+0301) is not \w in Python (Rust: it is),
    # \x1c-\x1f are \s in Python (Rust: not), '½' and '²' are \w in Python
    texts = ["कि", "e\u0301", "a\x1eb", "½²x", "don't stop", ""]
    expected = [2.0, 2.0, 2.0, 1.0, 4.0, 0.0]
    assert [len(WORD.findall(t)) for t in texts] == expected
    assert heuristic(unit="words").score(rows_of(*texts))["value"].to_list() == expected


@pytest.mark.parametrize("kw", [{"unit": "words"}, {"unit": "chars"}, {"measure": "repetition", "ngram": 1},
                                {"measure": "refusal"}])
def test_batches_keep_each_value_with_its_row(monkeypatch, kw):
    """Shuffled rows with failed ones among them, scored 3 rows per batch: each value stays on its row."""
    import random

    import curation.scorers.heuristic as heuristic_module

    texts = ["I'm sorry, I can't help with that.", "one two two", None, "x", "a a a a", "", "Sure, here: 1 2 3.", None]
    order = list(range(len(texts)))
    random.Random(7).shuffle(order)
    rows = pl.DataFrame({"candidate_id": [f"c{i}" for i in order], "prompt_id": "p",
                         "messages": [[{"role": "user", "content": "hi"}]] * len(order), "text": [texts[i] for i in order]})
    monkeypatch.setattr(heuristic_module, "BATCH_ROWS", 3)
    out = heuristic(**kw).score(rows)
    assert out["target_id"].to_list() == rows["candidate_id"].to_list()
    scorer = heuristic(**kw)
    for cid, value, detail, error in out.select("target_id", "value", "detail", "error").iter_rows():
        text = texts[int(cid[1:])]
        if text is None:
            assert (value, detail, error) == (None, "{}", "no response text")
            continue
        want = {"words": len(WORD.findall(text)), "chars": len(text)}.get(kw.get("unit")) if "unit" in kw else None
        want, want_detail = (float(want), {"unit": kw["unit"]}) if want is not None else scorer.measure(text)
        assert value == want and json.loads(detail) == want_detail and error is None
