"""The recipe's stages as plain functions: artifact references in, artifact references out.

A run's state is a `Tables` mapping (table name -> ArtifactRef): sources fill prompts,
candidates, pairs, scores and quarantine; generate adds candidates; score adds scores; pairs
adds pairs; select adds decisions; publish, train and evaluate add one small record each.
Every stage computes its output fingerprint from its inputs' fingerprints and its configuration
*before* doing any work; when the store already holds that artifact the stage returns it at once
(a cache hit), so a re-run resumes and an unchanged re-run touches no model. Generation and
scoring work shard by shard (each shard its own artifact) so a crash loses at most one shard.

No Prefect here: `curation.flows` wraps these functions in tasks; tests and notebooks call them
directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from curation import schema
from curation.recipe import STAGES, Recipe, model_builder
from curation.store import ArtifactRef, ArtifactStore

log = logging.getLogger(__name__)

Tables = dict[str, ArtifactRef]
SHARDED = ("generate", "score")
PIPELINE_VERSION = "1"  # bump when a stage's output for the same inputs changes


class StageError(RuntimeError):
    """A stage failed: the message names the stage, the component and the cause."""


@dataclass
class StageReport:
    """What one stage did: rows in and out, cache hits, model calls, tokens, time."""

    stage: str
    fingerprint: str = ""
    rows_in: int = 0
    rows_out: int = 0
    cached: bool = False
    shards: int = 0
    shards_cached: int = 0
    calls: int = 0
    cache_hits: int = 0
    tokens: int = 0
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def stage_order(until: str | None) -> list[str]:
    """The stages to run, in order, up to and including `until`."""
    if until is None:
        return list(STAGES)
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r} for --until; stages: {', '.join(STAGES)}")
    return list(STAGES[: STAGES.index(until) + 1])


def _fp(*parts: Any) -> str:
    return schema.content_hash("stage", PIPELINE_VERSION, *parts)


def _config(section: Any) -> dict[str, Any]:
    return section.model_dump(mode="json") if section is not None else {}


def _component_fp(section: Any, registry_section: str) -> str:
    """Fingerprint of a configured component (its registered version included)."""
    from curation.recipe import _registry

    registry, key = _registry(registry_section)
    cls = registry.get(getattr(section, key))
    return cls(section).fingerprint


def _read(store: ArtifactStore, tables: Mapping[str, ArtifactRef], name: str) -> pl.DataFrame:
    ref = tables.get(name)
    return store.read(ref) if ref is not None else schema.empty(name)


def _fps(tables: Mapping[str, ArtifactRef], *names: str) -> list[str | None]:
    return [tables[n].fingerprint if n in tables else None for n in names]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- paths and models


def load(recipe_path: str | os.PathLike) -> Recipe:
    """Load and validate a recipe (paths resolved against its folder): what every stage works from."""
    from curation.recipe import load_recipe

    return load_recipe(recipe_path)


def build_models(recipe: Recipe) -> list[str]:
    """Build the recipe's `models:` entries whose folders are missing; returns what was built."""
    built = []
    for entry in recipe.models:
        path = Path(entry.path)
        if (path / "config.json").exists():
            continue
        log.info("building model %s (%s)", path, entry.build)
        model_builder(entry.build)(path, **entry.options)
        built.append(str(path))
    return built


# ---------------------------------------------------------------- sources


