from __future__ import annotations

import json

import polars as pl
import pytest

from curation.scorers import SCORERS
from curation.scorers.verify import answers_match, extract_answer

from .conftest import read_jsonl


def verifier(**kw):
    return SCORERS.build("verify", {"name": "v", "kind": "verify", **kw})


def rows(texts, metas, messages=None):
    n = len(texts)
    return pl.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(n)],
            "prompt_id": [f"p{i}" for i in range(n)],
            "messages": messages or [[{"role": "user", "content": "q"}]] * n,
            "text": texts,
            "meta": [json.dumps(m) for m in metas],
        }
    )


@pytest.mark.parametrize(
    "text, answer, method",
    [
        ("so 3 + 4 = 7\n#### 7", "7", "hashes"),
        ("We get $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "boxed"),
        ("Adding up, the answer is 1,250.", "1,250", "answer_is"),
        ("3 apples + 2 = 5 apples\nA: 5", "5", "a_colon"),
        ("first 12 then 30 then 42", "42", "last_number"),
        ("no digits here", None, "none"),
    ],
)
def test_extract_answer(text, answer, method):
    assert extract_answer(text) == (answer, method)


def test_answers_match():
    assert answers_match("1,250", "1250")[0]
    assert answers_match("$18.00", "18")[0]
    assert answers_match("\\frac{1}{2}", "0.5")[0]
    assert answers_match("\\frac{2}{4}", "\\frac{1}{2}") == (True, "math_verify")
    assert not answers_match("19", "18")[0]


def test_gsm8k_reference_solutions_verify_and_perturbed_answers_do_not(shared_data):
    probs = read_jsonl(shared_data / "gsm8k_prompts_test.jsonl.gz", limit=60)
    metas = [{"answer": p["answer"]} for p in probs]
    good = [p["solution"] for p in probs]
    bad = [p["solution"].rsplit("####", 1)[0] + f"#### {p['answer_number'] + 1}" for p in probs]
    out = verifier().score(rows(good + bad, metas + metas))
    values = out.get_column("value").to_list()
    assert values == [1.0] * 60 + [0.0] * 60
    assert json.loads(out.get_column("detail")[0])["extraction"] == "hashes"


def test_gsm8k_model_solutions_agree_with_upstream_correctness(shared_data):
    pairs = read_jsonl(shared_data / "gsm8k_solution_pairs.jsonl.gz", limit=80)
    texts = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    metas = [{"answer": p["reference_answer"]} for p in pairs] * 2
    values = verifier().score(rows(texts, metas)).get_column("value").to_list()
    assert values == [1.0] * 80 + [0.0] * 80


def test_missing_reference_is_a_row_error():
    out = verifier().score(rows(["#### 3"], [{}]))
    assert out.get_column("value")[0] is None
    assert "no 'answer'" in out.get_column("error")[0]


def humaneval(shared_data, limit):
    probs = read_jsonl(shared_data / "humaneval_prompts.jsonl.gz", limit=limit)
    metas = [{"test": p["test"], "entry_point": p["entry_point"], "prompt": p["prompt"]} for p in probs]
    return probs, metas


def test_humaneval_canonical_solutions_pass_and_broken_ones_fail(shared_data):
    probs, metas = humaneval(shared_data, 24)
    canonical = [p["canonical_solution"] for p in probs]
    broken = ["    return None\n" for _ in probs]
    out = verifier(task="code", timeout_s=10).score(rows(canonical + broken, metas + metas))
    statuses = [json.loads(d)["status"] for d in out.get_column("detail")]
    assert out.get_column("value").to_list() == [1.0] * 24 + [0.0] * 24, statuses
    assert set(statuses[24:]) == {"failed"}


def test_code_responses_as_full_functions_in_fences(shared_data):
    probs, metas = humaneval(shared_data, 3)
    # a chat model's style: the whole function in a fenced block, with prose around it
    full = [f"Here you go:\n```python\n{p['prompt']}{p['canonical_solution']}```\nDone." for p in probs]
    hostile = ["    import os\n    os.system('touch /tmp/pwned')\n"] * 3
    out = verifier(task="code").score(rows(full + hostile, metas + metas))
    assert out.get_column("value").to_list() == [1.0] * 3 + [0.0] * 3
    assert {json.loads(d)["status"] for d in out.get_column("detail")[3:]} == {"refused"}
