"""import -> publish -> export (every view) -> import keeps every id."""

from __future__ import annotations

import json

import pytest

from curation.catalog import open_catalog
from curation.sources import read_source

PAIR_VIEWS = ["trl_dpo", "trl_dpo_text", "trl_reward", "openrlhf", "jsonl", "parquet", "hf"]


@pytest.fixture(scope="module")
def published(shared_data, tmp_path_factory):
    """60 hh-rlhf pairs (multi-turn prompts included) and 20 PandaLM pairs with ties, published."""
    root = tmp_path_factory.mktemp("roundtrip")
    catalog = open_catalog(root / "catalog")
    data = read_source(shared_data / "hh_rlhf_test.jsonl.gz", limit=60)
    assert any(len(m) > 1 for m in data.prompts["messages"].to_list())
    info = catalog.publish("hh", {k: getattr(data, k) for k in ("prompts", "candidates", "pairs", "scores", "quarantine")})
    return catalog, info, data, root


def _export_file(out, fmt):
    if fmt == "hf":
        return out
    return next(p for p in out.iterdir() if p.name.startswith("train."))


@pytest.mark.parametrize("fmt", PAIR_VIEWS)
def test_export_then_import_keeps_ids(published, fmt):
    catalog, info, data, root = published
    out = catalog.export(info.ref, fmt, root / fmt)
    again = read_source(_export_file(out, fmt))
    assert again.format == "curate" and again.detected
    # preference views quarantine the rows hh-rlhf flags (extra turns in an answer); canonical ones keep all
    quarantine = out / "quarantine.jsonl"
    gone = {json.loads(line)["pair_id"] for line in quarantine.read_text().splitlines()} if quarantine.exists() else set()
    assert bool(gone) == (fmt not in ("jsonl", "parquet", "hf"))
    kept = data.pairs.filter(~data.pairs["pair_id"].is_in(list(gone)))
    assert again.counts["imported"] == kept.height and again.quarantine.height == 0
    assert set(again.pairs["pair_id"]) == set(kept["pair_id"])
    assert set(again.candidates["candidate_id"]) == set(kept["chosen_id"]) | set(kept["rejected_id"])
    assert set(again.prompts["prompt_id"]) == set(kept["prompt_id"])
    assert set(again.pairs["label_source"]) == set(data.pairs["label_source"])
    if fmt in ("jsonl", "parquet", "hf"):  # canonical rows carry the upstream meta
        before = {k: json.loads(m)["subset"] for k, m in zip(data.pairs["pair_id"], data.pairs["meta"])}
        after = {k: json.loads(m)["subset"] for k, m in zip(again.pairs["pair_id"], again.pairs["meta"])}
        assert before == after


def test_published_pairs_parquet_imports_with_ids(published):
    catalog, info, data, root = published
    again = read_source(info.files("pairs")[0])  # published without a test split: every pair is in train
    assert again.format == "curate"
    assert set(again.pairs["pair_id"]) == set(data.pairs["pair_id"])
    assert "upstream_pair_id" not in "".join(again.pairs["meta"])  # the content ids agreed


def test_kto_import_without_pairs_fails_loudly(tmp_path):
    """TRL KTO data often labels one completion per prompt: nothing to pair, so the import refuses
    (it used to publish a 0-row version and exit 0); prompts left unpaired beside paired ones are counted."""
    from curation.sources import SourceError

    rows = [{"prompt": "What is 2+2?", "completion": "4", "label": True},
            {"prompt": "Capital of France?", "completion": "Berlin", "label": False}]
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SourceError, match="kto.jsonl: no pairs: .*none of the 2 prompts has a completion labelled true and one labelled false"):
        read_source(path)
    rows.append({"prompt": "What is 2+2?", "completion": "5", "label": False})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = read_source(path)
    assert data.pairs.height == 1 and data.counts["prompts_unpaired"] == 1


def test_kto_export_rebuilds_the_pairs_from_labels(published):
    catalog, info, data, root = published
    out = catalog.export(info.ref, "trl_kto", root / "kto")
    again = read_source(_export_file(out, "trl_kto"))
    assert again.format == "kto"
    assert set(again.scores["scorer"]) == {"kto:label"}
    gone = {json.loads(line)["pair_id"] for line in (out / "quarantine.jsonl").read_text().splitlines()}
    one_pair_prompts = data.pairs.group_by("prompt_id").len().filter(len=1)["prompt_id"]
    expected = set(data.pairs.filter(data.pairs["prompt_id"].is_in(one_pair_prompts.implode()))["pair_id"]) - gone
    assert expected and expected <= set(again.pairs["pair_id"])
