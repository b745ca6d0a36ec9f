"""Views of a version in the formats trainers read, each checked before it is written.

Canonical rows (VERSION_ROWS) become:

- `trl_dpo`: explicit conversational prompt (messages ending with the user turn), `chosen` and
  `rejected` as one assistant message each; `trl_dpo_text`: the same as plain strings.
- `trl_reward`: implicit prompt: `chosen` / `rejected` are whole conversations, plus `margin`.
- `trl_kto`: unpaired `prompt`, `completion`, `label` (chosen -> True, rejected -> False).
- `openrlhf`: `prompt`, `chosen`, `rejected`, `margin` keys (message lists for a chat template).
- `jsonl`, `parquet`, `hf` (datasets `save_to_disk`): the canonical rows.

Ties (meta tie=true or confidence 0.5) carry no preference direction: preference views skip
them and count them. Soft labels travel as columns (`weight`, `epsilon`). Every view is
checked against the semantics consumers expect (specs/formats.md): prompt, chosen and rejected
of the same kind, the prompt a strict prefix, no duplicated turns.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curation import schema
from curation.rows import tie_mask
from curation.store import pid_alive

log = logging.getLogger(__name__)

PREFERENCE_FORMATS = ("trl_dpo", "trl_dpo_text", "trl_reward", "trl_kto", "openrlhf")
CANONICAL_FORMATS = ("jsonl", "parquet", "hf")
FORMATS = PREFERENCE_FORMATS + CANONICAL_FORMATS
SOFT_LABEL_COLUMNS = ("weight", "epsilon")
REPORT_FILE = "export.json"


class ExportError(ValueError):
    """A view violates the format's semantics, or the export cannot be written; names row and field."""


@dataclass
class ExportReport:
    path: Path
    format: str
    ref: str | None
    written: dict[str, int] = field(default_factory=dict)  # rows per split
    skipped: dict[str, int] = field(default_factory=dict)  # rows per reason
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _assistant(col: str) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), pl.col(col).alias("content")))


