"""`curate check-scorer` and `check_scorer`: agreement with human labels on real labelled data."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from curation.cli import _load_commands, app
from curation.recipe import RecipeError, validate_recipe
from curation.scorers import SCORERS, run_scorers
from curation.scorers.base import ScorerError
from curation.scorers.fitness import check_scorer, spearman, wilson_interval

from .conftest import ScriptedJudge, candidate_rows, read_jsonl
from .test_judge import longer_wins

_load_commands()
runner = CliRunner()


def longer_is_better_by_hand(rows):
    """The README's measure, computed straight from the file: ties in length count 1/2."""
    votes = [1.0 if len(r["chosen"]) > len(r["rejected"]) else 0.5 if len(r["chosen"]) == len(r["rejected"]) else 0.0 for r in rows]
    return sum(votes) / len(votes)


@pytest.mark.parametrize("subset, readme", [("LLMBar/Natural", 0.565), ("LLMBar/Adversarial/Neighbor", 0.119)])
def test_length_heuristic_reproduces_the_readme_baseline(shared_data, subset, readme):
    path = shared_data / "llmbar.jsonl.gz"
    report = check_scorer({"name": "len", "kind": "heuristic", "unit": "chars"}, path, where={"subset": subset})
    raw = [r for r in read_jsonl(path) if r["subset"] == subset]
    assert report.pairs == len(raw) and report.failed == 0
    assert report.agreement == pytest.approx(longer_is_better_by_hand(raw))
    assert round(report.agreement, 3) == readme
    assert report.prefers_longer == 1.0 and report.length_correlation == pytest.approx(1.0)


def test_pairwise_judge_position_consistency(shared_data):
    path = shared_data / "llmbar.jsonl.gz"
    fair = SCORERS.build("pairwise_judge", {"name": "j", "kind": "pairwise_judge", "generator": {"backend": "openai", "model": "m"}})
    fair.generator = ScriptedJudge(longer_wins)
    report = check_scorer(fair, path, where={"subset": "CaseStudy/Normal"})
    raw = [r for r in read_jsonl(path) if r["subset"] == "CaseStudy/Normal"]
    assert report.position_consistency == 1.0
    assert report.agreement == pytest.approx(longer_is_better_by_hand(raw))  # a length judge is a length heuristic
    biased = SCORERS.build("pairwise_judge", {"name": "j", "kind": "pairwise_judge", "generator": {"backend": "openai", "model": "m"}})
    biased.generator = ScriptedJudge(lambda prompt: "[[A]]")
    report = check_scorer(biased, path, limit=10)
    assert report.position_consistency == 0.0 and report.agreement == 0.5 and report.pairs == 10


def test_ties_are_left_out(shared_data):
    report = check_scorer({"name": "len", "kind": "heuristic", "unit": "chars"}, shared_data / "pandalm_testset.jsonl.gz")
    rows = read_jsonl(shared_data / "pandalm_testset.jsonl.gz")
    assert report.pairs < sum(not r["tie"] for r in rows)  # ties dropped (and exact duplicates merged on import)
    assert 0.6 < report.agreement < 0.75  # README: 0.674 over all non-tie rows


def test_wilson_interval_by_hand():
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)  # the textbook value
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.0 < high < 0.35  # never outside [0, 1], unlike the normal approximation
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize("data, where", [("llmbar.jsonl.gz", {"subset": "LLMBar/Natural"}), ("pandalm_testset.jsonl.gz", {})])
def test_intervals_contain_the_estimates(shared_data, data, where):
    report = check_scorer({"name": "len", "kind": "heuristic", "unit": "words"}, shared_data / data, where=where)
    for value, ci in [(report.agreement, report.agreement_ci), (report.longer_is_better, report.longer_is_better_ci)]:
        assert ci[0] < value < ci[1]
        assert ci[1] - ci[0] < 4 / report.scored**0.5  # about ±2 standard errors, not [0, 1]
    assert report.position_consistency is None and report.position_consistency_ci is None  # pointwise


def test_position_consistency_interval(shared_data):
    judge = SCORERS.build("pairwise_judge", {"name": "j", "kind": "pairwise_judge", "generator": {"backend": "openai", "model": "m"}})
    flips = iter([True, False] * 100)  # every other pair: the verdict follows the position, not the content
    judge.generator = ScriptedJudge(lambda prompt: "[[A]]" if next(flips) else longer_wins(prompt))
    report = check_scorer(judge, shared_data / "llmbar.jsonl.gz", where={"subset": "CaseStudy/Normal"})
    low, high = report.position_consistency_ci
    assert 0.0 < report.position_consistency < 1.0 and low < report.position_consistency < high


def fitness_scorer(shared_data, min_agreement, **extra):
    fitness = {"data": str(shared_data / "llmbar.jsonl.gz"), "where": {"subset": "LLMBar/Natural"}, "min_agreement": min_agreement, **extra}
    return {"name": "len", "kind": "heuristic", "unit": "chars", "fitness": fitness}


