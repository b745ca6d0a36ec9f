"""`curate push`: the commit it builds for the Hub, checked without the network (no Hub is reachable
here: the upload itself, HfApi.create_commit / create_tag, is not exercised)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from typer.testing import CliRunner

from curation.catalog import CatalogError, open_catalog
from curation.cli import _load_commands, app
from curation.hub import push_plan
from tests.test_catalog import make_tables

_load_commands()


@pytest.fixture()
def published(tmp_path: Path):
    cat = open_catalog(tmp_path / "cat")
    cat.publish("toy", make_tables(6))
    return cat, cat.publish("toy", make_tables(20), test_fraction=0.3)


def test_plan_uploads_exactly_the_checked_version_folder(published) -> None:
    cat, info = published
    manifest = json.loads((info.path / "manifest.json").read_text())
    plan = push_plan(cat, "toy@v2", "org/toy", existing=[".gitattributes", "README.md", "pairs.parquet", "plots/old.png"])
    adds = {op.path_in_repo: op for op in plan.operations if isinstance(op, CommitOperationAdd)}
    on_disk = {p.relative_to(info.path).as_posix() for p in info.path.rglob("*") if p.is_file()}
    assert set(adds) == on_disk == set(manifest["files"])
    assert {"README.md", "data/train.parquet", "data/test.parquet", "manifest.json"} <= set(adds)
    for name, op in adds.items():  # the bytes that leave are the files' (hashed when the op is built)
        assert op.upload_info.sha256.hex() == hashlib.sha256((info.path / name).read_bytes()).hexdigest()
        if name in manifest["digests"]:
            assert op.upload_info.sha256.hex() == manifest["digests"][name]["sha256"]
    deletes = [op.path_in_repo for op in plan.operations if isinstance(op, CommitOperationDelete)]
    assert deletes == ["pairs.parquet", "plots/old.png"]  # an older push's files go; the Hub's own stays
    assert (plan.revision, plan.tag) == ("main", "v2") and "fingerprint " + info.fingerprint in plan.message
    branch = push_plan(cat, "toy@v1", "org/toy", as_="branch")
    assert (branch.revision, branch.tag) == ("v1", None)


def test_plan_refuses_a_damaged_version_or_a_bad_repo(published) -> None:
    cat, info = published
    with pytest.raises(CatalogError, match="ORG/NAME"):
        push_plan(cat, info.ref, "toy")
    split = info.path / "data" / "test.parquet"
    data = bytearray(split.read_bytes())
    data[len(data) // 2] ^= 0x01
    split.write_bytes(bytes(data))
    with pytest.raises(CatalogError, match=r"toy@v2 cannot be served: .*data/test\.parquet"):
        push_plan(cat, info.ref, "org/toy")
    card = cat.resolve("toy@v1").path / "README.md"
    card.write_text(card.read_text().replace("license: unknown", "license: mit"))  # a card edited after publishing
    for check in (lambda: push_plan(cat, "toy@v1", "org/toy"), lambda: cat.verify_version("toy@v1")):
        with pytest.raises(CatalogError, match=r"toy@v1 is not what was published: .*README\.md is \d+ bytes where the manifest recorded"):
            check()


def test_cli_dry_run_prints_the_commit_and_offline_push_fails_clearly(published, monkeypatch) -> None:
    cat, info = published
    runner = CliRunner()
    dry = runner.invoke(app, ["push", "toy", "--repo", "org/toy", "--dry-run", "--json", "--catalog", str(cat.root)])
    assert dry.exit_code == 0, dry.output
    out = json.loads(dry.stdout)
    assert out["ref"] == "toy@v2" and out["tag"] == "v2" and "data/train.parquet" in out["add"] and out["delete"] == []
    table = runner.invoke(app, ["push", "toy", "--repo", "org/toy", "--dry-run", "--catalog", str(cat.root)])
    assert table.exit_code == 0, table.output
    assert out["message"] in table.stdout and all(f"add    {name}" in table.stdout for name in out["add"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = runner.invoke(app, ["push", "toy@v1", "--repo", "org/toy", "--catalog", str(cat.root)])
    assert real.exit_code == 1 and "push to org/toy failed" in real.output
