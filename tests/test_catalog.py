from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import polars as pl
import pytest

from curation import schema
from curation.catalog import PAUSE_ENV, CatalogError, open_catalog, parse_ref, validate_name


def make_tables(n_prompts: int = 4, *, tag: str = "", scorer: str | None = "rm", tie_every: int = 0) -> dict[str, pl.DataFrame]:
    """Prompts with two imported responses each, a pair per prompt and pointwise scores."""
    prompts, cands, pairs, scores = [], [], [], []
    for i in range(n_prompts):
        msgs = schema.user_prompt(f"question {tag}{i}")
        pid = schema.prompt_id(msgs)
        prompts.append({"prompt_id": pid, "messages": msgs, "source": "synthetic"})
        good, bad = f"good answer {i}", f"bad {i}"
        cg, cb = schema.response_id(pid, good), schema.response_id(pid, bad)
        cands += [
            {"candidate_id": cg, "prompt_id": pid, "text": good, "generator": "dataset:synthetic"},
            {"candidate_id": cb, "prompt_id": pid, "text": bad, "generator": "dataset:synthetic"},
        ]
        tie = bool(tie_every) and i % tie_every == 0
        pairs.append(
            {
                "pair_id": schema.pair_id(pid, cg, cb),
                "prompt_id": pid,
                "chosen_id": cg,
                "rejected_id": cb,
                "score": scorer,
                "builder": "dataset",
                "label_source": "human",
                "meta": schema.dumps({"tie": tie}),
            }
        )
        if scorer:
            scores += [
                {"target_id": cg, "scorer": scorer, "value": float(i + 1)},
                {"target_id": cb, "scorer": scorer, "value": 0.0},
            ]
    return {
        "prompts": schema.frame(prompts, "prompts"),
        "candidates": schema.frame(cands, "candidates"),
        "pairs": schema.frame(pairs, "pairs"),
        "scores": schema.frame(scores, "scores"),
    }


def _publish_worker(root: str, name: str, n: int, tag: str) -> None:
    cat = open_catalog(root)
    for k in range(n):
        cat.publish(name, make_tables(3, tag=f"{tag}{k}"))


# ---------------------------------------------------------------- publish, resolve, load


def test_publish_resolve_load(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path / "cat")
    v1 = cat.publish("toy", make_tables(4), test_fraction=0.5, seed=1)
    v2 = cat.publish("toy", make_tables(6), parents=["toy@v1"])
    assert (v1.ref, v2.ref, v2.rows) == ("toy@v1", "toy@v2", 6)
    assert cat.resolve("toy").version == 2
    assert cat.resolve("toy@v1").version == cat.resolve("toy@1").version == 1
    assert cat.versions("toy")["version"].to_list() == [1, 2]
    for f in ("data/train.parquet", "data/test.parquet", "pool", "prompts", "candidates", "scores", "decisions",
              "quarantine", "manifest.json", "README.md"):
        assert (v1.path / (f if "." in f else f"{f}.parquet")).is_file(), f
    manifest = json.loads((v1.path / "manifest.json").read_text())
    assert manifest["ref"] == "toy@v1" and manifest["rows"] == 4
    assert {s: e["rows"] for s, e in manifest["splits"].items()} == {"train": v1.counts["train"], "test": v1.counts["test"]}
    assert "# toy@v1" in (v1.path / "README.md").read_text()

    rows = cat.load("toy@v1")
    assert rows.columns == schema.VERSION_ROWS.names
    train, test = cat.load("toy@v1:train"), cat.load("toy@v1:test")
    assert train.height + test.height == 4 and set(train["split"]) <= {"train"} and set(test["split"]) <= {"test"}
    assert cat.load("toy@v1", as_="arrow").num_rows == 4
    hf = cat.load("toy@v2", as_="hf")
    assert len(hf) == 6 and hf[0]["prompt"][0]["role"] == "user"
    rel = cat.load("toy@v1:train", as_="duckdb")
    assert rel.aggregate("count(*)").fetchall()[0][0] == train.height
    assert cat.load("toy@v2", table="candidates").height == 12
    # margin comes from the scores of the pair's scorer; the scores JSON carries every scorer
    first = cat.load("toy@v2").row(0, named=True)
    assert first["chosen_score"] == 1.0 and first["rejected_score"] == 0.0 and first["margin"] == 1.0
    assert json.loads(first["scores"]) == {"rm": {"chosen": 1.0, "rejected": 0.0, "pair": None}}
    # parents are lineage
    assert cat.resolve("toy@v2").parents == ("toy@v1",)
    assert cat.children("toy@v1")["child"].to_list() == ["toy@v2"]


