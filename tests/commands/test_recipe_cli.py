import json
import subprocess
import sys
from pathlib import Path

from tests.test_recipe import EXAMPLE, write


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation", *args], capture_output=True, text=True, timeout=120)


def test_validate_ok_and_json(recipe_dir: Path):
    path = write(recipe_dir, EXAMPLE)
    out = curate("validate", str(path), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["dataset"] == "hh-curated"
    assert report["stages"]["select"] == "noise -> kmq"


def test_validate_fails_with_line_numbers(recipe_dir: Path):
    path = write(recipe_dir, EXAMPLE.replace("min_margin", "min_marginn"))
    out = curate("validate", str(path))
    assert out.returncode == 1
    assert f"{path}:8: pairs.min_marginn: unknown key" in out.stderr.replace("\n", "")
