from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curation import schema
from curation.catalog import open_catalog
from curation.export import ExportError, check_export, check_view, export_rows, to_view
from tests.test_catalog import make_tables


def _multi_turn_rows() -> pl.DataFrame:
    """Two single-turn and two multi-turn (system + earlier turns) canonical rows; one tie."""
    rows = []
    for i in range(4):
        if i % 2:
            msgs = schema.user_prompt(f"q{i}")
        else:
            msgs = [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": f"first {i}"},
                {"role": "assistant", "content": "earlier answer"},
                {"role": "user", "content": f"follow-up {i}"},
            ]
        pid = schema.prompt_id(msgs)
        rows.append(
            {
                "pair_id": f"p{i}", "prompt_id": pid, "chosen_id": f"c{i}", "rejected_id": f"r{i}", "prompt": msgs,
                "chosen": f"good {i}", "rejected": f"bad {i}", "margin": float(i), "weight": 0.5 + i,
                "epsilon": 0.1 if i == 1 else None, "split": "train", "label_source": "human",
                "confidence": 0.5 if i == 2 else 0.9,  # row 2 is a tie
            }
        )
    return schema.frame(rows, "version_rows")


@pytest.fixture(scope="module")
def tokenizer(tiny_chat: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_chat)


def test_trl_dpo_reads_as_explicit_conversational(tmp_path: Path, tokenizer) -> None:
    import datasets
    from trl.data_utils import is_conversational, maybe_apply_chat_template, maybe_extract_prompt

    report = export_rows(_multi_turn_rows(), "trl_dpo", tmp_path / "dpo")
    assert report.written == {"train": 3} and report.skipped == {"tie": 1}
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "dpo" / "train.jsonl"), split="train")
    assert ds.features["weight"].dtype == "float64" and ds.features["epsilon"].dtype == "float64"
    for row in ds:
        assert is_conversational(row)
        assert maybe_extract_prompt(row)["prompt"] == row["prompt"]  # already explicit: untouched
        assert row["prompt"][-1]["role"] == "user" and [m["role"] for m in row["chosen"]] == ["assistant"]
        text = maybe_apply_chat_template(row, tokenizer)
        assert all(isinstance(text[k], str) for k in ("prompt", "chosen", "rejected"))
        user_turn = row["prompt"][-1]["content"]
        assert user_turn in text["prompt"] and user_turn not in text["chosen"]  # no duplicated turn
        assert row["chosen"][0]["content"] in text["chosen"]


def test_trl_reward_is_implicit_with_margin(tmp_path: Path, tokenizer) -> None:
    import datasets
    from trl.data_utils import is_conversational, maybe_apply_chat_template, maybe_extract_prompt

    rows = _multi_turn_rows()
    export_rows(rows, "trl_reward", tmp_path / "rm")
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "rm" / "train.jsonl"), split="train")
    assert "prompt" not in ds.column_names and ds.features["margin"].dtype == "float64"
    originals = {r["pair_id"]: r for r in rows.iter_rows(named=True)}
    for row in ds:
        assert is_conversational(row)
        split = maybe_extract_prompt(row)
        src = originals[row["pair_id"]]
        assert split["prompt"] == src["prompt"]  # TRL recovers exactly our prompt turns
        assert split["chosen"] == [{"role": "assistant", "content": src["chosen"]}]
        assert row["margin"] == src["margin"]
        text = maybe_apply_chat_template(row, tokenizer)
        assert isinstance(text["chosen"], str) and src["chosen"] in text["chosen"]


def test_trl_dpo_text_kto_openrlhf(tmp_path: Path) -> None:
    import datasets
    from trl.data_utils import is_conversational

    rows = _multi_turn_rows()
    export_rows(rows, "trl_dpo_text", tmp_path / "text")
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "text" / "train.jsonl"), split="train")
    by_id = {r["pair_id"]: r for r in ds}
    assert not is_conversational(by_id["p1"])
    # one template for single- and multi-turn rows: the plain Human/Assistant template, answers after the cue
    assert by_id["p1"]["prompt"] == "Human: q1\n\nAssistant:" and by_id["p1"]["chosen"] == " good 1"
    assert by_id["p0"]["prompt"] == "System: be brief\n\nHuman: first 0\n\nAssistant: earlier answer\n\nHuman: follow-up 0\n\nAssistant:"
    assert by_id["p0"]["chosen"] == " good 0"

    report = export_rows(rows, "trl_kto", tmp_path / "kto")
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "kto" / "train.jsonl"), split="train")
    assert report.written == {"train": 6} and ds.features["label"].dtype == "bool"
    assert sorted(ds["label"]) == [False] * 3 + [True] * 3
    assert all(is_conversational(r) for r in ds)

    export_rows(rows, "openrlhf", tmp_path / "orl")
    first = json.loads((tmp_path / "orl" / "train.jsonl").read_text().splitlines()[0])
    assert {"prompt", "chosen", "rejected", "margin"} <= set(first)


def test_canonical_formats_keep_ties_and_splits(tmp_path: Path) -> None:
    import datasets

    cat = open_catalog(tmp_path / "cat")
    info = cat.publish("t", make_tables(30, tie_every=5), test_fraction=0.3, seed=2)
    out = cat.export(info.ref, "hf", tmp_path / "hf")  # Catalog.export returns the folder
    dd = datasets.load_from_disk(str(out))
    assert sum(len(dd[s]) for s in dd) == 30 and set(dd) == {"train", "test"}
    assert isinstance(dd["train"][0]["prompt"], list)
    out = cat.export(info.ref + ":test", "parquet", tmp_path / "pq")
    assert pl.read_parquet(out / "test.parquet").height == cat.load(info.ref + ":test").height
    assert not (out / "train.parquet").exists()
    dpo = json.loads((cat.export(info.ref, "trl_dpo", tmp_path / "dpo") / "export.json").read_text())
    assert dpo["skipped"] == {"tie": 6} and sum(dpo["written"].values()) == 24