def test_split_is_by_prompt_and_deterministic(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path)
    tables = make_tables(200)
    extra = tables["pairs"].with_columns(
        pl.col("chosen_id").alias("rejected_id"), pl.col("rejected_id").alias("chosen_id"),
        (pl.col("pair_id") + "x").alias("pair_id"),
    )
    tables["pairs"] = pl.concat([tables["pairs"], extra])
    a = cat.load(cat.publish("s", tables, test_fraction=0.3, seed=7).ref)
    b = cat.load(cat.publish("s", tables, test_fraction=0.3, seed=7).ref)
    assert a["split"].to_list() == b["split"].to_list()
    per_prompt = a.group_by("prompt_id").agg(pl.col("split").n_unique())
    assert per_prompt["split"].max() == 1  # a prompt never straddles the split
    frac = (a["split"] == "test").mean()
    assert 0.15 < frac < 0.45


def test_decisions_denormalise(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path)
    tables = make_tables(4)
    ids = tables["pairs"]["pair_id"].to_list()
    tables["decisions"] = schema.frame(
        [
            {"target_id": ids[0], "stage": "select.0:noise", "kept": True, "flip": True, "weight": 2.0, "epsilon": 0.1},
            {"target_id": ids[0], "stage": "select.1:kmq", "kept": True, "weight": 1.5, "epsilon": 0.2},
            {"target_id": ids[1], "stage": "select.0:noise", "kept": True, "flip": True},
            {"target_id": ids[1], "stage": "select.1:kmq", "kept": True, "flip": True},
            {"target_id": ids[2], "stage": "select.0:noise", "kept": True},
            {"target_id": ids[2], "stage": "select.1:kmq", "kept": False, "reason": "budget"},
        ],
        "decisions",
    )
    info = cat.publish("d", tables)
    rows = {r["pair_id"]: r for r in cat.load(info.ref).iter_rows(named=True)}
    assert set(rows) == {ids[0], ids[1], ids[3]}  # ids[2] dropped by one decision
    r0 = rows[ids[0]]
    assert r0["chosen"] == "bad 0" and r0["rejected"] == "good answer 0"  # flipped once
    assert r0["margin"] == -1.0 and r0["chosen_score"] == 0.0
    assert r0["weight"] == pytest.approx(3.0) and r0["epsilon"] == 0.2
    assert json.loads(r0["meta"])["flipped"] is True
    assert rows[ids[1]]["chosen"] == "good answer 1"  # two flips cancel
    assert rows[ids[3]]["weight"] == 1.0 and rows[ids[3]]["epsilon"] is None
    assert info.counts["dropped"] == 1 and info.counts["flipped"] == 1
    card = (info.path / "README.md").read_text()
    assert "select.1:kmq dropped: budget | 1" in card


def test_missing_candidate_is_a_clear_error(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path)
    tables = make_tables(3)
    tables["candidates"] = tables["candidates"].head(5)
    with pytest.raises(CatalogError, match="rejected_id .* no row .* `candidates`"):
        cat.publish("bad", tables)
    assert cat.versions().height == 0
    assert not (tmp_path / "datasets" / "bad" / "v1").exists()


# ---------------------------------------------------------------- names and refs


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "a'b", 'a"b', "a b", "a\tb", "a\x01b", "", ".hidden", "x@v1"])
def test_invalid_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(CatalogError, match="dataset name"):
        validate_name(name)
    with pytest.raises(CatalogError):
        open_catalog(tmp_path).publish(name, make_tables(1))


