"""Iterative on-policy rounds (RLHF Workflow / iterative DPO): the building block for one round.

Round N generates with the policy trained in round N-1 and trains from it again, while the
reference stays the first policy, so every round's KL anchor is the same model.
`curation.stages.rounds` wires `next_round` into `curate run` (`rounds: N` in a recipe), which
publishes one dataset version per round tied to the checkpoint that generated it
(`Catalog.generated_by`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.models import check_model_dir
from curation.train.config import TrainConfig
from curation.train.models import is_adapter


@dataclass
class RoundPlan:
    round: int
    generate: dict[str, Any]  # generator config: same backend and sampling, model = round N-1's policy
    train: TrainConfig  # starts from round N-1's policy, reference = the first policy
    generated_by: str  # the checkpoint that generates this round's data (recorded with the version)


def merged_model(path: str | Path) -> Path:
    """A full model folder for a LoRA run (generation engines load plain folders): merged once, cached."""
    path = Path(path)
    if not is_adapter(path):
        return path
    out = path / "merged"
    if not (out / "config.json").is_file():
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoTokenizer

        model = AutoPeftModelForCausalLM.from_pretrained(str(path)).merge_and_unload()
        model.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(path)).save_pretrained(str(out))
    return out


def next_round(
    round_index: int,
    previous: Any,
    generate: Any,
    train: TrainConfig | dict[str, Any],
    *,
    first_policy: str | Path,
) -> RoundPlan:
    """The configs of round `round_index` (>= 2) from round N-1's run folder (or TrainResult).

    The train output goes to `<train.out>/round-<N>` so rounds never overwrite each other.
    """
    if round_index < 2:
        raise ValueError("round 1 uses the recipe's own generate/train configs; next_round starts at round 2")
    prev_path = Path(getattr(previous, "path", previous))
    check_model_dir(prev_path, role=f"round {round_index - 1} policy")
    check_model_dir(first_policy, role="first policy (reference)")
    gen = generate.model_dump(mode="json") if hasattr(generate, "model_dump") else dict(generate)
    model = merged_model(prev_path)
    gen["model"] = str(model)
    base = train.model_dump() if isinstance(train, TrainConfig) else dict(train)
    root = Path(base.get("out") or "runs/train")
    if root.name.startswith("round-"):
        root = root.parent
    base.update(
        model=str(model),
        reference_model=str(first_policy),
        out=str(root / f"round-{round_index}"),
        data=None,
    )
    return RoundPlan(round=round_index, generate=gen, train=TrainConfig(**base), generated_by=str(prev_path))
