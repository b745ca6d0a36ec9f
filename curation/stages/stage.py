"""The `Stage` type and the one wrapper that runs any stage.

A stage declares what it reads (`inputs`), what it writes (`outputs`: table key -> artifact
name and schema), its fingerprint and its compute. `execute` does the rest for every stage:
skip when the store already holds the outputs under that fingerprint, otherwise compute, write
each output atomically (the store's temp-name + rename), time it, and fill the report. A stage's
compute only says what is new; it never checks the cache or writes files itself.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from curation import schema
from curation.recipe import Recipe
from curation.stats import Stats
from curation.store import ArtifactRef, ArtifactStore

Tables = dict[str, ArtifactRef]
PIPELINE_VERSION = "1"  # bump when a stage's output for the same inputs changes


class StageError(RuntimeError):
    """A stage failed: the message names the stage, the component and the cause."""


@dataclass(frozen=True)
class RunContext:
    """Where a run reads and writes: the catalog folder (artifacts, caches, models)."""

    catalog_root: str

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(Path(self.catalog_root) / "artifacts")

    @property
    def generation_cache(self) -> Path:
        return Path(self.catalog_root) / "cache" / "generate"

    def catalog(self):
        from curation.catalog import open_catalog

        return open_catalog(self.catalog_root)


class Stage:
    """One step of the loop. Subclasses set `name`, `inputs` and `outputs` and implement
    `fingerprint` and `compute`; the hooks below have the common defaults."""

    name: str = ""
    inputs: tuple[str, ...] = ()  # table keys the stage reads (for its fingerprint and docs)
    outputs: Mapping[str, tuple[str, str | None]] = {}  # table key -> (artifact name, schema table)
    sharded = False

    def applies(self, recipe: Recipe) -> bool:
        """Whether the recipe asks for this stage at all."""
        return True

    def fingerprint(self, recipe: Recipe, tables: Tables, ctx: RunContext) -> str:
        raise NotImplementedError

    def context(self, recipe: Recipe) -> str:
        """What an error message names besides the stage (the backend, the builder ...)."""
        return ""

    def rows_in(self, recipe: Recipe, tables: Tables) -> int:
        return 0

    def compute(
        self, recipe: Recipe, tables: Tables, ctx: RunContext, report: Stats, run: Mapping[str, Any]
    ) -> dict[str, pl.DataFrame]:
        """The new outputs (one frame per `outputs` key); counters go into `report`."""
        raise NotImplementedError

    def reusable(self, refs: Mapping[str, ArtifactRef], ctx: RunContext) -> bool:
        """Whether existing outputs may be reused (publish checks the catalog still has the version)."""
        return True

    def summarize(self, recipe: Recipe, tables: Tables, report: Stats) -> None:
        """Fill `rows_out` and `detail` from the outputs (cached or fresh alike)."""


def produce(
    ctx: RunContext,
    fp: str,
    outputs: Mapping[str, tuple[str, str | None]],
    compute: Callable[[], Mapping[str, pl.DataFrame]],
    report: Stats,
    *,
    error: str,
    reusable: Callable[[Mapping[str, ArtifactRef]], bool] | None = None,
) -> dict[str, ArtifactRef]:
    """Skip-if-exists, compute, atomic write: the outputs' references under `fp`.

    Any exception of the compute other than a `StageError` becomes one whose message starts
    with `error` (the stage and its component), so a failure always says where it happened.
    """
    refs = stored(ctx, fp, outputs, reusable)
    if refs is not None:
        report.cached = True
        return refs
    store = ctx.store
    try:
        frames = compute()
    except StageError:
        raise
    except Exception as exc:
        raise StageError(f"{error}: {exc}") from exc
    return {key: store.write(artifact, fp, frames[key], table=table) for key, (artifact, table) in outputs.items()}


def stored(
    ctx: RunContext,
    fp: str,
    outputs: Mapping[str, tuple[str, str | None]],
    reusable: Callable[[Mapping[str, ArtifactRef]], bool] | None = None,
) -> dict[str, ArtifactRef] | None:
    """The outputs' references when the store holds every one under `fp` and they may be reused, else None."""
    store = ctx.store
    if not all(store.exists(artifact, fp) for artifact, _ in outputs.values()):
        return None
    refs = {key: store.ref(artifact, fp) for key, (artifact, _) in outputs.items()}
    return refs if reusable is None or reusable(refs) else None


def execute(
    stage: Stage, recipe: Recipe, tables: Tables, ctx: RunContext, run: Mapping[str, Any] | None = None
) -> tuple[Tables, Stats]:
    """Run one (unsharded) stage through `produce`: the tables after it and its report."""
    started = time.perf_counter()
    fp = stage.fingerprint(recipe, tables, ctx)
    report = Stats(stage=stage.name, fingerprint=fp, rows_in=stage.rows_in(recipe, tables))
    refs = produce(
        ctx, fp, stage.outputs, lambda: stage.compute(recipe, tables, ctx, report, run or {}), report,
        error=f"stage {stage.name}{stage.context(recipe)}", reusable=lambda r: stage.reusable(r, ctx),
    )
    out = {**tables, **refs}
    stage.summarize(recipe, out, report)
    report.seconds = time.perf_counter() - started
    return out, report


# ---------------------------------------------------------------- helpers the stages share


def fingerprint(*parts: Any) -> str:
    """A stage output's fingerprint from its inputs' fingerprints and its configuration."""
    return schema.content_hash("stage", PIPELINE_VERSION, *parts)


def config_of(section: Any) -> dict[str, Any]:
    return section.model_dump(mode="json") if section is not None else {}


def component_fingerprint(section: Any, registry_section: str) -> str:
    """Fingerprint of a configured component (its registered version included)."""
    from curation.recipe import _registry

    registry, key = _registry(registry_section)
    cls = registry.get(getattr(section, key))
    return cls(section).fingerprint


def read_table(store: ArtifactStore, tables: Mapping[str, ArtifactRef], name: str) -> pl.DataFrame:
    """A table of the run, or its empty schema when no stage produced it."""
    ref = tables.get(name)
    return store.read(ref) if ref is not None else schema.empty(name)


def fingerprints(tables: Mapping[str, ArtifactRef], *names: str) -> list[str | None]:
    return [tables[n].fingerprint if n in tables else None for n in names]


def file_digest(path: Path) -> str:
    """A source or prompts file by its content (moving it changes nothing)."""
    return schema.file_hash(path)[:16]


def is_pairwise(score_config: Any) -> bool:
    from curation.scorers import SCORERS

    return SCORERS.build(score_config.kind, score_config).mode == "pairwise"


def record_frame(record: Mapping[str, Any]) -> pl.DataFrame:
    """A one-row frame holding a JSON record (what publish, train and evaluate write)."""
    return pl.DataFrame({"record": [schema.dumps(dict(record))]})


def read_record(ref: ArtifactRef) -> dict[str, Any]:
    """The JSON record of a publish, train or evaluate artifact."""
    return json.loads(pl.read_parquet(ref.path)["record"][0])


def worker_name() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
