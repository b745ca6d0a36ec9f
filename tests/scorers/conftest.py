"""Scorer inputs built from the shared corpus (read in place, never copied)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from curation import schema
from curation.generate.base import Completion, Generator


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def candidate_rows(pairs: list[dict]) -> pl.DataFrame:
    """Pointwise scorer input: both responses of every pair as candidates."""
    out = []
    for p in pairs:
        pid = schema.prompt_id(p["messages"])
        for side in ("chosen", "rejected"):
            out.append(
                {
                    "candidate_id": schema.response_id(pid, p[side]),
                    "prompt_id": pid,
                    "messages": p["messages"],
                    "text": p[side],
                    "meta": schema.dumps({"side": side, "pair": p["id"]}),
                }
            )
    return pl.DataFrame(out, schema_overrides={"messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String}))})


def pair_rows(pairs: list[dict]) -> pl.DataFrame:
    """Pairwise scorer input, ids as the importer makes them."""
    out = []
    for p in pairs:
        pid = schema.prompt_id(p["messages"])
        c, r = schema.response_id(pid, p["chosen"]), schema.response_id(pid, p["rejected"])
        out.append(
            {
                "pair_id": schema.pair_id(pid, c, r),
                "prompt_id": pid,
                "messages": p["messages"],
                "chosen_id": c,
                "chosen": p["chosen"],
                "rejected_id": r,
                "rejected": p["rejected"],
                "meta": None,
            }
        )
    return pl.DataFrame(out, schema_overrides={"meta": pl.String})


@pytest.fixture(scope="session")
def hh_pairs(shared_data: Path) -> list[dict]:
    return read_jsonl(shared_data / "hh_rlhf_test.jsonl.gz", limit=12)


class ScriptedJudge(Generator):
    """Answers by a rule over the judge prompt it receives: deterministic and inspectable."""

    def __init__(self, rule):
        super().__init__({"backend": "scripted", "model": "rule"})
        self.rule = rule
        self.prompts: list[str] = []

    def model_identity(self) -> str:
        return "scripted"

    def complete(self, requests, stats):
        out = []
        for req in requests:
            prompt = req.messages[-1]["content"]
            self.prompts.append(prompt)
            out.append(Completion(text=self.rule(prompt), n_tokens=1))
        return out


def between(prompt: str, start: str, end: str) -> str:
    return prompt.split(start, 1)[1].split(end, 1)[0].strip()
