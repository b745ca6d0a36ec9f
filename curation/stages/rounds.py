"""On-policy rounds in a run (`rounds: N` in the recipe): round N samples with round N-1's policy.

Round 1 is the recipe as written. Before each later round the loop writes a small `round` record
(the round number, the policy that samples and trains in it, the first policy that stays the
reference, the random-pairs control's own previous model, and the catalog name of the generating
checkpoint) and starts again from the sources' tables plus that record. The stages read the
record from the tables: generate samples with its policy, publish records it as the version's
generator, train starts from it, evaluate measures every round against the same base policy.
Its fingerprint follows round N-1's trained model, so a re-run reuses every round.

With `round_prompts: n` each round works on its own n source prompts (disjoint random shares,
drawn once): re-sampling the problems round 1 already taught teaches little, fresh ones can.
The random-pairs control keeps its own chain: from round 2 on, its previous model samples the
round's prompts through the same generate, score and pairs stages, and its random pairs come from
that pool, never from what the curated policy generated.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from curation.recipe import Recipe
from curation.stages.stage import (
    RunContext,
    StageError,
    Tables,
    fingerprint,
    fingerprints,
    produce,
    read_record,
    record_frame,
)
from curation.stages.train import CONTROL_PREFIX, policy_base
from curation.stats import Stats

ROUND = "round"  # the table key (and artifact name) of the round record
SOURCE_TABLES = ("prompts", "candidates", "pairs", "scores", "quarantine")
SHARED_TABLES = ("prompts", "candidates", "pairs", "scores")  # what a round's share of prompts narrows
CONTROL_CHAIN = ("generate", "score", "pairs")  # the stages the control runs on its own samples


def round_of(tables: Mapping[str, Any]) -> dict[str, Any] | None:
    """The current round's record, or None in round 1."""
    return read_record(tables[ROUND]) if ROUND in tables else None


def first_policy(recipe: Recipe, tables: Mapping[str, Any]) -> str | None:
    """The policy the run started from: the reference of every round and the 'before' of every evaluation."""
    current = round_of(tables)
    return current["reference"] if current else policy_base(recipe)


def generator(recipe: Recipe, tables: Mapping[str, Any]) -> str | None:
    """What sampled this round's candidates, as its version records it: round N-1's checkpoint, or
    in round 1 the generating model's folder as an absolute normalised path (the form the catalog
    gives every model folder; a recipe's relative path comes in joined, `..` and all), or a served
    model's name."""
    current = round_of(tables)
    if current:
        return current["generated_by"]
    return normalised(getattr(recipe.generate, "model", None))


def normalised(model: str | None) -> str | None:
    """A local model folder as an absolute path without `..` or links; anything else as given."""
    return str(Path(model).resolve()) if model and Path(model).exists() else model


def round_sources(index: int, recipe: Recipe, sources: Tables, ctx: RunContext) -> Tables:
    """The source tables round `index` works from: every source table, or with `round_prompts: n`
    the index-th of disjoint random shares of n prompts and the candidates, pairs and scores of
    those prompts. The shares are an order of the prompt ids by hash, so they do not depend on the
    order of the source files and the same prompts fall to the same round on every run."""
    tables = {k: v for k, v in sources.items() if k in SOURCE_TABLES}
    n = recipe.round_prompts
    if n is None:
        return tables
    have = sources["prompts"].rows
    if recipe.rounds * n > have:  # said before round 1 spends anything
        raise StageError(f"`round_prompts: {n}` with `rounds: {recipe.rounds}` needs {recipe.rounds * n} distinct source "
                         f"prompts (fresh ones every round); the sources have {have}")

    def compute() -> dict[str, pl.DataFrame]:
        store = ctx.store
        ids = sorted(store.read(sources["prompts"])["prompt_id"].to_list(),
                     key=lambda pid: hashlib.sha256(f"round_prompts:{pid}".encode()).digest())[(index - 1) * n:index * n]
        frames = {t: store.read(sources[t]).filter(pl.col("prompt_id").is_in(ids)) for t in ("prompts", "candidates", "pairs")}
        targets = pl.concat([frames["candidates"]["candidate_id"], frames["pairs"]["pair_id"]])
        frames["scores"] = store.read(sources["scores"]).filter(pl.col("target_id").is_in(targets.implode()))
        return frames

    fp = fingerprint("round.prompts", index, n, fingerprints(sources, *SHARED_TABLES))
    refs = produce(ctx, fp, {t: (f"round.{t}", t) for t in SHARED_TABLES}, compute, Stats(stage=ROUND),
                   error=f"round {index}: choosing its {n} prompts")
    return {**tables, **refs}


def control_tables(start: Tables, ctx: RunContext) -> Tables | None:
    """Where the control's chain samples in this round: the tables the round started from (its
    own prompts, nothing the curated side generated), its previous model as the policy. None in
    round 1 (its pool is the base policy's, the same as the curated side's) or without a control."""
    current = round_of(start)
    if not current or not current.get("control_policy"):
        return None
    record = {"round": current["round"], "chain": "control", "policy": current["control_policy"]}
    fp = fingerprint(ROUND, "control", start[ROUND].fingerprint)
    refs = produce(ctx, fp, {ROUND: ("round.control", None)}, lambda: {ROUND: record_frame(record)}, Stats(stage=ROUND),
                   error=f"round {current['round']} (control)")
    return {**{k: v for k, v in start.items() if k in SOURCE_TABLES}, ROUND: refs[ROUND]}


def control_pool_tables(chain: Tables) -> Tables:
    """The control chain's pool tables under the keys train reads its random pairs from."""
    return {f"{CONTROL_PREFIX}{t}": chain[t] for t in SHARED_TABLES if t in chain}


def label(stage: str, detail: Mapping[str, Any] | None) -> str:
    """A stage's name in a run's stats: "train", "train (round 2)", "generate (round 2, control)"."""
    detail = detail or {}
    marks = [f"round {detail['round']}"] if detail.get("round") else []
    marks += [detail["chain"]] if detail.get("chain") else []
    return f"{stage} ({', '.join(marks)})" if marks else stage


def start_round(index: int, recipe: Recipe, sources: Tables, previous: Tables, ctx: RunContext) -> Tables:
    """The tables round `index` starts from: the round's source tables and the round record."""
    from curation.train.rounds import merged_model, next_round

    trained = read_record(previous["train"])
    first = first_policy(recipe, previous)
    train_cfg = {**recipe.train.model_dump(mode="json"), "model": policy_base(recipe)}
    plan = next_round(index, trained["model"], recipe.generate, train_cfg, first_policy=first)
    tables = round_sources(index, recipe, sources, ctx)
    record = {
        "round": index,
        "prompts": tables["prompts"].rows,
        "policy": plan.train.model,
        "reference": normalised(plan.train.reference_model),
        "generated_by": f"model:{trained['model_id']}" if trained.get("model_id") else normalised(plan.generated_by),
        "control_policy": str(merged_model(trained["control_model"])) if trained.get("control_model") else None,
    }
    fp = fingerprint(ROUND, index, previous["train"].fingerprint, tables["prompts"].fingerprint)
    refs = produce(ctx, fp, {ROUND: (ROUND, None)}, lambda: {ROUND: record_frame(record)}, Stats(stage=ROUND),
                   error=f"round {index}")
    return {**tables, ROUND: refs[ROUND]}
