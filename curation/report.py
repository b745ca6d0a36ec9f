"""Dataset card: the numbers of a version (counts, labels, margins, lengths, selection beside its
random control, quarantine), as the README.md of a Hub dataset (huggingface_hub's DatasetCard:
YAML header with license, tags, per-split `configs` and features), and its plots."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import polars as pl

from curation import schema
from curation.rows import tie_mask

log = logging.getLogger(__name__)


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
    chars = {side: _chars(rows, side) for side in ("chosen", "rejected")}
    stats: dict[str, Any] = {
        "rows": rows.height,
        "splits": _counts(rows["split"]),
        "label_sources": _counts(rows["label_source"]),
        "builders": _counts(rows["builder"]),
        "sources": _counts(rows["source"]),
        "ties": int(tie_mask(rows).sum()) if rows.height else 0,
        "margin": _describe(rows["margin"]),
        "chosen_chars": _describe(chars["chosen"]),
        "rejected_chars": _describe(chars["rejected"]),
        "chosen_longer": float((chars["chosen"] > chars["rejected"]).mean())
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


# ---------------------------------------------------------------- the card


def _license_of(path: Path) -> str | None:
    """The license a source file or saved dataset declares beside itself: a saved HF dataset's
    dataset_info.json, a manifest.json listing the file, or a README.md's YAML header (an unreadable
    one declares nothing: the card then says the license is unknown)."""
    import yaml
    from huggingface_hub import DatasetCard

    folder = path if path.is_dir() else path.parent
    candidates: list[Any] = []
    try:
        if (folder / "dataset_info.json").is_file():
            candidates.append(json.loads((folder / "dataset_info.json").read_text(encoding="utf-8")).get("license"))
        if (folder / "manifest.json").is_file() and not path.is_dir():
            listed = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("files") or []
            candidates += [f.get("license") for f in listed if isinstance(f, dict) and f.get("name") == path.name]
        readme = folder / "README.md"
        if readme.is_file() and readme.read_text(encoding="utf-8").startswith("---"):
            candidates.append(DatasetCard.load(readme).data.to_dict().get("license"))
    except (OSError, ValueError, AttributeError, yaml.YAMLError) as exc:
        log.warning("%s: could not read the license declared beside it (%s)", path, exc)
    return next((str(c) for c in candidates if c), None)


def source_licenses(recipe: Mapping[str, Any] | None) -> dict[str, str | None]:
    """Each source of a version (recipe `sources` or the imported file) and its license: the recipe's
    `license` when it gives one, else what the source declares beside itself (None: unknown)."""
    recipe = recipe or {}
    specs = list(recipe.get("sources") or []) + ([recipe["import"]] if recipe.get("import") else [])
    out: dict[str, str | None] = {}
    for spec in specs:
        where = spec.get("path") or spec.get("query")
        if not where:
            continue
        path = Path(str(where))
        out[str(where)] = spec.get("license") or (_license_of(path) if spec.get("path") and path.exists() else None)
    return out


_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")  # the Hub's license ids: mit, apache-2.0, cc-by-4.0, ...


def _card_license(licenses: Mapping[str, str | None]) -> str:
    """One Hub license id for the card: the sources' when they agree on one id; `other` when they
    differ or one declares free text (the body quotes each); `unknown` when none declares any."""
    declared = {v.strip().lower() for v in licenses.values() if v}
    if len(declared) == 1 and all(licenses.values()) and _LICENSE_ID.match(next(iter(declared))):
        return declared.pop()
    return "other" if declared else "unknown"


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def card_data(manifest: Mapping[str, Any]) -> Any:
    """The card's YAML header: license, tags, one `configs` entry per split file (and per non-empty
    lineage table), and the pairs' features, so the Hub and `datasets` read the folder as it is."""
    import datasets
    from huggingface_hub import DatasetCardData

    splits = {s: e for s, e in (manifest.get("splits") or {}).items() if e["rows"] or s == "train"}
    configs = [{"config_name": "default", "default": True,
                "data_files": [{"split": s, "path": e["path"]} for s, e in splits.items()]}]
    digests = manifest.get("digests") or {}
    configs += [{"config_name": t, "data_files": [{"split": "train", "path": f"{t}.parquet"}]}
                for t in ("pool", "prompts", "candidates", "scores", "decisions", "quarantine")
                if (digests.get(f"{t}.parquet") or {}).get("rows")]
    features = datasets.Features.from_arrow_schema(schema.VERSION_ROWS)
    # sizes and counts, besides describing the data, make the card differ between versions: `datasets`
    # caches a local folder under its name ("v1") and a hash of its card, so two datasets' v1 would
    # otherwise share one cache entry and the second load would return the first's rows
    info = {"config_name": "default", "features": features._to_yaml_list(),
            "splits": [{"name": s, "num_bytes": e.get("nbytes", 0), "num_examples": e["rows"]} for s, e in splits.items()],
            "download_size": sum((digests.get(e["path"]) or {}).get("bytes", 0) for e in splits.values()),
            "dataset_size": sum(e.get("nbytes", 0) for e in splits.values())}
    return DatasetCardData(
        license=_card_license(source_licenses(manifest.get("recipe"))),
        pretty_name=manifest.get("ref"),
        tags=["curate", "preference", "dpo", "reward-modeling"],
        task_categories=["text-generation"],
        size_categories=_size_category(int(manifest.get("rows", 0))),
        configs=configs,
        dataset_info=info,
    )


