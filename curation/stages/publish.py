"""publish: the selection as a new catalog version (once per fingerprint), exports beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from curation import schema
from curation.export import REPORT_FILE, check_out_folder
from curation.recipe import Recipe
from curation.stages.rounds import ROUND, generator
from curation.stages.stage import (
    RunContext,
    Stage,
    Tables,
    fingerprint,
    fingerprints,
    read_record,
    record_frame,
)
from curation.stats import Stats
from curation.store import ArtifactRef


class Publish(Stage):
    name = "publish"
    inputs = ("prompts", "candidates", "scores", "pairs", "decisions", "quarantine")
    outputs = {"publish": ("publish", None)}

    def fingerprint(self, recipe: Recipe, tables: Tables, ctx: RunContext) -> str:
        return fingerprint("publish", recipe.dataset_name, recipe.publish.model_dump(mode="json"),
                           fingerprints(tables, *self.inputs, ROUND))

    def context(self, recipe: Recipe) -> str:
        return f" ({recipe.dataset_name})"

    def rows_in(self, recipe: Recipe, tables: Tables) -> int:
        return tables["pairs"].rows

    def reusable(self, refs: Mapping[str, ArtifactRef], ctx: RunContext) -> bool:
        """A publish record is reused only while the catalog still has its version."""
        try:
            ctx.catalog().resolve(read_record(refs["publish"])["ref"])
        except Exception:  # the catalog lost that version: publish again
            return False
        return True

    def compute(self, recipe: Recipe, tables: Tables, ctx: RunContext, report: Stats,
                run: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
        catalog = ctx.catalog()
        if recipe.publish.out:  # every check before the version is written: it is published once
            for fmt in recipe.publish.formats:
                check_out_folder(Path(recipe.publish.out) / fmt)
        info = catalog.published(recipe.dataset_name, report.fingerprint)  # an earlier try whose export failed
        if info is None:
            # lazy scans: the catalog reads the columns it needs and streams the rest into the version
            frames = {n: ctx.store.scan(tables[n]) if n in tables else schema.empty(n) for n in self.inputs}
            report_ref = tables.get("select_report")  # each selection step beside its random control, for the card
            selection = json.loads(pl.read_parquet(report_ref.path)["report"][0]) if report_ref else None
            info = catalog.publish(
                recipe.dataset_name, frames, run=dict(run), recipe=recipe.model_dump(mode="json"), selection=selection,
                test_fraction=recipe.publish.test_fraction, seed=recipe.publish.seed,
                formats=recipe.publish.formats, key=report.fingerprint, generated_by=generator(recipe, tables),
            )
        exports, skipped = {}, {}
        for fmt in recipe.publish.formats:
            target = Path(recipe.publish.out or Path(ctx.catalog_root) / "exports" / info.ref.replace("@", "-")) / fmt
            exports[fmt] = str(catalog.export(info.ref, fmt, target))
            skipped[fmt] = json.loads((Path(exports[fmt]) / REPORT_FILE).read_text())["skipped"]
        record = {"ref": info.ref, "path": str(info.path), "rows": info.rows, "fingerprint": info.fingerprint,
                  "exports": exports, "export_skipped": skipped, "counts": dict(info.counts)}
        return {"publish": record_frame(record)}

    def summarize(self, recipe: Recipe, tables: Tables, report: Stats) -> None:
        record = read_record(tables["publish"])
        report.rows_out = int(record["rows"])
        report.detail = {"version": record["ref"], "path": record.get("path"), "exports": record.get("exports", {})}
        for name in ("dropped", "flipped", "ties", "quarantined"):  # what publishing did to the selection
            report.add(name, int(record.get("counts", {}).get(name, 0)))
        for fmt, reasons in record.get("export_skipped", {}).items():  # rows an export quarantined, by reason in its folder
            report.add(f"{fmt} skipped", sum(reasons.values()))


STAGE = Publish()
