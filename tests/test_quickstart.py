"""The quickstart: a verifiable addition task, a tiny pre-trained policy, and the whole loop end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curation import quickstart as qs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_problems_are_distinct_deterministic_and_exclude_what_is_held_out():
    a = qs.addition_problems(50, seed=3)
    assert a == qs.addition_problems(50, seed=3) and len(set(a)) == 50
    assert all(10 <= x <= 99 and 10 <= y <= 99 for x, y in a)
    assert all(qs.carries(*p) for p in qs.addition_problems(50, seed=3, carry=True))
    assert not any(qs.carries(*p) for p in qs.addition_problems(50, seed=3, carry=False))
    assert qs.carries(15, 27) and not qs.carries(15, 24)
    held = qs.heldout_problems(qs.CLOSED_LOOP_HELDOUT[0])
    assert all(qs.carries(*p) for p in held)  # the skill pre-training leaves under-trained
    pools = set(qs.pool_problems(*qs.POOL)) | set(qs.pool_problems(*qs.CLOSED_LOOP_POOL))
    assert all(qs.carries(*p) for p in pools) and not held & pools
    assert qs.reserved_problems(qs.CLOSED_LOOP_POOL[0]) == held | pools  # what the closed loop's policy never sees
    # the quickstart's policy reserves the first 512 of the closed-loop pool (its build before rounds took fresh problems)
    first = set(qs.pool_problems(qs.QUICKSTART_RESERVED_POOL, qs.CLOSED_LOOP_POOL[1]))
    assert qs.reserved_problems() == held | set(qs.pool_problems(*qs.POOL)) | first and first < pools
    assert qs.heldout_problems() < held and len(held) == 500
    with pytest.raises(ValueError, match="cannot draw"):
        qs.addition_problems(82, seed=0, digits=1)
    with pytest.raises(ValueError, match="cannot draw"):
        qs.addition_problems(46, seed=0, digits=1, carry=True)  # 45 one-digit pairs carry


def test_shipped_prompt_files_are_the_ones_the_code_makes(tmp_path):
    """The policy builder leaves out exactly the problems of the held-out file in examples/."""
    pool, heldout = qs.write_quickstart_data(tmp_path)
    assert pool.read_bytes() == (EXAMPLES / "data" / "addition-pool.jsonl").read_bytes()
    assert heldout.read_bytes() == (EXAMPLES / "data" / "addition-heldout.jsonl").read_bytes()
    big_pool, big_heldout = qs.write_closed_loop_data(tmp_path)
    assert big_pool.read_bytes() == (EXAMPLES / "data" / "addition-pool-1024.jsonl").read_bytes()
    assert big_heldout.read_bytes() == (EXAMPLES / "data" / "addition-heldout-500.jsonl").read_bytes()
    # the closed loop's 500 held-out problems start with the quickstart's 200
    assert big_heldout.read_text().splitlines()[:200] == heldout.read_text().splitlines()
    row = json.loads(heldout.read_text().splitlines()[0])
    a, b = map(int, row["messages"][0]["content"].rstrip("=").split("+"))
    assert row["answer"] == str(a + b)


def test_verifier_reads_the_answer():
    assert qs.is_correct("82", "82") and qs.is_correct(" 82<|im_end|>", "82")
    assert not qs.is_correct("83", "82") and not qs.is_correct("", "82") and not qs.is_correct(None, "82")


def test_pretraining_builds_once_and_learns(tmp_path):
    """A short run lowers the loss below the random-init model's and is not repeated."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = {"steps": 40, "batch_size": 16, "holdout": qs.heldout_problems()}
    path = qs.pretrain_policy(tmp_path / "policy", **settings)
    marker = path / "curate_quickstart_policy.json"
    assert json.loads(marker.read_text())["steps"] == 40
    stamp = marker.stat().st_mtime_ns
    assert qs.pretrain_policy(tmp_path / "policy", **settings) == path and marker.stat().st_mtime_ns == stamp
    # a folder built with other settings (an older quickstart's share of carries) is not reused
    qs.pretrain_policy(tmp_path / "policy", **{**settings, "steps": 2, "carry_share": 0.5})
    assert json.loads(marker.read_text())["carry_share"] == 0.5
    qs.pretrain_policy(tmp_path / "policy", **settings)

    tok = AutoTokenizer.from_pretrained(path)
    batch = [qs._chat_ids(tok, qs.question(a, b), str(a + b)) for a, b in qs.addition_problems(32, seed=9)]
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), tok.pad_token_id)
    labels = torch.full((len(batch), width), -100)
    for i, (x, start) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, start : len(x)] = torch.tensor(x[start:])

    def loss(model_dir):
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss.item()

    assert loss(path) < loss(tmp_path / "policy.base") - 1.0
    acc = qs.task_accuracy(path, qs.addition_prompts(16, seed=9))
    assert 0.0 <= acc <= 1.0


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    """`curate run examples/quickstart.yaml` from a fresh checkout: builds the policy, runs every stage,
    prints accuracy before / after / control; an unchanged re-run calls no model and publishes nothing."""
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns(".curate"))
    catalog = tmp_path / "catalog"

    def curate_run():
        proc = subprocess.run(
            [sys.executable, "-m", "curation", "run", "examples/quickstart.yaml", "--catalog", str(catalog), "--json"],
            cwd=tmp_path, env={**os.environ}, capture_output=True, text=True, timeout=1500,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(proc.stdout)

    first = curate_run()
    stages = {s["stage"]: s for s in first["stages"]}
    assert list(stages) == ["sources", "generate", "score", "pairs", "select", "publish", "train", "evaluate"]
    assert (tmp_path / ".curate" / "quickstart" / "policy" / "curate_quickstart_policy.json").is_file()
    assert stages["generate"]["rows_out"] == 256 * 8 and stages["generate"]["calls"] > 0
    assert stages["score"]["rows_out"] == 2 * 256 * 8  # verifier + reward model
    assert 0 < stages["select"]["rows_out"] < stages["pairs"]["rows_out"]
    assert first["version"] == "quickstart-addition@v1"
    metrics = stages["evaluate"]["detail"]["metrics"]
    assert set(metrics) == {"before", "after", "control"}
    assert 0.1 <= metrics["before"]["pass@1"] <= 0.8  # right sometimes, not always
    # the quickstart's promise: verified on-policy pairs teach the under-trained skill, above both baselines
    intervals = stages["evaluate"]["detail"]["intervals"]
    assert intervals["after_vs_before"]["low"] > 0 and intervals["after_vs_control"]["low"] > 0
    assert stages["evaluate"]["detail"]["decoding"] == "greedy"
    assert stages["train"]["detail"]["control_rows"] == stages["publish"]["rows_out"]  # same size, random pairs
    print("quickstart accuracy:", {k: v["pass@1"] for k, v in metrics.items()})

    again = curate_run()
    assert all(s["cached"] for s in again["stages"])
    assert sum(s["calls"] for s in again["stages"]) == 0 and again["version"] == "quickstart-addition@v1"


def test_closed_loop_recipe_evaluates_on_problems_its_policy_never_saw():
    from curation.recipe import load_recipe

    recipe = load_recipe(EXAMPLES / "closed-loop.yaml")
    assert recipe.rounds == 2 and recipe.evaluate.control and recipe.evaluate.win_rate_prompts == 500
    pool = Path(recipe.sources[0].path).read_text().splitlines()
    assert recipe.round_prompts * recipe.rounds == len(pool) == 1024  # each round its own fresh problems
    heldout = Path(recipe.evaluate.prompts)
    assert heldout.name == "addition-heldout-500.jsonl" and len(heldout.read_text().splitlines()) == 500
    assert any(m.build == "quickstart_policy" for m in recipe.models)
    for recipe_file in ("closed-loop.yaml", "quickstart.yaml"):  # every problem a recipe shows: never pre-trained
        shown = load_recipe(EXAMPLES / recipe_file)
        for path in (shown.evaluate.prompts, *(s.path for s in shown.sources)):
            problems = {tuple(map(int, json.loads(line)["messages"][0]["content"].rstrip("=").split("+")))
                        for line in Path(path).read_text().splitlines()}
            options = next(m.options for m in shown.models if m.build == "quickstart_policy")
            assert problems <= qs.reserved_problems(options.get("closed_loop_pool", qs.QUICKSTART_RESERVED_POOL))
