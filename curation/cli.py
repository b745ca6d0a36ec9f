"""`curate`: the command line. Each area adds its commands in one module of `curation.commands`.

Every command takes `--catalog` (default ./catalogs/default or $CURATE_CATALOG), prints rich
tables, offers `--json`, and exits non-zero on failure with a message that says what to fix.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    name="curate",
    help="Curated, versioned preference datasets and the models trained on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_CATALOG = "catalogs/default"
CatalogOption = typer.Option(
    None, "--catalog", help="Catalog folder [default: $CURATE_CATALOG or ./catalogs/default]"
)
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")


def catalog_path(catalog: str | None) -> Path:
    return Path(catalog or os.environ.get("CURATE_CATALOG") or DEFAULT_CATALOG)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")


def _load_commands() -> None:
    import curation.commands as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"curation.commands.{info.name}")


def main() -> None:
    _load_commands()
    app()
