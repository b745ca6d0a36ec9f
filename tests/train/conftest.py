"""Fixtures for training tests: short real hh-rlhf pairs, a catalog holding them, one torch thread."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curation import schema
from curation.sources import read_pair_rows

N_PAIRS = 24


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The test machine is shared: one intra-op thread is faster than contended threads here."""
    import torch

    torch.set_num_threads(1)


def hh_tables(shared_data: Path, n: int = N_PAIRS) -> dict[str, pl.DataFrame]:
    """The n shortest of the first 400 hh-rlhf test pairs (the shared reader) as prompts, candidates and pairs tables."""
    rows = read_pair_rows(shared_data / "hh_rlhf_test.jsonl.gz", limit=400).to_dicts()
    rows = [r for r in rows if r["chosen"] and r["rejected"] and r["chosen"] != r["rejected"]]
    length = lambda r: sum(len(m["content"]) for m in r["prompt"]) + len(r["chosen"]) + len(r["rejected"])
    rows.sort(key=lambda r: (length(r), json.loads(r["meta"])["id"]))
    prompts, cands, pairs = [], [], []
    for r in rows[:n]:
        pid, c, j = r["prompt_id"], r["chosen_id"], r["rejected_id"]
        prompts.append({"prompt_id": pid, "messages": r["prompt"], "source": "hh_rlhf", "meta": None})
        for cid, text in ((c, r["chosen"]), (j, r["rejected"])):
            cands.append({"candidate_id": cid, "prompt_id": pid, "text": text, "generator": "dataset:hh_rlhf"})
        pairs.append({
            "pair_id": schema.pair_id(pid, c, j), "prompt_id": pid, "chosen_id": c, "rejected_id": j,
            "margin": (len(r["chosen"]) - len(r["rejected"])) / 100.0, "score": "judge-rm",
            "builder": "dataset", "label_source": "human", "meta": None,
        })
    return {
        "prompts": schema.frame(prompts, "prompts").unique("prompt_id", keep="first", maintain_order=True),
        "candidates": schema.frame(cands, "candidates").unique("candidate_id", keep="first", maintain_order=True),
        "pairs": schema.frame(pairs, "pairs"),
    }


@pytest.fixture(scope="session")
def hh_catalog(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """A catalog with version hh@v1 (train/test split by prompt) of short real hh-rlhf pairs."""
    from curation.catalog import open_catalog

    cat = open_catalog(tmp_path_factory.mktemp("catalog"))
    cat.publish("hh", hh_tables(shared_data), test_fraction=0.25, seed=0)
    return cat


@pytest.fixture(scope="session")
def hh_rows(hh_catalog) -> pl.DataFrame:
    return hh_catalog.load("hh@v1")


@pytest.fixture(scope="session")
def fast() -> dict:
    """Training settings for a few quick steps on the tiny models."""
    return {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1, "max_length": 256,
            "save_steps": 50, "resume": False}
