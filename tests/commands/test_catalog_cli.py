from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curation.cli import _load_commands, app

_load_commands()
runner = CliRunner()

SMALL = [
    '{"prompt": "a?", "chosen": "yes", "rejected": "no"}',
    '{"prompt": "b?", "chosen": "", "rejected": "no"}',
    '{"prompt": "c?", "chosen": "ok", "rejected": "bad"}',
    "not json",
    '{"prompt": "d?", "chosen": "fine", "rejected": "worse"}',
]


def curate(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "500"})  # no wrapping inside paths


def _oneline(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("cli") / "cat"
    out = curate("import", str(shared_data / "llmbar.jsonl.gz"), "--name", "llmbar", "--test-fraction", "0.2", "--catalog", str(root), "--json")
    assert out.exit_code == 0, out.output
    out = curate("import", str(shared_data / "llmbar.jsonl.gz"), "--name", "llmbar", "--limit", "100", "--catalog", str(root), "--json")
    assert out.exit_code == 0, out.output
    return root


def test_import_json_report(catalog: Path) -> None:
    out = curate("ls", "--catalog", str(catalog), "--json")
    assert out.exit_code == 0
    rows = json.loads(out.stdout)
    assert [r["ref"] for r in rows] == ["llmbar@v1", "llmbar@v2"]
    assert rows[0]["rows"] == 1191 and rows[0]["n_test"] > 0 and rows[1]["rows"] == 100
    assert rows[0]["counts"]["quarantined"] == 2


def test_show_json_and_table(catalog: Path) -> None:
    out = curate("show", "llmbar@v1", "--sample", "3", "--catalog", str(catalog), "--json")
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)
    assert info["ref"] == "llmbar@v1" and len(info["sample"]) == 3
    assert info["stats"]["rows"] == 1191 and info["stats"]["quarantined"] == 2
    assert sum(info["stats"]["label_sources"].values()) == 1191
    assert info["stats"]["chosen_chars"]["n"] == 1191 and "margin" in info["columns"]
    assert {q["line"] for q in info["quarantine"]} and all(q["reason"] for q in info["quarantine"])
    out = curate("show", "llmbar@v1:test", "--catalog", str(catalog))
    assert out.exit_code == 0 and "quarantine reasons" in out.stdout


def test_unknown_refs_list_what_exists(catalog: Path) -> None:
    out = curate("show", "nope", "--catalog", str(catalog))
    assert out.exit_code == 1 and "datasets: llmbar" in _oneline(out.stderr)
    out = curate("show", "llmbar@v9", "--catalog", str(catalog))
    assert out.exit_code == 1 and "versions: v1, v2" in _oneline(out.stderr)
    out = curate("ls", "--catalog", str(catalog.parent / "missing"))
    assert out.exit_code == 1 and "no catalog at" in _oneline(out.stderr)


def test_diff_json(catalog: Path) -> None:
    out = curate("diff", "llmbar@v1", "llmbar@v2", "--catalog", str(catalog), "--json")
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert (d["rows_a"], d["rows_b"], d["added"], d["removed"]) == (1191, 100, 0, 1091)
    assert d["changed"] + d["unchanged"] == 100


def test_export_json_and_bad_format(catalog: Path, tmp_path: Path) -> None:
    out = curate("export", "llmbar@v1:train", "--format", "trl_dpo", "--out", str(tmp_path / "dpo"), "--catalog", str(catalog), "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["files"] == ["train.jsonl"] and report["written"]["train"] > 0
    assert pl.read_ndjson(tmp_path / "dpo" / "train.jsonl").height == report["written"]["train"]
    out = curate("export", "llmbar", "--format", "csv", "--out", str(tmp_path / "x"), "--catalog", str(catalog))
    assert out.exit_code == 1 and "unknown export format 'csv'" in _oneline(out.stderr)


def test_import_fails_above_bad_fraction(tmp_path: Path) -> None:
    src = tmp_path / "small.jsonl"
    src.write_text("\n".join(SMALL) + "\n")
    root = tmp_path / "cat"
    out = curate("import", str(src), "--name", "small", "--catalog", str(root))
    assert out.exit_code == 1
    msg = _oneline(out.stderr)
    assert "2 of 5 rows (40.0%)" in msg and "nothing was published" in msg
    qpath = msg.split("are in ")[1].split(";")[0]
    quarantine = pl.read_parquet(qpath)
    assert sorted(quarantine["line"].to_list()) == [2, 4]
    out = curate("import", str(src), "--name", "small", "--max-bad-fraction", "0.5", "--catalog", str(root), "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["rows"] == 3 and result["quarantined"] == 2
    out = curate("import", str(src), "--name", "small", "--max-bad-fraction", "0.5", "--catalog", str(root))
    assert out.exit_code == 0, out.output
    assert str(root / "datasets" / "small" / "v2") in out.stdout  # the table says where the version is


def test_invalid_name_fails_before_reading(tmp_path: Path) -> None:
    out = curate("import", str(tmp_path / "does-not-exist.jsonl"), "--name", "../evil", "--catalog", str(tmp_path / "c"))
    assert out.exit_code == 1 and "invalid dataset name" in _oneline(out.stderr)
    out = curate("import", str(tmp_path / "does-not-exist.jsonl"), "--name", "fine", "--catalog", str(tmp_path / "c"))
    assert out.exit_code == 1 and "does-not-exist.jsonl" in _oneline(out.stderr)


def test_ls_models(catalog: Path) -> None:
    from curation.catalog import open_catalog

    none = curate("ls", "--models", "--catalog", str(catalog))
    assert none.exit_code == 0 and "no models: `curate train`" in _oneline(none.stdout) and "curate import" not in none.stdout
    cat = open_catalog(catalog)
    mid = cat.record_model("llmbar@v1:train", "dpo", {"beta": 0.1}, {"loss": 0.3}, "/tmp/m", base_model="tiny")
    cat.record_evaluation(mid, "llmbar@v1:test", "fp", {"accuracy": 0.6})
    out = curate("ls", "--models", "--catalog", str(catalog), "--json")
    models = json.loads(out.stdout)
    assert [m["model_id"] for m in models] == [mid] and models[0]["evaluations"] == 1
    assert models[0]["metrics"] == {"loss": 0.3}
    table = curate("ls", "--models", "--catalog", str(catalog))
    assert table.exit_code == 0 and "/tmp/m" in table.stdout  # where the model is: what `curate eval` takes


def test_console_script_exit_codes(catalog: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "curation", "ls", "--catalog", str(catalog), "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)
    bad = subprocess.run([sys.executable, "-m", "curation", "show", "zzz", "--catalog", str(catalog)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "unknown dataset 'zzz'" in _oneline(bad.stderr)


def test_kto_export_says_where_its_skipped_rows_are(tmp_path: Path) -> None:
    """A baseline answer that wins one pair and loses another: one KTO completion labelled both ways."""
    src = tmp_path / "kto.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "a?", "chosen": "base", "rejected": "worse"},
        {"prompt": "a?", "chosen": "better", "rejected": "base"},
        {"prompt": "b?", "chosen": "fine", "rejected": "bad"},
    ]) + "\n")
    root = tmp_path / "cat"
    assert curate("import", str(src), "--name", "kto", "--catalog", str(root)).exit_code == 0
    out = curate("export", "kto", "--format", "trl_kto", "--out", str(tmp_path / "out"), "--catalog", str(root))
    assert out.exit_code == 0, out.output
    assert not (tmp_path / "out" / "quarantine.jsonl").exists()
    msg = _oneline(out.stderr)
    assert "quarantine.jsonl" not in msg and "contradictory_label" in msg and "export.json" in msg
