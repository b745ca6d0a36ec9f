"""train: a policy trained on the published version (TRL); with `evaluate.control`, also one
trained on a same-size random set of pool pairs, what the selection is measured against."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from curation.recipe import Recipe
from curation.rows import tie_mask
from curation.stages.select import pair_pool
from curation.stages.stage import (
    RunContext,
    Stage,
    StageError,
    Tables,
    fingerprint,
    fingerprints,
    read_record,
    record_frame,
)
from curation.stats import Stats
from curation.store import ArtifactStore
from curation.train.trainer import LENGTH_COUNTS

CONTROL_PREFIX = "control."  # the control chain's own pool tables ("control.pairs" ...), from round 2 on
CONTROL_TABLES = tuple(CONTROL_PREFIX + t for t in ("prompts", "candidates", "pairs", "scores"))


def policy_base(recipe: Recipe) -> str | None:
    """The model training starts from: the train section's, else the generating model."""
    model = getattr(recipe.train, "model", None)
    return model or (getattr(recipe.generate, "model", None) if recipe.generate is not None else None)


def random_control(store: ArtifactStore, tables: Tables, n: int, seed: int) -> pl.DataFrame:
    """A uniform random set of `n` trainable pool pairs (no ties, both sides non-empty): what the
    selection is measured against. From round 2 on the pool is the control chain's own (sampled by
    the control's previous model), when the run has one; else the round's pool."""
    own = {name.removeprefix(CONTROL_PREFIX): ref for name, ref in tables.items() if name in CONTROL_TABLES}
    pool = pair_pool(store, own or tables)
    usable = (pl.col("chosen").str.strip_chars().str.len_chars() > 0) & (pl.col("rejected").str.strip_chars().str.len_chars() > 0)
    pool = pool.filter(~tie_mask(pool)).filter(usable)
    idx = sorted(random.Random(seed).sample(range(pool.height), min(n, pool.height)))
    return pool[idx]


def _config(recipe: Recipe, tables: Tables) -> dict[str, Any]:
    """The train config of this round: from round N-1's policy, the first policy as reference."""
    from curation.stages.rounds import round_of

    cfg = recipe.train.model_dump(mode="json")
    current = round_of(tables)
    cfg["model"] = current["policy"] if current else policy_base(recipe)
    if current:
        cfg["reference_model"] = current["reference"]
    return cfg


def _control_start(tables: Tables, cfg: Mapping[str, Any]) -> str:
    """Where the control trains from: its own previous model, so it never benefits from selection."""
    from curation.stages.rounds import round_of

    current = round_of(tables)
    return (current or {}).get("control_policy") or cfg["model"]


def _control(recipe: Recipe) -> bool:
    return bool(getattr(recipe.evaluate, "control", False))


class Train(Stage):
    name = "train"
    inputs = ("publish",)
    outputs = {"train": ("train", None)}

    def applies(self, recipe: Recipe) -> bool:
        return recipe.train is not None

    def fingerprint(self, recipe: Recipe, tables: Tables, ctx: RunContext) -> str:
        if recipe.train is None:
            raise StageError("stage train: the recipe has no `train` section")
        cfg = _config(recipe, tables)
        control = _control(recipe) and _control_start(tables, cfg)
        own_pool = [fingerprints(tables, *CONTROL_TABLES)] if control and CONTROL_TABLES[0] in tables else []
        return fingerprint("train", cfg, read_record(tables["publish"])["fingerprint"], control, *own_pool)

    def context(self, recipe: Recipe) -> str:
        return f" (method {recipe.train.method})"

    def rows_in(self, recipe: Recipe, tables: Tables) -> int:
        return int(read_record(tables["publish"])["rows"])

    def compute(self, recipe: Recipe, tables: Tables, ctx: RunContext, report: Stats,
                run: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
        from curation.train import train

        version = read_record(tables["publish"])
        cfg, fp = _config(recipe, tables), report.fingerprint
        models_dir = Path(ctx.catalog_root) / "models"
        record: dict[str, Any] = {"version": version["ref"], "base_model": cfg["model"]}
        result = train(version["ref"], {**cfg, "out": cfg.get("out") or str(models_dir / f"{recipe.name}-{fp}")},
                       ctx.catalog())
        record.update(model=str(result.path), model_id=result.model_id, metrics=result.metrics)
        if _control(recipe):
            rows = random_control(ctx.store, tables, n=int(version["rows"]), seed=recipe.publish.seed + cfg["seed"])
            ctl = train(rows, {**cfg, "model": _control_start(tables, cfg), "out": str(models_dir / f"{recipe.name}-{fp}-control"),
                               "record": False})
            record.update(control_model=str(ctl.path), control_rows=rows.height, control_metrics=ctl.metrics,
                          control_pool="its own samples" if CONTROL_TABLES[0] in tables else "this round's pool")
        return {"train": record_frame(record)}

    def summarize(self, recipe: Recipe, tables: Tables, report: Stats) -> None:
        record = read_record(tables["train"])
        report.rows_out = 1 + ("control_model" in record)
        report.detail = {k: record.get(k) for k in ("model", "model_id", "control_model", "control_rows", "control_pool")}
        for prefix, metrics in (("", record.get("metrics")), ("control ", record.get("control_metrics"))):
            for name in LENGTH_COUNTS:  # what TRL dropped or cut for max_length, which it does not say
                report.add(f"{prefix}{name.replace('_', ' ')}", int((metrics or {}).get(name, 0)))


STAGE = Train()
