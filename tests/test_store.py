from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from curation import schema
from curation.store import ArtifactRef, ArtifactStore, StoreError


def _prompts(n: int) -> pl.DataFrame:
    rows = []
    for i in range(n):
        msgs = schema.user_prompt(f"question {i}")
        rows.append({"prompt_id": schema.prompt_id(msgs), "messages": msgs, "source": "t"})
    return schema.frame(rows, "prompts")


def test_write_read_roundtrip_and_layout(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    df = _prompts(5)
    fp = schema.fingerprint("stage", {"n": 5})
    assert not store.exists("prompts", fp)
    ref = store.write("prompts", fp, df, table="prompts")
    assert Path(ref.path) == tmp_path / "artifacts" / "prompts" / f"{fp}.parquet"
    assert ref.rows == 5 and store.exists("prompts", fp)
    back = store.read(ref)
    assert back.equals(df)
    # refs travel as dicts between flow tasks
    assert store.read(ref.to_dict()).equals(df)
    assert ArtifactRef.from_dict(ref.to_dict()) == ref
    assert store.ref("prompts", fp) == ref
    # no temporary files remain beside the artifact
    assert sorted(p.name for p in (tmp_path / "artifacts" / "prompts").iterdir()) == [f"{fp}.parquet"]


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.write("s", "abc", _prompts(2))
    ref = store.write("s", "abc", _prompts(3))
    assert store.read(ref).height == 3


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    bad = pl.DataFrame({"prompt_id": ["x"], "messages": ["not a list"]})
    with pytest.raises(schema.SchemaError):
        store.write("prompts", "fp1", bad, table="prompts")
    assert not store.exists("prompts", "fp1")
    folder = tmp_path / "prompts"
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.parametrize("stage,fp", [("../x", "a"), ("s", "a/b"), ("s", ".."), ("", "a"), (".hidden", "a")])
def test_unsafe_names_rejected(tmp_path: Path, stage: str, fp: str) -> None:
    with pytest.raises(StoreError, match="cannot name a file"):
        ArtifactStore(tmp_path).path(stage, fp)


def test_missing_artifact_is_a_clear_error(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(StoreError, match="no artifact"):
        store.ref("s", "nope")
    with pytest.raises(StoreError, match="does not exist"):
        store.read(ArtifactRef("s", "nope", os.fspath(tmp_path / "s" / "nope.parquet"), 0))


def test_a_scan_reads_the_artifact_and_sets_a_damaged_one_aside(tmp_path: Path) -> None:
    """The publish stage streams artifacts through `scan`: the same rows as `read`, and a truncated
    file is refused before any row is read (and set aside, so the stage recomputes it)."""
    store = ArtifactStore(tmp_path)
    fp = schema.fingerprint("stage", {"n": 3})
    ref = store.write("prompts", fp, _prompts(3), table="prompts")
    assert store.scan(ref).collect().equals(store.read(ref))
    path = Path(ref.path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(StoreError, match="set aside"):
        store.scan(ref.to_dict())
    assert not path.exists() and path.with_name(path.name + ".damaged").is_file()
    with pytest.raises(StoreError, match="does not exist"):
        store.scan(ref)
