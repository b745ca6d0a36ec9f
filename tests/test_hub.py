"""Version folders as Hub datasets: per-split Parquet, the README.md card, plots, content fingerprints,
and versions published before the split layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from curation import schema
from curation.catalog import LEGACY_PAIRS, CatalogError, PairSplitsWriter, RowsHasher, open_catalog, pairs_fingerprint
from curation.doctor import doctor
from curation.rows import version_rows
from curation.select import apply_selectors
from tests.test_catalog import make_tables


def _hf_load(path: Path, cache: Path, config: str | None = None):
    import datasets

    return datasets.load_dataset(str(path), config, cache_dir=str(cache))


def test_load_dataset_on_a_version_folder_gives_its_splits(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path / "cat")
    info = cat.publish("toy", make_tables(40), test_fraction=0.3, seed=3)
    assert 0 < info.counts["test"] < info.counts["train"]
    ds = _hf_load(info.path, tmp_path / "hf")
    assert {s: ds[s].num_rows for s in ds} == {"train": info.counts["train"], "test": info.counts["test"]}
    assert set(ds["test"]["split"]) == {"test"} and set(ds["train"]["split"]) == {"train"}
    assert ds["test"]["pair_id"] == cat.load(info.ref + ":test")["pair_id"].to_list()
    assert ds["train"][0]["prompt"][0]["role"] == "user"
    assert ds["train"].column_names == schema.VERSION_ROWS.names
    # the lineage tables are configs of their own (each its own schema: globbing them together fails)
    assert _hf_load(info.path, tmp_path / "hf", "candidates")["train"].num_rows == 80
    # another dataset's v1 beside it in the same cache: its own rows, not the first's cached ones
    other = cat.publish("other", make_tables(17, tag="o"), test_fraction=0.3, seed=3)
    assert other.path.name == info.path.name
    assert sorted(_hf_load(other.path, tmp_path / "hf")["train"]["pair_id"]) == sorted(cat.load(other.ref + ":train")["pair_id"])


def test_fingerprint_is_the_rows_content_not_the_files(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path / "cat")
    tables = make_tables(30)
    a, b = cat.publish("fp", tables, test_fraction=0.3), cat.publish("fp", tables, test_fraction=0.3)
    assert a.fingerprint == b.fingerprint
    assert pairs_fingerprint(a.path, json.loads((a.path / "manifest.json").read_text())) == a.fingerprint
    rows, _ = version_rows(tables, test_fraction=0.3)
    once, batched = PairSplitsWriter(tmp_path / "once"), PairSplitsWriter(tmp_path / "batched")
    once.write(rows)
    for start in range(0, rows.height, 7):  # other row groups, other bytes: the same rows
        batched.write(rows.slice(start, 7))
    (_, fp_once), (_, fp_batched) = once.close(), batched.close()
    assert fp_once == fp_batched == a.fingerprint
    assert (tmp_path / "once" / "data/train.parquet").read_bytes() != (tmp_path / "batched" / "data/train.parquet").read_bytes()

    def fingerprint_of(frame: pl.DataFrame, name: str) -> str:
        writer = PairSplitsWriter(tmp_path / name)
        writer.write(frame)
        return writer.close()[1]

    edited = rows.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("x")).otherwise("chosen").alias("chosen"))
    moved = rows.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("test")).otherwise("split").alias("split"))
    others = {fingerprint_of(edited, "edited"), fingerprint_of(moved, "moved"), fingerprint_of(rows.reverse(), "reversed")}
    assert a.fingerprint not in others and len(others) == 3


@pytest.mark.parametrize("left, right, kind", [(["ab", "c"], ["a", "bc"], pa.string()), ([None], [""], pa.string()),
                                               ([[1], [2, 3]], [[1, 2], [3]], pa.list_(pa.int64())),
                                               ([None, 1.0], [0.0, 1.0], pa.float64())])
def test_rows_hasher_keeps_value_boundaries_and_nulls(left, right, kind) -> None:
    def digest(values):
        hasher = RowsHasher()
        hasher.update(pa.table({"v": pa.array(values, kind)}))
        return hasher.hexdigest()

    assert digest(left) != digest(right)
    assert digest(left) == digest(left)


def test_card_is_a_dataset_card_with_the_sources_license(shared_data: Path, tmp_path: Path) -> None:
    from huggingface_hub import DatasetCard

    from curation.sources import read_source

    src = shared_data / "hh_rlhf_test.jsonl.gz"
    data = read_source(src, limit=50)
    tables = {k: getattr(data, k) for k in ("prompts", "candidates", "pairs", "scores", "quarantine")}
    cat = open_catalog(tmp_path / "cat")
    info = cat.publish("hh", tables, recipe={"import": {"path": str(src)}}, test_fraction=0.2)
    card = DatasetCard.load(info.path / "README.md").data.to_dict()
    assert card["license"] == "mit"  # the corpus manifest beside the file declares it
    assert "curate" in card["tags"] and card["pretty_name"] == "hh@v1"
    default = next(c for c in card["configs"] if c["config_name"] == "default")
    assert {d["split"]: d["path"] for d in default["data_files"]} == {"train": "data/train.parquet", "test": "data/test.parquet"}
    assert [f["name"] for f in card["dataset_info"]["features"]] == schema.VERSION_ROWS.names
    text = (info.path / "README.md").read_text()
    assert f"`{src}`: MIT" in text and "![lengths](plots/lengths.png)" in text
    assert "curate export hh@v1 --format trl_dpo --out DIR" in text  # load_dataset gives canonical rows: say how to train
    assert "# train and test" in text
    whole = cat.publish("hh", tables, recipe={"import": {"path": str(src)}})  # nothing held out: load_dataset gives train
    assert "# train only" in (whole.path / "README.md").read_text()
    # sources that disagree: `other`, and the body names each
    both = {"sources": [{"path": str(src)}, {"path": str(tmp_path / "mine.jsonl"), "license": "CC-BY-4.0"}]}
    other = cat.publish("hh", tables, recipe=both)
    assert DatasetCard.load(other.path / "README.md").data.to_dict()["license"] == "other"
    assert "CC-BY-4.0" in (other.path / "README.md").read_text()
    unknown = cat.publish("hh", tables, recipe={"sources": [{"path": str(tmp_path / "nowhere.jsonl")}]})
    assert DatasetCard.load(unknown.path / "README.md").data.to_dict()["license"] == "unknown"


def test_card_shows_the_selection_beside_its_random_control(tmp_path: Path) -> None:
    tables = make_tables(40)
    pool, _ = version_rows(tables)
    result = apply_selectors(pool, [{"kind": "top_k", "budget": 12}], embed=None)
    cat = open_catalog(tmp_path / "cat")
    info = cat.publish("sel", {**tables, "decisions": result.decisions}, selection=result.report)
    step = result.report["steps"][0]
    control = step["random_control"]["mean_margin"]
    text = (info.path / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if "| mean_margin |" in ln)
    assert f"| {step['selection']['mean_margin']:.4g} | {control['mean']:.4g} |" in line
    assert step["selection"]["mean_margin"] > control["ci95"][1]  # top-k by margin beats the coin
    manifest = json.loads((info.path / "manifest.json").read_text())
    for plot in ("plots/margin.png", "plots/lengths.png", "plots/selection_vs_control.png", "plots/drops.png"):
        assert plot in manifest["files"] and (info.path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = cat.publish("plain", make_tables(5, scorer=None))  # no margins, no selection: no empty plots
    assert json.loads((plain.path / "manifest.json").read_text())["files"].count("plots/lengths.png") == 1
    assert not (plain.path / "plots" / "margin.png").exists() and not (plain.path / "plots" / "selection_vs_control.png").exists()
    assert "No selection step ran" in (plain.path / "README.md").read_text()


def _as_legacy(info, into: Path) -> None:
    """`info`'s folder as versions were published before the split layout: one pairs.parquet."""
    into.mkdir(parents=True)
    for p in info.path.glob("*.parquet"):
        shutil.copy(p, into / p.name)
    rows = pl.read_parquet(info.files("pairs")).sort("pair_id")
    rows.write_parquet(into / LEGACY_PAIRS, compression="zstd")
    manifest = json.loads((info.path / "manifest.json").read_text())
    from curation.catalog import file_digest

    digests = {p.name: file_digest(p) for p in sorted(into.glob("*.parquet"))}
    manifest.update(fingerprint=digests[LEGACY_PAIRS]["sha256"][:16], digests=digests, files=sorted(digests) + ["manifest.json"])
    del manifest["splits"]
    (into / "manifest.json").write_text(json.dumps(manifest))


