"""Training through TRL on the tiny models and real hh-rlhf pairs: every method, LoRA, resume, lineage."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from curation.train import train
from curation.train.data import TrainDataError
from curation.train.models import ModelError


@pytest.fixture(scope="module")
def dpo_run(tiny_chat, hh_catalog, tmp_path_factory, fast):
    out = tmp_path_factory.mktemp("dpo") / "run"
    return train("hh@v1", catalog=hh_catalog, method="dpo", model=str(tiny_chat), out=str(out),
                 **{**fast, "max_steps": 10, "learning_rate": 2e-3})


def _mean(xs):
    return sum(xs) / len(xs)


def test_dpo_loss_decreases_and_the_model_is_recorded_with_lineage(dpo_run, hh_catalog):
    losses = [h["loss"] for h in dpo_run.log_history if "loss" in h]
    assert len(losses) == 10
    assert _mean(losses[-3:]) < _mean(losses[:3]) - 0.05
    assert dpo_run.metrics["loss_last"] < dpo_run.metrics["loss_first"]
    assert dpo_run.data == "hh@v1:train"
    # the catalog knows the model, its version and its config
    models = hh_catalog.models()
    row = models.filter(pl.col("model_id") == dpo_run.model_id)
    assert row.height == 1 and row["method"][0] == "dpo"
    assert json.loads(row["config"][0])["max_steps"] == 10
    # lineage: model -> version -> pairs -> candidates -> prompts, down to the prompt ids
    lineage = hh_catalog.lineage(dpo_run.model_id)
    train_prompts = set(hh_catalog.load("hh@v1:train")["prompt_id"].to_list())
    assert set(lineage["prompt_id"].to_list()) >= train_prompts
    assert set(lineage["prompt_source"].drop_nulls().to_list()) == {"hh_rlhf"}
    assert set(lineage["chosen_generator"].to_list()) == {"dataset:hh_rlhf"}
    prompts = hh_catalog.load("hh@v1", table="prompts")
    assert train_prompts <= set(prompts["prompt_id"].to_list())
    run = json.loads((dpo_run.path / "curate_run.json").read_text())
    assert run["model_id"] == dpo_run.model_id and run["version"] == "hh@v1"


def test_reference_logps_are_stored_by_the_version_and_reused(dpo_run, hh_catalog, tiny_chat, tmp_path, fast):
    stored = Path(dpo_run.ref_logps)
    assert stored.is_file() and stored.parent.parent == hh_catalog.resolve("hh@v1").path
    frame = pl.read_parquet(stored)
    assert set(frame.columns) == {"pair_id", "ref_chosen_logps", "ref_rejected_logps"}
    assert set(frame["pair_id"]) <= set(hh_catalog.load("hh@v1:train")["pair_id"])
    assert (frame["ref_chosen_logps"] < 0).all()
    again = train("hh@v1", catalog=hh_catalog, method="dpo", model=str(tiny_chat), out=str(tmp_path / "again"),
                  **{**fast, "max_steps": 10, "learning_rate": 2e-3})
    assert again.ref_logps_reused and again.ref_logps == dpo_run.ref_logps
    # same seed, same reference numbers: the same training trajectory as when they were computed
    first = [h["loss"] for h in dpo_run.log_history if "loss" in h]
    second = [h["loss"] for h in again.log_history if "loss" in h]
    assert second == pytest.approx(first, rel=1e-4, abs=1e-5)


def test_reward_model_trains_on_margins(tiny_rm, hh_catalog, tmp_path, fast):
    res = train("hh@v1", catalog=hh_catalog, method="reward", model=str(tiny_rm), out=str(tmp_path / "rm"),
                use_margin=True, **{**fast, "max_steps": 8, "learning_rate": 3e-3})
    losses = [h["loss"] for h in res.log_history if "loss" in h]
    assert _mean(losses[-3:]) < _mean(losses[:3])
    assert (res.path / "config.json").is_file() and (res.path / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    "settings",
    [
        {"method": "cdpo", "epsilon": 0.1},
        {"method": "dpo", "loss": "robust", "epsilon": 0.1},
        {"method": "dpo", "loss": "ipo"},
        {"method": "dpo", "loss": "hinge"},
        {"method": "dpo", "loss": "sigmoid_norm"},
        {"method": "simpo"},
        {"method": "orpo"},
        {"method": "kto"},
        {"method": "sft"},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_each_method_runs(settings, tiny_chat, hh_rows, tmp_path, fast):
    res = train(hh_rows, model=str(tiny_chat), out=str(tmp_path / "run"),
                **{**fast, **settings, "precompute_ref": False})
    losses = [h["loss"] for h in res.log_history if "loss" in h]
    assert len(losses) == 2 and all(x == x and abs(x) < 1e4 for x in losses)  # finite, not NaN
    assert res.metrics["steps"] == 2 and res.model_id is None  # a frame has no version to record against
    assert (res.path / "model.safetensors").is_file()


def test_lora_adapter_saves_and_loads(tiny_chat, hh_rows, tmp_path, fast):
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    res = train(hh_rows, method="dpo", model=str(tiny_chat), out=str(tmp_path / "lora"),
                lora={"r": 4, "alpha": 8}, **{**fast, "learning_rate": 5e-2})
    assert (res.path / "adapter_config.json").is_file() and not (res.path / "model.safetensors").exists()
    adapted = AutoPeftModelForCausalLM.from_pretrained(str(res.path)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_chat)).eval()
    ids = torch.tensor([[1, 5, 9, 300, 42, 7]])
    with torch.no_grad():
        diff = (adapted(input_ids=ids).logits - base(input_ids=ids).logits).abs().max()
    assert diff > 1e-6
    assert json.loads((res.path / "curate_run.json").read_text())["lora"] is True


CRASH = """
import os, sys
import torch; torch.set_num_threads(1)
from transformers import TrainerCallback
from curation.catalog import open_catalog
from curation.train import train

class Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 3:  # checkpoint-2 is on disk; the process dies mid-training
            os._exit(17)

train("hh@v1", catalog=open_catalog(sys.argv[1]), method="dpo", model=sys.argv[2], out=sys.argv[3],
      max_steps=6, save_steps=2, batch_size=4, learning_rate=1e-3, logging_steps=1, max_length=256,
      callbacks=[Crash()])
"""


def test_crash_mid_training_then_resume_continues_from_the_checkpoint(tiny_chat, hh_catalog, tmp_path):
    out = tmp_path / "crash"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH), str(hh_catalog.root), str(tiny_chat), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 17, proc.stderr[-2000:]
    assert (out / "checkpoint-2").is_dir() and not (out / "curate_run.json").exists()
    res = train("hh@v1", catalog=hh_catalog, method="dpo", model=str(tiny_chat), out=str(out),
                max_steps=6, save_steps=2, batch_size=4, learning_rate=1e-3, logging_steps=1, max_length=256)
    assert res.resumed_from is not None and res.resumed_from.endswith("checkpoint-2")
    assert res.metrics["steps"] == 6
    steps = [h["step"] for h in res.log_history if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]  # 1-2 restored from the checkpoint's state, 3-6 trained now
    assert (out / "checkpoint-6").is_dir()


def test_bad_input_fails_before_any_model_loads(tiny_chat, hh_catalog, hh_rows, tmp_path):
    from curation.catalog import CatalogError

    out = tmp_path / "never"
    with pytest.raises(CatalogError, match="hh@v9|v9"):
        train("hh@v9", catalog=hh_catalog, method="dpo", model=str(tiny_chat), out=str(out))
    with pytest.raises(ModelError, match="does not exist"):
        train("hh@v1", catalog=hh_catalog, method="dpo", model=str(tmp_path / "nope"), out=str(out))
    with pytest.raises(TrainDataError, match="no pairs"):
        train(hh_rows.head(0), method="dpo", model=str(tiny_chat), out=str(out))
    with pytest.raises(TrainDataError, match="margin"):
        train(hh_rows.with_columns(pl.lit(None, dtype=pl.Float64).alias("margin")), method="reward",
              use_margin=True, model=str(tiny_chat), out=str(out))
    with pytest.raises(TrainDataError, match="epsilon"):
        train(hh_rows, method="cdpo", model=str(tiny_chat), out=str(out))
    with pytest.raises(TrainDataError, match="no `chosen`"):
        train(hh_rows.with_columns(pl.lit("").alias("chosen")), method="dpo", model=str(tiny_chat), out=str(out))
    # a tokenizer without chat template, then one without pad token
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_chat, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="chat template"):
        train(hh_rows, method="dpo", model=str(bare), out=str(out))
    nopad = tmp_path / "nopad"
    shutil.copytree(tiny_chat, nopad)
    cfg = json.loads((nopad / "tokenizer_config.json").read_text())
    cfg["pad_token"] = None
    (nopad / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="pad token"):
        train(hh_rows, method="dpo", model=str(nopad), out=str(out))
    assert not out.exists()  # no run folder: nothing was loaded or trained


def test_sft_weight_adds_the_chosen_nll_to_the_dpo_loss(tiny_chat, hh_rows, tmp_path, fast):
    def first_loss(**kw):
        res = train(hh_rows, model=str(tiny_chat), out=str(tmp_path / f"run{len(kw)}"),
                    **{**fast, "precompute_ref": False, **kw})
        return [h["loss"] for h in res.log_history if "loss" in h][0]

    plain, with_nll = first_loss(), first_loss(sft_weight=1.0)
    # an untrained 4k-vocabulary model puts about -log(1/4096) = 8.3 nats on each chosen token
    assert with_nll > plain + 1.0


def test_sft_weight_belongs_to_dpo():
    from curation.train.config import TrainConfig

    with pytest.raises(ValueError, match="sft_weight"):
        TrainConfig(method="reward", sft_weight=1.0)


@pytest.mark.parametrize("settings", [{"method": "dpo"}, {"method": "dpo", "loss": "ipo"}, {"method": "orpo"}])
def test_epsilon_under_a_loss_that_ignores_it_is_a_config_error(settings):
    from curation.train.config import TrainConfig

    with pytest.raises(ValueError, match="ignores it"):
        TrainConfig(**settings, epsilon=0.1)
    TrainConfig(method="cdpo", epsilon=0.1)
    TrainConfig(method="dpo", loss="robust", epsilon=0.1)


def test_every_method_a_config_accepts_has_a_registered_trainer():
    """The recipe's `method` values and the registered trainer builders are the same set."""
    from typing import get_args

    from curation.train.config import Method
    from curation.train.trainer import METHODS

    assert set(METHODS) == set(get_args(Method))


