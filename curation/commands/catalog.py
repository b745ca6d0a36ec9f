"""`curate import | ls | show | diff | export | doctor`: put data into a catalog, look at what is there, check it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from curation.cli import CatalogOption, JsonOption, app, catalog_path, console, err_console, fail, print_json, warn
from curation.progress import progress

FORMAT_HELP = ("trl_dpo, trl_dpo_text, trl_reward, trl_kto, openrlhf (trainer input), or canonical_jsonl, "
               "canonical_parquet, canonical_hf (the canonical rows, not trainer input)")


def _open(catalog: str | None, *, create: bool = False):
    from curation.catalog import Catalog, CatalogError

    root = catalog_path(catalog)
    if not create and not (root / "catalog.duckdb").is_file():
        if any((root / "datasets").glob("*/v*")):
            fail(f"{root / 'catalog.duckdb'} is missing but {root / 'datasets'} holds published versions",
                 file=root / "catalog.duckdb", hint=f"`curate doctor --fix --catalog {root}` rebuilds the database from their manifests")
        fail(f"no catalog at {root}", file=root, hint=f"import data first (`curate import FILE --name NAME --catalog {root}`)")
    try:
        return Catalog(root)
    except CatalogError as exc:
        fail(str(exc), file=root)


def _errors():
    from curation.catalog import CatalogError
    from curation.export import ExportError
    from curation.sources import SourceError
    from curation.store import StoreError

    return (CatalogError, ExportError, SourceError, StoreError)


def _short(text: Any, n: int = 60) -> str:
    s = "" if text is None else str(text).replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


def _num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="File to import: JSONL(.gz), JSON, Parquet, saved HF dataset, DuckDB"),
    name: str = typer.Option(..., "--name", help="Dataset name in the catalog"),
    format: str = typer.Option("auto", "--format", help="auto or a source format (corpus, hh_rlhf, trl_standard, ...)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Import at most this many rows"),
    max_bad_fraction: float = typer.Option(0.05, "--max-bad-fraction", min=0.0, max=1.0, help="Fail above this share of quarantined rows"),
    test_fraction: float = typer.Option(0.0, "--test-fraction", min=0.0, max=0.99, help="Hold out this share of prompts as split 'test'"),
    seed: int = typer.Option(0, "--seed", help="Seed of the prompt-level split"),
    license: Optional[str] = typer.Option(None, "--license", help="The source's license for the card (a Hub license "
                                          "id) [default: what the source declares beside itself]"),
    catalog: Optional[str] = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Import preference pairs (or prompts) as a new version; bad rows are quarantined and counted."""
    from curation import schema
    from curation.catalog import validate_name
    from curation.sources import read_source

    errors = _errors()
    try:
        name = validate_name(name)
    except errors as exc:
        fail(str(exc))
    cat = _open(catalog, create=True)
    try:
        data = read_source(path, format=format, limit=limit)
    except (*errors, ValueError) as exc:
        fail(str(exc), file=path)
    bad = data.quarantine.height
    fraction = bad / data.rows_read if data.rows_read else 0.0
    if fraction > max_bad_fraction:
        fp = schema.content_hash("import", str(path), data.format, limit, bad)
        ref = cat.store.write("quarantine", fp, data.quarantine, table="quarantine")
        first = data.quarantine.row(0, named=True)
        fail(
            f"{bad} of {data.rows_read} rows ({fraction:.1%}) of {path} are bad, above --max-bad-fraction "
            f"{max_bad_fraction}; nothing was published. The quarantined rows (file, line, field, reason) are in "
            f"{ref.path}; the first: line {first['line']}, field {first['field']}: {first['reason']}. "
            "Fix the file, or raise --max-bad-fraction to publish the good rows."
        )
    tables = {"prompts": data.prompts, "candidates": data.candidates, "pairs": data.pairs, "scores": data.scores, "quarantine": data.quarantine}
    try:
        with progress(f"publishing {name}"):
            info = cat.publish(
                name,
                tables,
                run={"name": f"import:{name}", "stats": {"counts": data.counts, "rows_read": data.rows_read}},
                recipe={"import": {"path": str(path), "format": data.format, "detection": data.detection, "limit": limit,
                                   "license": license}},
                test_fraction=test_fraction,
                seed=seed,
            )
    except errors as exc:
        fail(str(exc))
    result = {
        "ok": True,
        "ref": info.ref,
        "path": str(info.path),
        "rows": info.rows,
        "train": info.counts.get("train"),
        "test": info.counts.get("test"),
        "ties": info.counts.get("ties"),
        "quarantined": bad,
        "bad_fraction": fraction,
        "format": data.format,
        "detection": data.detection,
        "counts": data.counts,
    }
    if as_json:
        print_json(result)
        return
    table = Table(title=f"imported {path} as {info.ref}", show_header=False)
    for k in ("ref", "path", "rows", "train", "test", "ties", "quarantined", "format", "detection"):
        table.add_row(k, _num(result[k]))
    console.print(table)
    if bad:
        console.print(f"{bad} bad rows quarantined with this version: `curate show {info.ref}` lists their reasons.")