def run_sources(recipe: Recipe, ctx: RunContext) -> tuple[Tables, StageReport]:
    """Read every source into prompts / candidates / pairs / scores / quarantine artifacts."""
    store, started = ctx.store, time.perf_counter()
    ids = []
    for s in recipe.sources:
        spec = s.model_dump(mode="json")
        p = Path(s.path) if s.path else None
        if p is not None and p.is_file():  # a file is its content: moving it or the recipe changes nothing
            spec["path"] = _file_digest(p)
        ids.append(spec)
    fp = _fp("sources", ids)
    names = ("prompts", "candidates", "pairs", "scores", "quarantine")
    report = StageReport("sources", fp)
    if all(store.exists(f"sources.{n}", fp) for n in names):
        tables = {n: store.ref(f"sources.{n}", fp) for n in names}
        report.cached = True
    else:
        from curation.sources import read_source

        parts: dict[str, list[pl.DataFrame]] = {n: [] for n in names}
        for s in recipe.sources:
            try:
                data = read_source(s.path, s.format, s.limit, query=s.query, split=s.split, name=s.name)
            except Exception as exc:
                raise StageError(f"stage sources: reading {s.path or s.query}: {exc}") from exc
            log.info("%s", data.summary())
            report.rows_in += data.rows_read
            for n in names:
                parts[n].append(getattr(data, n))
        keys = {"prompts": "prompt_id", "candidates": "candidate_id", "pairs": "pair_id"}
        tables = {}
        for n in names:
            frame = pl.concat(parts[n]) if parts[n] else schema.empty(n)
            if n in keys:
                frame = frame.unique(keys[n], keep="first", maintain_order=True)
            elif n == "scores":
                frame = frame.unique(["target_id", "scorer"], keep="last", maintain_order=True)
            tables[n] = store.write(f"sources.{n}", fp, frame, table=n)
    report.rows_out = tables["pairs"].rows or tables["prompts"].rows  # what the next stage works on
    report.detail = {n: tables[n].rows for n in names}
    report.seconds = time.perf_counter() - started
    return tables, report


# ---------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shard:
    """One unit of mapped work: a slice of prompts and the fingerprint of its output."""

    stage: str
    index: int
    fingerprint: str
    prompts: ArtifactRef
    inputs: tuple[tuple[str, ArtifactRef], ...] = ()  # other tables the shard reads


def plan_shards(stage: str, recipe: Recipe, tables: Tables, ctx: RunContext, shard_size: int) -> list[Shard]:
    """Cut the prompts into shards (by prompt id, stable across runs) for `generate` or `score`."""
    store = ctx.store
    prompts = store.read(tables["prompts"]).sort("prompt_id")
    if stage == "generate":
        config_fp = _component_fp(recipe.generate, "generate")
        inputs: tuple[tuple[str, ArtifactRef], ...] = ()
    else:
        config_fp = [_component_fp(s, "score") for s in recipe.score if not _pairwise(s)]
        inputs = (("candidates", tables["candidates"]),)
    shards = []
    for i, start in enumerate(range(0, max(prompts.height, 1), shard_size)):
        part = prompts.slice(start, shard_size)
        in_fp = schema.content_hash("shard", part["prompt_id"].to_list(), tables["prompts"].fingerprint)
        ref = store.ref(f"{stage}.in", in_fp) if store.exists(f"{stage}.in", in_fp) else store.write(
            f"{stage}.in", in_fp, part, table="prompts"
        )
        fp = _fp(stage, "shard", config_fp, in_fp, [r.fingerprint for _, r in inputs])
        shards.append(Shard(stage, i, fp, ref, inputs))
    return shards


