"""`train(...)`: one TRL training run on a published version (or a frame), recorded in the catalog.

Order of work: validate the config, resolve and check the data, check the model folder and its
tokenizer (no weights yet), then build the TRL trainer for the method, resume from the last
checkpoint in `out` when there is one, train, save, and record the model with its dataset
version, so `Catalog.lineage(model_id)` leads back to the prompts.

Methods map to TRL as follows: dpo -> DPOTrainer (loss_type = `loss`), cdpo -> DPOTrainer with the
cDPO loss (curation.train.dpo), simpo -> CPOTrainer(loss_type="simpo", cpo_alpha=0), orpo ->
ORPOTrainer, kto -> KTOTrainer on the unpaired chosen (desirable) / rejected (undesirable)
completions, reward -> RewardTrainer (Bradley-Terry; margin loss when the version has margins),
sft -> SFTTrainer on prompt + chosen (RFT data).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import polars as pl

from curation.export import PLAIN_CHAT_TEMPLATE, ensure_chat_template, kto_balance
from curation.models import ModelError, check_model_dir, context_length
from curation.train.config import TrainConfig
from curation.train.data import PairData, TrainDataError, check_for_method, load_pairs, to_trl
from curation.train.models import check_tokenizer, write_run_info

log = logging.getLogger(__name__)
VIEW_SKIPPED = "skipped_by_view"  # pairs the method's export view quarantined (curation.export.row_problems)
LENGTH_COUNTS = ("dropped_over_max_length", "truncated_to_max_length")  # train metrics the run summary shows


@dataclass
class TrainResult:
    path: Path
    method: str
    metrics: dict[str, float]
    data: str  # the data label ("name@v3:train", "<frame>")
    model_id: str | None = None  # catalog id when recorded
    resumed_from: str | None = None
    ref_logps: str | None = None  # stored reference log-prob file, when used
    ref_logps_reused: bool = False
    log_history: list[dict[str, Any]] = field(default_factory=list)


def _config(config: TrainConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    base = config.model_dump() if isinstance(config, TrainConfig) else dict(config or {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def _open_catalog(catalog: Any) -> Any:
    if catalog is None or isinstance(catalog, (str, Path)):
        from curation.catalog import open_catalog

        return open_catalog(catalog)
    return catalog


def prepare(source: str | pl.DataFrame | None, config: TrainConfig, catalog: Any = None) -> tuple[PairData, pl.DataFrame, Any]:
    """Every check that can fail without loading weights: data, model folder, tokenizer."""
    if config.model is None:
        raise ModelError("no model: pass --model / `model:` (a local model folder)")
    if config.out is None:
        raise ValueError("no output folder: pass --out / `out:`")
    source = source if source is not None else config.data
    if source is None:
        raise TrainDataError("no data: pass a version ref (name@vN), a pairs frame, or `data:`")
    # The model path is checked before the data so that a typo in it fails before any catalog work.
    check_model_dir(config.model)
    if config.reference_model:
        check_model_dir(config.reference_model, role="reference model")
    if isinstance(source, str) and not Path(source).exists():
        catalog = _open_catalog(catalog)
    data = load_pairs(source, catalog, split="train")
    rows = check_for_method(data, config)
    tokenizer = check_tokenizer(config.model, need_chat_template=config.method != "reward")
    if config.method == "reward" and ensure_chat_template(tokenizer):
        log.info("%s has no chat template: conversations are flattened with curation.export.PLAIN_CHAT_TEMPLATE "
                 "(saved with the trained model)", config.model)
    return data, rows, tokenizer


def _fit_to_data(cfg: TrainConfig, dataset: Any) -> TrainConfig:
    """Settings the data or the model decide when the config leaves them open: KTO's desirable_weight
    from the desirable / undesirable balance; reward max_length within an encoder's positions."""
    update: dict[str, Any] = {}
    if cfg.method == "kto" and cfg.desirable_weight is None:
        balance = kto_balance(pl.Series(dataset["label"], dtype=pl.Boolean))
        weight = balance["desirable_weight"]
        update["desirable_weight"] = 1.0 if weight is None else round(weight * cfg.undesirable_weight, 3)
        log.info("kto: %d desirable, %d undesirable completions: desirable_weight %s", balance["desirable"],
                 balance["undesirable"], update["desirable_weight"])
    if cfg.method == "reward":
        from transformers import AutoConfig

        positions = context_length(AutoConfig.from_pretrained(str(cfg.model)).to_dict())
        if positions and cfg.max_length > positions:
            log.warning("max_length %d is over %s's %d positions: using %d", cfg.max_length, cfg.model, positions, positions)
            update["max_length"] = positions
    return cfg.model_copy(update=update) if update else cfg