def _chat_length(tok, prompt, text) -> int:
    return len(tok.apply_chat_template([*map(dict, prompt), {"role": "assistant", "content": text}], tokenize=True,
                                       return_dict=True)["input_ids"])


def test_pairs_trl_drops_or_cuts_for_max_length_are_counted(tiny_chat, tiny_rm, hh_rows, tmp_path, fast):
    """TRL's RewardTrainer drops a pair with either side over max_length, and DPO cuts one whose prompt +
    completion is over it, without a word: the train metrics count both (max_length at the median)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_rm)
    rows = hh_rows.filter(pl.col("split") == "train")
    longest = [max(_chat_length(tok, p, c), _chat_length(tok, p, r))
               for p, c, r in zip(rows["prompt"].to_list(), rows["chosen"].to_list(), rows["rejected"].to_list())]
    limit = sorted(longest)[len(longest) // 2]
    over = sum(n > limit for n in longest)
    assert 0 < over < len(longest)
    rm = train(hh_rows, method="reward", model=str(tiny_rm), out=str(tmp_path / "rm"), **{**fast, "max_length": limit})
    assert rm.metrics["dropped_over_max_length"] == over
    dpo = train(hh_rows, method="dpo", model=str(tiny_chat), out=str(tmp_path / "dpo"),
                **{**fast, "max_length": limit, "precompute_ref": False})
    prompt_fills = sum(len(tok.apply_chat_template([*map(dict, p)], tokenize=True, add_generation_prompt=True,
                                                   return_dict=True)["input_ids"]) >= limit for p in rows["prompt"].to_list())
    assert dpo.metrics["dropped_over_max_length"] == prompt_fills  # the rest are cut, not dropped
    assert dpo.metrics["truncated_to_max_length"] == over - prompt_fills
