"""Dataset card: the numbers of a version (counts, labels, margins, lengths, selection, quarantine)."""

from __future__ import annotations

from typing import Any, Mapping

import polars as pl

from curation.rows import tie_mask


def _describe(s: pl.Series) -> dict[str, float | None]:
    s = s.drop_nulls().cast(pl.Float64)
    if s.len() == 0:
        return {"n": 0, "mean": None, "min": None, "p10": None, "median": None, "p90": None, "max": None}
    return {
        "n": s.len(),
        "mean": s.mean(),
        "min": s.min(),
        "p10": s.quantile(0.1, "nearest"),
        "median": s.median(),
        "p90": s.quantile(0.9, "nearest"),
        "max": s.max(),
    }


def _counts(s: pl.Series) -> dict[str, int]:
    vc = s.fill_null("(none)").value_counts(sort=True)
    return {str(k): int(v) for k, v in vc.iter_rows()}


def version_stats(rows: pl.DataFrame, tables: Mapping[str, pl.DataFrame] | None = None) -> dict[str, Any]:
    """Numbers of a version's rows (VERSION_ROWS) and, when given, its decisions and quarantine."""
    tables = tables or {}
    stats: dict[str, Any] = {
        "rows": rows.height,
        "splits": _counts(rows["split"]),
        "label_sources": _counts(rows["label_source"]),
        "builders": _counts(rows["builder"]),
        "sources": _counts(rows["source"]),
        "ties": int(tie_mask(rows).sum()) if rows.height else 0,
        "margin": _describe(rows["margin"]),
        "chosen_chars": _describe(rows["chosen"].str.len_chars()),
        "rejected_chars": _describe(rows["rejected"].str.len_chars()),
        "chosen_longer": float((rows["chosen"].str.len_chars() > rows["rejected"].str.len_chars()).mean())
        if rows.height
        else None,
        "weighted": int((rows["weight"].fill_null(1.0) != 1.0).sum()),
        "smoothed": int(rows["epsilon"].is_not_null().sum()),
    }
    decisions = tables.get("decisions")
    if decisions is not None and decisions.height:
        stats["selection"] = {
            f"{stage} {'kept' if kept else 'dropped'}: {reason}": int(n)
            for stage, kept, reason, n in decisions.group_by("stage", "kept", "reason")
            .len()
            .sort("stage", "kept", "len", descending=[False, True, True])
            .iter_rows()
        }
    quarantine = tables.get("quarantine")
    stats["quarantined"] = 0 if quarantine is None else quarantine.height
    if quarantine is not None and quarantine.height:
        stats["quarantine_reasons"] = _counts(quarantine["reason"])
    return stats


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(title: str, d: Mapping[str, Any]) -> list[str]:
    lines = [f"| {title} | count |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in d.items()]
    return lines + [""]


def version_card(rows: pl.DataFrame, tables: Mapping[str, pl.DataFrame], manifest: Mapping[str, Any]) -> str:
    """Markdown card written as card.md beside each version."""
    s = version_stats(rows, tables)
    counts = manifest.get("counts", {})
    out = [
        f"# {manifest.get('ref', 'version')}",
        "",
        f"Published {manifest.get('created_at', '')}; fingerprint `{manifest.get('fingerprint', '')}`; "
        f"run `{manifest.get('run_id', '')}`.",
        "",
        f"Parents: {', '.join(manifest.get('parents') or []) or 'none'}.",
        "",
        "## Counts",
        "",
        f"- pairs: {s['rows']} (train {s['splits'].get('train', 0)}, test {s['splits'].get('test', 0)})",
        f"- pairs before selection: {counts.get('pairs_in', s['rows'])}, dropped {counts.get('dropped', 0)}, "
        f"flipped {counts.get('flipped', 0)}",
        f"- ties (skipped by preference exports): {s['ties']}",
        f"- weighted rows: {s['weighted']}, label-smoothed rows: {s['smoothed']}",
        f"- quarantined input rows: {s['quarantined']}",
        "",
        "## Margin and lengths",
        "",
        "| stat | " + " | ".join(["n", "mean", "min", "p10", "median", "p90", "max"]) + " |",
        "|---|" + "---:|" * 7,
    ]
    for label in ("margin", "chosen_chars", "rejected_chars"):
        d = s[label]
        out.append(f"| {label} | " + " | ".join(_fmt(d[k]) for k in ("n", "mean", "min", "p10", "median", "p90", "max")) + " |")
    out += ["", f"Chosen longer than rejected: {_fmt(s['chosen_longer'])}.", "", "## Labels", ""]
    out += _table("label source", s["label_sources"])
    out += _table("builder", s["builders"])
    out += _table("prompt source", s["sources"])
    if s.get("selection"):
        out += ["## Selection", ""] + _table("stage / outcome: reason", s["selection"])
    if s.get("quarantine_reasons"):
        out += ["## Quarantine", ""] + _table("reason", s["quarantine_reasons"])
    return "\n".join(out) + "\n"
