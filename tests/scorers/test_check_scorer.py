"""`curate check-scorer` and `check_scorer`: agreement with human labels on real labelled data."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from curation.cli import _load_commands, app
from curation.scorers import SCORERS
from curation.scorers.fitness import check_scorer, spearman

from .conftest import ScriptedJudge, read_jsonl
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
