"""RFT: the spec §7.2 sanity tests, the safe arithmetic parser and SFT export."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError
from curation.selectors.rft import NotArithmetic, dedup_paths, equations, final_answer, safe_arithmetic, sft_rows

GOLD = "Heidi has 2*9=<<2*9=18>>18 rooms.\nDanielle has 18/3=<<18/3=6>>6 rooms.\n#### 6"


def pool(paths: list[str], answer: float = 6, solution: str = GOLD, pid: str = "q1") -> pl.DataFrame:
    meta = schema.dumps({"answer_number": answer, "solution": solution})
    n = len(paths)
    return pl.DataFrame(
        {
            "candidate_id": [f"{pid}-c{i}" for i in range(n)],
            "prompt_id": [pid] * n,
            "messages": [schema.user_prompt("How many rooms?")] * n,
            "text": paths,
            "meta": [meta] * n,
        }
    )


def run(frame):
    sel = SELECTORS.build("rft", {"kind": "rft"})
    return sel.select(frame, SelectionContext("candidate_id", stage="select.0:rft"))


@pytest.mark.parametrize(
    "expr,value",
    [("2*9", 18), ("18/3", 6), ("(1+2)**2", 9), ("-3+-4", -7), ("1,000*2", 2000), (".5*4", 2), ("2**-1", 0.5)],
)
def test_safe_arithmetic_values(expr, value):
    assert safe_arithmetic(expr) == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    ["__import__('os').system('true')", "x+1", "abs(-1)", "2**1000000", "1/0", "[1]*3", "1 if 1 else 2", "2//3", "7%3", "'a'", ""],
)
def test_safe_arithmetic_refuses_everything_else(expr):
    with pytest.raises(NotArithmetic):
        safe_arithmetic(expr)


@settings(max_examples=100, deadline=None)
@given(st.integers(-10**6, 10**6), st.integers(-10**6, 10**6), st.sampled_from(["+", "-", "*"]))
def test_safe_arithmetic_matches_python_on_integers(a, b, op):
    expected = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert safe_arithmetic(f"({a}){op}({b})") == expected


def test_final_answer_markers():
    markers = ["####", "A:"]
    assert final_answer("... #### 1,234", markers) == 1234
    assert final_answer("so\nA: 18", markers) == 18
    assert final_answer("no marker 18", markers) is None
    assert final_answer("#### -2.5 dollars", markers) == -2.5


def test_wrong_answers_and_wrong_equations_are_never_kept():
    paths = [
        "2*9=<<2*9=18>>18. 18/3=<<18/3=6>>6.\n#### 6",  # right
        "2*9=<<2*9=18>>18. 18/2=<<18/2=9>>9.\n#### 9",  # wrong answer
        "2*9=<<2*9=19>>19. 19/3=<<19/3=6>>6.\n#### 6",  # right answer, wrong equations
        "It is six.",  # no answer
    ]
    d = run(pool(paths))
    assert d["kept"].to_list() == [True, False, False, False]
    assert d["reason"].to_list() == ["kept", "wrong_answer", "bad_equation", "no_answer"]


def test_same_equations_different_wording_keep_one():
    paths = [
        "First 2*9=<<2*9=18>>18, then 18/3=<<18/3=6>>6.\n#### 6",
        "We get <<2 * 9 = 18>>18 and so <<18/3=6>>6 rooms.\n#### 6",
        "Alternatively 12/2=<<12/2=6>>6.\n#### 6",
    ]
    d = run(pool(paths))
    assert d["kept"].sum() == 2
    assert d.filter(~d["kept"])["reason"].to_list() == ["duplicate_path"]
    assert equations(paths[0]) == equations(paths[1])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["2*3=<<2*3=6>>", "12/2=<<12/2=6>>", "<<3+3=6>>", "<<2*3=7>>", ""]),
                          st.sampled_from(["#### 6", "#### 7"]), st.text("abc ", max_size=8)), min_size=1, max_size=12))
def test_kept_paths_never_exceed_distinct_keys_and_are_all_correct(parts):
    paths = [f"{w} {e} {w}\n{a}" for e, a, w in parts]
    d = run(pool(paths))
    kept_texts = [p for p, k in zip(paths, d["kept"].to_list()) if k]
    keys = {"|".join(equations(p)) for p in kept_texts}
    assert len(kept_texts) == len(keys)
    for t in kept_texts:
        assert t.endswith("#### 6") and "<<2*3=7>>" not in t


def test_farthest_replacement_rule():
    # c and c' share key K; c' is farther from the other kept path, so it replaces c
    other = (0, "B", "zzzzzzzzzz")
    stored = (1, "K", "zzzzzzzzza")
    incoming = (2, "K", "qqqqqqqqqq")
    kept = dedup_paths([other, stored, incoming])
    assert kept["K"] == (2, "qqqqqqqqqq")
    closer = (3, "K", "zzzzzzzzzz")
    assert dedup_paths([other, stored, closer])["K"] == (1, "zzzzzzzzza")


def test_sft_export_always_contains_the_gold_example():
    paths = ["Wrong.\n#### 5", "<<12/2=6>>6\n#### 6"]
    frame = pool(paths)
    rows = sft_rows(frame, run(frame))
    assert rows["origin"].to_list() == ["gold", "rft"]
    assert rows["completion"][0] == GOLD
    none_kept = sft_rows(pool(paths[:1]), run(pool(paths[:1])))
    assert none_kept["origin"].to_list() == ["gold"]


def test_missing_gold_answer_raises_naming_the_prompt():
    frame = pool(["#### 6"]).with_columns(meta=None)
    with pytest.raises(SelectionError, match="q1 has no gold answer"):
        run(frame)


def test_on_real_gsm8k_reference_solutions(shared_data):
    with gzip.open(shared_data / "gsm8k_prompts_train.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(200), fh)]
    frame = pl.DataFrame(
        {
            "candidate_id": [r["id"] for r in rows],
            "prompt_id": [r["id"] for r in rows],
            "messages": [r["messages"] for r in rows],
            "text": [r["solution"] for r in rows],
            "meta": [schema.dumps({"answer_number": r["answer_number"], "solution": r["solution"]}) for r in rows],
        }
    )
    d = run(frame)
    # the human reference solutions are right: every one passes answer and equation checks
    assert d["kept"].all()
