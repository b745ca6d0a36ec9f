"""`curate train` and `curate eval` end to end through the CLI, with --json, and their errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from curation.cli import _load_commands, app

_load_commands()
runner = CliRunner()


def _text(res) -> str:
    return " ".join(res.output.split())  # rich wraps long messages


def test_train_then_eval_through_the_cli(tiny_rm, hh_catalog, tmp_path):
    out = tmp_path / "rm-cli"
    cfg = tmp_path / "train.yaml"
    cfg.write_text("train:\n  max_steps: 2\n  batch_size: 4\n  max_length: 256\n  learning_rate: 0.001\n")
    res = runner.invoke(app, ["train", "hh@v1", "--method", "reward", "--model", str(tiny_rm), "--out", str(out),
                              "--config", str(cfg), "--catalog", str(hh_catalog.root), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["method"] == "reward" and summary["metrics"]["steps"] == 2 and summary["model_id"]
    assert summary["model_id"] in hh_catalog.models()["model_id"].to_list()
    res = runner.invoke(app, ["eval", str(out), "--pairs", "hh@v1:test", "--catalog", str(hh_catalog.root), "--json"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    assert ev["kind"] == "reward" and ev["eval_id"] and 0.0 <= ev["metrics"]["accuracy"] <= 1.0
    assert ev["eval_id"] in hh_catalog.evaluations()["eval_id"].to_list()
    iv = ev["intervals"]["accuracy"]  # the accuracy with its interval over the held-out pairs
    assert iv["low"] <= iv["mean"] == ev["metrics"]["accuracy"] <= iv["high"] and "bootstrap" in ev["interval"]
    res = runner.invoke(app, ["eval", str(out), "--pairs", "hh@v1:test", "--catalog", str(hh_catalog.root)])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.strip("│ ").startswith("accuracy "))
    assert "95% CI" in res.output and f"{iv['low']:.4g} to {iv['high']:.4g}" in row
    assert "accuracy_low" not in res.output  # the bounds sit in the interval column, not as rows of their own


def test_cli_errors_are_clear_and_early(tiny_chat, hh_catalog, tmp_path):
    res = runner.invoke(app, ["train", "hh@v7", "--model", str(tiny_chat), "--out", str(tmp_path / "x"),
                              "--catalog", str(hh_catalog.root)])
    assert res.exit_code == 1 and "hh" in _text(res) and "v7" in _text(res)
    res = runner.invoke(app, ["train", "hh@v1", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x"),
                              "--catalog", str(hh_catalog.root)])
    assert res.exit_code == 1 and "does not exist" in _text(res)
    res = runner.invoke(app, ["train", "hh@v1", "--method", "cdpo", "--loss", "ipo", "--model", str(tiny_chat),
                              "--out", str(tmp_path / "x"), "--catalog", str(hh_catalog.root)])
    assert res.exit_code == 1 and "cdpo" in _text(res)
    res = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--pairs", "hh@v1:test", "--catalog", str(hh_catalog.root)])
    assert res.exit_code == 1 and "does not exist" in _text(res)
    assert not (tmp_path / "x").exists()