def test_versions_published_before_the_split_layout_still_load_verify_and_diff(tmp_path: Path) -> None:
    new = open_catalog(tmp_path / "new").publish("ds", make_tables(20), test_fraction=0.3)
    root = tmp_path / "cat"
    _as_legacy(new, root / "datasets" / "ds" / "v1")
    report = doctor(root, fix=True)  # rebuilds the database row from the old manifest
    assert [f.action.split(";")[0] for f in report.findings] == ["rebuilt from its manifest"]
    cat = open_catalog(root)
    old = cat.verify_version("ds@v1")
    assert cat.load("ds@v1").height == 20 and cat.load("ds@v1:test").height == new.counts["test"]
    assert cat.load("ds@v1:test", as_="duckdb").aggregate("count(*)").fetchall()[0][0] == new.counts["test"]
    v2 = cat.publish("ds", make_tables(22), parents=["ds@v1"], test_fraction=0.3)
    assert cat.diff("ds@v1", "ds@v2")["added"] == 2
    assert cat.sql("SELECT version, count(*) AS n FROM pairs GROUP BY ALL ORDER BY version").rows() == [(1, 20), (2, 22)]
    assert doctor(root).ok and old.files() == [old.path / LEGACY_PAIRS] and len(v2.files()) == 2
    legacy = root / "datasets" / "ds" / "v1" / LEGACY_PAIRS
    pl.read_parquet(legacy).with_columns(pl.lit("EDITED").alias("chosen")).write_parquet(legacy, compression="zstd")
    with pytest.raises(CatalogError, match="ds@v1 cannot be served"):
        cat.load("ds@v1")