def _selection_lines(selection: Mapping[str, Any] | None) -> list[str]:
    """Each selection step's figures beside its random control (mean and central 95% of its draws)."""
    steps = [s for s in (selection or {}).get("steps") or [] if s.get("random_control")]
    if not steps:
        return ["No selection step ran on this version, so there is no random control to compare with.", ""]
    out = ["Each step's selection beside its random control: uniform random subsets of the same size from "
           "the same input (`draws` of them). Where the selection sits inside the control's central 95%, the "
           "selector did nothing a coin would not.", "",
           "| step | kept / input | figure | selection | control mean | control 95% | draws |",
           "|---|---:|---|---:|---:|---|---:|"]
    for step in steps:
        control = step["random_control"]
        for figure, value in step.get("selection", {}).items():
            c = control.get(figure)
            if figure == "size" or not isinstance(c, Mapping):
                continue
            lo, hi = c["ci95"]
            out.append(f"| {step['stage']} | {step['kept']} / {step['input']} | {figure} | {_fmt(value)} | "
                       f"{_fmt(c['mean'])} | {_fmt(lo)} to {_fmt(hi)} | {control.get('draws', '-')} |")
    return out + [""]


def version_card(rows: pl.DataFrame, tables: Mapping[str, pl.DataFrame], manifest: Mapping[str, Any],
                 plots: Sequence[str] = (), body: str | None = None) -> str:
    """README.md of a version folder: YAML header (card_data) and the numbers (or `body` instead)."""
    from huggingface_hub import DatasetCard

    data = card_data(manifest)
    text = body if body is not None else _card_body(rows, tables, manifest, plots)
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{text}"))


def _card_body(rows: pl.DataFrame, tables: Mapping[str, pl.DataFrame], manifest: Mapping[str, Any],
               plots: Sequence[str]) -> str:
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
    out += ["## Selection and its random control", ""] + _selection_lines(manifest.get("selection"))
    if s.get("selection"):
        out += _table("stage / outcome: reason", s["selection"])
    if s.get("quarantine_reasons"):
        out += ["## Quarantine", ""] + _table("reason", s["quarantine_reasons"])
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    licenses = source_licenses(manifest.get("recipe"))
    out += ["## License", ""]
    out += [f"- `{src}`: {lic or 'not declared by the source: check it before sharing'}" for src, lic in licenses.items()]
    out += ["" if licenses else "No source recorded.", "", "## Load", "", "```python", "import datasets", "",
            "splits = datasets.load_dataset(\"path/to/this/folder\")  # "
            + ("train and test" if s["splits"].get("test") else "train only: no prompts were held out as test"),
            f"# once pushed (curate push {manifest.get('ref', 'NAME@vN')} --repo ORG/NAME):",
            f"# datasets.load_dataset(\"ORG/NAME\", revision=\"v{manifest.get('version', 'N')}\")", "```", "",
            "These are the canonical rows: `prompt` is a message list, `chosen` / `rejected` are strings, with every "
            "provenance column. They are not trainer input (TRL's DPOTrainer cannot tokenise a message-list prompt with "
            "string answers). To train, export a trainer's view, checked row by row, with bad rows quarantined:", "",
            f"    curate export {manifest.get('ref', 'NAME@vN')} --format trl_dpo --out DIR   "
            "# or trl_dpo_text, trl_reward, trl_kto, openrlhf", "",
            f"or train on it directly (`curate train {manifest.get('ref', 'NAME@vN')} --method dpo --model MODEL --out RUN` "
            "reads the same view).", ""]
    return "\n".join(out) + "\n"



# ---------------------------------------------------------------- plots

PLOT_DPI = 80
MARGINS = {"left": 0.1, "right": 0.97, "bottom": 0.15, "top": 0.9}


def _chars(rows: pl.DataFrame, side: str) -> pl.Series:
    """Lengths of one side's answers: a `<side>_chars` column when the rows carry lengths, not texts."""
    return rows[f"{side}_chars"] if f"{side}_chars" in rows.columns else rows[side].str.len_chars()


