"""Typed configuration of the recipe's `train:` and `evaluate:` sections (and of `curate train/eval`).

Light on purpose: importing this module must not import torch or TRL, so a recipe validates fast.
Checks that need the data or the model (columns the method needs, a tokenizer's chat template)
happen in `curation.train.checks`, still before any model weights load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from curation.registry import ComponentConfig

Method = Literal["dpo", "cdpo", "orpo", "simpo", "kto", "reward", "sft"]

# DPO loss variants this toolkit names (TRL 1.16 `DPOConfig.loss_type` values):
# sigmoid = DPO, ipo = IPO, robust = rDPO, hinge = SLiC, sigmoid_norm = length-normalised (SimPO-style).
DpoLoss = Literal["sigmoid", "ipo", "robust", "hinge", "sigmoid_norm"]

# Methods that train against a frozen reference policy, and so can use precomputed reference log-probs.
REFERENCE_METHODS = ("dpo", "cdpo")
PREFERENCE_METHODS = ("dpo", "cdpo", "orpo", "simpo", "reward")


class LoraConfig(ComponentConfig):
    """peft LoRA adapter settings; only the adapter is trained and saved."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"


class TrainConfig(ComponentConfig):
    """One training run on a published dataset version.

    `data` is a catalog ref ("name@v3", "name@v3:train"); in a recipe it defaults to the version
    the recipe publishes. `model` is a local model folder (a policy, or for `reward` a base model
    whose sequence-classification head is trained: a decoder, or an encoder such as MiniLM or
    DeBERTa; a model without a chat template reads conversations through
    curation.export.PLAIN_CHAT_TEMPLATE, saved with the trained model). Per-pair `weight` and `epsilon` columns written
    by selectors are honoured when `use_weights` / `use_pair_epsilon` are on.
    """

    local_paths = ("model", "reference_model")

    method: Method = "dpo"
    model: str | None = None
    data: str | None = None
    out: str | None = None
    loss: DpoLoss = "sigmoid"
    beta: float = Field(0.1, gt=0.0)
    epsilon: float | None = Field(
        None, ge=0.0, lt=0.5, description="global label-flip rate for cdpo / robust; per-pair epsilon otherwise"
    )
    use_pair_epsilon: bool = True
    use_weights: bool = True
    use_margin: bool | None = Field(
        None, description="reward: margin Bradley-Terry loss; None = when the version has margins, True = required"
    )
    simpo_gamma: float = Field(0.5, ge=0.0, description="SimPO target reward margin (gamma / beta ratio in TRL CPO)")
    desirable_weight: float | None = Field(
        None, gt=0.0, description="kto: loss weight of desirable completions; None = evened from the data's balance "
        "(curation.export.kto_balance, the middle of TRL's recommended range)"
    )
    undesirable_weight: float = Field(1.0, gt=0.0, description="kto: loss weight of undesirable completions")
    sft_weight: float = Field(
        0.0, ge=0.0, description="dpo: add TRL's 'sft' loss (NLL of the chosen response) with this weight, RPO-style"
    )
    reference_model: str | None = Field(None, description="frozen reference policy; default: `model`")
    precompute_ref: bool = Field(True, description="dpo/cdpo: compute reference log-probs once, store them by the version")
    lora: LoraConfig | None = None
    learning_rate: float = Field(5e-6, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    max_steps: int = Field(-1, description="> 0 overrides epochs")
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    lr_scheduler: str = "linear"
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    resume: bool = Field(True, description="continue from the last checkpoint in `out` when there is one")
    record: bool = Field(True, description="record the trained model in the catalog")
    trl: dict[str, Any] = Field(default_factory=dict, description="extra fields passed to the TRL config")

    @model_validator(mode="after")
    def _coherent(self) -> TrainConfig:
        if self.method == "cdpo" and self.loss != "sigmoid":
            raise ValueError("method cdpo is its own loss (label-smoothed sigmoid); leave `loss` unset")
        if self.loss == "robust" and self.method != "dpo":
            raise ValueError("loss 'robust' (rDPO) belongs to method dpo")
        if self.sft_weight > 0 and self.method != "dpo":
            raise ValueError("sft_weight adds an NLL term to method dpo's loss; other methods take none")
        if self.method != "kto" and (self.desirable_weight is not None or self.undesirable_weight != 1.0):
            raise ValueError(f"desirable_weight / undesirable_weight weigh KTO's unpaired completions; method {self.method!r} takes none")
        if self.epsilon is not None and not (self.method == "cdpo" or (self.method == "dpo" and self.loss == "robust")):
            under = f"method {self.method!r}" + (f" with loss {self.loss!r}" if self.method == "dpo" else "")
            raise ValueError(
                f"epsilon (a label-flip rate) is used only by method cdpo and by method dpo with loss robust; "
                f"{under} ignores it: choose one of those, or drop epsilon"
            )
        return self

    @property
    def uses_reference(self) -> bool:
        return self.method in REFERENCE_METHODS


def scorer_identity(config: Any) -> tuple[str, ...] | None:
    """What makes two scorer configs the same judge: the backend model it calls, or its model folder."""
    generator = getattr(config, "generator", None)
    if isinstance(generator, dict) and generator.get("model"):
        return ("llm", str(generator.get("backend")), str(generator["model"]), str(generator.get("base_url") or ""))
    model = getattr(config, "model", None)
    if isinstance(model, str) and model:
        path = Path(model).expanduser()
        return ("model", str(path.resolve()) if path.exists() else model)
    return None


def check_judge_independent(evaluate: Any, scorers: list[Any]) -> None:
    """Refuse an evaluation judge that also labels or scores the recipe's data, unless allowed."""
    judge = getattr(evaluate, "judge", None)
    if not judge or getattr(evaluate, "allow_judge_overlap", False):
        return
    from curation.scorers import SCORERS

    judge_config = SCORERS.config_model(judge["kind"])(**judge)
    identity = scorer_identity(judge_config)
    model = identity[2] if identity and identity[0] == "llm" else identity[1] if identity else "no model"
    for i, s in enumerate(scorers):
        same_model = identity is not None and scorer_identity(s) == identity
        if same_model or getattr(s, "name", None) == judge.get("name"):
            raise ValueError(
                f"evaluate.judge ({judge['kind']}, {model}) "
                f"is also score[{i}] ({getattr(s, 'kind', '?')} {getattr(s, 'name', '?')!r}), which labels or scores the "
                "training data: its win rate would favour the trained policy. Judge with another model, or set "
                "evaluate.allow_judge_overlap: true to accept that bias"
            )


def check_scorer(entry: dict[str, Any] | None, role: str) -> dict[str, Any] | None:
    """Validate a scorer entry ({kind, ...fields}) against the registered scorer's Config."""
    if entry is None:
        return None
    if "kind" not in entry:
        raise ValueError(f"{role}: a scorer entry needs `kind` (one of curation.scorers.SCORERS)")
    from curation.registry import UnknownComponent
    from curation.scorers import SCORERS

    fields = {"name": f"{role}:{entry['kind']}", **entry}
    try:
        model = SCORERS.config_model(entry["kind"])
    except UnknownComponent as exc:
        raise ValueError(f"{role}: {exc}") from None
    model(**fields)
    return fields


class EvaluateConfig(ComponentConfig):
    """Evaluation of a trained model (reward model or policy) on held-out pairs and prompts.

    `model` is a run folder written by `curate train` (defaults to the recipe's train output).
    `pairs` is a catalog ref ("name@v3:test") or a file of pairs read by curation.sources.
    `prompts` (a prompts file or catalog ref) gives the held-out prompts for win rate and verify;
    without it the win rate uses the held-out pairs' prompts.
    `judge` names a scorer that did not label the training data: a recipe whose `score` holds the
    same judge (same name, or same model) is refused unless `allow_judge_overlap` says the bias
    is accepted; data labelled elsewhere by it gets a warning when the run starts.
    `verify` names a verify scorer for verifiable tasks: pass@1, and pass@k when `n` > 1.
    """

    optional_paths = ("model", "pairs", "prompts")

    model: str | None = None
    pairs: str | None = None
    prompts: str | None = Field(None, description="held-out prompts (file or catalog ref) for win rate and verify")
    limit: int | None = Field(None, ge=1, description="evaluate at most this many pairs / prompts")
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(1024, ge=8)
    beta: float | None = Field(None, gt=0.0, description="DPO implicit-reward beta; default: the training beta")
    judge: dict[str, Any] | None = Field(None, description="scorer entry {kind, ...} that judges win rate")
    allow_judge_overlap: bool = Field(
        False, description="accept a judge that also labels or scores the training data (its win rate favours the policy)"
    )
    win_rate_prompts: int = Field(64, ge=1, description="held-out prompts for the win rate")
    verify: dict[str, Any] | None = Field(None, description="verify scorer entry {kind, ...} for pass@k")
    n: int = Field(1, ge=1, description="samples per prompt for pass@k")
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy for win rate and pass@1")
    calibration_bins: int = Field(10, ge=2)
    seed: int = 0
    record: bool = True
    control: bool = Field(
        False, description="recipes: also train on as many random pool pairs as were selected, and evaluate that "
        "model beside the base and the trained one (did selection beat chance?)"
    )

    @model_validator(mode="after")
    def _scorers_known(self) -> EvaluateConfig:
        self.judge = check_scorer(self.judge, "judge")
        self.verify = check_scorer(self.verify, "verify")
        return self