def test_doctor_names_a_missing_or_swapped_split_file(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    cat = open_catalog(root)
    info = cat.publish("ds", make_tables(30), test_fraction=0.3)
    train, test = info.path / "data" / "train.parquet", info.path / "data" / "test.parquet"
    saved = train.read_bytes()
    shutil.copy(test, train)  # the test rows served as train
    with pytest.raises(CatalogError, match=r"data/train\.parquet holds \d+ rows where the catalog recorded"):
        cat.load(info.ref + ":train")
    assert "data/train.parquet holds" in doctor(root).findings[0].message
    train.write_bytes(saved)
    test.unlink()
    assert cat.load(info.ref + ":train").height == info.counts["train"]  # the intact split is still served
    with pytest.raises(CatalogError, match=r"data/test\.parquet missing"):
        cat.load(info.ref)
    assert "data/test.parquet missing" in doctor(root).findings[0].message
    plot = cat.publish("ds", make_tables(8)).path / "plots" / "lengths.png"
    plot.write_bytes(plot.read_bytes()[:-1] + b"\0")  # the card's plots are published content too
    assert any("v2: plots/lengths.png its content hash differs" in f.message for f in doctor(root).findings)


def test_import_license_option_reaches_the_card(shared_data: Path, tmp_path: Path) -> None:
    from huggingface_hub import DatasetCard
    from typer.testing import CliRunner

    from curation.cli import _load_commands, app

    _load_commands()
    root = tmp_path / "cat"
    args = ["import", str(shared_data / "hh_rlhf_test.jsonl.gz"), "--name", "hh", "--limit", "20", "--catalog", str(root)]
    assert CliRunner().invoke(app, args + ["--license", "cc-by-4.0"]).exit_code == 0
    assert CliRunner().invoke(app, args).exit_code == 0
    cards = [DatasetCard.load(root / "datasets" / "hh" / v / "README.md").data.to_dict() for v in ("v1", "v2")]
    assert [c["license"] for c in cards] == ["cc-by-4.0", "mit"]  # given, else declared beside the file


def test_an_unreadable_license_declaration_leaves_the_license_unknown(tmp_path: Path) -> None:
    from huggingface_hub import DatasetCard

    src = tmp_path / "src"
    src.mkdir()
    (src / "pairs.jsonl").write_text("{}\n")
    (src / "manifest.json").write_text("{not json")
    (src / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    info = open_catalog(tmp_path / "cat").publish("x", make_tables(3), recipe={"sources": [{"path": str(src / "pairs.jsonl")}]})
    assert DatasetCard.load(info.path / "README.md").data.to_dict()["license"] == "unknown"


def test_a_run_publishes_its_selection_beside_the_random_control_on_the_card(tmp_path: Path, shared_data: Path) -> None:
    import yaml
    from huggingface_hub import DatasetCard

    from curation.recipe import load_recipe
    from curation.stages import run_recipe

    recipe = {"name": "pandalm-small", "sources": [{"path": str(shared_data / "pandalm_testset.jsonl.gz"), "limit": 120}],
              "select": [{"kind": "dedup", "method": "exact"}, {"kind": "length", "fraction": 0.5}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run_recipe(load_recipe(tmp_path / "recipe.yaml"), tmp_path / "catalog")
    info = open_catalog(tmp_path / "catalog").resolve("pandalm-small")
    text = (info.path / "README.md").read_text()
    assert "| select.1:length | 60 / " in text and "select_vs_control" not in text
    assert (info.path / "plots" / "selection_vs_control.png").is_file()
    declared = json.loads((shared_data / "manifest.json").read_text())["files"]
    license_ = next(f["license"] for f in declared if f["name"] == "pandalm_testset.jsonl.gz")
    assert license_.startswith("Apache-2.0 (repository); ")  # free text, not a Hub license id: quoted in the body
    assert DatasetCard.load(info.path / "README.md").data.to_dict()["license"] == "other"
    assert f": {license_}" in text