def _drop_reasons(tables: Mapping[str, pl.DataFrame]) -> dict[str, int]:
    """Why items left: each selection stage's reasons (an item an earlier step dropped counts once,
    where it was dropped) and the quarantine's."""
    out: dict[str, int] = {}
    decisions = tables.get("decisions")
    if decisions is not None and decisions.height:
        dropped = decisions.filter(~pl.col("kept") & (pl.col("reason") != "not_considered"))
        for stage, reason, n in dropped.group_by("stage", "reason").len().sort("len", descending=True).iter_rows():
            out[f"{stage}: {reason}"] = int(n)
    quarantine = tables.get("quarantine")
    if quarantine is not None and quarantine.height:
        for reason, n in _counts(quarantine["reason"]).items():
            out[f"quarantine: {reason}"] = n
    return out


def draw_plots(rows: pl.DataFrame, tables: Mapping[str, pl.DataFrame], selection: Mapping[str, Any] | None,
               folder: Path) -> list[str]:
    """plots/*.png of a version (margin, lengths, selection vs random control, reasons for drops), the
    paths written relative to `folder`; a plot with nothing to show is not drawn."""
    import numpy as np
    from matplotlib.figure import Figure  # not pyplot: no global state, no window, safe in worker threads
    from matplotlib.ticker import NullLocator

    (folder / "plots").mkdir(exist_ok=True)
    written: list[str] = []

    def subplots(width: float, height: float, ncols: int = 1, **grid: Any) -> tuple[Any, Any]:
        fig = Figure(figsize=(width, height))
        return fig, fig.subplots(1, ncols, gridspec_kw={**MARGINS, **grid}, squeeze=False)

    def save(fig: Any, name: str) -> None:  # fixed margins: tight_layout would double the drawing time
        fig.savefig(folder / "plots" / f"{name}.png", dpi=PLOT_DPI)
        written.append(f"plots/{name}.png")

    margin = rows.filter(pl.col("margin").is_not_null() & pl.col("margin").is_finite())
    if margin.height:
        fig, ((ax,),) = subplots(6, 3.5)
        for split in ("train", "test"):
            values = margin.filter(pl.col("split") == split)["margin"].to_numpy()
            if values.size:
                ax.hist(values, bins=40, histtype="stepfilled", alpha=0.5, label=f"{split} ({values.size})")
        ax.set(xlabel="margin (chosen score - rejected score)", ylabel="pairs", title="Margin")
        ax.legend()
        save(fig, "margin")
    if rows.height:
        fig, ((ax,),) = subplots(6, 3.5)
        lengths = {side: _chars(rows, side).fill_null(0).to_numpy() + 1 for side in ("chosen", "rejected")}
        bins = np.logspace(0, np.log10(max(int(v.max()) for v in lengths.values()) + 1), 40)
        for side, values in lengths.items():
            ax.hist(values, bins=bins, histtype="stepfilled", alpha=0.5, label=side)
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())  # a log axis's minor ticks cost more than the bars
        ax.set(xlabel="answer length (characters + 1, log scale)", ylabel="pairs", title="Lengths")
        ax.legend()
        save(fig, "lengths")
    steps = [s for s in (selection or {}).get("steps") or [] if s.get("random_control")]
    figures = [f for f in ("mean_margin", "cluster_coverage", "prompt_coverage", "chosen_longer", "objective")
               if any(isinstance(s["random_control"].get(f), Mapping) and s["selection"].get(f) is not None for s in steps)]
    if figures:
        fig, axes = subplots(3 * len(figures), 3.2, ncols=len(figures), bottom=0.25, wspace=0.4)
        for ax, figure in zip(axes[0], figures):
            shown = [s for s in steps if isinstance(s["random_control"].get(figure), Mapping)]
            for i, step in enumerate(shown):
                c = step["random_control"][figure]
                lo, hi = c["ci95"]
                ax.vlines(i, lo, hi, color="grey", linewidth=3, alpha=0.6, label="random control (95%)" if i == 0 else None)
                ax.plot([i], [c["mean"]], "o", color="grey")
                ax.plot([i], [step["selection"][figure]], "D", color="C3", label="selection" if i == 0 else None)
            ax.set_xticks(range(len(shown)), [s["stage"].split(":")[-1] for s in shown], rotation=30, fontsize=7)
            ax.set_title(figure, fontsize=9)
        axes[0][0].legend(fontsize=7)
        save(fig, "selection_vs_control")
    reasons = _drop_reasons(tables)
    if reasons:
        top = list(reasons.items())[:15]
        height = 0.3 * len(top) + 1.2
        fig, ((ax,),) = subplots(8, height, left=0.45, bottom=0.5 / height, top=1 - 0.35 / height)
        ax.barh([k[:60] for k, _ in top][::-1], [v for _, v in top][::-1], color="C1")
        ax.set(xlabel="items", title="Reasons for drops" + (f" (top 15 of {len(reasons)})" if len(reasons) > 15 else ""))
        ax.tick_params(axis="y", labelsize=7)
        save(fig, "drops")
    return written
