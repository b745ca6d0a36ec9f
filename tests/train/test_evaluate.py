"""Evaluation numbers on hand-checkable cases, and on real trained runs recorded in the catalog."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from curation import schema
from curation.train import evaluate, train
from curation.train.evaluate import (
    bootstrap_interval,
    calibration,
    decoding,
    length_controlled_win_rate,
    pairwise_wins,
    pass_at_k,
)


def test_calibration_by_hand():
    # four pairs at p = 0.75, one of them wrong: accuracy 0.75 = confidence 0.75, so ECE = 0
    m = math.log(3)
    assert calibration([m, m, -m, m])["ece"] == pytest.approx(0.0, abs=1e-12)
    # confident (p = 0.9) and right half the time: ECE = |0.5 - 0.9| = 0.4; Brier = (0.01 + 0.81) / 2
    m = math.log(9)
    cal = calibration([m, m, -m, -m])
    assert cal["ece"] == pytest.approx(0.4)
    assert cal["brier"] == pytest.approx(0.41)
    assert cal["log_loss"] == pytest.approx((-math.log(0.9) - math.log(0.1)) / 2)
    wins = pairwise_wins([1.0, 2.0, 0.0, 5.0], [0.0, 1.0, 1.0, 5.0])
    assert wins == [1.0, 1.0, 0.0, 0.5] and sum(wins) / len(wins) == pytest.approx(2.5 / 4)  # equal scores count 1/2


def test_length_controlled_win_rate_by_hand():
    # longer outputs win 3 of 4, shorter 1 of 2; the saturated logistic fit reads
    # σ((logit 0.75 + logit 0.5) / 2) = √3 / (1 + √3) at zero length difference, below the raw 4/6
    wins = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    diff = [1.0, 1.0, 1.0, 1.0, -1.0, -1.0]
    assert length_controlled_win_rate(wins, diff) == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)), abs=1e-3)
    assert length_controlled_win_rate([1.0, 1.0], [3.0, -2.0]) == 1.0  # one outcome: the raw rate


def test_pass_at_k():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 5) == 1.0
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)


def test_decoding_is_named_as_verify_decodes():
    """One answer at temperature 0 is greedy; several answers are sampled, at 1 unless a temperature is set."""
    assert decoding({}) == "greedy"
    assert decoding({"n": 4}) == "sampled at temperature 1, 4 per prompt"
    assert decoding({"n": 1, "temperature": 0.7}) == "sampled at temperature 0.7, 1 per prompt"


def test_bootstrap_interval_of_a_paired_difference():
    import numpy as np

    rng = np.random.default_rng(1)
    base = rng.random(500) < 0.4
    better = base | (rng.random(500) < 0.1)  # right wherever the base is, and on ~6% more
    diff = bootstrap_interval(better, base)
    assert diff["mean"] == pytest.approx(better.mean() - base.mean())
    assert 0 < diff["low"] <= diff["mean"] <= diff["high"]
    # the same accuracies unpaired (the gain spread over other prompts) are within noise
    shuffled = bootstrap_interval(rng.permutation(better), base)
    assert shuffled["low"] < 0 < shuffled["high"]
    alone = bootstrap_interval(base)
    assert alone["low"] <= base.mean() <= alone["high"] and alone["prompts"] == 500
    assert bootstrap_interval([1, 1, 1], [0, 0, 0]) == {"mean": 1.0, "low": 1.0, "high": 1.0, "seeds": 1.0, "prompts": 3.0}


def test_bootstrap_interval_over_seeds_covers_training_noise():
    import numpy as np

    rng = np.random.default_rng(2)
    base = (rng.random(400) < 0.5).astype(float)
    # three training seeds: one helps on every prompt it touches, two do nothing
    runs = np.stack([np.maximum(base, rng.random(400) < 0.3), base, base])
    over_seeds = bootstrap_interval(runs, base)
    one_row = bootstrap_interval(runs.mean(axis=0), base)  # the seeds averaged away first
    assert over_seeds["seeds"] == 3 and over_seeds["mean"] == pytest.approx(one_row["mean"])
    assert over_seeds["low"] <= over_seeds["mean"] <= over_seeds["high"]
    assert over_seeds["high"] - over_seeds["low"] > 2 * (one_row["high"] - one_row["low"])
    assert over_seeds["low"] <= 0.0 < one_row["low"]  # only the seed-aware interval admits "no gain"
    with pytest.raises(ValueError, match="pair"):
        bootstrap_interval(runs, np.stack([base, base]))


def _pair(prompt: str, chosen: str, rejected: str, meta: str | None = None) -> dict:
    msgs = [{"role": "user", "content": prompt}]
    pid = schema.prompt_id(msgs)
    c, r = schema.response_id(pid, chosen), schema.response_id(pid, rejected)
    return {"pair_id": schema.pair_id(pid, c, r), "prompt_id": pid, "chosen_id": c, "rejected_id": r, "prompt": msgs,
            "chosen": chosen, "rejected": rejected, "meta": meta, "split": "test"}


def test_reward_model_right_on_three_of_four_pairs_reports_075(tiny_rm):
    from curation.scorers import SCORERS

    texts = [("what is two plus two", "four is the answer", "sorry i do not know"),
             ("say something kind", "thank you for your help", "no"),
             ("list three numbers", "one two three", "the a an is are"),
             ("how are you", "good thank you", "bad time people year")]
    rm = SCORERS.build("reward_model", {"name": "rm", "kind": "reward_model", "model": str(tiny_rm)})
    rows = pl.DataFrame({
        "candidate_id": [f"{i}{s}" for i in range(4) for s in "ab"], "prompt_id": [str(i) for i in range(4) for _ in "ab"],
        "messages": [[{"role": "user", "content": t[0]}] for t in texts for _ in "ab"],
        "text": [x for t in texts for x in t[1:]], "meta": pl.Series([None] * 8, dtype=pl.String)})
    score = dict(zip(*rm.score(rows).select("target_id", "value").to_dict(as_series=False).values()))
    pairs = []
    for i, (p, a, b) in enumerate(texts):
        hi, lo = (a, b) if score[f"{i}a"] > score[f"{i}b"] else (b, a)
        assert score[f"{i}a"] != score[f"{i}b"]
        pairs.append(_pair(p, hi, lo) if i < 3 else _pair(p, lo, hi))  # the RM is wrong on the last pair only
    pairs.append(_pair("tied prompt", "x y", "y x", meta=json.dumps({"tie": True})))
    res = evaluate(tiny_rm, schema.frame(pairs, "version_rows"), record=False)
    assert res.kind == "reward"
    assert res.metrics["accuracy"] == 0.75
    assert res.metrics["pairs"] == 4 and res.metrics["ties_excluded"] == 1
    # its interval is the bootstrap of the four per-pair outcomes: wide on four pairs, around 0.75
    iv = res.intervals["accuracy"]
    assert iv["low"] <= 0.5 and iv["low"] < iv["mean"] == 0.75 <= iv["high"]
    assert (res.metrics["accuracy_low"], res.metrics["accuracy_high"]) == (iv["low"], iv["high"])
    margins = res.per_pair["margin"].to_list()
    assert sum(m > 0 for m in margins) == 3
    assert res.metrics["ece"] == pytest.approx(calibration(margins)["ece"])


@pytest.fixture(scope="module")
def trained(tiny_chat, tiny_rm, hh_catalog, tmp_path_factory, fast):
    root = tmp_path_factory.mktemp("eval-runs")
    policy = train("hh@v1", catalog=hh_catalog, method="dpo", model=str(tiny_chat), out=str(root / "dpo"),
                   **{**fast, "max_steps": 6, "learning_rate": 2e-3})
    rm = train("hh@v1", catalog=hh_catalog, method="reward", model=str(tiny_rm), out=str(root / "rm"),
               **{**fast, "max_steps": 4})
    return policy, rm


def test_reward_run_evaluated_on_the_test_split_is_recorded(trained, hh_catalog):
    _, rm = trained
    res = evaluate(rm.path, "hh@v1:test", catalog=hh_catalog)
    test_rows = hh_catalog.load("hh@v1:test")
    assert res.kind == "reward" and res.data == "hh@v1:test"
    assert res.metrics["pairs"] == test_rows.height
    assert 0.0 <= res.metrics["accuracy"] <= 1.0 and 0.0 <= res.metrics["ece"] <= 0.5
    evals = hh_catalog.evaluations(rm.model_id)
    assert evals.height == 1 and evals["data_fingerprint"][0] == res.data_fingerprint
    assert json.loads(evals["metrics"][0])["accuracy"] == res.metrics["accuracy"]


def test_policy_implicit_reward_and_judged_win_rate(trained, hh_catalog, tiny_rm):
    policy, _ = trained
    judge = {"kind": "reward_model", "name": "fresh-rm", "model": str(tiny_rm)}
    res = evaluate(policy.path, "hh@v1:test", catalog=hh_catalog, judge=judge, win_rate_prompts=3, max_new_tokens=8)
    m = res.metrics
    assert res.kind == "policy" and res.warnings == []
    assert 0.0 <= m["implicit_reward_accuracy"] <= 1.0
    assert m["win_rate_prompts"] + m["win_rate_unjudged"] == 3
    assert 0.0 <= m["win_rate"] <= 1.0 and 0.0 <= m["win_rate_lc"] <= 1.0
    for name in ("implicit_reward_accuracy", "avg_logp_accuracy", "win_rate"):  # each with its interval
        iv = res.intervals[name]
        assert iv["low"] <= iv["mean"] == m[name] <= iv["high"]
    assert hh_catalog.evaluations(policy.model_id)["judge"].to_list() == ["fresh-rm"]
    # on its own training pairs the DPO policy ranks chosen above rejected more often than chance
    on_train = evaluate(policy.path, "hh@v1:train", catalog=hh_catalog, record=False)
    assert on_train.metrics["implicit_reward_accuracy"] > 0.5


def test_judge_that_scored_the_training_data_is_warned_about(trained, hh_catalog, tiny_rm):
    policy, _ = trained
    judge = {"kind": "reward_model", "name": "judge-rm", "model": str(tiny_rm)}  # the pairs' `score` column
    res = evaluate(policy.path, "hh@v1:test", catalog=hh_catalog, judge=judge, win_rate_prompts=2, max_new_tokens=4,
                   record=False)
    assert len(res.warnings) == 1 and "judge-rm" in res.warnings[0] and "training data" in res.warnings[0]


def test_reward_model_on_a_held_out_pairs_file_excludes_and_counts_ties(tiny_rm, shared_data):
    res = evaluate(tiny_rm, str(shared_data / "pandalm_testset.jsonl.gz"), limit=12, record=False)
    assert res.metrics["pairs"] == 12
    assert res.metrics["ties_excluded"] > 0  # pandalm marks ties; they carry no direction
    assert res.data.endswith("pandalm_testset.jsonl.gz")


def test_verifiable_prompts_report_pass_at_1_and_pass_at_k(trained, hh_catalog, shared_data):
    policy, _ = trained
    res = evaluate(policy.path, prompts=str(shared_data / "gsm8k_prompts_test.jsonl.gz"), verify={"kind": "verify"},
                   n=2, win_rate_prompts=3, max_new_tokens=8, catalog=hh_catalog, record=False)
    m = res.metrics
    assert m["verify_prompts"] == 3
    assert 0.0 <= m["pass@1"] <= m["pass@2"] <= 1.0
    assert set(res.intervals) == {"pass@1", "pass@2"}
    assert all(iv["low"] <= iv["mean"] <= iv["high"] for iv in res.intervals.values())
    assert "implicit_reward_accuracy" not in m  # prompts only: no pairs were ranked
