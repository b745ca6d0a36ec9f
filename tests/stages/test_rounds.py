"""Two on-policy rounds in one run: round 2 samples fresh prompts with round 1's checkpoint and says
so; the random-pairs control samples its own pool with its own previous model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from curation.catalog import open_catalog
from curation.quickstart import write_prompts_jsonl
from curation.recipe import load_recipe
from curation.stages import read_record, run_recipe


def _recipe(tmp: Path, tiny_chat: Path, tiny_rm: Path) -> Path:
    write_prompts_jsonl(tmp / "pool.jsonl", 6, seed=5)
    write_prompts_jsonl(tmp / "heldout.jsonl", 5, seed=6)
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "rounds",
        "rounds": 2,
        "round_prompts": 3,  # 6 pool prompts: each round its own 3
        "sources": [{"path": "pool.jsonl"}],
        # a relative path, `..` and all: the version records the folder normalised
        "generate": {"backend": "transformers", "model": os.path.relpath(tiny_chat, tmp), "n": 2, "sampling": {"max_tokens": 4, "seed": 1}},
        "score": [{"kind": "verify", "name": "correct"}, {"kind": "reward_model", "name": "rm", "model": str(tiny_rm)}],
        "pairs": {"builder": "best_worst", "score": "rm"},
        "train": {"method": "dpo", "max_steps": 1, "batch_size": 2, "max_length": 64, "learning_rate": 1e-3,
                  "logging_steps": 1, "resume": False},
        "evaluate": {"prompts": "heldout.jsonl", "verify": {"kind": "verify"}, "win_rate_prompts": 5,
                     "max_new_tokens": 4, "control": True},
    }))
    return path


def test_two_rounds_are_linked_evaluated_and_recorded(tmp_path, tiny_chat, tiny_rm, capsys):
    recipe = load_recipe(_recipe(tmp_path, tiny_chat, tiny_rm))
    catalog_root = tmp_path / "catalog"
    tables, reports = run_recipe(recipe, catalog_root)
    rounds = [(r.detail.get("round"), r.stage, r.detail.get("chain")) for r in reports]
    assert rounds[0] == (1, "sources", None) and (2, "sources", None) not in rounds
    assert [s for k, s, c in rounds if k == 1] == ["sources", "generate", "score", "pairs", "select", "publish", "train", "evaluate"]
    assert [(s, c) for k, s, c in rounds if k == 2] == [
        ("generate", None), ("score", None), ("pairs", None), ("select", None), ("publish", None),
        ("generate", "control"), ("score", "control"), ("pairs", "control"), ("train", None), ("evaluate", None)]
    by_round = {(r.detail["round"], r.stage): r for r in reports if not r.detail.get("chain")}
    control_gen = next(r for r in reports if r.detail.get("chain") == "control" and r.stage == "generate")

    catalog = open_catalog(catalog_root)
    v1, v2 = by_round[1, "publish"].detail["version"], by_round[2, "publish"].detail["version"]
    assert (v1, v2) == ("rounds@v1", "rounds@v2")
    train1, train2 = by_round[1, "train"].detail, by_round[2, "train"].detail
    # round 1 was sampled by the base policy, round 2 by round 1's checkpoint
    assert catalog.generated_by(v1) == str(tiny_chat.resolve())
    assert catalog.generated_by(v2) == f"model:{train1['model_id']}"
    models = catalog.models().to_dicts()
    second = next(m for m in models if m["model_id"] == train2["model_id"])
    assert second["version_ref"].startswith(v2) and second["base_model"] == train1["model"]
    assert json.loads(second["config"])["reference_model"] == str(tiny_chat.resolve())  # the first policy stays the anchor
    # round 2 generated with round 1's model: its candidates differ from round 1's
    gen1, gen2 = by_round[1, "generate"], by_round[2, "generate"]
    assert gen1.fingerprint != gen2.fingerprint and gen2.calls > 0
    generators = set(catalog.load(v2, table="candidates")["generator"])
    assert generators and all(f":{Path(train1['model']).name}#" in g for g in generators)
    assert all(f":{tiny_chat.name}#" in g for g in catalog.load(v1, table="candidates")["generator"])

    # each round sampled its own 3 of the 6 pool prompts: round 2 never re-samples round 1's
    pool = set(catalog.load(v1, table="prompts")["prompt_id"]) | set(catalog.load(v2, table="prompts")["prompt_id"])
    prompts = {v: set(catalog.load(v, table="candidates")["prompt_id"]) for v in (v1, v2)}
    assert len(prompts[v1]) == len(prompts[v2]) == 3 and not prompts[v1] & prompts[v2] and len(pool) == 6
    assert gen1.rows_in == gen2.rows_in == control_gen.rows_in == 3

    # the control's round-2 pairs come from its own samples: its round-1 model generated them, on round 2's prompts
    from curation.stages import random_control
    from curation.stages.stage import RunContext

    store = RunContext(str(catalog_root)).store
    assert train2["control_pool"] == "its own samples" and train1["control_pool"] == "this round's pool"
    own = store.read(tables["control.candidates"])
    assert own.height and all(f":{Path(train1['control_model']).name}#" in g for g in own["generator"]), (own["generator"][0], train1["control_model"])
    assert set(own["prompt_id"]) == prompts[v2]
    picked = random_control(store, tables, n=4, seed=0)
    assert picked.height and set(picked["chosen_id"]) <= set(own["candidate_id"])
    assert not set(picked["chosen_id"]) & set(catalog.load(v2, table="candidates")["candidate_id"])

    # accuracy per round, against the same base policy, with intervals, in the summary and the catalog
    for k in (1, 2):
        detail = by_round[k, "evaluate"].detail
        assert set(detail["metrics"]) == {"before", "after", "control"}
        for name in ("after_vs_before", "after_vs_control"):
            iv = detail["intervals"][name]
            assert iv["low"] <= iv["mean"] <= iv["high"] and iv["prompts"] == 5
        assert detail["intervals"]["after_vs_before"]["mean"] == detail["metrics"]["after"]["pass@1"] - detail["metrics"]["before"]["pass@1"]
    record = read_record(tables["evaluate"])
    assert record["models"]["before"] == str(tiny_chat) and len(record["per_prompt"]["after"]) == 5
    evals = {json.loads(m)["round"]: (mid, json.loads(m)) for mid, m in catalog.evaluations().select("model_id", "metrics").rows()}
    assert set(evals) == {1.0, 2.0}
    assert evals[2.0][0] == train2["model_id"] and evals[1.0][0] == train1["model_id"]
    assert evals[2.0][1]["pass@1"] == by_round[2, "evaluate"].detail["metrics"]["after"]["pass@1"]

    # the run summary prints each round's table and its differences with their intervals
    from curation.commands.run import print_summary

    print_summary({"recipe": "rounds", "catalog": str(catalog_root), "version": v2, "seconds": 1.0,
                   "stages": [r.to_dict() for r in reports]})
    printed = capsys.readouterr().out
    assert "round 1: evaluation on held-out data (decoding: greedy)" in printed and "round 2: evaluation on held-out data" in printed
    assert "round 2: after - control:" in printed and "95% CI" in printed

    # an unchanged re-run reuses both rounds: no model call, no new version
    _, again = run_recipe(recipe, catalog_root)
    assert all(r.cached for r in again) and sum(r.calls for r in again) == 0
    assert catalog.versions("rounds")["version"].to_list() == [1, 2]


def test_too_few_prompts_for_fresh_rounds_fail_before_round_one(tmp_path, tiny_chat, tiny_rm):
    import pytest

    from curation.stages import StageError

    path = _recipe(tmp_path, tiny_chat, tiny_rm)
    spec = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**spec, "round_prompts": 4}))  # 2 rounds x 4 > the 6 pool prompts
    with pytest.raises(StageError, match=r"round_prompts: 4.*rounds: 2.*needs 8 .*the sources have 6"):
        run_recipe(load_recipe(path), tmp_path / "catalog")
    assert not (tmp_path / "catalog" / "cache" / "generate").exists()  # nothing was sampled