@app.command("ls")
def ls(
    name: Optional[str] = typer.Argument(None, help="Only this dataset"),
    models: bool = typer.Option(False, "--models", help="List trained models and their evaluations instead"),
    catalog: Optional[str] = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """List dataset versions (or models) in the catalog."""
    cat = _open(catalog)
    try:
        if models:
            frame = cat.models()
            evals = cat.evaluations()
            counts = dict(evals.group_by("model_id").len().iter_rows()) if evals.height else {}
            rows = [{**r, "evaluations": counts.get(r["model_id"], 0)} for r in frame.iter_rows(named=True)]
        else:
            frame = cat.versions(name)
            rows = frame.drop("recipe").to_dicts()
    except _errors() as exc:
        fail(str(exc))
    if as_json:
        for r in rows:
            for k in ("parents", "counts", "config", "metrics"):
                if isinstance(r.get(k), str):
                    r[k] = json.loads(r[k])
        print_json(rows)
        return
    if models:
        table = Table(title=f"models in {cat.root}")
        for col in ("model_id", "version_ref", "method", "path", "base_model", "metrics", "evaluations", "created_at"):
            table.add_column(col, overflow="fold" if col == "path" else "ellipsis")  # the folder `curate eval` takes
        for r in rows:
            table.add_row(r["model_id"], r["version_ref"], r["method"], r["path"] or "-", r["base_model"] or "-", _short(r["metrics"], 50), str(r["evaluations"]), str(r["created_at"])[:19])
    else:
        table = Table(title=f"versions in {cat.root}")
        for col in ("ref", "rows", "train", "test", "created", "parents"):
            table.add_column(col, justify="right" if col in ("rows", "train", "test") else "left")
        for r in rows:
            table.add_row(r["ref"], str(r["rows"]), str(r["n_train"]), str(r["n_test"]), str(r["created_at"])[:19], ", ".join(json.loads(r["parents"] or "[]")) or "-")
    console.print(table)
    if not rows:
        console.print("no models: `curate train` (or a recipe's train stage) records one." if models
                      else "empty: `curate import FILE --name NAME` adds a dataset.")
    unlisted = cat.unlisted_versions()
    if unlisted:
        warn(f"{len(unlisted)} published version folder(s) are not in the database "
             f"({', '.join(f'{p.parent.name}@{p.name}' for p in unlisted[:5])}): `curate doctor --fix --catalog {cat.root}` "
             "rebuilds it from their manifests")


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="NAME, NAME@vN, optionally :train / :test"),
    sample: int = typer.Option(0, "--sample", min=0, help="Also print this many example rows"),
    verify: bool = typer.Option(False, "--verify", help="Hash every file of the version first (reads always check sizes, rows and footers)."),
    catalog: Optional[str] = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Counts, columns, margin / length stats, label sources, lineage and quarantine of a version."""
    from curation.report import version_stats

    cat = _open(catalog)
    try:
        info = cat.verify_version(ref) if verify else cat.resolve(ref)
        rows = cat.load(info)
        tables = {t: cat.load(info, table=t) for t in ("decisions", "quarantine")}
        children = cat.children(info.ref)["child"].to_list()
    except _errors() as exc:
        fail(str(exc))
    stats = version_stats(rows, tables)
    shown = rows.head(sample)
    samples = [
        {
            "pair_id": r["pair_id"],
            "prompt": r["prompt"][-1]["content"] if r["prompt"] else None,
            "chosen": r["chosen"],
            "rejected": r["rejected"],
            "margin": r["margin"],
            "label_source": r["label_source"],
        }
        for r in shown.iter_rows(named=True)
    ]
    result = {
        "ref": info.ref + (f":{info.split}" if info.split else ""),
        "path": str(info.path),
        "created_at": str(info.created_at),
        "fingerprint": info.fingerprint,
        "columns": rows.columns,
        "counts": info.counts,
        "stats": stats,
        "parents": list(info.parents),
        "children": children,
        "quarantine": tables["quarantine"].head(20).to_dicts(),
        "sample": samples,
    }
    if as_json:
        print_json(result)
        return
    head = Table(title=f"{result['ref']}  ({info.path})", show_header=False)
    head.add_row("rows", f"{stats['rows']} ({', '.join(f'{k} {v}' for k, v in stats['splits'].items())})")
    head.add_row("before selection", f"{info.counts.get('pairs_in', '-')} pairs, dropped {info.counts.get('dropped', 0)}, flipped {info.counts.get('flipped', 0)}")
    head.add_row("ties", str(stats["ties"]))
    head.add_row("quarantined", str(stats["quarantined"]))
    head.add_row("label sources", ", ".join(f"{k} {v}" for k, v in stats["label_sources"].items()))
    head.add_row("sources", ", ".join(f"{k} {v}" for k, v in stats["sources"].items()))
    head.add_row("parents", ", ".join(info.parents) or "-")
    head.add_row("derived", ", ".join(children) or "-")
    head.add_row("columns", ", ".join(rows.columns))
    console.print(head)
    num = Table(title="margin and lengths")
    for col in ("", "n", "mean", "min", "p10", "median", "p90", "max"):
        num.add_column(col, justify="right")
    for label in ("margin", "chosen_chars", "rejected_chars"):
        num.add_row(label, *(_num(stats[label][k]) for k in ("n", "mean", "min", "p10", "median", "p90", "max")))
    console.print(num)
    for title, key in (("selection", "selection"), ("quarantine reasons", "quarantine_reasons")):
        if stats.get(key):
            t = Table(title=title)
            t.add_column("what")
            t.add_column("rows", justify="right")
            for k, v in stats[key].items():
                t.add_row(k, str(v))
            console.print(t)
    if samples:
        t = Table(title=f"{len(samples)} sample rows")
        for col in ("prompt", "chosen", "rejected", "margin"):
            t.add_column(col)
        for s in samples:
            t.add_row(_short(s["prompt"]), _short(s["chosen"]), _short(s["rejected"]), _num(s["margin"]))
        console.print(t)


@app.command("diff")
def diff(
    a: str = typer.Argument(..., help="Older version ref"),
    b: str = typer.Argument(..., help="Newer version ref"),
    catalog: Optional[str] = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Rows added / removed / changed between two versions, and how margins and scores shifted."""
    cat = _open(catalog)
    try:
        d = cat.diff(a, b)
    except _errors() as exc:
        fail(str(exc))
    if as_json:
        print_json(d)
        return
    t = Table(title=f"{d['a']} -> {d['b']}", show_header=False)
    for k in ("rows_a", "rows_b", "added", "removed", "changed", "unchanged"):
        t.add_row(k, str(d[k]))
    if d["changed_columns"]:
        t.add_row("changed columns", ", ".join(f"{k} {v}" for k, v in d["changed_columns"].items()))
    m = d["mean_margin"]
    t.add_row("mean margin", f"{_num(m['a'])} -> {_num(m['b'])} (Δ {_num(m['delta'])})")
    console.print(t)
    if d["scorers"]:
        s = Table(title="score shifts (means)")
        for col in ("scorer", "chosen", "rejected", "margin"):
            s.add_column(col)
        for name, v in d["scorers"].items():
            s.add_row(name, *(f"{_num(v[k]['a'])} -> {_num(v[k]['b'])} (Δ {_num(v[k]['delta'])})" for k in ("chosen", "rejected", "margin")))
        console.print(s)


