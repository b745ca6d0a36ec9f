"""Exports on real hh-rlhf and AlpacaEval-2 slices, read back with TRL's own data utilities and
trainers (one step on the tiny models): what a practitioner who already uses TRL would do."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import polars as pl
import pytest

from curation import schema
from curation.export import PLAIN_CHAT_TEMPLATE, ExportError, export_rows, kto_balance
from curation.rows import version_rows
from curation.sources import read_source

# A strict template in the manner of gemma's: it refuses roles that do not alternate.
STRICT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>assistant\n' }}{% endif %}"
)


def _rows(path: Path) -> pl.DataFrame:
    data = read_source(path)
    rows, _ = version_rows({"prompts": data.prompts, "candidates": data.candidates, "pairs": data.pairs})
    return rows


def _flag(rows: pl.DataFrame, name: str) -> pl.Series:
    return rows["meta"].str.json_path_match(f"$.{name}").fill_null("false") == "true"


def _echoes(rows: pl.DataFrame) -> pl.Series:
    """Answers that start with their prompt's last user turn (they broke the text export before)."""
    last = rows["prompt"].list.last().struct.field("content")
    return rows["chosen"].str.starts_with(last) | rows["rejected"].str.starts_with(last)


@pytest.fixture(scope="module")
def hh(shared_data: Path) -> pl.DataFrame:
    """Every hh-rlhf row the source flags, the rows whose answers echo the prompt, and 40 plain ones."""
    rows = _rows(shared_data / "hh_rlhf_test.jsonl.gz")
    flagged = _flag(rows, "response_has_extra_turns") | _flag(rows, "irregular_turns")
    plain = rows.filter(~flagged & ~_echoes(rows)).sort("pair_id").head(40)
    return pl.concat([rows.filter(flagged | _echoes(rows)), plain])


@pytest.fixture(scope="module")
def ae2_all(shared_data: Path) -> pl.DataFrame:
    return _rows(shared_data / "alpaca_eval2_gpt4turbo_pairs.jsonl.gz")


@pytest.fixture(scope="module")
def ae2(ae2_all: pl.DataFrame) -> pl.DataFrame:
    """AlpacaEval-2 rows whose answers echo the prompt, and 30 short ones."""
    short = ae2_all.filter(~_echoes(ae2_all)).sort(pl.col("chosen").str.len_chars() + pl.col("rejected").str.len_chars()).head(30)
    return pl.concat([ae2_all.filter(_echoes(ae2_all)), short])


@pytest.fixture(scope="module")
def tokenizer(tiny_chat: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_chat)


def _load(out: Path):
    import datasets

    return datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train")


def _quarantined(out: Path) -> dict[str, str]:
    return {r["pair_id"]: r["reason"] for r in map(json.loads, (out / "quarantine.jsonl").read_text().splitlines())}


def test_source_flags_and_role_alternation_quarantine_rows(hh: pl.DataFrame, tokenizer, tmp_path: Path) -> None:
    extra, irregular = _flag(hh, "response_has_extra_turns"), _flag(hh, "irregular_turns")
    assert extra.sum() > 0 and irregular.sum() > 0
    report = export_rows(hh, "trl_dpo", tmp_path / "dpo")
    assert report.skipped == {"irregular_turns": int(irregular.sum()), "response_has_extra_turns": int((extra & ~irregular).sum())}
    assert report.written == {"train": hh.height - int((extra | irregular).sum())}
    assert set(_quarantined(tmp_path / "dpo")) == set(hh.filter(extra | irregular)["pair_id"])
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = STRICT_TEMPLATE
    for row in _load(tmp_path / "dpo"):
        assert not row["chosen"][0]["content"].startswith(("Human:", "Assistant:"))
        strict.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)  # a strict template accepts every row
    refused = 0
    for prompt in hh.filter(irregular)["prompt"].to_list():
        with pytest.raises(Exception, match="roles must alternate"):
            strict.apply_chat_template(prompt, tokenize=False)
        refused += 1
    assert refused == irregular.sum()

    # without the source's flags our own checks find the same rows
    unflagged = hh.with_columns(pl.lit(None, dtype=pl.String).alias("meta"))
    report = export_rows(unflagged, "trl_dpo", tmp_path / "ours")
    reasons = _quarantined(tmp_path / "ours")
    assert {p for p, r in reasons.items() if r == "role_alternation"} == set(hh.filter(irregular)["pair_id"])
    starts = hh["chosen"].str.starts_with("Human:") | hh["rejected"].str.starts_with("Human:")
    assert set(hh.filter(starts & ~irregular)["pair_id"]) <= {p for p, r in reasons.items() if r == "answer_has_turn_markers"}

    with pytest.raises(ExportError, match=r"trl_dpo: row \d+ \(pair_id \w+\), field `meta`: (irregular_turns|response_has_extra_turns)"):
        export_rows(hh, "trl_dpo", tmp_path / "strict", on_invalid="fail")
    assert not (tmp_path / "strict").exists()


