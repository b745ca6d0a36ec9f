"""`curate validate`: check a recipe without running anything."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from curation.cli import JsonOption, app, console, err_console, print_json


@app.command()
def validate(
    recipe: Path = typer.Argument(..., help="Recipe YAML file"),
    as_json: bool = JsonOption,
) -> None:
    """Check a recipe: every section, component and path, with YAML lines. Nothing runs."""
    from curation.recipe import RecipeError, load_recipe

    try:
        r = load_recipe(recipe)
    except RecipeError as exc:
        if as_json:
            first = exc.problems[0] if exc.problems else None
            print_json({"ok": False, "recipe": str(recipe),
                        "error": f"{len(exc.problems)} problem(s) in {recipe}" + (f"; line {first.line or '?'}: {first.where()}: {first.message}" if first else ""),
                        "file": str(recipe), "hint": "fix the fields listed under `problems` (each with its YAML line)",
                        "problems": [{"line": p.line, "path": p.where(), "message": p.message} for p in exc.problems]})
        else:
            err_console.print(Text.assemble((f"{len(exc.problems)} problem(s)", "bold red"), f" in {recipe}:"))
            for p in exc.problems:
                err_console.print(Text.assemble(f"  {recipe}:{p.line or '?'}: ", (p.where(), "bold"), f": {p.message}"))
        raise typer.Exit(1)
    stages = _stage_summary(r)
    if as_json:
        print_json({"ok": True, "recipe": str(recipe), "name": r.name, "dataset": r.dataset_name, "stages": stages})
        return
    table = Table(title=f"recipe {r.name} is valid: publishes dataset '{r.dataset_name}'")
    table.add_column("stage")
    table.add_column("what runs")
    for stage, what in stages.items():
        table.add_row(stage, what)
    console.print(table)


def _stage_summary(r) -> dict[str, str]:
    out = {"sources": ", ".join(f"{s.path or 'query'} ({s.format}{f', limit {s.limit}' if s.limit else ''})"
                                for s in r.sources)}
    if r.models:
        out["models"] = ", ".join(f"{m.build} -> {m.path}" for m in r.models)
    if r.generate is not None:
        out["generate"] = f"{r.generate.backend} {r.generate.model} n={r.generate.n}"
    if r.score:
        out["score"] = ", ".join(f"{s.name} ({s.kind})" for s in r.score)
    if r.pairs is not None:
        out["pairs"] = r.pairs.builder
    if r.select:
        out["select"] = " -> ".join(s.kind for s in r.select)
    out["publish"] = f"{r.dataset_name} formats={','.join(r.publish.formats) or '-'}"
    if r.train is not None:
        out["train"] = getattr(r.train, "method", "yes")
    if r.evaluate is not None:
        out["evaluate"] = "yes"
    if r.rounds > 1:
        out["rounds"] = str(r.rounds)
    return out