@app.command("export")
def export(
    ref: str = typer.Argument(..., help="NAME, NAME@vN, optionally :train / :test"),
    format: str = typer.Option(..., "--format", help=FORMAT_HELP),
    out: Path = typer.Option(..., "--out", help="Output folder (new, empty, or an earlier export)"),
    verify: bool = typer.Option(False, "--verify", help="Hash every file of the version before exporting it."),
    on_invalid: str = typer.Option("skip", "--on-invalid", help="skip: quarantine rows the format cannot carry "
                                   "(listed in quarantine.jsonl); fail: stop at the first one"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="trl_dpo_text: model folder whose chat template "
                                            "renders the text (default: the plain Human/Assistant template)"),
    catalog: Optional[str] = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Write a version in a trainer's format; bad rows are quarantined with reasons, every view is checked."""
    from curation.export import export_version

    cat = _open(catalog)
    try:
        with progress(f"exporting {ref} as {format}"):
            if verify:
                cat.verify_version(ref)
            report = export_version(cat, ref, format, out, on_invalid=on_invalid, tokenizer=tokenizer)
    except _errors() as exc:
        fail(str(exc))
    if as_json:
        print_json({"ok": True, **report.to_dict()})
        return
    written = ", ".join(f"{k} {v}" for k, v in report.written.items()) or "nothing"
    skipped = ", ".join(f"{k} {v}" for k, v in report.skipped.items()) or "nothing"
    console.print(f"exported {report.ref} as {report.format} to {report.path}: wrote {written}; skipped {skipped}")
    console.print(f"files: {', '.join(report.files)}")
    if report.template:
        console.print(f"text rendered with the {report.template}")
    for split, b in report.kto_balance.items():
        console.print(f"KTO {split}: {b['desirable']} desirable, {b['undesirable']} undesirable: train with "
                      f"desirable_weight {b['desirable_weight']} (curate train --method kto sets it from the data)")
    if report.note:
        err_console.print(report.note)
    if report.skipped:
        listed = "quarantine.jsonl lists each skipped pair with its reason" if "quarantine.jsonl" in report.files else "export.json counts them"
        completions = sorted({"duplicate_completion", "contradictory_label"} & set(report.skipped))
        if completions:  # KTO rows are completions: these are counted in export.json, not pairs in quarantine.jsonl
            listed += (f"; {' and '.join(completions)} count KTO completions (an answer repeated for a prompt kept once, "
                       "one labelled both desirable and undesirable dropped), in export.json only")
        err_console.print(f"skipped rows carry no usable preference for this format ({listed}); "
                          "--on-invalid fail stops at the first invalid one instead.")


@app.command("doctor")
def doctor_(
    fix: bool = typer.Option(False, "--fix", help="Rebuild missing database rows from intact manifests (an unreadable database is moved aside first)."),
    clean: bool = typer.Option(False, "--clean", help="Delete leftovers: never-committed version folders, temp folders of dead processes, damaged artifacts."),
    quick: bool = typer.Option(False, "--quick", help="Check sizes, row counts and Parquet footers only, not every byte's hash."),
    catalog: Optional[str] = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Check the catalog against its files: every version's hash and row count, folders the database
    does not list, rows whose folder is gone, leftovers of killed processes. Changes nothing unless
    --fix / --clean."""
    from curation.doctor import doctor

    root = catalog_path(catalog)
    try:
        with progress(f"checking {root}"):
            report = doctor(root, fix=fix, clean=clean, full=not quick)
    except _errors() as exc:
        fail(str(exc))
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(f"curate doctor {report.catalog}: {report.versions_checked} listed versions checked", soft_wrap=True)
        for f in report.findings:
            console.print(Text.assemble((f.kind, "bold"), f": {f.path}: {f.message}", (f" [{f.action}]" if f.action else "", "green")), soft_wrap=True)
        unresolved = [f for f in report.findings if not f.resolved]
        if not unresolved:
            console.print(f"{report.catalog}: healthy" + (f" ({len(report.findings)} repaired)" if report.findings else ""))
        else:
            kinds = {f.kind for f in unresolved}
            hint = []
            if kinds & {"unlisted", "database", "uncommitted"} and not fix:
                hint.append("--fix rebuilds the database from the manifests")
            if kinds & {"leftover", "uncommitted", "bad_artifact"} and not clean:
                hint.append("--clean deletes leftovers")
            err_console.print(Text(f"{len(unresolved)} problem(s) remain" + (f"; {'; '.join(hint)}" if hint else "")))
    if not report.ok:
        raise typer.Exit(1)
