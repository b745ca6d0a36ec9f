"""`curate`: the command line. Each area adds its commands in one module of `curation.commands`.

Every command takes `--catalog` (default ./catalogs/default or $CURATE_CATALOG), prints rich
tables, offers `--json`, and exits non-zero on failure with a one-line message that says what to
fix. Any error a command does not handle itself (OS, Arrow, Polars, DuckDB) is turned into such a
line too; `curate --debug ...` shows the traceback instead. With `--json` an error is one JSON
object on stdout instead, `{"error", "file", "hint"}` (exit 1; a usage error keeps exit 2), so a
script reads failures the way it reads results. Messages carry user text (paths, names, refs), so
the consoles interpret neither rich markup nor emoji codes. `-h` is `--help` everywhere.
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

import typer
from rich.console import Console
from rich.text import Text
from typer._click.exceptions import ClickException  # typer vendors click: its usage errors are not the click package's
from typer.core import TyperGroup


class _Group(TyperGroup):
    """Runs a command; an unexpected exception becomes one error line (or JSON object) and exit code 1."""

    def main(self, args: Any = None, *rest: Any, standalone_mode: bool = True, **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        _JSON["on"] = "--json" in args[: args.index("--") if "--" in args else len(args)]
        _JSON["out"] = None
        if not (_JSON["on"] and standalone_mode):
            return super().main(args, *rest, standalone_mode=standalone_mode, **extra)
        try:  # click prints usage errors itself in standalone mode; here they become JSON too
            code = super().main(args, *rest, standalone_mode=False, **extra)
        except ClickException as exc:
            _json_error(exc.format_message(), None, "`curate COMMAND -h` lists its arguments and options")
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print(Text("interrupted", style="bold red"))
            raise typer.Exit(130) from None
        except Exception as exc:
            if _debug():
                raise
            message, hint = describe_error(exc)
            if _JSON["on"]:
                _json_error(message, getattr(exc, "filename", None), hint)
                raise typer.Exit(1) from None
            err_console.print(Text.assemble(("error: ", "bold red"), f"{message}; {hint}"), soft_wrap=True)
            err_console.print(Text("(`curate --debug ...` shows the traceback)", style="dim"))
            raise typer.Exit(1) from None


_DEBUG = {"on": False}  # set by --debug; a plain global, as log records come from engine threads too
# --json on the command line: errors are JSON objects, written to `out` (stdout unless a command
# moved its JSON elsewhere, see `json_stream`)
_JSON: dict[str, Any] = {"on": False, "out": None}


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
    context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit it
)
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False, highlight=False)


def _print_version(value: bool) -> None:
    if value:
        from curation import __version__

        console.print(f"curate {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of unexpected errors."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
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


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(what went wrong, what to do) for an error no command handled; the file when known."""
    if isinstance(exc, OSError) and (exc.filename or exc.strerror):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", _HINTS.get(exc.errno or -1, "check the file and run again")
    first = (str(exc).strip().splitlines() or [""])[0]
    kind = type(exc).__module__.split(".")[0]
    if kind == "duckdb":
        return f"DuckDB: {first}", "if this is a catalog's database, `curate doctor --catalog DIR` checks it"
    if kind in ("pyarrow", "polars"):
        return f"{kind}: {type(exc).__name__}: {first}", "a data file is unreadable or damaged (`curate doctor` checks a catalog)"
    return f"unexpected {type(exc).__name__}: {first}", "this is a bug: rerun with `curate --debug ...` and report the traceback"


def catalog_path(catalog: str | None) -> Path:
    from curation.catalog import DEFAULT_CATALOG, DEFAULT_CATALOG_ENV

    return Path(catalog or os.environ.get(DEFAULT_CATALOG_ENV) or DEFAULT_CATALOG)


def fail(message: str, code: int = 1, *, file: str | os.PathLike | None = None, hint: str | None = None) -> NoReturn:
    """Stop the command: one error line on stderr, or with --json one {"error", "file", "hint"} object."""
    if _JSON["on"]:
        _json_error(str(message), file, hint)
    else:
        text = f"{message}; {hint}" if hint else str(message)
        err_console.print(Text.assemble(("error: ", "bold red"), text), soft_wrap=True)
    raise typer.Exit(code)


def _json_error(message: str, file: str | os.PathLike | None, hint: str | None) -> None:
    print_json({"error": message, "file": None if file is None else str(file), "hint": hint})


def json_stream(out: Any) -> None:
    """Where --json output goes from now on (a command that points stdout elsewhere, see `curate run`)."""
    _JSON["out"] = out


def warn(message: str) -> None:
    err_console.print(Text.assemble(("warning: ", "bold yellow"), str(message)), soft_wrap=True)


def print_json(obj: Any) -> None:
    out = _JSON["out"] or sys.stdout
    out.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")
    out.flush()


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
