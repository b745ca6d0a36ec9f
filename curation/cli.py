"""`curate`: the command line. Each area adds its commands in one module of `curation.commands`.

Every command takes `--catalog` (default ./catalogs/default or $CURATE_CATALOG), prints rich
tables, offers `--json`, and exits non-zero on failure with a one-line message that says what to
fix. Any error a command does not handle itself (OS, Arrow, Polars, DuckDB) is turned into such a
line too; `curate --debug ...` shows the traceback instead. Messages carry user text (paths,
names, refs), so the consoles interpret neither rich markup nor emoji codes.
"""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import pkgutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup


class _Group(TyperGroup):
    """Runs a command; an unexpected exception becomes one error line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print(Text("interrupted", style="bold red"))
            raise typer.Exit(130) from None
        except Exception as exc:
            if _debug():
                raise
            err_console.print(Text.assemble(("error: ", "bold red"), describe_error(exc)), soft_wrap=True)
            err_console.print(Text("(`curate --debug ...` shows the traceback)", style="dim"))
            raise typer.Exit(1) from None


_DEBUG = {"on": False}  # set by --debug; a plain global, as log records come from engine threads too


def _debug() -> bool:
    return _DEBUG["on"] or os.environ.get("CURATE_DEBUG", "") not in ("", "0")


class _NoTracebacks(logging.Filter):
    """Log lines keep their message; the traceback attached to one is dropped unless --debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not _debug():
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines to stderr for long commands (run, train); engines' tracebacks only with --debug."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _NoTracebacks) for f in handler.filters):
            handler.addFilter(_NoTracebacks())


app = typer.Typer(
    name="curate",
    help="Curated, versioned preference datasets and the models trained on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=_Group,
)
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False, highlight=False)


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of unexpected errors."),
) -> None:
    _DEBUG["on"] = debug


CatalogOption = typer.Option(
    None, "--catalog", help="Catalog folder [default: $CURATE_CATALOG or ./catalogs/default]"
)
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")

_HINTS = {
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOSPC: "the disk is full; free space and run again",
    errno.ENOENT: "check that the path exists",
    errno.EISDIR: "a folder is where a file is expected; move it away",
    errno.ENOTDIR: "a file is where a folder is expected; move it away",
    errno.EEXIST: "something already exists there; move it away",
}


def describe_error(exc: BaseException) -> str:
    """One line for an error no command handled: the file when known, and what to do."""
    if isinstance(exc, OSError) and (exc.filename or exc.strerror):
        where = f"{exc.filename}: " if exc.filename else ""
        hint = _HINTS.get(exc.errno or -1, "check the file and run again")
        return f"{where}{exc.strerror or exc}; {hint}"
    first = (str(exc).strip().splitlines() or [""])[0]
    kind = type(exc).__module__.split(".")[0]
    if kind == "duckdb":
        return f"DuckDB: {first}; if this is a catalog's database, `curate doctor --catalog DIR` checks it"
    if kind in ("pyarrow", "polars"):
        return f"{kind}: {type(exc).__name__}: {first}; a data file is unreadable or damaged (`curate doctor` checks a catalog)"
    return f"unexpected {type(exc).__name__}: {first}; this is a bug: rerun with `curate --debug ...` and report the traceback"


def catalog_path(catalog: str | None) -> Path:
    from curation.catalog import DEFAULT_CATALOG, DEFAULT_CATALOG_ENV

    return Path(catalog or os.environ.get(DEFAULT_CATALOG_ENV) or DEFAULT_CATALOG)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(Text.assemble(("error: ", "bold red"), str(message)), soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(Text.assemble(("warning: ", "bold yellow"), str(message)), soft_wrap=True)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")


def _load_commands() -> None:
    import curation.commands as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"curation.commands.{info.name}")


def main() -> None:
    _load_commands()
    args = sys.argv[1:]
    if "--debug" in args:  # accepted anywhere on the line, as users type it
        args = ["--debug"] + [a for a in args if a != "--debug"]
    app(args=args, prog_name="curate")