@pytest.mark.parametrize("which", ["hh", "ae2"])
def test_text_view_is_trls_own_rendering_with_one_template(which: str, hh, ae2, tokenizer, tmp_path: Path) -> None:
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    rows = hh if which == "hh" else ae2
    echo_ids = set(rows.filter(_echoes(rows))["pair_id"])
    assert echo_ids
    export_rows(rows, "trl_dpo", tmp_path / "dpo")
    conversational = {r["pair_id"]: r for r in _load(tmp_path / "dpo")}
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = PLAIN_CHAT_TEMPLATE
    for name, tok, arg in (("plain", plain, None), ("tokenizer", tokenizer, str(tokenizer.name_or_path))):
        report = export_rows(rows, "trl_dpo_text", tmp_path / name, tokenizer=arg)
        assert report.template.startswith("plain" if name == "plain" else "chat template of")
        text = _load(tmp_path / name)
        assert set(text["pair_id"]) == set(conversational) and echo_ids <= set(text["pair_id"])  # echoes export
        for row in text:
            assert not is_conversational(row)
            expected = maybe_apply_chat_template({k: conversational[row["pair_id"]][k] for k in ("prompt", "chosen", "rejected")}, tok)
            assert {k: row[k] for k in expected} == expected
            if name == "plain":  # single- and multi-turn prompts alike
                assert row["prompt"].startswith(("Human: ", "System: ")) and row["prompt"].endswith("\n\nAssistant:")