def test_the_string_prompt_trap_is_caught() -> None:
    bad = pl.DataFrame(
        {
            "pair_id": ["x"],
            "prompt": ["What is 2+2?"],
            "chosen": [[{"role": "assistant", "content": "4"}]],
            "rejected": [[{"role": "assistant", "content": "5"}]],
        }
    )
    with pytest.raises(ExportError, match="`prompt` is string, `chosen` is messages.*same kind"):
        check_view(bad, "trl_dpo")


def test_whole_conversation_with_explicit_prompt_is_caught() -> None:
    view = to_view(_multi_turn_rows(), "trl_dpo").rows
    dup = view.with_columns(pl.concat_list("prompt", "chosen").alias("chosen"))
    with pytest.raises(ExportError, match=r"row 0 \(pair_id p0\), field `chosen`: must be exactly one assistant message"):
        check_view(dup, "trl_dpo")
    text = to_view(_multi_turn_rows(), "trl_dpo_text").rows
    text = text.with_columns((pl.col("prompt") + pl.col("chosen")).alias("chosen"))
    with pytest.raises(ExportError, match="repeats the prompt"):
        check_view(text, "trl_dpo_text")
    reward = to_view(_multi_turn_rows(), "trl_reward").rows
    multi = pl.col("rejected").list.len() > 2  # drop the system turn from multi-turn rejected sides
    reward = reward.with_columns(pl.when(multi).then(pl.col("rejected").list.slice(1)).otherwise(pl.col("rejected")).alias("rejected"))
    with pytest.raises(ExportError, match="does not share the chosen conversation's prompt turns"):
        check_view(reward, "trl_reward")


def test_export_folder_rules(tmp_path: Path) -> None:
    rows = _multi_turn_rows()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an earlier export"):
        export_rows(rows, "jsonl", tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    export_rows(rows, "jsonl", tmp_path / "out")
    report = export_rows(rows.head(2), "jsonl", tmp_path / "out")  # an earlier export is replaced
    assert report.written == {"train": 2}
    assert len((tmp_path / "out" / "train.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ExportError, match="unknown export format"):
        export_rows(rows, "csv", tmp_path / "x")


def test_import_export_import_keeps_ids(tmp_path: Path, shared_data: Path) -> None:
    from curation.sources import read_source

    cat = open_catalog(tmp_path / "cat")
    data = read_source(shared_data / "llmbar.jsonl.gz")
    info = cat.publish(
        "llmbar", {"prompts": data.prompts, "candidates": data.candidates, "pairs": data.pairs, "quarantine": data.quarantine}
    )
    rows = cat.load(info.ref)
    assert info.counts["quarantined"] == data.quarantine.height > 0
    for fmt in ("jsonl", "trl_dpo", "trl_reward"):
        out = cat.export(info.ref, fmt, tmp_path / fmt)
        exported = pl.read_ndjson(out / "train.jsonl")
        # drop our id columns so the re-import recomputes every id from content
        stripped = exported.drop([c for c in ("pair_id", "prompt_id", "chosen_id", "rejected_id") if c in exported.columns])
        stripped.write_ndjson(tmp_path / f"{fmt}.jsonl")
        again = read_source(tmp_path / f"{fmt}.jsonl")
        assert again.quarantine.height == 0, fmt
        assert sorted(again.pairs["pair_id"].to_list()) == sorted(rows["pair_id"].to_list()), fmt
        assert set(again.candidates["candidate_id"].to_list()) == set(rows["chosen_id"]) | set(rows["rejected_id"]), fmt
        info2 = cat.publish(f"again-{fmt}", {k: getattr(again, k) for k in ("prompts", "candidates", "pairs")})
        assert cat.diff(info.ref, info2.ref)["added"] == 0


def test_check_export_refuses_without_writing(tmp_path: Path) -> None:
    rows = _multi_turn_rows()
    check_export(rows, "trl_dpo", tmp_path / "new")  # a good view and a new folder: nothing to say
    empty = rows.with_columns(pl.when(pl.col("pair_id") == rows["pair_id"][1]).then(pl.lit("")).otherwise(pl.col("chosen")).alias("chosen"))
    check_export(empty, "trl_dpo_text")  # skipped: the row is quarantined
    with pytest.raises(ExportError, match=r"trl_dpo_text: row 1 .*field `chosen`: empty_answer"):
        check_export(empty, "trl_dpo_text", on_invalid="fail")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an earlier export"):
        check_export(rows, "jsonl", tmp_path / "busy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_reexport_replaces_only_listed_files_across_formats(tmp_path: Path) -> None:
    rows, out = _multi_turn_rows(), tmp_path / "out"
    first = export_rows(rows, "hf", out)
    assert "train/state.json" in first.files  # every file is listed, folders by their files
    (out / "mine.txt").write_text("x")
    (out / "train" / "notes.md").write_text("the user's notes inside the split folder")
    export_rows(rows, "jsonl", out)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == ["export.json", "mine.txt", "train", "train.jsonl", "train/notes.md"]
    # an export.json written before files were listed one by one names the split folder itself
    export_rows(rows, "hf", tmp_path / "old")
    report = json.loads((tmp_path / "old" / "export.json").read_text())
    report["files"] = sorted({f.split("/")[0] for f in report["files"]})
    (tmp_path / "old" / "export.json").write_text(json.dumps(report))
    export_rows(rows, "parquet", tmp_path / "old")
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["export.json", "train.parquet"]