def test_ref_parsing_and_errors(tmp_path: Path) -> None:
    assert parse_ref("hh-rlhf.v2@v3:test") == ("hh-rlhf.v2", 3, "test")
    assert parse_ref("x") == ("x", None, None)
    with pytest.raises(CatalogError, match="bad dataset reference"):
        parse_ref("x@latest")
    cat = open_catalog(tmp_path)
    with pytest.raises(CatalogError, match="none yet"):
        cat.resolve("toy")
    cat.publish("toy", make_tables(2))
    cat.publish("other", make_tables(2))
    with pytest.raises(CatalogError, match="unknown dataset 'nope'.*datasets: other, toy"):
        cat.resolve("nope")
    with pytest.raises(CatalogError, match="no version v7; versions: v1"):
        cat.resolve("toy@v7")


# ---------------------------------------------------------------- SQL and diff


def test_sql_across_versions(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path)
    assert cat.sql("SELECT count(*) AS n FROM pairs")["n"][0] == 0
    cat.publish("a", make_tables(3))
    cat.publish("a", make_tables(5))
    cat.publish("b", make_tables(2))
    got = cat.sql("SELECT dataset, version, count(*) AS n FROM pairs GROUP BY ALL ORDER BY ALL")
    assert got.rows() == [("a", 1, 3), ("a", 2, 5), ("b", 1, 2)]
    got = cat.sql("SELECT ref FROM versions WHERE name = ? ORDER BY version", ["a"])
    assert got["ref"].to_list() == ["a@v1", "a@v2"]
    with pytest.raises(CatalogError, match="read-only SELECT"):
        cat.sql("DELETE FROM versions")
    with pytest.raises(CatalogError, match="read-only SELECT"):
        cat.sql("SELECT 1; DROP TABLE versions")
    with pytest.raises(CatalogError, match="SQL failed"):
        cat.sql("SELECT no_such_column FROM pairs")
    assert cat.versions().height == 3


def test_diff_hand_checked(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path)
    base = make_tables(4)  # margins 1, 2, 3, 4 (chosen score i+1, rejected 0)
    cat.publish("d", base)
    changed = make_tables(4)
    ids = changed["pairs"]["pair_id"].to_list()
    # drop pair 0, add pair for a new prompt, change the rm score of pair 1's chosen from 2 to 6
    extra = make_tables(1, tag="new")
    changed = {k: pl.concat([changed[k], extra[k]]) for k in changed}
    changed["pairs"] = changed["pairs"].filter(pl.col("pair_id") != ids[0])
    c1 = changed["pairs"].filter(pl.col("pair_id") == ids[1])["chosen_id"][0]
    changed["scores"] = changed["scores"].with_columns(
        pl.when(pl.col("target_id") == c1).then(6.0).otherwise(pl.col("value")).alias("value")
    )
    cat.publish("d", changed)
    d = cat.diff("d@v1", "d@v2")
    assert (d["rows_a"], d["rows_b"], d["added"], d["removed"], d["changed"], d["unchanged"]) == (4, 4, 1, 1, 1, 2)
    assert d["changed_columns"]["margin"] == 1 and d["changed_columns"]["chosen_score"] == 1
    # v1 margins 1,2,3,4 -> mean 2.5; v2 margins 6,3,4,1 -> mean 3.5
    assert d["mean_margin"] == {"a": 2.5, "b": 3.5, "delta": 1.0}
    assert d["scorers"]["rm"]["chosen"]["delta"] == pytest.approx(1.0)
    assert d["scorers"]["rm"]["rejected"]["delta"] == 0.0


# ---------------------------------------------------------------- models, evaluations, lineage


