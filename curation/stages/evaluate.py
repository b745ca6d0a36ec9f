"""evaluate: the base policy (before), the trained one (after) and the random control, side by side.

Each model's evaluation is its own artifact, keyed by the model's content and the evaluation
config, so the base policy is measured once for every round (and every seed sharing a catalog).
With verifiable prompts the per-prompt outcomes are kept, and the record carries the paired
bootstrap intervals of after - before and after - control over the same prompts: whether a gain
is more than the noise of a finite test set. The trained model's evaluation (with its round and
those intervals) is recorded in the catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import polars as pl

from curation.recipe import Recipe
from curation.stages.rounds import ROUND, first_policy, round_of
from curation.stages.stage import (
    RunContext,
    Stage,
    StageError,
    Tables,
    file_digest,
    fingerprint,
    produce,
    read_record,
    record_frame,
)
from curation.stats import Stats

COMPARISONS = {"after_vs_before": ("after", "before"), "after_vs_control": ("after", "control")}


def _config(recipe: Recipe) -> dict[str, Any]:
    cfg = recipe.evaluate.model_dump(mode="json")
    cfg.pop("control", None)
    return cfg


def _prompts_fp(cfg: Mapping[str, Any]) -> str | None:
    prompts = Path(cfg["prompts"]) if cfg.get("prompts") else None
    return file_digest(prompts) if prompts is not None and prompts.is_file() else None


def _evaluate_model(model: str, held_out: str | None, cfg: dict[str, Any], ctx: RunContext, label: str) -> dict[str, Any]:
    """One model's metrics and per-prompt outcomes, computed once per model content and config."""
    from curation.models import model_fingerprint
    from curation.train.evaluate import evaluate

    fp = fingerprint("evaluate.model", model_fingerprint(model), cfg, _prompts_fp(cfg), held_out)

    def compute() -> dict[str, pl.DataFrame]:
        try:
            res = evaluate(model, held_out, {**cfg, "model": model, "record": False}, ctx.catalog())
        except Exception as exc:
            raise StageError(f"stage evaluate ({label} model {model}): {exc}") from exc
        per_prompt = res.per_prompt
        out = {"metrics": res.metrics, "data": res.data, "data_fingerprint": res.data_fingerprint, "judge": res.judge}
        if per_prompt is not None:
            out.update(prompt_ids=per_prompt["prompt_id"].to_list(), correct=per_prompt["correct"].to_list())
        return {"evaluation": record_frame(out)}

    ref = produce(ctx, fp, {"evaluation": ("evaluate.model", None)}, compute, Stats(stage="evaluate.model"),
                  error=f"stage evaluate ({label} model {model})")
    return read_record(ref["evaluation"])


class Evaluate(Stage):
    name = "evaluate"
    inputs = ("train", ROUND)
    outputs = {"evaluate": ("evaluate", None)}

    def applies(self, recipe: Recipe) -> bool:
        return recipe.evaluate is not None and recipe.train is not None

    def fingerprint(self, recipe: Recipe, tables: Tables, ctx: RunContext) -> str:
        if recipe.evaluate is None:
            raise StageError("stage evaluate: the recipe has no `evaluate` section")
        cfg = _config(recipe)
        return fingerprint("evaluate", cfg, _prompts_fp(cfg), tables["train"].fingerprint, first_policy(recipe, tables))

    def compute(self, recipe: Recipe, tables: Tables, ctx: RunContext, report: Stats,
                run: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
        from curation.train.evaluate import bootstrap_interval

        trained, cfg = read_record(tables["train"]), _config(recipe)
        current = round_of(tables)
        models = {"before": first_policy(recipe, tables), "after": trained["model"]}
        if trained.get("control_model"):
            models["control"] = trained["control_model"]
        held_out = None if cfg.get("prompts") or cfg.get("pairs") else f"{trained['version']}:test"
        evals = {label: _evaluate_model(model, held_out, cfg, ctx, label) for label, model in models.items()}
        record: dict[str, Any] = {"round": current["round"] if current else 1, "version": trained["version"],
                                  "models": models, "metrics": {k: e["metrics"] for k, e in evals.items()}}
        if all("correct" in e for e in evals.values()):
            ids = evals["after"]["prompt_ids"]
            if any(e["prompt_ids"] != ids for e in evals.values()):
                raise StageError("stage evaluate: the models were evaluated on different prompts; cannot pair them")
            record["prompt_ids"] = ids
            record["per_prompt"] = {k: e["correct"] for k, e in evals.items()}
            record["intervals"] = {
                name: bootstrap_interval(evals[a]["correct"], evals[b]["correct"], seed=cfg.get("seed", 0))
                for name, (a, b) in COMPARISONS.items() if a in evals and b in evals
            }
        if cfg.get("record", True) and trained.get("model_id"):
            after = evals["after"]
            metrics = {**after["metrics"], "round": float(record["round"])}
            for name, iv in record.get("intervals", {}).items():
                metrics.update({name: iv["mean"], f"{name}_low": iv["low"], f"{name}_high": iv["high"]})
            ctx.catalog().record_evaluation(trained["model_id"], after["data"], after["data_fingerprint"], metrics,
                                            judge=after.get("judge"))
        return {"evaluate": record_frame(record)}

    def summarize(self, recipe: Recipe, tables: Tables, report: Stats) -> None:
        record = read_record(tables["evaluate"])
        report.rows_out = len(record["metrics"])
        from curation.train.evaluate import decoding

        report.detail = {"round": record.get("round", 1), "metrics": record["metrics"],
                         "intervals": record.get("intervals", {}), "decoding": decoding(recipe.evaluate)}


STAGE = Evaluate()