def _one_step(trainer_cls, config_cls, model: Path, tokenizer, dataset, tmp_path: Path, **extra):
    args = config_cls(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to="none",
                      logging_steps=1, save_strategy="no", max_length=256, bf16=False, dataloader_pin_memory=False, **extra)
    trainer = trainer_cls(model=str(model), args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return trainer


def test_trainers_take_each_export_for_a_step(hh, tiny_chat: Path, tiny_rm: Path, tokenizer, tmp_path: Path) -> None:
    import torch
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, RewardConfig, RewardTrainer

    torch.set_num_threads(1)
    few = hh.filter(~_flag(hh, "response_has_extra_turns") & ~_flag(hh, "irregular_turns")).sort(
        pl.col("chosen").str.len_chars() + pl.col("rejected").str.len_chars()).head(8)
    for fmt, trainer_cls, config_cls, model in (
        ("trl_dpo", DPOTrainer, DPOConfig, tiny_chat),
        ("trl_dpo_text", DPOTrainer, DPOConfig, tiny_chat),
        ("trl_reward", RewardTrainer, RewardConfig, tiny_rm),
        ("trl_kto", KTOTrainer, KTOConfig, tiny_chat),
    ):
        report = export_rows(few, fmt, tmp_path / fmt, tokenizer=str(tiny_chat) if fmt == "trl_dpo_text" else None)
        extra = {"desirable_weight": report.kto_balance["train"]["desirable_weight"]} if fmt == "trl_kto" else {}
        trainer = _one_step(trainer_cls, config_cls, model, tokenizer, _load(tmp_path / fmt), tmp_path / f"run-{fmt}", **extra)
        assert trainer.state.global_step == 1, fmt
        assert any("loss" in h for h in trainer.state.log_history), fmt


def test_kto_balance_gives_the_weight_trl_asks_for(ae2_all, tiny_chat: Path, tokenizer, tmp_path: Path, caplog) -> None:
    from trl import KTOConfig, KTOTrainer

    report = export_rows(ae2_all, "trl_kto", tmp_path / "kto")
    labels = pl.read_ndjson(tmp_path / "kto" / "train.jsonl")["label"]
    balance = report.kto_balance["train"]
    assert (balance["desirable"], balance["undesirable"]) == (int(labels.sum()), int((~labels).sum()))
    assert balance["desirable"] != balance["undesirable"]
    ratio = balance["desirable_weight"] * balance["desirable"] / balance["undesirable"]
    assert 1.0 <= ratio <= 4 / 3

    # KTOTrainer checks the balance on its dataset: the same rule on a short imbalanced slice
    view = pl.read_ndjson(tmp_path / "kto" / "train.jsonl").with_row_index("i")
    slice_ = pl.concat([view.filter(pl.col("label")).head(4), view.filter(~pl.col("label")).head(12)]).drop("i")
    import datasets

    dataset = datasets.Dataset(slice_.select("prompt", "completion", "label").to_arrow())
    weight = kto_balance(slice_["label"])["desirable_weight"]
    for dw, warns in ((1.0, True), (weight, False)):
        args = KTOConfig(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4, report_to="none",
                         max_length=64, bf16=False, dataloader_pin_memory=False, desirable_weight=dw)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            KTOTrainer(model=str(tiny_chat), args=args, train_dataset=dataset, processing_class=tokenizer)
        assert any("desirable_weight in" in r.getMessage() for r in caplog.records) == warns, dw


def test_kto_rows_keep_each_pairs_completions_together(hh, ae2_all, tmp_path: Path) -> None:
    """A head of the file is as balanced as the whole: hh (no repeated answers) alternates desirable and
    undesirable row by row, and the first 64 rows of AlpacaEval-2 (repeated baselines dropped) hold both."""
    export_rows(hh, "trl_kto", tmp_path / "hh")
    labels = pl.read_ndjson(tmp_path / "hh" / "train.jsonl")["label"].to_list()
    assert labels[:64] == [True, False] * 32
    export_rows(ae2_all, "trl_kto", tmp_path / "ae2")
    head = pl.read_ndjson(tmp_path / "ae2" / "train.jsonl")["label"].head(64)
    assert 0 < int(head.sum()) < 64


def test_canonical_views_are_named_as_such(hh, tmp_path: Path) -> None:
    report = export_rows(hh, "jsonl", tmp_path / "old-name")
    assert report.format == "canonical_jsonl" and "Not trainer input" in report.note
    assert report.written == {"train": hh.height} and report.skipped == {}
    saved = json.loads((tmp_path / "old-name" / "export.json").read_text())
    assert saved["format"] == "canonical_jsonl" and "Not trainer input" in saved["note"]
    first = json.loads((tmp_path / "old-name" / "train.jsonl").read_text().splitlines()[0])
    assert set(schema.VERSION_ROWS.names) <= set(first)


def test_every_trainer_view_reads_one_way_whatever_the_hash_seed(hh, ae2, tokenizer, tmp_path: Path) -> None:
    """TRL's is_conversational looks at whichever supported key a set yields first (hash-seed
    dependent): in a trainer view every key must give the same answer; canonical rows do not."""
    from trl.data_utils import is_conversational

    rows = pl.concat([hh, ae2])
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = STRICT_TEMPLATE
    keys = ("prompt", "chosen", "rejected", "completion")
    for fmt in ("trl_dpo", "trl_dpo_text", "trl_reward", "trl_kto", "openrlhf", "canonical_jsonl"):
        export_rows(rows, fmt, tmp_path / fmt)
        answers = set()
        for row in _load(tmp_path / fmt):
            answers |= {(k, is_conversational({k: row[k]})) for k in keys if k in row}
            if fmt == "openrlhf":  # OpenRLHF renders prompt + answer with the policy's chat template
                strict.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
        kinds = {conversational for _, conversational in answers}
        assert len(kinds) == (2 if fmt == "canonical_jsonl" else 1), (fmt, answers)


def test_the_cli_reports_quarantine_kto_weight_and_template(hh, shared_data: Path, tiny_chat: Path, tmp_path: Path) -> None:
    import gzip

    from typer.testing import CliRunner

    from curation.catalog import open_catalog
    from curation.cli import _load_commands, app

    _load_commands()
    cat = open_catalog(tmp_path / "cat")
    data_path = tmp_path / "hh.jsonl"  # the source rows of the slice, as they come
    ids = set(hh["meta"].str.json_path_match("$.id").to_list())
    with gzip.open(shared_data / "hh_rlhf_test.jsonl.gz", "rt") as lines:
        data_path.write_text("".join(line for line in lines if json.loads(line)["id"] in ids))
    runner = CliRunner()

    def curate(*args: str):
        return runner.invoke(app, [*args, "--catalog", str(cat.root)], env={"COLUMNS": "500"})

    assert curate("import", str(data_path), "--name", "hh").exit_code == 0
    res = curate("export", "hh", "--format", "trl_kto", "--out", str(tmp_path / "kto"), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    flagged = int((_flag(hh, "response_has_extra_turns") | _flag(hh, "irregular_turns")).sum())
    assert sum(report["skipped"].values()) == flagged and "quarantine.jsonl" in report["files"]
    assert report["kto_balance"]["train"]["desirable_weight"] > 0
    res = curate("export", "hh", "--format", "trl_dpo_text", "--tokenizer", str(tiny_chat), "--out", str(tmp_path / "text"))
    assert res.exit_code == 0 and f"chat template of {tiny_chat}" in " ".join(res.output.split())
    res = curate("export", "hh", "--format", "trl_dpo", "--on-invalid", "fail", "--out", str(tmp_path / "fail"))
    assert res.exit_code == 1 and "--on-invalid skip" in " ".join(res.output.split())
    assert not (tmp_path / "fail").exists()