def test_models_evaluations_lineage(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path)
    cat.publish("toy", make_tables(4), test_fraction=0.5, seed=3)
    mid = cat.record_model(
        "toy@v1:train", "dpo", {"beta": 0.1}, {"loss": 0.5}, tmp_path / "m", base_model="tiny", started_at=time.time()
    )
    models = cat.models()
    assert models["model_id"].to_list() == [mid] and models["version_ref"][0] == "toy@v1:train"
    assert json.loads(models["config"][0]) == {"beta": 0.1}
    eid = cat.record_evaluation(mid, "toy@v1:test", "fp123", {"accuracy": 0.75}, judge="rm")
    ev = cat.evaluations()
    assert ev["eval_id"].to_list() == [eid] and json.loads(ev["metrics"][0]) == {"accuracy": 0.75}
    with pytest.raises(CatalogError, match="unknown model"):
        cat.record_evaluation("nope", "toy", "fp", {})
    with pytest.raises(CatalogError, match="unknown dataset"):
        cat.record_model("nope@v1", "dpo", {}, {}, "p")
    lin = cat.lineage(mid)
    train = cat.load("toy@v1:train")
    assert sorted(lin["pair_id"].to_list()) == sorted(train["pair_id"].to_list())
    assert set(lin["chosen_generator"]) == {"dataset:synthetic"} and set(lin["prompt_source"]) == {"synthetic"}
    assert set(lin["version"]) == {"toy@v1"}
    assert "model:" + mid in cat.children("toy@v1")["child"].to_list()
    assert cat.sql("SELECT count(*) AS n FROM models JOIN evaluations USING (model_id)")["n"][0] == 1
    # an on-policy round: the next version names the checkpoint that sampled it
    assert cat.generated_by("toy@v1") is None
    v2 = cat.publish("toy", make_tables(4, tag="r2"), generated_by=f"model:{mid}")
    assert cat.generated_by(v2.ref) == f"model:{mid}" and cat.generated_by("toy@v1") is None
    assert json.loads((v2.path / "manifest.json").read_text())["generated_by"] == f"model:{mid}"


# ---------------------------------------------------------------- concurrency and crashes


def test_two_processes_publish_concurrently(tmp_path: Path) -> None:
    root = str(tmp_path / "cat")
    open_catalog(root)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_publish_worker, args=(root, "shared", 3, t)) for t in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    versions = open_catalog(root).versions("shared")
    assert versions["version"].to_list() == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (tmp_path / "cat" / "datasets" / "shared").iterdir()) == [f"v{i}" for i in range(1, 7)]


def test_killed_publish_leaves_no_visible_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cat"
    cat = open_catalog(root)
    cat.publish("crash", make_tables(2))
    monkeypatch.setenv(PAUSE_ENV, "60")
    proc = mp.get_context("spawn").Process(target=_publish_worker, args=(str(root), "crash", 1, "k"))
    proc.start()
    orphan = root / "datasets" / "crash" / "v2"
    deadline = time.time() + 60
    while not (orphan / "README.md").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert orphan.is_dir(), "the publisher never reached the pause between files and transaction"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    monkeypatch.delenv(PAUSE_ENV)
    cat = open_catalog(root)
    assert cat.versions("crash")["version"].to_list() == [1]
    assert cat.resolve("crash").version == 1
    assert cat.sql("SELECT count(*) AS n FROM pairs")["n"][0] == 2
    info = cat.publish("crash", make_tables(5, tag="after"))
    assert info.version == 2 and cat.load("crash@v2").height == 5
    assert json.loads((info.path / "manifest.json").read_text())["rows"] == 5


def test_leftovers_of_dead_publishers_are_cleared(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path)
    first = cat.publish("left", make_tables(2))
    assert cat.resolve("left") == first
    ds = tmp_path / "datasets" / "left"
    dead = ds / ".tmp-999999999-deadbeef"  # no process has this pid
    dead.mkdir()
    (dead / "pairs.parquet").write_bytes(b"half a file")
    live = ds / f".tmp-{os.getpid()}-cafecafe"  # a publisher still at work: left alone
    live.mkdir()
    orphan = ds / "v2"  # renamed into place, never committed: its manifest says so
    orphan.mkdir()
    (orphan / "pairs.parquet").write_bytes(b"junk")
    (orphan / "manifest.json").write_text('{"name": "left", "version": 2, "committed": false}')
    info = cat.publish("left", make_tables(3))
    assert info.version == 2 and cat.load(info.ref).height == 3
    assert not dead.exists() and live.exists()


