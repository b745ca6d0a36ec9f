"""The loop without Prefect (curation.stages): fingerprint skipping, resume shard by shard, --until, what recomputes, the run record, the stage wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.quickstart import write_prompts_jsonl
from curation.recipe import load_recipe
from curation.stages import RunContext, Stage, StageError, execute, run_recipe, stage_order


def _recipe(tmp: Path, data: dict) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _existing(shared_data: Path, budget: float = 0.5) -> dict:
    return {
        "name": "pandalm-small",
        "sources": [{"path": str(shared_data / "pandalm_testset.jsonl.gz"), "limit": 120}],
        "select": [{"kind": "dedup", "method": "exact"}, {"kind": "length", "fraction": budget}],
    }


def _by_stage(reports):
    return {r.stage: r for r in reports}


def test_stage_order_and_until():
    assert stage_order("select") == ["sources", "generate", "score", "pairs", "select"]
    assert stage_order(None)[-1] == "evaluate"
    with pytest.raises(ValueError, match="unknown stage 'selct'"):
        stage_order("selct")


def test_unchanged_rerun_is_all_cache_hits_and_publishes_nothing_new(tmp_path, shared_data):
    from curation.catalog import open_catalog

    recipe = load_recipe(_recipe(tmp_path, _existing(shared_data)))
    catalog = tmp_path / "catalog"
    tables, first = run_recipe(recipe, catalog)
    assert [r.stage for r in first] == ["sources", "pairs", "select", "publish"]  # no generate/score/train asked for
    assert not any(r.cached for r in first)
    assert _by_stage(first)["select"].rows_out == 60 == _by_stage(first)["publish"].rows_out

    tables2, second = run_recipe(recipe, catalog)
    assert all(r.cached for r in second)
    assert {k: v.fingerprint for k, v in tables2.items()} == {k: v.fingerprint for k, v in tables.items()}
    assert open_catalog(catalog).versions("pandalm-small").height == 1  # the same version, not a new one


def test_changed_budget_recomputes_only_select_and_publish(tmp_path, shared_data):
    catalog = tmp_path / "catalog"
    run_recipe(load_recipe(_recipe(tmp_path, _existing(shared_data, 0.5))), catalog)
    _, reports = run_recipe(load_recipe(_recipe(tmp_path, _existing(shared_data, 0.25))), catalog)
    cached = {r.stage: r.cached for r in reports}
    assert cached == {"sources": True, "pairs": True, "select": False, "publish": False}
    assert _by_stage(reports)["publish"].detail["version"] == "pandalm-small@v2"
    assert _by_stage(reports)["publish"].rows_out == 30


def test_until_stops_before_publish(tmp_path, shared_data):
    from curation.catalog import open_catalog

    recipe = load_recipe(_recipe(tmp_path, _existing(shared_data)))
    tables, reports = run_recipe(recipe, tmp_path / "catalog", until="select")
    assert [r.stage for r in reports] == ["sources", "pairs", "select"]
    assert "decisions" in tables and "publish" not in tables
    assert open_catalog(tmp_path / "catalog").versions().height == 0


def test_stage_failure_names_the_stage_and_keeps_finished_work(tmp_path, shared_data):
    data = _existing(shared_data)
    data["select"] = [{"kind": "kmq", "k": 4, "fraction": 0.5}]  # human pairs have no margin for kMQ's quality
    recipe = load_recipe(_recipe(tmp_path, data))
    with pytest.raises(StageError, match=r"stage select: .*margin"):
        run_recipe(recipe, tmp_path / "catalog")
    data["select"] = [{"kind": "dedup"}]
    _, reports = run_recipe(load_recipe(_recipe(tmp_path, data)), tmp_path / "catalog")
    assert _by_stage(reports)["sources"].cached and _by_stage(reports)["pairs"].cached


def test_generation_resumes_shard_by_shard_without_model_calls(tmp_path, tiny_chat):
    """Generate in shards; an unchanged re-run calls no model; a lost shard is regenerated
    from the request cache (cache hits, zero calls) while the other shards are reused."""
    write_prompts_jsonl(tmp_path / "prompts.jsonl", 12, seed=5)
    recipe = load_recipe(_recipe(tmp_path, {
        "name": "gen",
        "sources": [{"path": "prompts.jsonl"}],
        "generate": {"backend": "transformers", "model": str(tiny_chat), "n": 2,
                     "sampling": {"max_tokens": 4, "seed": 1}},
        "score": [{"kind": "verify", "name": "correct"}],
    }))
    catalog = tmp_path / "catalog"
    tables, first = run_recipe(recipe, catalog, until="score", shard_size=5)
    gen = _by_stage(first)["generate"]
    assert (gen.shards, gen.shards_cached, gen.calls, gen.rows_out) == (3, 0, 24, 24)
    assert gen.tokens > 0
    assert _by_stage(first)["score"].rows_out == 24  # one verify score per candidate

    _, again = run_recipe(recipe, catalog, until="score", shard_size=5)
    gen2 = _by_stage(again)["generate"]
    assert gen2.cached and gen2.calls == 0 and gen2.cache_hits == 0 and gen2.shards_cached == 3

    # lose the combined artifact and one shard: only that shard runs, answered by the request cache
    Path(tables["candidates"].path).unlink()
    shard_files = sorted((catalog / "artifacts" / "generate.shard").glob("*.parquet"))
    shard_files[0].unlink()
    tables3, third = run_recipe(recipe, catalog, until="score", shard_size=5)
    gen3 = _by_stage(third)["generate"]
    assert (gen3.shards_cached, gen3.calls) == (2, 0)
    assert gen3.cache_hits in (5 * 2, 2 * 2)  # the lost shard's prompts x n (shards of 5, 5, 2)
    assert tables3["candidates"].fingerprint == tables["candidates"].fingerprint
    assert _by_stage(third)["score"].cached  # same candidates: scores reused


def test_a_budget_beyond_the_pool_is_a_warning_in_the_select_stage_report(tmp_path, shared_data):
    data = _existing(shared_data)
    data["select"] = [{"kind": "length", "budget": 5000}]
    _, reports = run_recipe(load_recipe(_recipe(tmp_path, data)), tmp_path / "catalog", until="select")
    [step] = _by_stage(reports)["select"].detail["steps"]
    assert step["kept"] == 120 and step["warnings"] == ["budget 5000 exceeds the 120 items this step saw; it kept at most 120"]


def test_run_recipe_records_the_run_with_its_stage_stats(tmp_path, shared_data):
    """run_recipe walks the same loop as the flow: the run and every stage's stats land in the catalog
    (it used not to pass the run to publish), and publish links the version to that run."""
    from curation.catalog import open_catalog

    recipe = load_recipe(_recipe(tmp_path, _existing(shared_data)))
    _, reports = run_recipe(recipe, tmp_path / "catalog")
    cat = open_catalog(tmp_path / "catalog")
    runs = cat.runs()
    assert runs.height == 1 and runs["name"][0] == "pandalm-small" and runs["status"][0] == "completed"
    stats = json.loads(runs["stats"][0])
    assert list(stats) == ["sources", "pairs", "select", "publish"] and stats["select"]["rows_out"] == 60
    dropped = {k: n for k, n in stats["select"]["counts"].items() if "dropped" in k}
    assert sum(dropped.values()) == stats["select"]["rows_in"] - 60 > 0  # every dropped item counted, by step and reason
    assert stats["publish"] == {**reports[-1].to_dict()}
    assert cat.versions("pandalm-small")["run_id"][0] == runs["run_id"][0]


def test_a_failed_run_is_recorded_with_the_stats_of_what_finished(tmp_path, shared_data):
    from curation.catalog import open_catalog

    data = _existing(shared_data)
    data["select"] = [{"kind": "kmq", "k": 4, "fraction": 0.5}]  # fails: human pairs have no margin
    with pytest.raises(StageError):
        run_recipe(load_recipe(_recipe(tmp_path, data)), tmp_path / "catalog")
    runs = open_catalog(tmp_path / "catalog").runs()
    assert runs["status"].to_list() == ["failed"]
    assert list(json.loads(runs["stats"][0])) == ["sources", "pairs"]


class _Counting(Stage):
    """A stage whose compute counts its calls and fails on demand."""

    name = "counting"
    outputs = {"out": ("counting", None)}

    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = 0, fail

    def fingerprint(self, recipe, tables, ctx):
        return "fp1"

    def compute(self, recipe, tables, ctx, report, run):
        self.calls += 1
        if self.fail:
            raise KeyError("boom")
        report.calls = 3
        return {"out": pl.DataFrame({"x": [1, 2]})}

    def summarize(self, recipe, tables, report):
        report.rows_out = tables["out"].rows


def test_the_stage_wrapper_skips_existing_outputs_and_names_the_failing_stage(tmp_path):
    ctx = RunContext(str(tmp_path))
    stage = _Counting()
    tables, first = execute(stage, None, {}, ctx)
    assert (stage.calls, first.cached, first.rows_out, first.calls) == (1, False, 2, 3)
    assert not list((tmp_path / "artifacts" / "counting").glob(".*.tmp"))  # written atomically, no leftovers
    again, second = execute(stage, None, {}, ctx)
    assert (stage.calls, second.cached, second.rows_out, second.calls) == (1, True, 2, 0)
    assert again["out"] == tables["out"]
    with pytest.raises(StageError, match="stage counting: 'boom'"):
        execute(_Counting(fail=True), None, {}, RunContext(str(tmp_path / "other")))
