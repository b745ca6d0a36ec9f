"""evaluate: the base policy (before), the trained one (after) and the random control, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import polars as pl

from curation.recipe import Recipe
from curation.stages.stage import (
    RunContext,
    Stage,
    StageError,
    StageReport,
    Tables,
    file_digest,
    fingerprint,
    read_record,
    record_frame,
)


def _config(recipe: Recipe) -> dict[str, Any]:
    cfg = recipe.evaluate.model_dump(mode="json")
    cfg.pop("control", None)
    return cfg


class Evaluate(Stage):
    name = "evaluate"
    inputs = ("train",)
    outputs = {"evaluate": ("evaluate", None)}

    def applies(self, recipe: Recipe) -> bool:
        return recipe.evaluate is not None and recipe.train is not None

    def fingerprint(self, recipe: Recipe, tables: Tables, ctx: RunContext) -> str:
        if recipe.evaluate is None:
            raise StageError("stage evaluate: the recipe has no `evaluate` section")
        cfg = _config(recipe)
        prompts = Path(cfg["prompts"]) if cfg.get("prompts") else None
        prompts_fp = file_digest(prompts) if prompts is not None and prompts.is_file() else None
        return fingerprint("evaluate", cfg, prompts_fp, tables["train"].fingerprint)

    def compute(self, recipe: Recipe, tables: Tables, ctx: RunContext, report: StageReport,
                run: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
        from curation.train import evaluate

        trained, cfg = read_record(tables["train"]), _config(recipe)
        models = {"before": trained["base_model"], "after": trained["model"]}
        if trained.get("control_model"):
            models["control"] = trained["control_model"]
        results: dict[str, Any] = {}
        held_out = None if cfg.get("prompts") or cfg.get("pairs") else f"{trained['version']}:test"
        for label, model in models.items():
            try:
                res = evaluate(model, held_out, {**cfg, "model": model, "record": cfg.get("record", True) and label == "after"},
                               ctx.catalog())
            except Exception as exc:
                raise StageError(f"stage evaluate ({label} model {model}): {exc}") from exc
            results[label] = res.metrics
        return {"evaluate": record_frame({"models": models, "metrics": results})}

    def summarize(self, recipe: Recipe, tables: Tables, report: StageReport) -> None:
        record = read_record(tables["evaluate"])
        report.rows_out = len(record["metrics"])
        report.detail = {"metrics": record["metrics"]}


STAGE = Evaluate()