def train(
    source: str | pl.DataFrame | None = None,
    config: TrainConfig | dict[str, Any] | None = None,
    catalog: Any = None,
    *,
    callbacks: list[Any] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train `config.method` on `source` (catalog ref, VERSION_ROWS frame, or pairs file).

    Keyword overrides replace config fields (`train("hh@v3", method="dpo", model=..., out=...)`).
    """
    cfg = _config(config, overrides)
    data, rows, tokenizer = prepare(source, cfg, catalog)
    if data.version is not None and cfg.record:
        catalog = _open_catalog(catalog)
    out = Path(cfg.out)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    log.info("training %s on %s (%d pairs) from %s -> %s", cfg.method, data.label, rows.height, cfg.model, out)

    dataset, skipped = to_trl(rows, cfg)
    cfg = _fit_to_data(cfg, dataset)
    ref_info: dict[str, Any] = {}
    trainer = _build_trainer(cfg, dataset, tokenizer, data, ref_info, callbacks or [])
    lengths = _length_counts(len(dataset), trainer.train_dataset, cfg.max_length)

    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(out)) if cfg.resume and any(out.glob("checkpoint-*")) else None
    if last:
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    ended = datetime.now(timezone.utc)

    history = [dict(h) for h in trainer.state.log_history]
    metrics = {**_summarise(history, trainer), **lengths, VIEW_SKIPPED: float(skipped)}
    result = TrainResult(
        path=out,
        method=cfg.method,
        metrics=metrics,
        data=data.label,
        resumed_from=last,
        ref_logps=ref_info.get("path"),
        ref_logps_reused=bool(ref_info.get("reused")),
        log_history=history,
    )
    if data.version is not None and cfg.record:
        result.model_id = catalog.record_model(
            data.version.ref,
            cfg.method,
            cfg.model_dump(mode="json"),
            metrics,
            str(out.resolve()),
            str(Path(cfg.model).resolve()),
            started,
            ended,
        )
    write_run_info(
        out,
        {
            "method": cfg.method,
            "base_model": str(Path(cfg.model).resolve()),
            "reference_model": str(Path(cfg.reference_model or cfg.model).resolve()),
            "data": data.label,
            "version": data.version.ref if data.version is not None else None,
            "data_fingerprint": data.fingerprint,
            "label_sources": sorted(set(rows["label_source"].drop_nulls().to_list())),
            "score": sorted(set(rows["score"].drop_nulls().to_list())),
            "lora": cfg.lora is not None,
            "chat_template": "plain (curation.export.PLAIN_CHAT_TEMPLATE)" if tokenizer.chat_template == PLAIN_CHAT_TEMPLATE else "the model's",
            "config": cfg.model_dump(mode="json"),
            "metrics": metrics,
            "model_id": result.model_id,
            "catalog": str(catalog.root) if result.model_id else None,
            "started_at": started.isoformat(),
            "ended_at": ended.isoformat(),
        },
    )
    return result


def _length_counts(given: int, prepared: Any, max_length: int) -> dict[str, float]:
    """What TRL did to examples over `max_length` while preparing its dataset, which it does silently:
    dropped (RewardTrainer: either side over it; DPO/KTO: the prompt alone fills it) or cut
    (DPO: prompt + completion over it). Examples are pairs, or completions for KTO."""
    counts = {LENGTH_COUNTS[0]: float(given - len(prepared))}
    cols = prepared.column_names
    if "prompt_ids" in cols and "chosen_ids" in cols:
        sides = [prepared[c] for c in ("chosen_ids", "rejected_ids") if c in cols]
        counts[LENGTH_COUNTS[1]] = float(sum(
            len(p) + max(len(s[i]) for s in sides) > max_length for i, p in enumerate(prepared["prompt_ids"])))
    dropped, cut = counts[LENGTH_COUNTS[0]], counts.get(LENGTH_COUNTS[1], 0)
    if dropped or cut:
        log.warning("max_length %d: %d of %d training examples dropped, %d truncated", max_length, dropped, given, cut)
    return counts


def _summarise(history: list[dict[str, Any]], trainer: Any) -> dict[str, float]:
    losses = [h["loss"] for h in history if "loss" in h]
    metrics: dict[str, float] = {"steps": float(trainer.state.global_step), "pairs_seen_epochs": float(trainer.state.epoch or 0)}
    if losses:
        metrics["loss_first"] = float(losses[0])
        metrics["loss_last"] = float(losses[-1])
    final = next((h for h in reversed(history) if "train_loss" in h), {})
    for key in ("train_loss", "train_runtime"):
        if key in final:
            metrics[key] = float(final[key])
    last = next((h for h in reversed(history) if "loss" in h), {})
    for key in ("rewards/accuracies", "rewards/margins", "accuracy", "margin"):
        if key in last:
            metrics[key] = float(last[key])
    return metrics


def _precision(cfg: TrainConfig) -> dict[str, bool]:
    import torch

    if cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        return {"bf16": True, "fp16": False}
    if cfg.precision == "fp16":
        return {"bf16": False, "fp16": True}
    return {"bf16": False, "fp16": False}  # TRL configs default to bf16, which CPUs refuse


def _accelerated() -> bool:
    import torch

    return torch.cuda.is_available()


def _common_args(cfg: TrainConfig) -> dict[str, Any]:
    return {
        "output_dir": str(cfg.out),
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "warmup_steps": cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of total steps
        "lr_scheduler_type": cfg.lr_scheduler,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "logging_steps": cfg.logging_steps,
        "seed": cfg.seed,
        "report_to": "none",
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "max_length": cfg.max_length,
        "dataloader_pin_memory": _accelerated(),
        **_precision(cfg),
        **cfg.trl,
    }


def _peft(cfg: TrainConfig, task: str) -> Any:
    if cfg.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type=task,
    )


TrainerBuilder = Callable[[TrainConfig, dict[str, Any], dict[str, Any], PairData, dict[str, Any]], Any]
METHODS: dict[str, TrainerBuilder] = {}


def method(*names: str) -> Callable[[TrainerBuilder], TrainerBuilder]:
    """Register the function that builds the TRL trainer (with its own TRL config) for `names`."""

    def register(build: TrainerBuilder) -> TrainerBuilder:
        for name in names:
            if name in METHODS:
                raise ValueError(f"training method {name!r} registered twice")
            METHODS[name] = build
        return build

    return register


def _build_trainer(
    cfg: TrainConfig, dataset: Any, tokenizer: Any, data: PairData, ref_info: dict[str, Any], callbacks: list[Any]
) -> Any:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; known: {', '.join(sorted(METHODS))}")
    common = {"train_dataset": dataset, "processing_class": tokenizer, "callbacks": callbacks}
    return METHODS[cfg.method](cfg, _common_args(cfg), common, data, ref_info)


@method("simpo")
def _simpo_trainer(cfg: TrainConfig, args: dict[str, Any], common: dict[str, Any], data: PairData, ref_info: dict[str, Any]) -> Any:
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    targs = CPOConfig(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=cfg.simpo_gamma, beta=cfg.beta, **args)
    return CPOTrainer(model=str(cfg.model), args=targs, peft_config=_peft(cfg, "CAUSAL_LM"), **common)


@method("orpo")
def _orpo_trainer(cfg: TrainConfig, args: dict[str, Any], common: dict[str, Any], data: PairData, ref_info: dict[str, Any]) -> Any:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    targs = ORPOConfig(beta=cfg.beta, **args)
    return ORPOTrainer(model=str(cfg.model), args=targs, peft_config=_peft(cfg, "CAUSAL_LM"), **common)


@method("kto")
def _kto_trainer(cfg: TrainConfig, args: dict[str, Any], common: dict[str, Any], data: PairData, ref_info: dict[str, Any]) -> Any:
    from trl import KTOConfig, KTOTrainer

    targs = KTOConfig(beta=cfg.beta, desirable_weight=cfg.desirable_weight or 1.0, undesirable_weight=cfg.undesirable_weight, **args)
    return KTOTrainer(model=str(cfg.model), args=targs, peft_config=_peft(cfg, "CAUSAL_LM"), **common)


@method("reward")
def _reward_trainer(cfg: TrainConfig, args: dict[str, Any], common: dict[str, Any], data: PairData, ref_info: dict[str, Any]) -> Any:
    from trl import RewardConfig, RewardTrainer

    targs = RewardConfig(**args)
    return RewardTrainer(model=str(cfg.model), args=targs, peft_config=_peft(cfg, "SEQ_CLS"), **common)


@method("sft")
def _sft_trainer(cfg: TrainConfig, args: dict[str, Any], common: dict[str, Any], data: PairData, ref_info: dict[str, Any]) -> Any:
    from trl import SFTConfig, SFTTrainer

    targs = SFTConfig(**args)
    return SFTTrainer(model=str(cfg.model), args=targs, peft_config=_peft(cfg, "CAUSAL_LM"), **common)


@method("dpo", "cdpo")
def _dpo_trainer(cfg: TrainConfig, args: dict[str, Any], common: dict[str, Any], data: PairData, ref_info: dict[str, Any]) -> Any:
    from trl import DPOConfig

    from curation.train.dpo import dpo_trainer_class
    from curation.train.reference import load_ref_logps, ref_logps_path, save_ref_logps

    reference = cfg.reference_model or cfg.model
    ref_store = None
    dataset = common["train_dataset"]
    if cfg.precompute_ref and data.version is not None and getattr(data.version, "path", None):
        path = ref_logps_path(data.version.path, reference, cfg.max_length)  # type: ignore[arg-type]
        ref_info["path"] = str(path)
        stored = load_ref_logps(path, dataset["pair_id"])
        if stored is not None:
            log.info("reusing reference log-probs from %s", path)
            ref_info["reused"] = True
            dataset = dataset.add_column("ref_chosen_logps", stored["ref_chosen_logps"].to_list())
            dataset = dataset.add_column("ref_rejected_logps", stored["ref_rejected_logps"].to_list())
        else:
            def ref_store(ds: Any) -> None:
                save_ref_logps(path, ds)
                log.info("stored reference log-probs in %s", path)

    losses = {"loss_type": [cfg.loss, "sft"], "loss_weights": [1.0, cfg.sft_weight]} if cfg.sft_weight > 0 else {"loss_type": cfg.loss}
    targs = DPOConfig(
        **losses,
        beta=cfg.beta,
        label_smoothing=cfg.epsilon or 0.0,
        precompute_ref_log_probs=cfg.precompute_ref,
        **args,
    )
    ref_model = None
    if cfg.reference_model:
        from transformers import AutoModelForCausalLM

        ref_model = AutoModelForCausalLM.from_pretrained(cfg.reference_model)
    cls = dpo_trainer_class()
    return cls(
        model=str(cfg.model),
        ref_model=ref_model,
        args=targs,
        peft_config=_peft(cfg, "CAUSAL_LM"),
        cdpo=cfg.method == "cdpo",
        ref_store=ref_store,
        **{**common, "train_dataset": dataset},
    )
