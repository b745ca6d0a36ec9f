"""`curate train | eval`: train a model on a published version with TRL, and measure it."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from curation.cli import CatalogOption, JsonOption, app, catalog_path, console, fail, print_json, warn


def _errors() -> tuple[type[Exception], ...]:
    from pydantic import ValidationError

    from curation.catalog import CatalogError
    from curation.models import ModelError
    from curation.sources import SourceError
    from curation.train.data import TrainDataError

    return (CatalogError, SourceError, TrainDataError, ModelError, ValidationError, ValueError)


def _yaml_section(path: Path | None, section: str) -> dict[str, Any]:
    """Fields from a YAML file: its `train:` / `evaluate:` section, or the whole mapping."""
    if path is None:
        return {}
    import yaml

    if not path.is_file():
        fail(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        fail(f"{path}: expected a mapping of {section} fields")
    return dict(data.get(section, data))


def _metrics_table(title: str, metrics: dict[str, Any], intervals: dict[str, dict[str, float]] | None = None) -> Table:
    """One row per metric; with `intervals`, a 95% CI column and no separate _low / _high rows."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    bounds = {f"{name}_{end}" for name in intervals or {} for end in ("low", "high")}
    if intervals:
        table.add_column("95% CI", justify="right")
    for k, v in metrics.items():
        if k in bounds:
            continue
        row = [k, f"{v:.4g}" if isinstance(v, float) else str(v)]
        if intervals:
            row.append(f"{intervals[k]['low']:.4g} to {intervals[k]['high']:.4g}" if k in intervals else "")
        table.add_row(*row)
    return table


@app.command("train")
def train_cmd(
    data: str = typer.Argument(..., help="Dataset version (name, name@vN, name@vN:train) or a pairs file"),
    method: Optional[str] = typer.Option(None, "--method", help="dpo, cdpo, orpo, simpo, kto, reward or sft"),
    model: Optional[str] = typer.Option(None, "--model", help="Local model folder to start from"),
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (checkpoints, final model, curate_run.json)"),
    lora: bool = typer.Option(False, "--lora", help="Train a LoRA adapter (peft) instead of all weights"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with train fields (or a `train:` section)"),
    loss: Optional[str] = typer.Option(None, "--loss", help="dpo loss: sigmoid, ipo, robust, hinge, sigmoid_norm"),
    beta: Optional[float] = typer.Option(None, "--beta"),
    epsilon: Optional[float] = typer.Option(None, "--epsilon", help="cdpo / robust label-flip rate (else per pair)"),
    epochs: Optional[float] = typer.Option(None, "--epochs"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    learning_rate: Optional[float] = typer.Option(None, "--lr"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum"),
    max_length: Optional[int] = typer.Option(None, "--max-length"),
    catalog: Optional[str] = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Train on a published version with TRL and record the model in the catalog."""
    from curation.train import TrainConfig
    from curation.train.trainer import train

    fields = _yaml_section(config, "train")
    overrides = {
        "method": method, "model": model, "out": out, "loss": loss, "beta": beta, "epsilon": epsilon,
        "epochs": epochs, "max_steps": max_steps, "learning_rate": learning_rate, "batch_size": batch_size,
        "grad_accum": grad_accum, "max_length": max_length,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if lora and not fields.get("lora"):
        fields["lora"] = {}
    try:
        cfg = TrainConfig(**fields)
        cat = None
        if not Path(data).exists():
            from curation.catalog import Catalog

            root = catalog_path(catalog)
            if not (root / "catalog.duckdb").is_file():
                fail(f"no catalog at {root}: publish or import a dataset first, or pass --catalog")
            cat = Catalog(root)
        with contextlib.redirect_stdout(sys.stderr):  # trainer logs and progress; stdout keeps the result
            result = train(data, cfg, cat)
    except _errors() as exc:
        fail(str(exc))
    summary = {"path": str(result.path), "method": result.method, "data": result.data, "model_id": result.model_id,
               "resumed_from": result.resumed_from, "ref_logps": result.ref_logps, "ref_logps_reused": result.ref_logps_reused,
               "metrics": result.metrics}
    if as_json:
        print_json(summary)
        return
    console.print(_metrics_table(f"{result.method} on {result.data} -> {result.path}", result.metrics))
    if result.model_id:
        console.print(Text.assemble("recorded model ", (result.model_id, "bold"), " (see `curate ls --models`)"))
    if result.resumed_from:
        console.print(f"resumed from {result.resumed_from}")


INTERVAL = "95% percentile bootstrap over the held-out items (pairs or prompts), 2000 resamples"


@app.command("eval")
def eval_cmd(
    run: str = typer.Argument(..., help="Run folder written by `curate train` (or a local model folder)"),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="Held-out pairs: name@vN:test or a pairs file"),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Held-out prompts file/ref for win rate and verify"),
    judge: Optional[str] = typer.Option(None, "--judge", help="Scorer kind that judges win rate (e.g. reward_model)"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="The judge's `model` field"),
    judge_config: Optional[str] = typer.Option(None, "--judge-config", help="More judge fields as JSON"),
    verify: Optional[str] = typer.Option(None, "--verify", help="Verify task (math or code): pass@1 / pass@k on --prompts"),
    n: Optional[int] = typer.Option(None, "--n", help="Samples per prompt for pass@k"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate at most this many pairs"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with evaluate fields (or an `evaluate:` section)"),
    catalog: Optional[str] = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Evaluate a trained model on held-out pairs and prompts; record the numbers in the catalog."""
    from curation.train import EvaluateConfig
    from curation.train.evaluate import evaluate

    fields = _yaml_section(config, "evaluate")
    fields.update({k: v for k, v in {"pairs": pairs, "prompts": prompts, "n": n, "limit": limit}.items() if v is not None})
    if judge:
        extra = json.loads(judge_config) if judge_config else {}
        fields["judge"] = {"kind": judge, **({"model": judge_model} if judge_model else {}), **extra}
    if verify:
        fields["verify"] = {"kind": "verify", "task": verify}
    try:
        cfg = EvaluateConfig(**fields)
        cat = None
        needs_catalog = any(x and not Path(x).exists() for x in (cfg.pairs, cfg.prompts))
        root = catalog_path(catalog)
        if needs_catalog or (root / "catalog.duckdb").is_file():
            from curation.catalog import Catalog

            if needs_catalog and not (root / "catalog.duckdb").is_file():
                fail(f"no catalog at {root}: pass --catalog, or held-out pairs as a file")
            cat = Catalog(root)
        with contextlib.redirect_stdout(sys.stderr):
            result = evaluate(run, None, cfg, cat)
    except _errors() as exc:
        fail(str(exc))
    for w in result.warnings:
        warn(w)
    if as_json:
        print_json({"kind": result.kind, "data": result.data, "data_fingerprint": result.data_fingerprint,
                    "eval_id": result.eval_id, "judge": result.judge, "warnings": result.warnings, "metrics": result.metrics,
                    "intervals": result.intervals, "interval": INTERVAL})
        return
    console.print(_metrics_table(f"{result.kind} {run} on {result.data}", result.metrics, result.intervals))
    console.print(f"intervals: {INTERVAL}")
    if result.eval_id:
        console.print(Text.assemble("recorded evaluation ", (result.eval_id, "bold")))