def to_view(rows: pl.DataFrame, format: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """The rows of one view, and how many canonical rows were skipped, by reason."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if format in CANONICAL_FORMATS:
        return schema.conform(rows, "version_rows"), {}
    ties = tie_mask(rows)
    skipped = {"tie": int(ties.sum())} if ties.any() else {}
    rows = rows.filter(~ties)
    keep = ["pair_id", "margin", "weight", "epsilon", "label_source", "split"]
    if format in ("trl_dpo", "openrlhf"):
        view = rows.select(
            "prompt", _assistant("chosen").alias("chosen"), _assistant("rejected").alias("rejected"), *keep
        )
        if format == "openrlhf":
            view = view.with_columns(pl.col("margin").fill_null(0.0))
    elif format == "trl_dpo_text":
        single = pl.col("prompt").list.len() == 1
        text = pl.col("prompt").map_elements(lambda m: schema.messages_to_text(list(m)), return_dtype=pl.String)
        view = rows.select(
            # one user turn: its text; a conversation: hh-style turns ending in an Assistant cue
            pl.when(single).then(text).otherwise(text + "\n\nAssistant:").alias("prompt"),
            pl.when(single).then(pl.col("chosen")).otherwise(" " + pl.col("chosen")).alias("chosen"),
            pl.when(single).then(pl.col("rejected")).otherwise(" " + pl.col("rejected")).alias("rejected"),
            *keep,
        )
    elif format == "trl_reward":
        view = rows.select(
            pl.concat_list("prompt", _assistant("chosen")).alias("chosen"),
            pl.concat_list("prompt", _assistant("rejected")).alias("rejected"),
            pl.col("margin").fill_null(0.0),
            *[c for c in keep if c != "margin"],
        )
    else:  # trl_kto
        base = ["prompt_id", "prompt", "pair_id", "weight", "label_source", "split"]
        good = rows.select(*base, pl.col("chosen_id").alias("completion_id"), _assistant("chosen").alias("completion"), pl.lit(True).alias("label"))
        bad = rows.select(*base, pl.col("rejected_id").alias("completion_id"), _assistant("rejected").alias("completion"), pl.lit(False).alias("label"))
        both = pl.concat([good, bad])
        view = both.unique(["prompt_id", "completion_id", "label"], keep="first", maintain_order=True)
        if both.height > view.height:
            skipped["duplicate_completion"] = both.height - view.height
        contradictory = view.filter(pl.struct("prompt_id", "completion_id").is_duplicated())
        if contradictory.height:
            skipped["contradictory_label"] = contradictory.height
            view = view.filter(~pl.struct("prompt_id", "completion_id").is_duplicated())
        view = view.drop("prompt_id", "completion_id")
    return view, skipped


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "string"
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        return "messages"
    return str(dtype)


def _first_bad(view: pl.DataFrame, ok: pl.Series, format: str, field_: str, why: str) -> None:
    bad = (~ok.fill_null(False)).arg_true()
    if bad.len():
        i = int(bad[0])
        pid = view["pair_id"][i] if "pair_id" in view.columns else "?"
        raise ExportError(f"{format}: row {i} (pair_id {pid}), field `{field_}`: {why} ({bad.len()} rows)")


def check_view(view: pl.DataFrame, format: str) -> None:
    """Raise ExportError, naming row and field, when a view breaks its format's semantics."""
    if format in CANONICAL_FORMATS:
        missing = [c for c in schema.VERSION_ROWS.names if c not in view.columns]
        if missing:
            raise ExportError(f"{format}: canonical rows lack columns {missing}")
        return
    cols = {"trl_kto": ("prompt", "completion")}.get(format, ("chosen", "rejected") if format == "trl_reward" else ("prompt", "chosen", "rejected"))
    missing = [c for c in cols if c not in view.columns]
    if missing:
        raise ExportError(f"{format}: missing columns {missing}")
    kinds = {c: _kind(view.schema[c]) for c in cols}
    if len(set(kinds.values())) != 1:
        raise ExportError(
            f"{format}: {', '.join(f'`{c}` is {k}' for c, k in kinds.items())}; prompt, chosen and rejected must be "
            "of the same kind (all strings or all message lists): a string prompt with message-list answers is "
            "misread by trainers"
        )
    kind = next(iter(kinds.values()))
    expected = "string" if format == "trl_dpo_text" else "messages"
    if kind != expected:
        raise ExportError(f"{format}: columns {list(cols)} must be {expected}, got {kind}")
    if kind == "string":
        for c in cols:
            _first_bad(view, view[c].str.len_chars() > 0, format, c, "is empty")
        for c in cols[1:]:
            dup = view[c].str.starts_with(view["prompt"]) & (view["prompt"].str.len_chars() > 0)
            _first_bad(view, ~dup, format, c, "repeats the prompt (duplicated turn)")
        return
    role = lambda e: e.struct.field("role")  # noqa: E731
    if format == "trl_reward":
        for c in cols:
            _first_bad(view, view[c].list.len() >= 2, format, c, "must hold the prompt turns and the answer")
            _first_bad(view, role(view[c].list.last()) == "assistant", format, c, "must end with an assistant turn")
        heads = view.select(
            pl.col(c).list.head(pl.col(c).list.len() - 1).alias(c) for c in ("chosen", "rejected")
        )
        prefix_c, prefix_r = heads["chosen"], heads["rejected"]
        _first_bad(view, prefix_c == prefix_r, format, "rejected", "does not share the chosen conversation's prompt turns")
        _first_bad(view, role(prefix_c.list.last()) == "user", format, "chosen", "prompt turns must end with a user turn")
        return
    _first_bad(view, view["prompt"].list.len() > 0, format, "prompt", "is empty")
    _first_bad(view, role(view["prompt"].list.last()) == "user", format, "prompt", "must end with the user turn")
    roles = view["prompt"].list.eval(pl.element().struct.field("role").is_in(list(schema.ROLES)).all()).list.first()
    _first_bad(view, roles, format, "prompt", f"has a role outside {schema.ROLES}")
    for c in cols[1:]:
        _first_bad(view, view[c].list.len() == 1, format, c, "must be exactly one assistant message (whole conversations duplicate the prompt turns)")
        _first_bad(view, role(view[c].list.first()) == "assistant", format, c, "must be an assistant message")


def _write_split(df: pl.DataFrame, path: Path, format: str) -> None:
    if format == "parquet":
        df.write_parquet(path, compression="zstd")
    else:
        df.write_ndjson(path)


def export_rows(rows: pl.DataFrame, format: str, out: str | os.PathLike[str], *, ref: str | None = None) -> ExportReport:
    """Write `rows` (VERSION_ROWS) as `format` into folder `out`, one file per split.

    `out` is a new or empty folder, or an earlier export: then exactly the files its export.json
    lists are replaced or removed, and nothing else in it is touched.
    """
    out = Path(out)
    view, skipped = to_view(rows, format)
    check_view(view, format)
    owned = _owned_files(out)
    report = ExportReport(path=out, format=format, ref=ref, skipped=skipped)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_dead_tmp(out)
        tmp = out / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise ExportError(f"cannot write to {out}: {exc.strerror or exc}; choose a folder you can write to") from exc
    try:
        splits = sorted(view["split"].unique().to_list()) if "split" in view.columns and view.height else ["train"]
        parts = {s: view.filter(pl.col("split") == s) if "split" in view.columns else view for s in splits}
        if format == "hf":
            import datasets

            dd = datasets.DatasetDict({s: datasets.Dataset(df.to_arrow()) for s, df in parts.items()})
            dd.save_to_disk(str(tmp))
        else:
            ext = "parquet" if format == "parquet" else "jsonl"
            for s, df in parts.items():
                _write_split(df, tmp / f"{s}.{ext}", format)
        report.files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        report.written = {s: df.height for s, df in parts.items()}
        _move_into(tmp, out, report, owned)
    except OSError as exc:
        raise ExportError(f"cannot write the export to {out}: {exc.strerror or exc} ({exc.filename or out}); "
                          "check the folder and the free disk space") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s as %s to %s: wrote %s, skipped %s", ref or "rows", format, out, report.written, report.skipped)
    return report


_TMP_PREFIX = ".curate-export-"


def _owned_files(out: Path) -> set[str]:
    """The files an earlier export wrote into `out` (empty for a new or empty folder); refuse the rest."""
    if out.is_symlink():
        raise ExportError(f"--out {out} is a symbolic link (to {os.path.realpath(out)}); export writes only into a "
                          "real folder: pass the target itself or a new folder")
    here = Path.cwd().resolve()
    target = out.resolve()
    if target == here or target in here.parents:
        raise ExportError(f"--out {out} is the current folder (or holds it); pass a new folder, e.g. {out / 'export'}")
    if not out.exists():
        return set()
    if not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder; choose a new or empty folder")
    entries = [e for e in out.iterdir() if not e.name.startswith(_TMP_PREFIX)]
    if not entries:
        return set()
    report = out / REPORT_FILE
    if not report.is_file() or report.is_symlink():
        names = ", ".join(sorted(e.name for e in entries)[:3])
        raise ExportError(f"--out {out} is not empty ({names}, ...) and is not an earlier export (no {REPORT_FILE}); "
                          "export never deletes files it did not write: choose a new or empty folder")
    try:
        listed = json.loads(report.read_text(encoding="utf-8"))["files"]
        owned = {str(f) for f in listed}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{report} is damaged ({exc}); move it away or choose another folder") from exc
    for f in owned:
        rel = Path(f)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or not (out / rel).resolve().is_relative_to(target):
            raise ExportError(f"{report} lists {f!r}, which is outside {out}; move it away or choose another folder")
    return owned


def _remove_dead_tmp(out: Path) -> None:
    """Temporary folders of exports that were killed (their process is gone) are ours to remove."""
    for entry in out.iterdir():
        if entry.name.startswith(_TMP_PREFIX) and entry.is_dir() and not entry.is_symlink():
            pid = entry.name[len(_TMP_PREFIX):].split("-")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def _move_into(tmp: Path, out: Path, report: ExportReport, owned: set[str]) -> None:
    """Move the new files from `tmp` into `out`; remove the earlier export's files that are gone.

    export.json first lists the old and the new files, so a crash part-way never leaves a file
    of ours unlisted; it lists the new ones alone at the end.
    """
    new = set(report.files)
    foreign = sorted(f for f in new if (out / f).exists() and not _is_owned(f, owned))
    if foreign:
        raise ExportError(f"{out / foreign[0]} exists and was not written by an earlier export; move it away or "
                          "choose another folder")
    _write_report(out, {**report.to_dict(), "files": sorted(owned | new)})
    for f in sorted(new):
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / f, out / f)
    for f in sorted(owned - new - {REPORT_FILE}, reverse=True):
        if (out / f).is_dir() and not (out / f).is_symlink():  # listed as a folder by earlier versions
            for inner in sorted((out / f).rglob("*"), reverse=True):
                if inner.is_file() and str(inner.relative_to(out)) not in new:
                    inner.unlink()
                elif inner.is_dir() and not any(inner.iterdir()):
                    inner.rmdir()
            if not any((out / f).iterdir()):
                (out / f).rmdir()
        else:
            (out / f).unlink(missing_ok=True)
        parent = (out / f).parent
        while parent != out and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    _write_report(out, report.to_dict())


