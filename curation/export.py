"""Views of a version in the formats trainers read, each checked before it is written.

Canonical rows (VERSION_ROWS) become:

- `trl_dpo`: explicit conversational prompt (messages ending with the user turn), `chosen` and
  `rejected` as one assistant message each.
- `trl_dpo_text`: the same rendered to strings by TRL's own `apply_chat_template`, with one
  template for every row: a named tokenizer's chat template, else PLAIN_CHAT_TEMPLATE.
- `trl_reward`: implicit prompt: `chosen` / `rejected` are whole conversations, plus `margin`.
- `trl_kto`: unpaired `prompt`, `completion`, `label` (chosen -> True, rejected -> False); the
  report gives the desirable / undesirable balance and the `desirable_weight` that evens it.
- `openrlhf`: `prompt`, `chosen`, `rejected`, `margin` keys (message lists for a chat template).
- `canonical_jsonl`, `canonical_parquet`, `canonical_hf` (datasets `save_to_disk`): the canonical
  rows themselves (message-list prompt, string answers, every provenance column). They are not
  trainer input: TRL misreads a message-list prompt with string answers. `jsonl`, `parquet` and
  `hf` are older names for them.

Rows a preference view cannot carry are quarantined, one reason each, counted in the report and
listed in the export's quarantine file: ties (no direction), rows the source flagged
(`response_has_extra_turns`, `irregular_turns`), prompts whose roles do not alternate
(system?, user, assistant, user, ..., user: strict chat templates refuse the rest), answers
holding turn markers or nothing, and text answers that repeat their rendered prompt. With
`on_invalid="fail"` any of these but ties stops the export instead, naming row and field. Every
view is then checked against the semantics consumers expect (specs/formats.md): prompt, chosen
and rejected of the same kind, the prompt a strict prefix, no duplicated turns.
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
CANONICAL_FORMATS = ("canonical_jsonl", "canonical_parquet", "canonical_hf")
FORMAT_ALIASES = {"jsonl": "canonical_jsonl", "parquet": "canonical_parquet", "hf": "canonical_hf"}
FORMATS = PREFERENCE_FORMATS + CANONICAL_FORMATS + tuple(FORMAT_ALIASES)
ON_INVALID = ("skip", "fail")
SOFT_LABEL_COLUMNS = ("weight", "epsilon")
REPORT_FILE = "export.json"
QUARANTINE_FILE = "quarantine.jsonl"
CANONICAL_NOTE = (
    "canonical rows: `prompt` is a message list, `chosen` / `rejected` are strings, with every provenance "
    "column. Not trainer input (TRL misreads a message-list prompt with string answers): export trl_dpo, "
    "trl_reward, trl_kto or openrlhf for training."
)
# Reasons that skip a row in every mode: they are not faults of the data.
SKIP_REASONS = frozenset({"tie", "duplicate_completion"})
# The middle of TRL KTOTrainer's recommended range [1, 4/3] for
# desirable_weight * n_desirable / (undesirable_weight * n_undesirable).
KTO_TARGET_RATIO = 7 / 6

# The documented template for models without one (and for text views without a tokenizer):
# hh-rlhf turns ("Human: ...", "Assistant: ...", "System: ...") joined by blank lines; a prompt
# ends with the "Assistant:" cue, so a rendered answer is " " + its text. An encoder's own
# markers frame a whole conversation ([CLS] ... [SEP] for BERT-style tokenizers).
PLAIN_CHAT_TEMPLATE = (
    "{% if cls_token is defined and cls_token %}{{ cls_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\n\n' }}{% endif %}"
    "{% if message['role'] == 'user' %}Human{% elif message['role'] == 'assistant' %}Assistant"
    "{% else %}{{ message['role'] | capitalize }}{% endif %}: {{ message['content'] }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n\nAssistant:' }}"
    "{% elif sep_token is defined and sep_token %}{{ sep_token }}{% endif %}"
)


class ExportError(ValueError):
    """A view violates the format's semantics, or the export cannot be written; names row and field."""