def test_a_streamed_publish_writes_the_rows_of_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames or lazy scans, one batch or a batch per row: the same rows, fingerprint, card and plots."""
    import curation.rows

    tables = make_tables(6, tie_every=3)
    tables["decisions"] = schema.frame([{"target_id": p, "stage": "s", "kept": i != 2, "flip": i % 2 == 0, "reason": "r"}
                                        for i, p in enumerate(tables["pairs"]["pair_id"])], "decisions")
    scans = {}
    for name, frame in tables.items():
        frame.write_parquet(tmp_path / f"{name}.parquet")
        scans[name] = pl.scan_parquet(tmp_path / f"{name}.parquet")
    cat = open_catalog(tmp_path / "cat")
    whole = cat.publish("a", tables, test_fraction=0.5, seed=3)
    monkeypatch.setattr(curation.rows, "VERSION_BATCH_ROWS", 1)
    streamed = cat.publish("b", scans, test_fraction=0.5, seed=3)
    assert whole.rows == streamed.rows == 5 and whole.counts == streamed.counts
    assert whole.fingerprint == streamed.fingerprint
    assert cat.load("b").equals(cat.load("a"))
    # all but the names, the time and the sizes (Arrow buffers and Parquet row groups follow the batches)
    card = lambda info: [ln for ln in (info.path / "README.md").read_text().splitlines()  # noqa: E731
                         if not any(k in ln for k in ("Published", "b@v1", "a@v1", "pretty_name", "# ", "num_bytes", "dataset_size", "download_size"))]
    assert card(whole) == card(streamed)
    assert sorted(p.name for p in (whole.path / "plots").iterdir()) == sorted(p.name for p in (streamed.path / "plots").iterdir())
    for table in ("pool", "decisions", "scores"):
        assert cat.load("b", table).equals(cat.load("a", table))


def test_a_publish_from_scans_in_small_slices_writes_each_kept_row_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches, gathers, score reads and the lineage copies cut at every size: each kept pair is
    written once, in order (none lost or repeated at a boundary), and the copies hold every row."""
    import curation.catalog
    import curation.rows

    tables = make_tables(11)
    ids = tables["pairs"]["pair_id"].to_list()
    tables["decisions"] = schema.frame([{"target_id": p, "stage": "s", "kept": i % 4 != 1, "flip": i % 3 == 0, "reason": "r"}
                                        for i, p in enumerate(ids)], "decisions")
    scans = {}
    for name, frame in tables.items():
        frame.write_parquet(tmp_path / f"{name}.parquet", row_group_size=4)
        scans[name] = pl.scan_parquet(tmp_path / f"{name}.parquet")
    cat = open_catalog(tmp_path / "cat")
    whole = cat.publish("whole", tables, test_fraction=0.3, seed=2)
    kept = [p for i, p in enumerate(ids) if i % 4 != 1]
    for size in (1, 2, 3, 5):
        for module, name in ((curation.rows, "VERSION_BATCH_ROWS"), (curation.rows, "READ_ROWS"),
                             (curation.rows, "SCORE_ROWS"), (curation.catalog, "COPY_ROWS")):
            monkeypatch.setattr(module, name, size)
        info = cat.publish(f"cut{size}", scans, test_fraction=0.3, seed=2)
        rows = cat.load(info.ref)
        assert sorted(rows["pair_id"].to_list()) == sorted(kept) and rows.height == len(kept), size
        for split in ("train", "test"):
            assert cat.load(f"{info.ref}:{split}")["pair_id"].to_list() == [p for p in kept if p in set(cat.load(f"whole:{split}")["pair_id"])]
        assert info.fingerprint == whole.fingerprint and info.counts == whole.counts
        for table in ("pool", "candidates", "scores", "decisions"):
            assert cat.load(info.ref, table).equals(cat.load("whole", table)), (size, table)