def _is_owned(f: str, owned: set[str]) -> bool:
    """`f` or a folder above it is listed by the earlier export."""
    parts = Path(f).parts
    return any(str(Path(*parts[:i])) in owned for i in range(1, len(parts) + 1))


def _write_report(out: Path, data: dict[str, Any]) -> None:
    tmp = out / f".{REPORT_FILE}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / REPORT_FILE)


def check_out_folder(out: str | os.PathLike[str]) -> None:
    """Raise ExportError when export_rows would refuse `out`, or could not create it (nothing is written)."""
    out = Path(out)
    _owned_files(out)
    above = out
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
        raise ExportError(f"cannot create {out}: {above} is not a folder you can write to; choose another --out")


def check_export(rows: pl.DataFrame, format: str, out: str | os.PathLike[str] | None = None) -> None:
    """Everything export_rows would refuse, checked without writing: the view's semantics and,
    when given, the output folder. A run calls it for every format before it publishes."""
    view, _ = to_view(rows, format)
    check_view(view, format)
    if out is not None:
        _owned_files(Path(out))


def export_version(catalog: Any, ref: str, format: str, out: str | os.PathLike[str]) -> ExportReport:
    """Export a catalog version (a ':train' / ':test' suffix exports one split)."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    info = catalog.resolve(ref)
    return export_rows(catalog.load(info), format, out, ref=info.ref + (f":{info.split}" if info.split else ""))