@dataclass
class ExportReport:
    path: Path
    format: str
    ref: str | None
    written: dict[str, int] = field(default_factory=dict)  # rows per split
    skipped: dict[str, int] = field(default_factory=dict)  # rows per reason (QUARANTINE_FILE lists the pairs; trl_kto's repeated completions are counted only)
    files: list[str] = field(default_factory=list)
    template: str | None = None  # trl_dpo_text: the chat template's origin
    kto_balance: dict[str, dict[str, Any]] = field(default_factory=dict)  # trl_kto, per split
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass
class View:
    """A format's rows, what was skipped (count per reason) and the quarantined rows themselves."""

    rows: pl.DataFrame
    skipped: dict[str, int]
    quarantine: pl.DataFrame  # pair_id, split, reason, field, detail
    template: str | None = None


def format_name(format: str) -> str:
    """The format's name (older names of the canonical views resolve to theirs); unknown raises."""
    if format in FORMAT_ALIASES:
        return FORMAT_ALIASES[format]
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return format


# ---------------------------------------------------------------- chat templates


class PlainTemplate:
    """PLAIN_CHAT_TEMPLATE as a processing class for TRL's `apply_chat_template` (no tokenizer
    needed); renders exactly what a tokenizer holding that template renders."""

    chat_template = PLAIN_CHAT_TEMPLATE

    def __init__(self) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # transformers compiles chat templates with these settings
        self._template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(PLAIN_CHAT_TEMPLATE)

    def apply_chat_template(self, conversation: list[dict[str, str]], *, tokenize: bool = False,
                            add_generation_prompt: bool = False, continue_final_message: bool = False, **_: Any) -> str:
        if tokenize or continue_final_message:
            raise ValueError("PlainTemplate renders text only, for prompts ending with a user turn")
        return self._template.render(messages=conversation, add_generation_prompt=add_generation_prompt)


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template PLAIN_CHAT_TEMPLATE; True when it had none."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return True


