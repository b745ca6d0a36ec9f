"""The options every command shares: `-h`, `curate --version`, and `--json` errors as one JSON object."""

from __future__ import annotations

import errno
import json
import tomllib
from pathlib import Path

import typer
from typer.main import get_command
from typer.testing import CliRunner

from curation.cli import JsonOption, _Group, _load_commands, app, fail

_load_commands()
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def curate(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def one_json_error(result) -> dict:
    """stdout holds exactly one JSON object with error, file and hint; stderr holds no error line."""
    obj = json.loads(result.stdout)
    assert set(obj) >= {"error", "file", "hint"}, obj
    assert "error:" not in result.stderr
    return obj


def test_version_is_the_package_version():
    result = curate("--version")
    assert result.exit_code == 0, result.output
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.stdout.strip() == f"curate {version}"


def test_short_help_on_every_command():
    names = sorted(get_command(app).commands)
    assert {"import", "ls", "show", "run", "validate", "train"} <= set(names)
    for name in [None, *names]:
        args = ["-h"] if name is None else [name, "-h"]
        result = curate(*args)
        assert result.exit_code == 0, (name, result.output)
        assert f"Usage: curate{'' if name is None else ' ' + name}" in result.stdout
        assert result.stdout == curate(*args[:-1], "--help").stdout


def test_a_failing_command_with_json_prints_one_object(tmp_path: Path):
    missing = tmp_path / "no[bold]catalog:smile:"  # user text: no markup, no emoji codes
    result = curate("ls", "--catalog", str(missing), "--json")
    assert result.exit_code == 1
    obj = one_json_error(result)
    assert obj == {"error": f"no catalog at {missing}", "file": str(missing),
                   "hint": f"import data first (`curate import FILE --name NAME --catalog {missing}`)"}
    plain = curate("ls", "--catalog", str(missing))  # the same error without --json: one line on stderr
    assert plain.exit_code == 1 and plain.stdout == ""
    assert plain.stderr.strip() == f"error: {obj['error']}; {obj['hint']}"


def test_bad_recipe_with_json_names_the_file(tmp_path: Path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: x\nsources: 3\n")
    for command in ("run", "validate"):
        result = curate(command, str(recipe), "--json")
        assert result.exit_code == 1, result.output
        obj = one_json_error(result)
        assert obj["file"] == str(recipe) and "sources" in obj["error"] and obj["hint"]


def test_usage_error_with_json_is_json_too():
    result = curate("ls", "--json", "--no-such-option")
    assert result.exit_code == 2  # click's usage-error status, as without --json
    obj = one_json_error(result)
    assert "--no-such-option" in obj["error"] and "-h" in obj["hint"]
    plain = curate("ls", "--no-such-option")
    assert plain.exit_code == 2 and "No such option" in plain.stderr


def test_unhandled_error_with_json_keeps_file_and_hint():
    """An error no command handles (here a full disk) is described the same way, as JSON."""
    test_app = typer.Typer(cls=_Group, add_completion=False)

    @test_app.command()
    def write(as_json: bool = JsonOption) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.parquet")

    @test_app.command()
    def check(as_json: bool = JsonOption) -> None:
        fail("not fine", file="f.txt", hint="fix it")

    result = runner.invoke(test_app, ["write", "--json"])
    assert result.exit_code == 1
    assert one_json_error(result) == {"error": "/data/out.parquet: No space left on device", "file": "/data/out.parquet",
                                      "hint": "the disk is full; free space and run again"}
    plain = runner.invoke(test_app, ["write"])
    assert plain.exit_code == 1 and plain.stdout == ""
    assert plain.stderr.startswith("error: /data/out.parquet: No space left on device; the disk is full")
    assert one_json_error(runner.invoke(test_app, ["check", "--json"])) == {"error": "not fine", "file": "f.txt", "hint": "fix it"}

