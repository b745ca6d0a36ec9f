"""Stages mapped over shards of prompts (generate, score): plan, one shard, combine.

Each shard is its own artifact under its own fingerprint, so a crash loses at most one shard
and a re-run recomputes only the missing ones. All three steps go through `produce`, the same
skip/compute/write wrapper as every other stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import polars as pl

from curation import schema
from curation.recipe import Recipe
from curation.stages.stage import (
    RunContext,
    Stage,
    Tables,
    fingerprint,
    fingerprints,
    produce,
    read_table,
    worker_name,
)
from curation.stats import Stats
from curation.store import ArtifactRef


@dataclass(frozen=True)
class Shard:
    """One unit of mapped work: a slice of prompts and the fingerprint of its output."""

    stage: str
    index: int
    fingerprint: str
    prompts: ArtifactRef
    inputs: tuple[tuple[str, ArtifactRef], ...] = ()  # other tables the shard reads


class ShardedStage(Stage):
    """A stage whose work is cut by prompt id; subclasses say what one shard computes."""

    sharded = True
    table = ""  # the table the stage adds rows to ("candidates", "scores")
    key: list[str] = []  # its unique key when shard rows are combined with the sources' rows

    def config_fingerprint(self, recipe: Recipe) -> Any:
        raise NotImplementedError

    def shard_inputs(self, tables: Tables) -> tuple[tuple[str, ArtifactRef], ...]:
        return ()

    def compute_shard(self, recipe: Recipe, prompts: pl.DataFrame, inputs: dict[str, ArtifactRef],
                      ctx: RunContext, report: Stats) -> pl.DataFrame:
        raise NotImplementedError

    def combined_rows_in(self, tables: Tables) -> int:
        raise NotImplementedError

    def combined_rows_out(self, tables: Tables, out: Tables) -> int:
        return out[self.table].rows

    def shard_outputs(self) -> dict[str, tuple[str, str]]:
        """Where one shard's rows are stored (under the shard's fingerprint)."""
        return {self.table: (f"{self.name}.shard", self.table)}

    def combined_outputs(self) -> dict[str, tuple[str, str]]:
        return {self.table: (self.name, self.table)}

    def combined_fingerprint(self, shards: list[Shard], tables: Tables) -> str:
        return fingerprint(self.name, [s.fingerprint for s in shards], fingerprints(tables, self.table))

    # -- the three steps

    def plan(self, recipe: Recipe, tables: Tables, ctx: RunContext, shard_size: int) -> list[Shard]:
        """Cut the prompts into shards (by prompt id, stable across runs)."""
        store = ctx.store
        prompts = store.read(tables["prompts"]).sort("prompt_id")
        config_fp = self.config_fingerprint(recipe)
        inputs = self.shard_inputs(tables)
        shards = []
        for i, start in enumerate(range(0, max(prompts.height, 1), shard_size)):
            part = prompts.slice(start, shard_size)
            in_fp = schema.content_hash("shard", part["prompt_id"].to_list(), tables["prompts"].fingerprint)
            ref = produce(ctx, in_fp, {"prompts": (f"{self.name}.in", "prompts")}, lambda part=part: {"prompts": part},
                          Stats(stage=f"{self.name}.in"), error=f"stage {self.name}")["prompts"]
            fp = fingerprint(self.name, "shard", config_fp, in_fp, [r.fingerprint for _, r in inputs])
            shards.append(Shard(self.name, i, fp, ref, inputs))
        return shards

    def run_shard(self, shard: Shard, recipe: Recipe, ctx: RunContext) -> tuple[ArtifactRef, Stats]:
        """Compute one shard, or return its artifact when it already exists."""
        started = time.perf_counter()
        report = Stats(stage=f"{self.name}.shard", fingerprint=shard.fingerprint, rows_in=shard.prompts.rows, shards=1)

        def compute() -> dict[str, pl.DataFrame]:
            frame = self.compute_shard(recipe, ctx.store.read(shard.prompts), dict(shard.inputs), ctx, report)
            report.detail["worker"] = worker_name()
            return {self.table: frame}

        ref = produce(ctx, shard.fingerprint, self.shard_outputs(), compute, report,
                      error=f"stage {self.name}{self.context(recipe)}")[self.table]
        report.shards_cached = int(report.cached)
        report.rows_out = ref.rows
        if not report.cached:
            report.seconds = time.perf_counter() - started
        return ref, report

    def combine(self, shards: list[Shard], refs: list[ArtifactRef], reports: list[Stats], tables: Tables,
                ctx: RunContext) -> tuple[Tables, Stats]:
        """Join the shard artifacts (plus what the sources brought) into the stage's table."""
        store, table = ctx.store, self.table
        fp = self.combined_fingerprint(shards, tables)
        report = Stats(stage=self.name, fingerprint=fp, rows_in=self.combined_rows_in(tables))
        workers = sorted({r.detail["worker"] for r in reports if "worker" in r.detail})
        report.detail = {"workers": workers} if workers else {}
        for r in reports:
            report.merge(r)

        def compute() -> dict[str, pl.DataFrame]:
            frames = [read_table(store, tables, table)] + [store.read(r) for r in refs]
            frame = pl.concat([schema.conform(f, table) for f in frames]).unique(self.key, keep="last", maintain_order=True)
            return {table: frame}

        out = {**tables, **produce(ctx, fp, self.combined_outputs(), compute, report, error=f"stage {self.name}")}
        report.cached = report.cached and report.shards_cached == report.shards
        report.rows_out = self.combined_rows_out(tables, out)
        return out, report


def run_sharded(stage: ShardedStage, recipe: Recipe, tables: Tables, ctx: RunContext,
                shard_size: int = 256) -> tuple[Tables, Stats]:
    """A sharded stage run in this process, one shard after the other."""
    shards = stage.plan(recipe, tables, ctx, shard_size)
    results = [stage.run_shard(s, recipe, ctx) for s in shards]
    return stage.combine(shards, [r for r, _ in results], [r for _, r in results], tables, ctx)
