"""The reliability table of issue 11, reproduced through the CLI as a careless or hostile user would.

Each test names the row it guards. Catalog-level cases (database lost, tampered versions) are in
tests/test_reliability.py; here: export folders, error lines, markup, names, input edges, validate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curation.cli import _load_commands, app

_load_commands()
runner = CliRunner()


def curate(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "500"})


def curate_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real console entry point (`python -m curation`), as a user runs it."""
    env = {**os.environ, "COLUMNS": "500"}
    return subprocess.run([sys.executable, "-m", "curation", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def pairs_file(path: Path, n: int, *, lines: dict[int, str] | None = None, bom: bool = False) -> Path:
    rows = [json.dumps({"prompt": f"question {i}?", "chosen": f"good answer {i}", "rejected": f"bad {i}"}) for i in range(n)]
    for i, text in (lines or {}).items():
        rows[i] = text
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ("\n".join(rows) + "\n").encode("utf-8", "surrogatepass"))
    return path


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reliability") / "cat"
    src = pairs_file(root.parent / "pairs.jsonl", 40)
    out = curate("import", str(src), "--name", "good", "--test-fraction", "0.3", "--catalog", str(root))
    assert out.exit_code == 0, out.output
    return root


# ---------------------------------------------------------------- export writes only what it owns


def test_export_keeps_files_the_user_added(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    assert curate("export", "good", "--format", "jsonl", "--out", str(out), "--catalog", str(catalog)).exit_code == 0
    (out / "notes.txt").write_text("mine")
    (out / "ckpt").mkdir()
    (out / "ckpt" / "model.bin").write_bytes(b"weights")
    again = curate("export", "good", "--format", "parquet", "--out", str(out), "--catalog", str(catalog))
    assert again.exit_code == 0, again.output
    assert (out / "notes.txt").read_text() == "mine" and (out / "ckpt" / "model.bin").read_bytes() == b"weights"
    # the earlier export's own files are replaced: jsonl gone, parquet there, and the manifest says so
    assert not (out / "train.jsonl").exists() and (out / "train.parquet").is_file()
    assert sorted(json.loads((out / "export.json").read_text())["files"]) == ["test.parquet", "train.parquet"]
    assert sorted(p.name for p in out.iterdir()) == ["ckpt", "export.json", "notes.txt", "test.parquet", "train.parquet"]


def test_export_refuses_dot_symlink_and_foreign_folders(catalog: Path, tmp_path: Path) -> None:
    here = tmp_path / "project"
    here.mkdir()
    (here / "keep.txt").write_text("mine")
    dot = curate_process("export", "good", "--format", "jsonl", "--out", ".", "--catalog", str(catalog), cwd=here)
    assert dot.returncode == 1 and "current folder" in dot.stderr and "Traceback" not in dot.stderr
    assert sorted(p.name for p in here.iterdir()) == ["keep.txt"]
    (tmp_path / "link").symlink_to(here)
    link = curate("export", "good", "--format", "jsonl", "--out", str(tmp_path / "link"), "--catalog", str(catalog))
    assert link.exit_code == 1 and "symbolic link" in link.output
    foreign = curate("export", "good", "--format", "jsonl", "--out", str(here), "--catalog", str(catalog))
    assert foreign.exit_code == 1 and "not an earlier export" in foreign.output
    assert sorted(p.name for p in here.iterdir()) == ["keep.txt"]
    # a file the new export would write, but which the earlier export did not: refused, kept
    out = tmp_path / "exp"
    assert curate("export", "good:train", "--format", "jsonl", "--out", str(out), "--catalog", str(catalog)).exit_code == 0
    (out / "test.jsonl").write_text("the user's own test split")
    clash = curate("export", "good", "--format", "jsonl", "--out", str(out), "--catalog", str(catalog))
    assert clash.exit_code == 1 and "test.jsonl exists and was not written" in clash.output
    assert (out / "test.jsonl").read_text() == "the user's own test split"


def test_unwritable_out_is_one_line(catalog: Path, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    r = curate_process("export", "good", "--format", "jsonl", "--out", str(tmp_path / "file.txt" / "sub"), "--catalog", str(catalog))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: cannot write to") and "file.txt" in r.stderr


# ---------------------------------------------------------------- messages: markup, emoji, tracebacks


def test_user_text_is_not_markup_or_emoji(catalog: Path, tmp_path: Path) -> None:
    odd = tmp_path / "[/x]" / "data[bold].jsonl"
    r = curate("import", str(odd), "--name", "n", "--catalog", str(catalog))
    assert r.exit_code == 1 and f"{odd}: file does not exist" in r.output
    r = curate("show", "good@v1:train:test", "--catalog", str(catalog))
    assert r.exit_code == 1 and "good@v1:train:test" in r.output and "\U0001f68b" not in r.output
    r = curate("export", "good", "--format", "csv", "--out", str(tmp_path / "o"), "--catalog", str(catalog))
    assert r.exit_code == 1 and "choose one of trl_dpo" in r.output


def test_broken_database_and_lock_are_one_line(catalog: Path, tmp_path: Path) -> None:
    broken = tmp_path / "cat"
    broken.mkdir()
    (broken / "catalog.duckdb").write_bytes(b"not a database at all" * 100)
    r = curate_process("ls", "--catalog", str(broken))
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: catalog database {broken / 'catalog.duckdb'} is unreadable") and "curate doctor" in r.stderr
    locked = tmp_path / "locked"
    shutil.copytree(catalog, locked)
    (locked / ".catalog.lock").unlink(missing_ok=True)
    (locked / ".catalog.lock").mkdir()
    r = curate_process("show", "good", "--catalog", str(locked))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"lock file {locked / '.catalog.lock'}" in r.stderr and "plain file" in r.stderr


@app.command("reliability-fixture-open", hidden=True)
def _open_missing(path: str) -> None:
    """A command that does not handle its OS error: the group turns it into one line."""
    open(path).close()


def test_unhandled_errors_are_one_line_unless_debug(tmp_path: Path) -> None:
    missing = tmp_path / "[/x] :train:" / "gone.txt"
    r = curate("reliability-fixture-open", str(missing))
    assert r.exit_code == 1 and not isinstance(r.exception, FileNotFoundError)
    assert r.output.splitlines()[0] == f"error: {missing}: No such file or directory; check that the path exists"
    r = curate("--debug", "reliability-fixture-open", str(missing))
    assert isinstance(r.exception, FileNotFoundError)  # --debug lets the traceback through


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["a\u200bb", "a\u202eb", "-rf", "--catalog", "a b", "x@v1", "../up", ".hidden"])
def test_bad_names_are_refused_by_import_and_recipes(tmp_path: Path, name: str) -> None:
    src = pairs_file(tmp_path / "p.jsonl", 3)
    r = curate("import", str(src), f"--name={name}", "--catalog", str(tmp_path / "cat"))
    assert r.exit_code == 1 and "invalid dataset name" in r.output
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: {json.dumps(name)}\nsources:\n  - path: p.jsonl\n", encoding="utf-8")
    v = curate("validate", str(recipe))
    assert v.exit_code == 1 and "invalid dataset name" in v.output


def test_nfc_and_nfd_names_are_one_dataset(tmp_path: Path) -> None:
    src = pairs_file(tmp_path / "p.jsonl", 3)
    cat = str(tmp_path / "cat")
    assert curate("import", str(src), "--name", "caf\u00e9", "--catalog", cat).exit_code == 0
    assert curate("import", str(src), "--name", "cafe\u0301", "--catalog", cat).exit_code == 0
    refs = [r["ref"] for r in json.loads(curate("ls", "--catalog", cat, "--json").stdout)]
    assert refs == ["caf\u00e9@v1", "caf\u00e9@v2"]
    assert curate("show", "cafe\u0301@v2", "--catalog", cat, "--json").exit_code == 0


# ---------------------------------------------------------------- inputs at the edges


def test_lone_surrogate_quarantines_one_row(tmp_path: Path) -> None:
    src = pairs_file(tmp_path / "p.jsonl", 100, lines={41: '{"prompt": "bad \\ud800 q", "chosen": "a", "rejected": "b"}'})
    r = curate("import", str(src), "--name", "s", "--catalog", str(tmp_path / "cat"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"] == 99 and json.loads(r.stdout)["quarantined"] == 1
    q = json.loads(curate("show", "s", "--catalog", str(tmp_path / "cat"), "--json").stdout)["quarantine"]
    assert [(x["line"], x["field"]) for x in q] == [(42, "prompt")] and "lone surrogate" in q[0]["reason"]


def test_bom_is_not_part_of_the_first_row(tmp_path: Path) -> None:
    src = pairs_file(tmp_path / "p.jsonl", 5, bom=True)
    r = curate("import", str(src), "--name", "b", "--catalog", str(tmp_path / "cat"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"] == 5 and json.loads(r.stdout)["quarantined"] == 0


def test_ragged_csv_rows_are_quarantined_with_lines(tmp_path: Path) -> None:
    from curation.sources import read_source

    src = tmp_path / "q.csv"
    src.write_bytes(b'\xef\xbb\xbfprompt,source\nhello,x\nworld,y,extra\n"multi\nline",z\nshort\nbad \xff byte,w\nlast,w\n')
    data = read_source(src)
    assert data.format == "prompts" and data.prompts.height == 3  # hello, multi-line, last (BOM gone from the header)
    bad = {(r["line"], r["field"]): r["reason"] for r in data.quarantine.iter_rows(named=True)}
    assert set(bad) == {(3, "(line)"), (6, "(line)"), (7, "prompt")}
    assert "3 cells, the header has 2" in bad[(3, "(line)")] and "1 cells" in bad[(6, "(line)")]
    assert "not valid UTF-8" in bad[(7, "prompt")]


# ---------------------------------------------------------------- validate


def test_validate_catches_what_used_to_fail_at_run_time(tmp_path: Path) -> None:
    pairs_file(tmp_path / "p.jsonl", 3)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\nsources:\n  - path: p.jsonl\n    format: hh_rlfh\n  - path: empty.jsonl\n  - path: ./folder\n"
        "publish:\n  formats: [trl_dpo, csv]\n"
    )
    r = curate("validate", str(recipe), "--json")
    assert r.exit_code == 1
    found = {(p["line"], p["path"]): p["message"] for p in json.loads(r.stdout)["problems"]}
    assert set(found) == {(4, "sources[0].format"), (5, "sources[1].path"), (6, "sources[2].path"), (8, "publish.formats")}
    assert "did you mean 'hh_rlhf'" in found[(4, "sources[0].format")] and "empty" in found[(5, "sources[1].path")]
    assert "is a folder" in found[(6, "sources[2].path")] and "'csv'" in found[(8, "publish.formats")]
    recipe.write_text("name: r\nsources:\n  - path: p.jsonl\npublish:\n  formats: [trl_dpo]\npublish:\n  formats: [jsonl]\n")
    r = curate("validate", str(recipe), "--json")
    assert r.exit_code == 1
    (p,) = json.loads(r.stdout)["problems"]
    assert p["line"] == 6 and p["path"] == "publish" and "duplicate key (first on line 4)" in p["message"]


# ---------------------------------------------------------------- the database is the record (CLI)


def test_lost_database_then_import_loses_nothing(tmp_path: Path) -> None:
    cat = str(tmp_path / "cat")
    src = pairs_file(tmp_path / "p.jsonl", 30)
    for limit in ("30", "20"):
        assert curate("import", str(src), "--name", "ds", "--limit", limit, "--catalog", cat).exit_code == 0
    (tmp_path / "cat" / "catalog.duckdb").unlink()
    ls = curate_process("ls", "--catalog", cat)
    assert ls.returncode == 1 and "catalog.duckdb is missing" in ls.stderr and "curate doctor --fix" in ls.stderr
    again = curate_process("import", str(src), "--name", "ds", "--limit", "5", "--catalog", cat)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "does not list 2 published version(s)" in again.stderr and "curate doctor --fix" in again.stderr
    assert sorted(p.name for p in (tmp_path / "cat" / "datasets" / "ds").iterdir()) == ["v1", "v2"]
    listed = curate("ls", "--catalog", cat)  # the refused import left an empty database: ls says what is missing
    assert listed.exit_code == 0 and "2 published version folder(s) are not in the database (ds@v1, ds@v2)" in listed.output
    looked = curate("doctor", "--catalog", cat, "--json")
    assert looked.exit_code == 1 and [f["kind"] for f in json.loads(looked.stdout)["findings"]] == ["unlisted", "unlisted"]
    fixed = curate("doctor", "--fix", "--catalog", cat)
    assert fixed.exit_code == 0, fixed.output
    assert "models trained on it and their evaluations were recorded only in the database" in " ".join(fixed.output.split())
    rows = json.loads(curate("ls", "--catalog", cat, "--json").stdout)
    assert [(r["ref"], r["rows"]) for r in rows] == [("ds@v1", 30), ("ds@v2", 20)]
    after = curate("import", str(src), "--name", "ds", "--limit", "5", "--catalog", cat, "--json")
    assert after.exit_code == 0 and json.loads(after.stdout)["ref"] == "ds@v3"


def test_tampered_version_is_refused_by_show_and_export(catalog: Path, tmp_path: Path) -> None:
    import polars as pl

    copy = tmp_path / "cat"
    shutil.copytree(catalog, copy)
    pairs = copy / "datasets" / "good" / "v1" / "data" / "train.parquet"
    pl.read_parquet(pairs).head(10).write_parquet(pairs)
    show = curate("show", "good", "--catalog", str(copy))
    assert show.exit_code == 1 and "holds 10 rows where the catalog recorded" in show.output
    exp = curate("export", "good", "--format", "jsonl", "--out", str(tmp_path / "e"), "--catalog", str(copy))
    assert exp.exit_code == 1 and "cannot be served" in exp.output and not (tmp_path / "e").exists()
    assert curate("show", "good", "--verify", "--catalog", str(catalog)).exit_code == 0


@pytest.mark.parametrize("ref", ["../x", "good@v1;DROP TABLE versions", "good@v1:../../etc", "x'y"])
def test_hostile_refs_are_refused(catalog: Path, ref: str) -> None:
    r = curate("show", ref, "--catalog", str(catalog))
    assert r.exit_code == 1 and ("bad dataset reference" in r.output or "invalid dataset name" in r.output)


# ---------------------------------------------------------------- curate run


def test_failed_run_is_one_error_line_and_tracebacks_need_debug(tmp_path: Path) -> None:
    (tmp_path / "junk.jsonl").write_text("not json\nalso not json\n")
    (tmp_path / "r.yaml").write_text("name: junk\nsources:\n  - path: junk.jsonl\n")
    r = curate_process("run", str(tmp_path / "r.yaml"), "--catalog", str(tmp_path / "cat"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"{tmp_path / 'junk.jsonl'}: format not detected" in errors[0]


def test_budget_beyond_the_pool_is_a_warning_in_the_run_summary(tmp_path: Path, shared_data: Path, capsys) -> None:
    from curation.commands.run import print_summary
    from curation.recipe import load_recipe
    from curation.stages import run_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: small\nsources:\n  - path: {shared_data / 'pandalm_testset.jsonl.gz'}\n    limit: 50\n"
                      "select:\n  - kind: length\n    budget: 5000\n")
    _, reports = run_recipe(load_recipe(recipe), tmp_path / "cat", until="select")
    capsys.readouterr()
    print_summary({"recipe": "small", "catalog": str(tmp_path / "cat"), "version": None, "seconds": 1.0,
                   "stages": [r.to_dict() for r in reports]})
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: select.0:length: budget 5000 exceeds the 50 items this step saw; it kept at most 50" in err


def test_budget_one_point_zero_is_refused_as_ambiguous(tmp_path: Path) -> None:
    pairs_file(tmp_path / "p.jsonl", 3)
    (tmp_path / "r.yaml").write_text("name: b\nsources:\n  - path: p.jsonl\nselect:\n  - kind: length\n    budget: 1.0\n")
    r = curate("validate", str(tmp_path / "r.yaml"), "--json")
    (p,) = json.loads(r.stdout)["problems"]
    assert r.exit_code == 1 and p["path"] == "select[0].budget" and "ambiguous" in p["message"]


def test_damaged_parquet_source_is_one_line_naming_the_file(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "pairs.parquet"
    rows = [{"prompt": f"question {i}?", "chosen": f"good {i} " + "y" * 200, "rejected": f"bad {i}"} for i in range(4000)]
    pq.write_table(pa.Table.from_pylist(rows), src, row_group_size=2000, compression="none")
    data = bytearray(src.read_bytes())
    start = pq.ParquetFile(src).metadata.row_group(1).column(0).data_page_offset
    data[start:start + 64] = b"\xff" * 64  # the second row group's first page header
    src.write_bytes(bytes(data))
    r = curate_process("import", str(src), "--name", "p", "--catalog", str(tmp_path / "cat"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: {src}: unreadable from row ") and "damaged or truncated" in r.stderr


def test_run_summary_says_where_the_version_and_its_exports_are(tmp_path: Path, shared_data: Path, capsys) -> None:
    from curation.commands.run import print_summary
    from curation.recipe import load_recipe
    from curation.stages import run_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: small\nsources:\n  - path: {shared_data / 'pandalm_testset.jsonl.gz'}\n    limit: 40\n"
                      "publish:\n  formats: [trl_dpo]\n")
    _, reports = run_recipe(load_recipe(recipe), tmp_path / "cat")
    capsys.readouterr()
    print_summary({"recipe": "small", "catalog": str(tmp_path / "cat"), "version": "small@v1", "seconds": 1.0,
                   "stages": [r.to_dict() for r in reports]})
    out = capsys.readouterr().out
    folder = tmp_path / "cat" / "datasets" / "small" / "v1"
    assert f"small@v1 folder: {folder}" in out and (folder / "README.md").is_file()
    export = next(line.split("export trl_dpo: ")[1] for line in out.splitlines() if "export trl_dpo: " in line)
    assert (Path(export) / "train.jsonl").is_file()
    train = {"stage": "train", "detail": {"model": "/m/run", "control_model": "/m/run-control"}, "counts": {}}
    print_summary({"recipe": "small", "catalog": str(tmp_path / "cat"), "version": "small@v1", "seconds": 1.0,
                   "stages": [r.to_dict() for r in reports] + [{**reports[-1].to_dict(), **train}]})
    out = capsys.readouterr().out
    assert "trained model: /m/run" in out and "random-control model: /m/run-control" in out