def test_fitness_threshold_refuses_or_admits_the_scorer(shared_data):
    candidates = candidate_rows(read_jsonl(shared_data / "hh_rlhf_test.jsonl.gz", limit=5))
    prompts = candidates.select("prompt_id", "messages", pl.lit(None, dtype=pl.String).alias("meta")).unique("prompt_id")
    measured = check_scorer({"name": "len", "kind": "heuristic", "unit": "chars"}, shared_data / "llmbar.jsonl.gz",
                            where={"subset": "LLMBar/Natural"}).agreement  # 0.565
    with pytest.raises(ScorerError) as exc:
        run_scorers([fitness_scorer(shared_data, measured + 0.01)], prompts, candidates)
    message = str(exc.value)
    assert "scorer 'len' (heuristic)" in message and f"{measured:.3f}" in message and "min_agreement" in message
    scores = run_scorers([fitness_scorer(shared_data, measured - 0.01)], prompts, candidates)
    assert scores.height == candidates.height and scores["value"].null_count() == 0


@pytest.mark.parametrize("min_agreement, refused", [(0.6, True), (0.5, False)])
def test_a_run_refuses_an_unfit_scorer_before_scoring(tmp_path, shared_data, min_agreement, refused):
    import yaml

    from curation.recipe import load_recipe
    from curation.stages import StageError, run_recipe

    scorer = fitness_scorer(shared_data, min_agreement)  # measured agreement 0.565 on LLMBar/Natural
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "fit", "sources": [{"path": str(shared_data / "pandalm_testset.jsonl.gz"), "limit": 20}],
                                    "score": [scorer]}))
    recipe = load_recipe(path)
    if refused:
        with pytest.raises(StageError, match=r"stage score .*scorer 'len' \(heuristic\): agreement with human labels 0\.565"):
            run_recipe(recipe, tmp_path / "catalog", until="score")
    else:
        _, reports = run_recipe(recipe, tmp_path / "catalog", until="score")
        assert [r.stage for r in reports] == ["sources", "score"]
        assert reports[1].rows_out == reports[0].detail["candidates"] > 0  # every candidate scored


def test_fitness_position_consistency_threshold(shared_data):
    from curation.scorers.fitness import require_fitness

    config = {"name": "j", "kind": "pairwise_judge", "generator": {"backend": "openai", "model": "m"},
              "fitness": {"data": str(shared_data / "llmbar.jsonl.gz"), "limit": 8, "min_agreement": 0.0, "min_position_consistency": 0.5}}
    biased = SCORERS.build("pairwise_judge", config)
    biased.generator = ScriptedJudge(lambda prompt: "[[A]]")
    with pytest.raises(ScorerError, match="position consistency 0.000"):
        require_fitness(biased)
    fair = SCORERS.build("pairwise_judge", {**config, "name": "fair"})  # another fingerprint: measured anew
    fair.generator = ScriptedJudge(longer_wins)
    assert require_fitness(fair).position_consistency == 1.0


def test_recipe_resolves_and_checks_the_fitness_file(tmp_path, shared_data):
    labelled = tmp_path / "labels.jsonl.gz"
    labelled.write_bytes((shared_data / "llmbar.jsonl.gz").read_bytes())
    recipe = {"name": "r", "sources": [{"path": str(shared_data / "hh_rlhf_test.jsonl.gz")}],
              "score": [{"name": "len", "kind": "heuristic", "fitness": {"data": "labels.jsonl.gz", "min_agreement": 0.6}}]}
    loaded = validate_recipe(recipe, base_dir=tmp_path)
    assert loaded.score[0].fitness.data == str(labelled)
    recipe["score"][0]["fitness"] = {"data": "missing.jsonl.gz", "min_agreement": 1.5}
    with pytest.raises(RecipeError) as exc:
        validate_recipe(recipe, base_dir=tmp_path)
    text = str(exc.value)
    assert "score[0].fitness.data: not found" in text and "score[0].fitness.min_agreement" in text


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_cli_json_with_a_reward_model(shared_data, tiny_rm, tmp_path):
    cfg = tmp_path / "scorer.yaml"
    cfg.write_text(f"name: tiny\nkind: reward_model\nmodel: {tiny_rm}\nbatch_size: 4\n")
    res = runner.invoke(app, ["check-scorer", "--scorer-config", str(cfg), "--pairs", str(shared_data / "llmbar.jsonl.gz"), "--limit", "6", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["scorer"], out["kind"], out["pairs"], out["scored"], out["failed"]) == ("tiny", "reward_model", 6, 6, 0)
    assert 0 <= out["agreement"] <= 1


def test_cli_table_and_options(shared_data):
    res = runner.invoke(
        app,
        ["check-scorer", "--kind", "heuristic", "-o", "unit=chars", "--pairs", str(shared_data / "llmbar.jsonl.gz"), "--where", "subset=LLMBar/Natural"],
    )
    assert res.exit_code == 0, res.output
    assert "agreement" in res.output and "0.565" in res.output
    assert "95% CI" in res.output and "0.467-0.658" in res.output  # Wilson, 100 pairs


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kind", "nope"], "unknown scorer 'nope'"),
        (["--kind", "reward_model", "-o", "model=/no/such/model"], "does not exist"),
        (["--kind", "heuristic", "--where", "subset=Nope"], "no pair matches"),
        (["--kind", "heuristic", "-o", "unit=miles"], "unit"),
        ([], "give either --scorer-config"),
    ],
)
def test_cli_errors_are_clear(shared_data, args, message):
    res = runner.invoke(app, ["check-scorer", "--pairs", str(shared_data / "llmbar.jsonl.gz"), *args])
    assert res.exit_code == 1
    assert message in " ".join(res.output.split())
