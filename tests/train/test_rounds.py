"""The on-policy round building block: round N generates with round N-1's policy, reference stays first."""

from __future__ import annotations

import pytest

from curation.train import next_round, train
from curation.train.config import TrainConfig
from curation.train.models import ModelError


def test_next_round_generates_with_the_last_policy_and_keeps_the_first_as_reference(tiny_chat, hh_rows, tmp_path, fast):
    base = TrainConfig(method="dpo", model=str(tiny_chat), out=str(tmp_path / "runs"), lora={"r": 4}, **fast)
    round1 = train(hh_rows, base.model_copy(update={"out": str(tmp_path / "runs" / "round-1")}))
    gen = {"backend": "transformers", "model": str(tiny_chat), "n": 2}
    plan = next_round(2, round1, gen, base, first_policy=tiny_chat)
    # LoRA round: generation engines get a merged full model folder
    assert plan.generate["model"] == str(round1.path / "merged")
    assert (round1.path / "merged" / "config.json").is_file()
    assert plan.generate["n"] == 2 and plan.generated_by == str(round1.path)
    assert plan.train.model == str(round1.path / "merged")
    assert plan.train.reference_model == str(tiny_chat)
    assert plan.train.out == str(tmp_path / "runs" / "round-2")
    round2 = train(hh_rows, plan.train)
    plan3 = next_round(3, round2, plan.generate, plan.train, first_policy=tiny_chat)
    assert plan3.train.reference_model == str(tiny_chat) and plan3.train.out == str(tmp_path / "runs" / "round-3")
    with pytest.raises(ModelError):
        next_round(2, tmp_path / "missing", gen, base, first_policy=tiny_chat)
    with pytest.raises(ValueError, match="round 1"):
        next_round(1, round1, gen, base, first_policy=tiny_chat)
