"""The catalog rows of issue 11's reliability table: the database is the record, reads are verified,
leftovers are reported and cleaned only when asked, damaged stage artifacts are recomputed.

CLI-level rows (export folders, error lines, names, input edges, validate) are in
tests/commands/test_reliability_cli.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from curation.catalog import CatalogError, open_catalog
from curation.doctor import doctor
from curation.store import DAMAGED_SUFFIX
from tests.test_catalog import make_tables


def _three_versions(root: Path):
    cat = open_catalog(root)
    infos = [cat.publish("ds", make_tables(n, tag=f"v{n}")) for n in (3, 4, 5)]
    return cat, infos


def _kinds(report) -> list[tuple[str, str, bool]]:
    return sorted((f.kind, Path(f.path).name, f.resolved) for f in report.findings)


# ---------------------------------------------------------------- the database is the record


@pytest.mark.parametrize("how", ["lost", "older backup"])
def test_lost_or_old_database_refuses_writes_until_doctor_rebuilds_it(tmp_path: Path, how: str) -> None:
    root = tmp_path / "cat"
    cat = open_catalog(root)
    v1 = cat.publish("ds", make_tables(3, tag="a"))
    shutil.copy(root / "catalog.duckdb", tmp_path / "backup.duckdb")
    v2 = cat.publish("ds", make_tables(4, tag="b"))
    cat.publish("other", make_tables(2, tag="c"))
    if how == "lost":
        (root / "catalog.duckdb").unlink()
    else:
        shutil.copy(tmp_path / "backup.duckdb", root / "catalog.duckdb")
    cat = open_catalog(root)
    with pytest.raises(CatalogError, match=r"does not list .*ds@v2.*curate doctor --fix"):
        cat.publish("ds", make_tables(1, tag="new"))
    with pytest.raises(CatalogError, match="does not list"):
        cat.publish("brand-new", make_tables(1, tag="new"))  # no write at all while the record is behind
    assert sorted(p.name for p in (root / "datasets" / "ds").iterdir()) == ["v1", "v2"]  # nothing deleted
    assert json.loads((v2.path / "manifest.json").read_text())["rows"] == 4

    looked = doctor(root)
    assert not looked.ok and ("unlisted", "v2", False) in _kinds(looked)
    assert len(open_catalog(root).versions()) == (0 if how == "lost" else 1)  # looking changed nothing
    fixed = doctor(root, fix=True)
    assert fixed.ok and ("unlisted", "v2", True) in _kinds(fixed)
    cat = open_catalog(root)
    assert cat.versions()["ref"].to_list() == ["ds@v1", "ds@v2", "other@v1"]
    assert cat.resolve("ds@v2").fingerprint == v2.fingerprint and cat.load("ds@v2").height == 4
    assert cat.resolve("ds@v1").fingerprint == v1.fingerprint
    v3 = cat.publish("ds", make_tables(1, tag="new"))
    assert v3.version == 3  # numbers are never reused
    assert doctor(root).ok


def test_only_a_manifest_that_says_never_committed_is_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    cat, _ = _three_versions(root)
    ds = root / "datasets" / "ds"
    pending = ds / "v4"
    shutil.copytree(ds / "v3", pending)
    manifest = json.loads((pending / "manifest.json").read_text())
    (pending / "manifest.json").write_text(json.dumps({**manifest, "version": 4, "committed": False}))
    report = doctor(root)
    assert _kinds(report) == [("uncommitted", "v4", False)] and pending.is_dir()
    info = cat.publish("ds", make_tables(2, tag="next"))
    assert info.version == 4 and cat.load("ds@v4").height == 2  # the crash debris was replaced
    # a folder without a readable manifest is not debris by guess: writes stop, nothing is deleted
    stray = ds / "v5"
    stray.mkdir()
    (stray / "pairs.parquet").write_bytes(b"someone's file")
    with pytest.raises(CatalogError, match=r"ds@v5"):
        cat.publish("ds", make_tables(1, tag="more"))
    assert (stray / "pairs.parquet").read_bytes() == b"someone's file"
    report = doctor(root, fix=True, clean=True)
    assert _kinds(report) == [("unlisted", "v5", False)] and stray.is_dir()


def test_unreadable_database_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    _, infos = _three_versions(root)
    (root / "catalog.duckdb").write_bytes(b"\x00garbage" * 4096)
    with pytest.raises(CatalogError, match=r"catalog database .*catalog\.duckdb is unreadable.*curate doctor"):
        open_catalog(root).versions()
    looked = doctor(root)
    assert [f.kind for f in looked.findings] == ["database", "unlisted", "unlisted", "unlisted"] and not looked.ok
    fixed = doctor(root, fix=True)
    assert fixed.ok and [f.kind for f in fixed.findings] == ["database", "unlisted", "unlisted", "unlisted"]
    assert any(p.name.startswith("catalog.duckdb.damaged-") for p in root.iterdir())
    cat = open_catalog(root)
    assert [cat.resolve(i.ref).fingerprint for i in infos] == [i.fingerprint for i in infos]


def test_leftovers_are_reported_and_removed_only_with_clean(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    _three_versions(root)
    dead = root / "datasets" / "ds" / ".tmp-999999999-deadbeef"
    dead.mkdir()
    (dead / "pairs.parquet").write_bytes(b"x" * 1000)
    live = root / "datasets" / "ds" / f".tmp-{os.getpid()}-cafecafe"
    live.mkdir()
    report = doctor(root)
    assert _kinds(report) == [("leftover", dead.name, False)] and "1000 bytes" in report.findings[0].message
    assert dead.is_dir()
    report = doctor(root, clean=True)
    assert report.ok and not dead.exists() and live.is_dir()


# ---------------------------------------------------------------- reads are verified


def test_edited_or_swapped_pairs_are_not_served(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    cat, infos = _three_versions(root)
    v1, v2, v3 = (i.path / "data" / "train.parquet" for i in infos)
    edited = pl.read_parquet(v1).with_columns(pl.lit("EDITED").alias("chosen"))
    edited.write_parquet(v1, compression="zstd")
    with pytest.raises(CatalogError, match=r"ds@v1 cannot be served: .*v1/data/train\.parquet .*(edited)"):
        cat.load("ds@v1")
    shutil.copy(v3, v2)  # a whole file swapped in from another version
    with pytest.raises(CatalogError, match=r"ds@v2 cannot be served: .*holds 5 rows where the catalog recorded 4"):
        cat.load("ds@v2")
    # same size, same footer, one byte changed: only the full check (doctor, --verify) sees it
    data = bytearray(v3.read_bytes())
    data[len(data) // 3] ^= 0x01
    v3.write_bytes(bytes(data))
    with pytest.raises(CatalogError, match="content hash differs"):
        cat.verify_version("ds@v3")
    report = doctor(root)
    assert _kinds(report) == [("damaged", "v1", False), ("damaged", "v2", False), ("damaged", "v3", False)]
    quick = doctor(root, full=False)  # sizes, rows and footers only
    assert _kinds(quick) == [("damaged", "v1", False), ("damaged", "v2", False)]


def test_truncated_pairs_and_lineage_tables_are_named(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    cat, infos = _three_versions(root)
    pairs = infos[0].path / "data" / "train.parquet"
    pairs.write_bytes(pairs.read_bytes()[:200])
    with pytest.raises(CatalogError, match=r"ds@v1 cannot be served: .*v1/data/train\.parquet damaged"):
        cat.load("ds@v1")
    decisions = infos[1].path / "decisions.parquet"
    decisions.write_bytes(decisions.read_bytes()[:-10])
    assert cat.load("ds@v2").height == 4  # pairs intact
    with pytest.raises(CatalogError, match=r"v2/decisions\.parquet damaged"):
        cat.load("ds@v2", table="decisions")


# ---------------------------------------------------------------- stage artifacts


def test_damaged_artifact_is_set_aside_and_recomputed(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    store = open_catalog(root).store
    frame = pl.DataFrame({"x": list(range(1000))})
    path = Path(store.write("stage", "fp1", frame).path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a killed copy, a full disk
    assert not store.exists("stage", "fp1")  # resume does not trust it ...
    assert path.with_name(path.name + DAMAGED_SUFFIX).is_file() and not path.exists()
    store.write("stage", "fp1", frame)  # ... so the stage recomputes it
    assert store.read(store.ref("stage", "fp1")).equals(frame)
    assert _kinds(doctor(root)) == [("leftover", path.name + DAMAGED_SUFFIX, False)]
    assert doctor(root, clean=True).ok and not path.with_name(path.name + DAMAGED_SUFFIX).exists()
    path.write_bytes(b"PAR1 not really")  # damaged in place: doctor finds it, --clean removes it
    assert _kinds(doctor(root)) == [("bad_artifact", path.name, False)]


# ---------------------------------------------------------------- publish once, after the format checks


def test_a_view_that_cannot_be_exported_stops_the_publish(tmp_path: Path) -> None:
    from curation.export import ExportError

    cat = open_catalog(tmp_path / "cat")
    tables = make_tables(3)
    # every chosen answer empty: export quarantines each row, so the view would be empty
    chosen = tables["pairs"]["chosen_id"]
    tables["candidates"] = tables["candidates"].with_columns(
        pl.when(pl.col("candidate_id").is_in(chosen.implode())).then(pl.lit("")).otherwise(pl.col("text")).alias("text"))
    with pytest.raises(ExportError, match="trl_dpo_text: no rows left to export: .*empty_answer 3"):
        cat.publish("t", tables, formats=["jsonl", "trl_dpo_text"])
    assert cat.versions().height == 0 and not any((tmp_path / "cat" / "datasets" / "t").glob("v*"))
    assert cat.publish("t", tables, formats=["jsonl"]).version == 1


def _publish_recipe(tmp_path: Path, shared_data: Path, out: Path) -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: small\nsources:\n  - path: {shared_data / 'pandalm_testset.jsonl.gz'}\n    limit: 40\n"
                      f"publish:\n  formats: [jsonl, trl_dpo]\n  out: {out}\n")
    return recipe


def test_a_run_checks_its_export_folders_before_it_publishes(tmp_path: Path, shared_data: Path) -> None:
    from curation.recipe import load_recipe
    from curation.stages import StageError, run_recipe

    (tmp_path / "out" / "jsonl").mkdir(parents=True)
    (tmp_path / "out" / "jsonl" / "notes.txt").write_text("the user's")
    recipe = load_recipe(_publish_recipe(tmp_path, shared_data, tmp_path / "out"))
    for _ in range(2):  # each retry fails the same way, and publishes nothing
        with pytest.raises(StageError, match=r"stage publish.*not an earlier export"):
            run_recipe(recipe, tmp_path / "cat")
    assert open_catalog(tmp_path / "cat").versions().height == 0
    (tmp_path / "file").write_text("x")
    with pytest.raises(StageError, match=r"cannot create .*file/jsonl"):
        run_recipe(load_recipe(_publish_recipe(tmp_path, shared_data, tmp_path / "file")), tmp_path / "cat")
    assert open_catalog(tmp_path / "cat").versions().height == 0


def test_a_retry_after_a_failed_export_does_not_publish_again(tmp_path: Path, shared_data: Path) -> None:
    from curation.recipe import load_recipe
    from curation.stages import RunContext, run_recipe
    from curation.stages.publish import STAGE
    from curation.stages.stage import read_table

    recipe = load_recipe(_publish_recipe(tmp_path, shared_data, tmp_path / "out"))
    tables, _ = run_recipe(recipe, tmp_path / "cat", until="select")
    ctx = RunContext(str(tmp_path / "cat"))
    key = STAGE.fingerprint(recipe, tables, ctx)
    frames = {n: read_table(ctx.store, tables, n) for n in STAGE.inputs}
    earlier = ctx.catalog().publish("small", frames, key=key)  # a try that died in its exports (disk full)
    _, reports = run_recipe(recipe, tmp_path / "cat")
    assert {r.stage: r for r in reports}["publish"].detail["version"] == earlier.ref == "small@v1"
    skipped = json.loads((tmp_path / "out" / "trl_dpo" / "export.json").read_text())["skipped"]
    assert skipped and {r.stage: r for r in reports}["publish"].counts["trl_dpo skipped"] == sum(skipped.values())
    assert open_catalog(tmp_path / "cat").versions()["ref"].to_list() == ["small@v1"]
    assert (tmp_path / "out" / "jsonl" / "train.jsonl").is_file() and (tmp_path / "out" / "trl_dpo" / "export.json").is_file()


def test_a_truncated_stage_artifact_is_recomputed_on_resume(tmp_path: Path, shared_data: Path) -> None:
    from curation.recipe import load_recipe
    from curation.stages import run_recipe

    recipe = load_recipe(_publish_recipe(tmp_path, shared_data, tmp_path / "out"))
    tables, _ = run_recipe(recipe, tmp_path / "cat", until="pairs")
    damaged = Path(tables["pairs"].path)
    damaged.write_bytes(damaged.read_bytes()[:100])  # the run was killed while a copy was written
    again, reports = run_recipe(recipe, tmp_path / "cat", until="pairs")
    by_stage = {r.stage: r for r in reports}
    assert by_stage["sources"].cached and not by_stage["pairs"].cached  # only the damaged one recomputed
    assert again["pairs"].rows == tables["pairs"].rows and damaged.with_name(damaged.name + DAMAGED_SUFFIX).is_file()