def text_renderer(tokenizer: Any = None) -> tuple[Any, str]:
    """The processing class that renders text views, and a line naming its template: a tokenizer
    (object or model folder) with its own chat template, PLAIN_CHAT_TEMPLATE otherwise."""
    if tokenizer is None:
        return PlainTemplate(), "plain (curation.export.PLAIN_CHAT_TEMPLATE)"
    name = str(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else getattr(tokenizer, "name_or_path", "tokenizer")
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        except Exception as exc:  # transformers raises many kinds here; all mean "no usable tokenizer"
            raise ExportError(f"--tokenizer {name}: cannot load a tokenizer ({type(exc).__name__}: {exc})") from exc
    if ensure_chat_template(tokenizer):
        return tokenizer, f"plain (curation.export.PLAIN_CHAT_TEMPLATE; {name} has no chat template)"
    return tokenizer, f"chat template of {name}"


# ---------------------------------------------------------------- row checks

def _has_turn_markers(col: str) -> pl.Expr:
    """An answer that opens with, or holds, an hh-style turn ("Human:" / "Assistant:"); literal
    searches, three times faster than one regex on long answers."""
    text = pl.col(col)
    head = text.str.strip_chars_start()
    return (head.str.starts_with("Human:") | head.str.starts_with("Assistant:")
            | text.str.contains("\n\nHuman:", literal=True) | text.str.contains("\n\nAssistant:", literal=True))


def _meta_flag(name: str) -> pl.Expr:
    return pl.col("meta").str.json_path_match(f"$.{name}").fill_null("false") == "true"


def turn_problem(roles: list[str]) -> str | None:
    """Why a prompt's roles do not alternate (system?, user, assistant, ..., user), or None."""
    first = 1 if roles and roles[0] == "system" else 0
    for i in range(first, len(roles)):
        want = "user" if (i - first) % 2 == 0 else "assistant"
        if roles[i] != want:
            before = f" after {roles[i - 1]!r}" if i else ""
            return f"turn {i} is {roles[i]!r}{before} where {want!r} belongs: roles must alternate user/assistant after an optional first system turn"
    if len(roles) == first:
        return "has no user turn"
    if roles[-1] != "user":
        return f"ends with {roles[-1]!r}: the prompt must end with the user turn"
    return None


def row_problems(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per canonical row a preference view cannot carry: pair_id, split, reason, field,
    detail. The first reason that applies is the row's (ties first, then source flags, then our
    checks)."""
    roles = rows["prompt"].list.eval(pl.element().struct.field("role")).to_list() if rows.height else []
    turns = pl.Series("turns", [turn_problem(r or []) for r in roles], dtype=pl.String)
    marker = {s: _has_turn_markers(s) for s in ("chosen", "rejected")}
    empty = {s: pl.col(s).is_null() | (pl.col(s).str.strip_chars() == "") for s in ("chosen", "rejected")}
    checks: list[tuple[pl.Expr, str, str, pl.Expr]] = [
        (pl.lit(tie_mask(rows)), "tie", "confidence", pl.lit("no preference direction (tie, or confidence 0.5)")),
        (_meta_flag("response_has_extra_turns"), "response_has_extra_turns", "meta",
         pl.lit("the source flags an answer holding extra Human/Assistant turns")),
        (_meta_flag("irregular_turns"), "irregular_turns", "meta",
         pl.lit("the source flags the prompt's turns as irregular")),
        (pl.lit(turns).is_not_null(), "role_alternation", "prompt", pl.lit(turns)),
        (empty["chosen"], "empty_answer", "chosen", pl.lit("the chosen answer is empty")),
        (empty["rejected"], "empty_answer", "rejected", pl.lit("the rejected answer is empty")),
        (marker["chosen"], "answer_has_turn_markers", "chosen", pl.lit("the answer holds Human:/Assistant: turns")),
        (marker["rejected"], "answer_has_turn_markers", "rejected", pl.lit("the answer holds Human:/Assistant: turns")),
    ]
    reason = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    where = pl.when(checks[0][0]).then(pl.lit(checks[0][2]))
    detail = pl.when(checks[0][0]).then(checks[0][3])
    for cond, r, f, d in checks[1:]:
        reason, where, detail = reason.when(cond).then(pl.lit(r)), where.when(cond).then(pl.lit(f)), detail.when(cond).then(d)
    out = rows.select(
        "pair_id", "split", reason.otherwise(None).alias("reason"), where.otherwise(None).alias("field"),
        detail.otherwise(None).alias("detail"),
    )
    return out.filter(pl.col("reason").is_not_null())


def _counts(quarantine: pl.DataFrame) -> dict[str, int]:
    return dict(sorted(quarantine.group_by("reason").len().iter_rows())) if quarantine.height else {}


def _refuse(quarantine: pl.DataFrame, format: str, rows: pl.DataFrame) -> None:
    """on_invalid="fail": the first invalid row (not a tie) stops the export, naming row and field."""
    bad = quarantine.filter(~pl.col("reason").is_in(list(SKIP_REASONS)))
    if bad.height:
        first = bad.row(0, named=True)
        i = rows["pair_id"].index_of(first["pair_id"])
        counts = ", ".join(f"{r} {n}" for r, n in _counts(bad).items())
        raise ExportError(
            f"{format}: row {i} (pair_id {first['pair_id']}), field `{first['field']}`: {first['reason']}: "
            f"{first['detail']} ({bad.height} invalid rows: {counts}); pass --on-invalid skip to quarantine them"
        )


# ---------------------------------------------------------------- views


def _assistant(col: str) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), pl.col(col).alias("content")))


_QUARANTINE_SCHEMA = {"pair_id": pl.String, "split": pl.String, "reason": pl.String, "field": pl.String, "detail": pl.String}


def to_view(rows: pl.DataFrame, format: str, *, on_invalid: str = "skip", tokenizer: Any = None) -> View:
    """The rows of one view, with the canonical rows it skipped (quarantine) and why.

    `tokenizer` (trl_dpo_text): a tokenizer or model folder whose chat template renders the text;
    default PLAIN_CHAT_TEMPLATE.
    """
    format = format_name(format)
    if on_invalid not in ON_INVALID:
        raise ExportError(f"on_invalid must be one of {', '.join(ON_INVALID)}, got {on_invalid!r}")
    if format in CANONICAL_FORMATS:
        return View(schema.conform(rows, "version_rows"), {}, pl.DataFrame(schema=_QUARANTINE_SCHEMA))
    quarantine = row_problems(rows)
    if on_invalid == "fail":
        _refuse(quarantine, format, rows)
    rows = rows.filter(~pl.col("pair_id").is_in(quarantine["pair_id"].implode()))
    keep = ["pair_id", "margin", "weight", "epsilon", "label_source", "split"]
    template = None
    skipped: dict[str, int] = {}
    if format in ("trl_dpo", "openrlhf"):
        view = rows.select(
            "prompt", _assistant("chosen").alias("chosen"), _assistant("rejected").alias("rejected"), *keep
        )
        if format == "openrlhf":
            view = view.with_columns(pl.col("margin").fill_null(0.0))
    elif format == "trl_dpo_text":
        view, echoes, template = _text_view(rows, keep, tokenizer)
        if echoes.height and on_invalid == "fail":
            _refuse(echoes, format, rows)
        quarantine = pl.concat([quarantine, echoes])
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
        # each pair's completions side by side (stable sort on the pair's index), so any head of the file
        # holds both labels: all desirable rows first made a subset one-sided (KTOTrainer warned on 64 rows)
        both = pl.concat([good.with_row_index("_pair"), bad.with_row_index("_pair")]).sort("_pair", maintain_order=True).drop("_pair")
        view = both.unique(["prompt_id", "completion_id", "label"], keep="first", maintain_order=True)
        if both.height > view.height:
            skipped["duplicate_completion"] = both.height - view.height
        contradictory = view.filter(pl.struct("prompt_id", "completion_id").is_duplicated())
        if contradictory.height:
            skipped["contradictory_label"] = contradictory.height
            view = view.filter(~pl.struct("prompt_id", "completion_id").is_duplicated())
        view = view.drop("prompt_id", "completion_id")
    skipped = {**_counts(quarantine), **skipped}
    return View(view, skipped, quarantine.select(list(_QUARANTINE_SCHEMA)), template)


def _text_view(rows: pl.DataFrame, keep: list[str], tokenizer: Any) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """trl_dpo_text: each row rendered by TRL's apply_chat_template with one template; rows whose
    rendered answer repeats the rendered prompt go to quarantine."""
    from trl.data_utils import apply_chat_template

    renderer, template = text_renderer(tokenizer)
    prompts, chosen, rejected = [], [], []
    for p, c, r in rows.select("prompt", "chosen", "rejected").iter_rows():
        text = apply_chat_template(
            {"prompt": p, "chosen": [{"role": "assistant", "content": c}], "rejected": [{"role": "assistant", "content": r}]},
            renderer,
        )
        prompts.append(text["prompt"])
        chosen.append(text["chosen"])
        rejected.append(text["rejected"])
    view = rows.select(
        pl.Series("prompt", prompts, dtype=pl.String), pl.Series("chosen", chosen, dtype=pl.String),
        pl.Series("rejected", rejected, dtype=pl.String), *keep,
    )
    echo = {s: pl.col(s).str.starts_with(pl.col("prompt")) & (pl.col("prompt").str.len_chars() > 0) for s in ("chosen", "rejected")}
    problems = view.select(
        "pair_id", "split",
        pl.lit("answer_repeats_prompt").alias("reason"),
        pl.when(echo["chosen"]).then(pl.lit("chosen")).otherwise(pl.lit("rejected")).alias("field"),
        pl.lit("the rendered answer starts with the whole rendered prompt (a duplicated turn)").alias("detail"),
    ).filter(view.select(echo["chosen"] | echo["rejected"]).to_series())
    return view.filter(~pl.col("pair_id").is_in(problems["pair_id"].implode())), problems, template


def kto_balance(labels: pl.Series) -> dict[str, Any]:
    """Desirable / undesirable counts of a KTO view and the `desirable_weight` (undesirable_weight
    1) that puts TRL's weighted ratio in the middle of its recommended range [1, 4/3]."""
    desirable = int(labels.sum())
    undesirable = labels.len() - desirable
    weight = round(KTO_TARGET_RATIO * undesirable / desirable, 3) if desirable and undesirable else None
    return {"desirable": desirable, "undesirable": undesirable, "desirable_weight": weight}


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
    format = format_name(format)
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
    if format == "canonical_parquet":
        df.write_parquet(path, compression="zstd")
    else:
        df.write_ndjson(path)


def export_rows(
    rows: pl.DataFrame, format: str, out: str | os.PathLike[str], *, ref: str | None = None,
    on_invalid: str = "skip", tokenizer: Any = None,
) -> ExportReport:
    """Write `rows` (VERSION_ROWS) as `format` into folder `out`, one file per split, and the rows
    it skipped into QUARANTINE_FILE with their reasons.

    `on_invalid`: "skip" quarantines rows the view cannot carry, "fail" refuses them (ties are
    skipped either way). `tokenizer`: trl_dpo_text's chat template (see to_view). `out` is a new
    or empty folder, or an earlier export: then exactly the files its export.json lists are
    replaced or removed, and nothing else in it is touched.
    """
    out = Path(out)
    format = format_name(format)
    built = checked_view(rows, format, on_invalid=on_invalid, tokenizer=tokenizer)
    view = built.rows
    owned = _owned_files(out)
    report = ExportReport(path=out, format=format, ref=ref, skipped=built.skipped, template=built.template,
                          note=CANONICAL_NOTE if format in CANONICAL_FORMATS else None)
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
        if format == "canonical_hf":
            import datasets

            dd = datasets.DatasetDict({s: datasets.Dataset(df.to_arrow()) for s, df in parts.items()})
            dd.save_to_disk(str(tmp))
        else:
            ext = "parquet" if format == "canonical_parquet" else "jsonl"
            for s, df in parts.items():
                _write_split(df, tmp / f"{s}.{ext}", format)
        if built.quarantine.height:
            built.quarantine.write_ndjson(tmp / QUARANTINE_FILE)
        if format == "trl_kto":
            report.kto_balance = {s: kto_balance(df["label"]) for s, df in parts.items()}
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


def checked_view(rows: pl.DataFrame, format: str, *, on_invalid: str = "skip", tokenizer: Any = None) -> View:
    """to_view, then every check the written view must pass; a view left empty by skipping raises."""
    built = to_view(rows, format, on_invalid=on_invalid, tokenizer=tokenizer)
    check_view(built.rows, format)
    if rows.height and built.rows.height == 0 and built.quarantine.height:
        counts = ", ".join(f"{k} {v}" for k, v in built.skipped.items())
        raise ExportError(f"{format_name(format)}: no rows left to export: all {rows.height} rows were skipped ({counts})")
    return built


def check_export(rows: pl.DataFrame, format: str, out: str | os.PathLike[str] | None = None, *,
                 on_invalid: str = "skip", tokenizer: Any = None) -> None:
    """Everything export_rows would refuse, checked without writing: the view's semantics and,
    when given, the output folder. A run calls it for every format before it publishes."""
    checked_view(rows, format, on_invalid=on_invalid, tokenizer=tokenizer)
    if out is not None:
        _owned_files(Path(out))


def export_version(catalog: Any, ref: str, format: str, out: str | os.PathLike[str], *,
                   on_invalid: str = "skip", tokenizer: Any = None) -> ExportReport:
    """Export a catalog version (a ':train' / ':test' suffix exports one split)."""
    format = format_name(format)
    info = catalog.resolve(ref)
    return export_rows(catalog.load(info), format, out, ref=info.ref + (f":{info.split}" if info.split else ""),
                       on_invalid=on_invalid, tokenizer=tokenizer)
