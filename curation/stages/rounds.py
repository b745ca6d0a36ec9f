"""On-policy rounds in a run (`rounds: N` in the recipe): round N samples with round N-1's policy.

Round 1 is the recipe as written. Before each later round the loop writes a small `round` record
(the round number, the policy that samples and trains in it, the first policy that stays the
reference, the random-pairs control's own previous model, and the catalog name of the generating
checkpoint) and starts again from the sources' tables plus that record. The stages read the
record from the tables: generate samples with its policy, publish records it as the version's
generator, train starts from it, evaluate measures every round against the same base policy.
Its fingerprint follows round N-1's trained model, so a re-run reuses every round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from curation.recipe import Recipe
from curation.stages.stage import RunContext, Tables, fingerprint, produce, read_record, record_frame
from curation.stages.train import policy_base
from curation.stats import Stats

ROUND = "round"  # the table key (and artifact name) of the round record
SOURCE_TABLES = ("prompts", "candidates", "pairs", "scores", "quarantine")


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


def start_round(index: int, recipe: Recipe, sources: Tables, previous: Tables, ctx: RunContext) -> Tables:
    """The tables round `index` starts from: the sources' tables and the round record."""
    from curation.train.rounds import merged_model, next_round

    trained = read_record(previous["train"])
    first = first_policy(recipe, previous)
    train_cfg = {**recipe.train.model_dump(mode="json"), "model": policy_base(recipe)}
    plan = next_round(index, trained["model"], recipe.generate, train_cfg, first_policy=first)
    record = {
        "round": index,
        "policy": plan.train.model,
        "reference": normalised(plan.train.reference_model),
        "generated_by": f"model:{trained['model_id']}" if trained.get("model_id") else normalised(plan.generated_by),
        "control_policy": str(merged_model(trained["control_model"])) if trained.get("control_model") else None,
    }
    fp = fingerprint(ROUND, index, previous["train"].fingerprint)
    refs = produce(ctx, fp, {ROUND: (ROUND, None)}, lambda: {ROUND: record_frame(record)}, Stats(stage=ROUND),
                   error=f"round {index}")
    return {**{k: v for k, v in sources.items() if k in SOURCE_TABLES}, ROUND: refs[ROUND]}