def run_shard(shard: Shard, recipe: Recipe, ctx: RunContext) -> tuple[ArtifactRef, StageReport]:
    """Generate or score one shard, or return its artifact when it already exists."""
    store, started = ctx.store, time.perf_counter()
    out_stage = f"{shard.stage}.shard"
    report = StageReport(out_stage, shard.fingerprint, rows_in=shard.prompts.rows, shards=1)
    if store.exists(out_stage, shard.fingerprint):
        ref = store.ref(out_stage, shard.fingerprint)
        report.cached, report.shards_cached, report.rows_out = True, 1, ref.rows
        return ref, report
    prompts = store.read(shard.prompts)
    if shard.stage == "generate":
        from curation.generate import run_generation

        try:
            frame, stats = run_generation(prompts, recipe.generate, cache_dir=ctx.generation_cache)
        except Exception as exc:
            raise StageError(f"stage generate (backend {recipe.generate.backend}): {exc}") from exc
        report.calls, report.cache_hits, report.tokens = stats.calls, stats.cache_hits, stats.tokens
        report.detail = {"errors": stats.errors, "skipped_long": stats.skipped_long}
        table = "candidates"
    else:
        from curation.scorers import run_scorers

        candidates = store.read(dict(shard.inputs)["candidates"])
        candidates = candidates.filter(pl.col("prompt_id").is_in(prompts["prompt_id"].implode()))
        configs = [s for s in recipe.score if not _pairwise(s)]
        try:
            frame = run_scorers(configs, prompts, candidates) if configs and candidates.height else schema.empty("scores")
        except Exception as exc:
            raise StageError(f"stage score ({', '.join(f'{c.kind}:{c.name}' for c in configs)}): {exc}") from exc
        report.calls = frame.height
        table = "scores"
    ref = store.write(out_stage, shard.fingerprint, frame, table=table)
    report.rows_out, report.seconds = ref.rows, time.perf_counter() - started
    report.detail["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return ref, report


def combine_shards(
    stage: str, shards: list[Shard], refs: list[ArtifactRef], reports: list[StageReport], tables: Tables, ctx: RunContext
) -> tuple[Tables, StageReport]:
    """Join the shard artifacts (plus what the sources brought) into the stage's table."""
    store = ctx.store
    table = "candidates" if stage == "generate" else "scores"
    fp = _fp(stage, [s.fingerprint for s in shards], _fps(tables, table))
    report = StageReport(stage, fp, rows_in=tables["prompts"].rows if stage == "generate" else tables["candidates"].rows)
    workers = sorted({r.detail["worker"] for r in reports if "worker" in r.detail})
    report.detail = {"workers": workers} if workers else {}
    for r in reports:
        report.shards += r.shards
        report.shards_cached += r.shards_cached
        report.calls += r.calls
        report.cache_hits += r.cache_hits
        report.tokens += r.tokens
        report.seconds += r.seconds
    out = dict(tables)
    if store.exists(stage, fp):
        out[table] = store.ref(stage, fp)
        report.cached = True
    else:
        frames = [_read(store, tables, table)] + [store.read(r) for r in refs]
        key = ["candidate_id"] if table == "candidates" else ["target_id", "scorer"]
        frame = pl.concat([schema.conform(f, table) for f in frames]).unique(key, keep="last", maintain_order=True)
        out[table] = store.write(stage, fp, frame, table=table)
    report.cached = report.cached and report.shards_cached == report.shards
    report.rows_out = out[table].rows if stage == "generate" else out[table].rows - (tables[table].rows if table in tables else 0)
    return out, report


def run_sharded(
    stage: str, recipe: Recipe, tables: Tables, ctx: RunContext, shard_size: int = 256
) -> tuple[Tables, StageReport]:
    """A sharded stage run in this process, one shard after the other."""
    shards = plan_shards(stage, recipe, tables, ctx, shard_size)
    results = [run_shard(s, recipe, ctx) for s in shards]
    return combine_shards(stage, shards, [r for r, _ in results], [r for _, r in results], tables, ctx)


def _pairwise(score_config: Any) -> bool:
    from curation.scorers import SCORERS

    return SCORERS.build(score_config.kind, score_config).mode == "pairwise"


# ---------------------------------------------------------------- pairs, select


def run_pairs(recipe: Recipe, tables: Tables, ctx: RunContext) -> tuple[Tables, StageReport]:
    """Build pairs from scored candidates (kept beside imported pairs), then run pairwise scorers."""
    store, started = ctx.store, time.perf_counter()
    pairwise = [s for s in recipe.score if _pairwise(s)]
    cfg = _config(recipe.pairs)
    fp = _fp("pairs", cfg, [_component_fp(s, "score") for s in pairwise], _fps(tables, "prompts", "candidates", "pairs", "scores"))
    report = StageReport("pairs", fp, rows_in=tables["candidates"].rows)
    out = dict(tables)
    if store.exists("pairs", fp) and store.exists("pairs.scores", fp):
        out["pairs"], out["scores"] = store.ref("pairs", fp), store.ref("pairs.scores", fp)
        report.cached = True
    else:
        prompts, candidates = store.read(tables["prompts"]), store.read(tables["candidates"])
        pairs, scores = _read(store, tables, "pairs"), _read(store, tables, "scores")
        if recipe.pairs is not None:
            from curation.pairs import build_pairs_counted

            generated = candidates.filter(~pl.col("generator").str.starts_with("dataset:"))
            try:
                built = build_pairs_counted(generated, scores, prompts=prompts, allow_empty=True, **cfg)
            except Exception as exc:
                raise StageError(f"stage pairs (builder {recipe.pairs.builder}): {exc}") from exc
            report.detail = dict(built.counts)
            pairs = pl.concat([schema.conform(pairs, "pairs"), schema.conform(built.pairs, "pairs")]).unique(
                "pair_id", keep="first", maintain_order=True
            )
        if pairwise and pairs.height:
            from curation.scorers import run_scorers

            try:
                extra = run_scorers(pairwise, prompts, candidates, pairs)
            except Exception as exc:
                raise StageError(f"stage pairs, pairwise scoring ({', '.join(s.name for s in pairwise)}): {exc}") from exc
            report.calls = extra.height
            scores = pl.concat([schema.conform(scores, "scores"), schema.conform(extra, "scores")])
        out["pairs"] = store.write("pairs", fp, pairs, table="pairs")
        out["scores"] = store.write("pairs.scores", fp, scores, table="scores")
    report.rows_out = out["pairs"].rows
    report.seconds = time.perf_counter() - started
    return out, report


def pair_pool(store: ArtifactStore, tables: Tables) -> pl.DataFrame:
    """The selection pool: every pair denormalised (VERSION_ROWS columns), no decision applied."""
    from curation.catalog import build_version_rows

    frames = {n: _read(store, tables, n) for n in ("prompts", "candidates", "scores", "pairs")}
    rows, _ = build_version_rows(frames)
    return rows


def run_select(recipe: Recipe, tables: Tables, ctx: RunContext) -> tuple[Tables, StageReport]:
    """Apply the recipe's selectors in order; every pool item gets a decision row per step."""
    store, started = ctx.store, time.perf_counter()
    cfgs = [_config(s) for s in recipe.select]
    fp = _fp("select", [_component_fp(s, "select") for s in recipe.select], _fps(tables, "pairs", "scores", "candidates"))
    report = StageReport("select", fp, rows_in=tables["pairs"].rows)
    out = dict(tables)
    if store.exists("select", fp) and store.exists("select.report", fp):
        out["decisions"] = store.ref("select", fp)
        out["select_report"] = store.ref("select.report", fp)
        report.cached = True
    else:
        pool = pair_pool(store, tables)
        if not recipe.select:
            decisions, sel_report = schema.empty("decisions"), {"pool": pool.height, "kept": pool.height, "steps": []}
        else:
            from curation.select import apply_selectors

            try:
                result = apply_selectors(pool, cfgs, scores=_read(store, tables, "scores"))
            except Exception as exc:
                raise StageError(f"stage select: {exc}") from exc
            decisions, sel_report = result.decisions, result.report
        out["decisions"] = store.write("select", fp, decisions, table="decisions")
        out["select_report"] = store.write("select.report", fp, pl.DataFrame({"report": [schema.dumps(sel_report)]}))
    sel = json.loads(store.read(out["select_report"])["report"][0])
    report.rows_out = int(sel.get("kept", 0))
    report.detail = {"steps": [{k: s.get(k) for k in ("stage", "input", "kept", "reasons", "warnings")} for s in sel.get("steps", [])]}
    report.seconds = time.perf_counter() - started
    return out, report


# ---------------------------------------------------------------- publish


def _record(store: ArtifactStore, stage: str, fp: str, record: Mapping[str, Any]) -> ArtifactRef:
    return store.write(stage, fp, pl.DataFrame({"record": [schema.dumps(dict(record))]}))


def read_record(ref: ArtifactRef) -> dict[str, Any]:
    """The JSON record of a publish, train or evaluate artifact."""
    return json.loads(pl.read_parquet(ref.path)["record"][0])


def run_publish(recipe: Recipe, tables: Tables, ctx: RunContext, run: Mapping[str, Any] | None = None) -> tuple[Tables, StageReport]:
    """Publish the selection as a new catalog version (once per fingerprint), exports beside it."""
    store, started = ctx.store, time.perf_counter()
    names = ("prompts", "candidates", "scores", "pairs", "decisions", "quarantine")
    spec = recipe.publish.model_dump(mode="json")
    fp = _fp("publish", recipe.dataset_name, spec, _fps(tables, *names))
    report = StageReport("publish", fp, rows_in=tables["pairs"].rows)
    catalog = ctx.catalog()
    out = dict(tables)
    if store.exists("publish", fp):
        record = read_record(store.ref("publish", fp))
        try:
            catalog.resolve(record["ref"])
            out["publish"] = store.ref("publish", fp)
            report.cached = True
        except Exception:  # the catalog lost that version: publish again
            pass
    if not report.cached:
        frames = {n: _read(store, tables, n) for n in names}
        try:
            info = catalog.publish(
                recipe.dataset_name,
                frames,
                run=dict(run or {}),
                recipe=recipe.model_dump(mode="json"),
                test_fraction=recipe.publish.test_fraction,
                seed=recipe.publish.seed,
            )
            exports = {}
            for fmt in recipe.publish.formats:
                target = Path(recipe.publish.out or Path(ctx.catalog_root) / "exports" / info.ref.replace("@", "-")) / fmt
                exports[fmt] = str(catalog.export(info.ref, fmt, target))
        except Exception as exc:
            raise StageError(f"stage publish ({recipe.dataset_name}): {exc}") from exc
        record = {"ref": info.ref, "path": str(info.path), "rows": info.rows, "fingerprint": info.fingerprint, "exports": exports}
        out["publish"] = _record(store, "publish", fp, record)
    report.rows_out = int(record["rows"])
    report.detail = {"version": record["ref"]}
    report.seconds = time.perf_counter() - started
    return out, report


# ---------------------------------------------------------------- train and evaluate


def _policy_base(recipe: Recipe) -> str | None:
    model = getattr(recipe.train, "model", None)
    return model or (getattr(recipe.generate, "model", None) if recipe.generate is not None else None)


def run_train(recipe: Recipe, tables: Tables, ctx: RunContext) -> tuple[Tables, StageReport]:
    """Train on the published version (TRL); with `evaluate.control`, also on a same-size random set."""
    store, started = ctx.store, time.perf_counter()
    if recipe.train is None:
        raise StageError("stage train: the recipe has no `train` section")
    version = read_record(tables["publish"])
    cfg = recipe.train.model_dump(mode="json")
    cfg["model"] = _policy_base(recipe)
    control = bool(getattr(recipe.evaluate, "control", False))
    fp = _fp("train", cfg, version["fingerprint"], control)
    report = StageReport("train", fp, rows_in=int(version["rows"]))
    out = dict(tables)
    if store.exists("train", fp):
        out["train"] = store.ref("train", fp)
        report.cached = True
    else:
        from curation.train import train

        models_dir = Path(ctx.catalog_root) / "models"
        record: dict[str, Any] = {"version": version["ref"], "base_model": cfg["model"]}
        try:
            result = train(version["ref"], {**cfg, "out": cfg.get("out") or str(models_dir / f"{recipe.name}-{fp}")},
                           ctx.catalog())
            record.update(model=str(result.path), model_id=result.model_id, metrics=result.metrics)
            if control:
                rows = random_control(store, tables, n=int(version["rows"]), seed=recipe.publish.seed)
                ctl = train(rows, {**cfg, "out": str(models_dir / f"{recipe.name}-{fp}-control"), "record": False})
                record.update(control_model=str(ctl.path), control_rows=rows.height, control_metrics=ctl.metrics)
        except Exception as exc:
            raise StageError(f"stage train (method {recipe.train.method}): {exc}") from exc
        out["train"] = _record(store, "train", fp, record)
    record = read_record(out["train"])
    report.rows_out = 1 + ("control_model" in record)
    report.detail = {k: record.get(k) for k in ("model", "model_id", "control_model", "control_rows")}
    report.seconds = time.perf_counter() - started
    return out, report


def random_control(store: ArtifactStore, tables: Tables, n: int, seed: int) -> pl.DataFrame:
    """A uniform random set of `n` trainable pool pairs (no ties, both sides non-empty): what the
    selection is measured against."""
    from curation.catalog import tie_mask

    pool = pair_pool(store, tables)
    usable = (pl.col("chosen").str.strip_chars().str.len_chars() > 0) & (pl.col("rejected").str.strip_chars().str.len_chars() > 0)
    pool = pool.filter(~tie_mask(pool)).filter(usable)
    idx = sorted(random.Random(seed).sample(range(pool.height), min(n, pool.height)))
    return pool[idx]


def run_evaluate(recipe: Recipe, tables: Tables, ctx: RunContext) -> tuple[Tables, StageReport]:
    """Evaluate the base policy (before), the trained one (after) and the random control."""
    store, started = ctx.store, time.perf_counter()
    if recipe.evaluate is None:
        raise StageError("stage evaluate: the recipe has no `evaluate` section")
    trained = read_record(tables["train"])
    cfg = recipe.evaluate.model_dump(mode="json")
    cfg.pop("control", None)
    prompts_fp = _file_digest(Path(cfg["prompts"])) if cfg.get("prompts") and Path(cfg["prompts"]).is_file() else None
    fp = _fp("evaluate", cfg, prompts_fp, tables["train"].fingerprint)
    report = StageReport("evaluate", fp)
    out = dict(tables)
    if store.exists("evaluate", fp):
        out["evaluate"] = store.ref("evaluate", fp)
        report.cached = True
    else:
        from curation.train import evaluate

        models = {"before": trained["base_model"], "after": trained["model"]}
        if trained.get("control_model"):
            models["control"] = trained["control_model"]
        results: dict[str, Any] = {}
        held_out = None if cfg.get("prompts") or cfg.get("pairs") else f"{trained['version']}:test"
        for label, model in models.items():
            try:
                res = evaluate(model, held_out, {**cfg, "model": model, "record": cfg.get("record", True) and label == "after"},
                               ctx.catalog())
            except Exception as exc:
                raise StageError(f"stage evaluate ({label} model {model}): {exc}") from exc
            results[label] = res.metrics
        out["evaluate"] = _record(store, "evaluate", fp, {"models": models, "metrics": results})
    record = read_record(out["evaluate"])
    report.rows_out = len(record["metrics"])
    report.detail = {"metrics": record["metrics"]}
    report.seconds = time.perf_counter() - started
    return out, report


# ---------------------------------------------------------------- the whole loop, without Prefect


STAGE_FUNCTIONS: dict[str, Callable[..., tuple[Tables, StageReport]]] = {
    "pairs": run_pairs,
    "select": run_select,
    "publish": run_publish,
    "train": run_train,
    "evaluate": run_evaluate,
}


def applies(stage: str, recipe: Recipe) -> bool:
    """Whether the recipe asks for `stage` (sources, pairs, select and publish always run)."""
    return {
        "generate": recipe.generate is not None,
        "score": any(not _pairwise(s) for s in recipe.score),
        "train": recipe.train is not None,
        "evaluate": recipe.evaluate is not None and recipe.train is not None,
    }.get(stage, True)


def run_recipe(
    recipe: Recipe, catalog_root: str | os.PathLike, *, until: str | None = None, shard_size: int = 256,
    on_stage: Callable[[StageReport], None] | None = None,
) -> tuple[Tables, list[StageReport]]:
    """Run the recipe's stages in this process, in order (what the Prefect flow does, minus Prefect)."""
    ctx = RunContext(str(Path(catalog_root).resolve()))
    build_models(recipe)
    tables: Tables = {}
    reports: list[StageReport] = []
    for stage in stage_order(until):
        if not applies(stage, recipe):
            continue
        if stage == "sources":
            tables, rep = run_sources(recipe, ctx)
        elif stage in SHARDED:
            tables, rep = run_sharded(stage, recipe, tables, ctx, shard_size)
        else:
            tables, rep = STAGE_FUNCTIONS[stage](recipe, tables, ctx)
        reports.append(rep)
        if on_stage:
            on_stage(rep)
    return tables, reports
