"""`curate check-scorer`: measure a scorer against human-labelled pairs before trusting it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from curation.cli import JsonOption, app, console, fail, print_json


def _pairs_of(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            fail(f"{flag} {v!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _scorer_config(scorer_config: Path | None, kind: str | None, name: str | None, options: list[str]) -> dict[str, Any]:
    import yaml

    if (scorer_config is None) == (kind is None):
        fail("give either --scorer-config FILE or --kind KIND (with --option KEY=VALUE)")
    if scorer_config is not None:
        if not scorer_config.is_file():
            fail(f"scorer config {scorer_config} does not exist")
        try:
            doc = yaml.safe_load(scorer_config.read_text())
        except yaml.YAMLError as exc:
            fail(f"{scorer_config}: not valid YAML: {exc}")
        if isinstance(doc, dict) and isinstance(doc.get("score"), list):  # a recipe: pick one scorer
            entries = [s for s in doc["score"] if isinstance(s, dict) and (name is None or s.get("name") == name)]
            if len(entries) != 1:
                known = [s.get("name") for s in doc["score"] if isinstance(s, dict)]
                fail(f"{scorer_config}: pick one scorer with --name; the recipe has {known}")
            doc = entries[0]
        if not isinstance(doc, dict) or "kind" not in doc:
            fail(f"{scorer_config}: expected a mapping with `kind` (and `name`, and the scorer's fields)")
        config = dict(doc)
    else:
        config = {"kind": kind}
    for key, raw in _pairs_of(options, "--option").items():
        config[key] = yaml.safe_load(raw) if raw else raw
    config.setdefault("name", name or config["kind"])
    return config


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


@app.command("check-scorer")
def check_scorer_command(
    pairs: Path = typer.Option(..., "--pairs", help="Labelled pairs (any format curate reads), e.g. llmbar.jsonl.gz"),
    scorer_config: Path | None = typer.Option(None, "--scorer-config", help="YAML: one scorer {name, kind, ...} or a recipe"),
    kind: str | None = typer.Option(None, "--kind", help="Scorer kind, instead of --scorer-config"),
    option: list[str] = typer.Option([], "--option", "-o", help="Scorer field KEY=VALUE (YAML value); repeatable"),
    name: str | None = typer.Option(None, "--name", help="Scorer name (or which scorer of a recipe)"),
    where: list[str] = typer.Option([], "--where", help="Keep pairs whose meta FIELD=VALUE, e.g. subset=LLMBar/Natural"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Check at most this many pairs"),
    as_json: bool = JsonOption,
) -> None:
    """Agreement of a scorer with human labels, its position consistency and its length bias."""
    from pydantic import ValidationError

    from curation.registry import UnknownComponent
    from curation.scorers.base import ScorerError
    from curation.scorers.fitness import check_scorer
    from curation.sources import SourceError

    config = _scorer_config(scorer_config, kind, name, option)
    filters = _pairs_of(where, "--where")
    if not pairs.exists():
        fail(f"pairs file {pairs} does not exist")
    try:
        report = check_scorer(config, pairs, limit=limit, where=filters)
    except (ValidationError, UnknownComponent, ScorerError, SourceError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_json(report.to_dict())
        return
    title = f"scorer {report.scorer} ({report.kind}, {report.mode}) on {pairs.name}"
    if report.where:
        title += " where " + ", ".join(f"{k}={v}" for k, v in report.where.items())
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("what it means")
    rows = [
        ("pairs", report.pairs, None, "labelled, non-tie pairs checked"),
        ("scored", report.scored, None, "pairs with a verdict"),
        ("failed", report.failed, None, "pairs without one (null score)"),
        ("agreement", report.agreement, report.agreement_ci, "share of pairs where the scorer prefers the human choice (ties 1/2)"),
        ("longer-is-better", report.longer_is_better, report.longer_is_better_ci, "the same for 'the longer response wins': the baseline"),
        ("position consistency", report.position_consistency, report.position_consistency_ci, "pairwise: both orders give the same winner"),
        ("length correlation", report.length_correlation, None, "Spearman(preference for chosen, chosen - rejected length)"),
        ("prefers longer", report.prefers_longer, None, "share of verdicts that pick the longer response"),
    ]
    for label, value, ci, meaning in rows:
        table.add_row(label, _fmt(value), "-" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}", meaning)
    console.print(table)
    for err, n in report.errors.items():
        console.print(f"  {n} x {err}", highlight=False)
    console.print(f"checked {report.pairs} pairs in {report.seconds:.1f} s", highlight=False)
