"""KTO's desirable_weight from the data's balance, and encoder reward models (MiniLM) trained from
conversational pairs through the documented plain template."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from curation.cli import _load_commands, app
from curation.export import PLAIN_CHAT_TEMPLATE, kto_balance, to_view
from curation.rows import version_rows
from curation.sources import read_source
from curation.train import train

_load_commands()
runner = CliRunner()


def test_encoder_reward_model_trains_from_conversational_pairs(hh_catalog, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from curation.embed import default_model

    minilm = default_model()
    assert not AutoTokenizer.from_pretrained(minilm).chat_template  # the case that used to fail
    out = tmp_path / "minilm-rm"
    res = runner.invoke(app, ["train", "hh@v1", "--method", "reward", "--model", minilm, "--out", str(out),
                              "--max-steps", "1", "--batch-size", "4", "--catalog", str(hh_catalog.root), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["metrics"]["steps"] == 1
    run = json.loads((out / "curate_run.json").read_text())
    assert run["chat_template"].startswith("plain") and run["config"]["max_length"] == 512  # MiniLM's positions
    config = AutoConfig.from_pretrained(out)
    assert config.architectures == ["BertForSequenceClassification"] and config.num_labels == 1
    tok = AutoTokenizer.from_pretrained(out)  # the template travels with the model, so scoring renders alike
    assert tok.chat_template == PLAIN_CHAT_TEMPLATE
    row = hh_catalog.load("hh@v1:train").row(0, named=True)
    conversation = row["prompt"] + [{"role": "assistant", "content": row["chosen"]}]
    ids = tok.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and ids.count(tok.cls_token_id) == 1
    text = tok.apply_chat_template(conversation, tokenize=False)
    assert f"Human: {row['prompt'][-1]['content']}\n\nAssistant: {row['chosen']}" in text

    res = runner.invoke(app, ["eval", str(out), "--pairs", "hh@v1:test", "--catalog", str(hh_catalog.root), "--json"])
    assert res.exit_code == 0, res.output
    assert 0.0 <= json.loads(res.stdout)["metrics"]["accuracy"] <= 1.0


def _ae2_prompts(shared_data: Path, n_prompts: int = 2) -> pl.DataFrame:
    """All pairs of the AlpacaEval-2 prompts with the shortest texts: the reference answer recurs
    across a prompt's pairs, so its KTO view is imbalanced, as on the whole set."""
    data = read_source(shared_data / "alpaca_eval2_gpt4turbo_pairs.jsonl.gz")
    rows, _ = version_rows({"prompts": data.prompts, "candidates": data.candidates, "pairs": data.pairs})
    size = rows.group_by("prompt_id").agg(
        (pl.col("chosen").str.len_chars() + pl.col("rejected").str.len_chars()).max().alias("longest"), pl.len().alias("n"))
    short = size.filter(pl.col("n") >= 5).sort("longest", "prompt_id").head(n_prompts)["prompt_id"]
    return rows.filter(pl.col("prompt_id").is_in(short.implode()))


def test_kto_sets_desirable_weight_from_the_balance(shared_data: Path, tiny_chat, tmp_path: Path, fast, caplog) -> None:
    rows = _ae2_prompts(shared_data)
    balance = kto_balance(to_view(rows, "trl_kto").rows["label"])
    assert balance["desirable"] != balance["undesirable"]
    settings = {**fast, "max_steps": 1, "max_length": 128, "record": False}
    caplog.set_level(logging.WARNING)
    result = train(rows, method="kto", model=str(tiny_chat), out=str(tmp_path / "auto"), **settings)
    run = json.loads((result.path / "curate_run.json").read_text())
    assert run["config"]["desirable_weight"] == balance["desirable_weight"]
    assert not any("desirable_weight in" in r.getMessage() for r in caplog.records)  # TRL's balance check is content
    caplog.clear()
    train(rows, method="kto", model=str(tiny_chat), out=str(tmp_path / "even"), desirable_weight=1.0, **settings)
    assert any("desirable_weight in" in r.getMessage() for r in caplog.records)  # and would not be with weight 1


def test_training_counts_the_pairs_its_view_skipped(shared_data: Path, tiny_rm, tmp_path: Path, fast) -> None:
    data = read_source(shared_data / "hh_rlhf_test.jsonl.gz")
    rows, _ = version_rows({"prompts": data.prompts, "candidates": data.candidates, "pairs": data.pairs})
    flag = rows["meta"].str.json_path_match("$.response_has_extra_turns") == "true"
    short = pl.col("chosen").str.len_chars() + pl.col("rejected").str.len_chars()
    frame = pl.concat([rows.filter(flag).sort(short).head(3), rows.filter(~flag).sort(short).head(8)])
    result = train(frame, method="reward", model=str(tiny_rm), out=str(tmp_path / "rm"), **{**fast, "max_steps": 1, "record": False})
    assert result.metrics["skipped_by_view"] == 3


def test_kto_view_warning_counts_completions_apart_from_pairs(shared_data: Path, caplog) -> None:
    """AlpacaEval-2 shares baseline answers: KTO drops repeated completions, which are not skipped pairs."""
    from types import SimpleNamespace

    from curation.train.data import to_trl

    rows = _ae2_prompts(shared_data)
    view = to_view(rows, "trl_kto")
    dropped = view.skipped["duplicate_completion"] + view.skipped.get("contradictory_label", 0)
    assert view.quarantine.height == 0 and dropped > 0
    caplog.set_level(logging.WARNING)
    to_trl(rows, SimpleNamespace(method="kto"))
    (msg,) = [r.getMessage() for r in caplog.records if "trl_kto view" in r.getMessage()]
    assert f"skipped 0 of {rows.height} pairs" in msg and f"and {dropped} of the view's completions" in msg
