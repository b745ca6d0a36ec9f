"""Format adapters: one raw row of a known layout -> a prompt, a pair or a rated prompt.

Each adapter reads a dict and returns a record, or raises RowError(field, reason) naming the
field at fault. Reasons start with a stable phrase ("missing field", "wrong type", "empty
response", "chosen equals rejected", ...) so a quarantine can be summarised by cause.
Detection looks at the columns and value types of the first rows and says why it chose.
"""

from __future__ import annotations

import difflib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from curation.schema import check_messages, text_to_messages, user_prompt

HH_ASSISTANT = "\n\nAssistant:"
PROMPT_FIELDS = ("messages", "prompt", "instruction", "question")
DETECT_ROWS = 50


class RowError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass
class PairRecord:
    messages: list[dict[str, str]]
    chosen: str
    rejected: str
    label_source: str = "human"
    confidence: float | None = None
    margin: float | None = None
    score: str | None = None
    builder: str = "dataset"
    tie: bool = False
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # (target "chosen"|"rejected"|"pair", scorer, value, detail JSON) carried by our own exports
    scores: list[tuple[str, str, float | None, str | None]] = field(default_factory=list)


@dataclass
class RatedRecord:
    """A prompt with several rated responses (UltraFeedback, distilabel)."""

    messages: list[dict[str, str]]
    scorer: str
    label_source: str
    items: list[tuple[str, float | None, dict[str, Any]]]  # (text, rating or None, detail)
    skipped: list[tuple[str, str]]  # (field, reason) of items that could not be used
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptRecord:
    messages: list[dict[str, str]]
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Detection:
    format: str
    variant: str  # "explicit" / "implicit" prompt, "" where it does not apply
    kind: str  # "string" or "messages" for pair formats (to catch mixed rows), else ""
    reason: str


# ---------------------------------------------------------------- field helpers


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def suggest(name: str, seen: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, [str(s) for s in seen], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def need(row: dict, name: str) -> Any:
    if name not in row:
        raise RowError(name, f"missing field {name!r}{suggest(name, row)}")
    value = row[name]
    if value is None:
        raise RowError(name, f"wrong type: {name!r} is null")
    return value


def need_str(row: dict, name: str) -> str:
    value = need(row, name)
    if not isinstance(value, str):
        raise RowError(name, f"wrong type: {name!r} must be a string, got {_type_name(value)}")
    return value


def _number(row: dict, name: str, lo: float | None = None, hi: float | None = None) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RowError(name, f"wrong type: {name!r} must be a finite number, got {value!r:.60}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise RowError(name, f"out of range: {name!r} = {value} is not in [{lo}, {hi}]")
    return float(value)


def _bool(row: dict, name: str) -> bool:
    value = row.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RowError(name, f"wrong type: {name!r} must be true or false, got {value!r:.60}")
    return value


def to_messages(value: Any, name: str, *, need_user_last: bool = True) -> list[dict[str, str]]:
    """Validate a conversation; struct columns with extra null keys (Arrow, HF) are accepted."""
    if not isinstance(value, list):
        raise RowError(name, f"wrong type: {name!r} must be a list of {{role, content}}, got {_type_name(value)}")
    out = []
    for i, turn in enumerate(value):
        if isinstance(turn, dict) and set(turn) - {"role", "content"}:
            extra = {k for k, v in turn.items() if k not in ("role", "content") and v is not None}
            if extra:
                raise RowError(name, f"bad messages: turn {i} has unsupported keys {sorted(extra)}")
            turn = {"role": turn.get("role"), "content": turn.get("content")}
        out.append(turn)
    problem = check_messages(out) if need_user_last else _check_turns(out)
    if problem is not None:
        if "unknown role" in problem:
            raise RowError(name, f"bad message role: {problem}")
        if "no non-empty user turn" in problem:
            raise RowError(name, "empty prompt: no non-empty user turn")
        raise RowError(name, f"bad messages: {problem}")
    return out


def _check_turns(turns: list) -> str | None:
    """check_messages without the rule about the last turn (for whole conversations)."""
    problem = check_messages(turns + [{"role": "user", "content": "x"}]) if turns else "is empty"
    if problem and "no non-empty user turn" in problem:
        return None
    return problem


def text_prompt(text: str, name: str) -> list[dict[str, str]]:
    """A string prompt: plain text is one user turn; an hh-style transcript is parsed into turns
    (a trailing 'Assistant:' cue, as in TRL text prompts, is dropped)."""
    if not text.strip():
        raise RowError(name, "empty prompt")
    if not text.lstrip().startswith(("Human:", "System:")):
        return to_messages(user_prompt(text), name)
    turns = text_to_messages(text.strip())
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    return to_messages(turns, name)


def response(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RowError(name, f"wrong type: {name!r} must be a string, got {_type_name(value)}")
    if not value.strip():
        raise RowError(name, f"empty response: {name!r} is empty")
    return value


def rest(row: dict, consumed: set[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in consumed}


# ---------------------------------------------------------------- pair formats


def _common_prefix_len(a: str, b: str) -> int:
    """Length of the shared prefix, by bisection over C-level slice comparisons."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def split_hh(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """Shared prefix of two transcripts, cut back to its last Assistant marker, is the prompt."""
    prefix = chosen[: _common_prefix_len(chosen, rejected)]
    cut = prefix.rfind(HH_ASSISTANT)
    if cut < 0:
        raise RowError("chosen", "bad transcript: no shared '\\n\\nAssistant:' turn in chosen and rejected")
    context = chosen[:cut]
    if not context.strip():
        raise RowError("chosen", "empty prompt: nothing before the last shared Assistant turn")
    start = cut + len(HH_ASSISTANT)
    return to_messages(text_to_messages(context), "chosen"), chosen[start:].strip(), rejected[start:].strip()


def split_plain(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """Implicit string prompt: the shared prefix, cut back to whitespace so no word is split."""
    n = _common_prefix_len(chosen, rejected)
    if n == len(chosen) == len(rejected):
        raise RowError("chosen/rejected", "chosen equals rejected")
    while n > 0 and not chosen[n - 1].isspace():
        n -= 1
    if not chosen[:n].strip():
        raise RowError("chosen", "empty prompt: chosen and rejected share no prefix (implicit prompt)")
    return text_prompt(chosen[:n].strip(), "chosen"), chosen[n:].strip(), rejected[n:].strip()


def _assistant_turn(turns: list, name: str) -> str:
    if len(turns) != 1:
        raise RowError(name, f"bad messages: {name!r} must hold one assistant turn after the prompt, got {len(turns)}")
    turn = turns[0]
    if not isinstance(turn, dict) or turn.get("role") != "assistant":
        raise RowError(name, f"bad message role: {name!r} must be an assistant turn, got {turn!r:.80}")
    return response(turn.get("content"), name)


def split_conversations(chosen: list, rejected: list) -> tuple[list[dict[str, str]], str, str]:
    """Implicit conversational prompt: the shared leading turns, ending on a user turn."""
    c = to_messages(chosen, "chosen", need_user_last=False)
    r = to_messages(rejected, "rejected", need_user_last=False)
    if c == r:
        raise RowError("chosen/rejected", "chosen equals rejected")
    n = 0
    while n < min(len(c), len(r)) - 1 and c[n] == r[n]:
        n += 1
    while n > 0 and c[n - 1]["role"] != "user":  # identical assistant openings belong to the responses
        n -= 1
    if n == 0:
        raise RowError("chosen", "empty prompt: chosen and rejected share no leading user turn (implicit prompt)")
    return to_messages(c[:n], "chosen"), _assistant_turn(c[n:], "chosen"), _assistant_turn(r[n:], "rejected")


def _kind(value: Any) -> str:
    return "messages" if isinstance(value, list) else "string" if isinstance(value, str) else _type_name(value)


def _check_kinds(row: dict, det: Detection) -> None:
    c, r = need(row, "chosen"), need(row, "rejected")
    kc, kr = _kind(c), _kind(r)
    for name, k in (("chosen", kc), ("rejected", kr)):
        if k not in ("string", "messages"):
            raise RowError(name, f"wrong type: {name!r} must be a string or a message list, got {k}")
    if kc != kr:
        raise RowError("rejected", f"mixed string/message row: chosen is a {kc}, rejected a {kr}")
    if det.kind and kc != det.kind:
        raise RowError("chosen", f"mixed string/message rows: this row has {kc}s, the file holds {det.kind}s ({det.format})")


def pair_texts(row: dict, det: Detection) -> tuple[list[dict[str, str]], str, str]:
    """The prompt messages and the two responses of a pair row in any pair format."""
    _check_kinds(row, det)
    chosen, rejected = row["chosen"], row["rejected"]
    if det.format == "hh_rlhf":
        msgs, c, r = split_hh(chosen, rejected)
        return msgs, *_distinct(c, r)
    prompt_field = "messages" if det.format == "corpus" else "prompt"
    prompt = row.get(prompt_field)
    if prompt is None and (det.format == "corpus" or (det.variant == "explicit" and det.format != "curate")):
        need(row, prompt_field)  # raises: missing (with a close name) or null
    if prompt is None:
        if isinstance(chosen, list):
            msgs, c, r = split_conversations(chosen, rejected)
        elif HH_ASSISTANT in chosen:
            msgs, c, r = split_hh(chosen, rejected)
        else:
            msgs, c, r = split_plain(chosen, rejected)
    elif isinstance(prompt, list):
        msgs = to_messages(prompt, prompt_field)
        if isinstance(chosen, list):  # a whole conversation repeating the prompt is cut to its answer
            c = _assistant_turn(chosen[len(msgs) :] if chosen[: len(msgs)] == msgs else chosen, "chosen")
            r = _assistant_turn(rejected[len(msgs) :] if rejected[: len(msgs)] == msgs else rejected, "rejected")
        else:
            c, r = chosen, rejected
    else:
        text = _str_prompt(prompt, prompt_field)
        cue = text.rstrip().endswith(HH_ASSISTANT.strip()) and text.lstrip().startswith("Human:")
        msgs = text_prompt(text, prompt_field)
        if isinstance(chosen, list):
            c = _assistant_turn(chosen[len(msgs) :] if chosen[: len(msgs)] == msgs else chosen, "chosen")
            r = _assistant_turn(rejected[len(msgs) :] if rejected[: len(msgs)] == msgs else rejected, "rejected")
        else:  # after an 'Assistant:' cue the answer starts with a separating space
            c, r = (chosen.strip(), rejected.strip()) if cue else (chosen, rejected)
    return msgs, *_distinct(c, r)


def _distinct(chosen: str, rejected: str) -> tuple[str, str]:
    chosen, rejected = response(chosen, "chosen"), response(rejected, "rejected")
    if chosen.strip() == rejected.strip():
        raise RowError("chosen/rejected", "chosen equals rejected")
    return chosen, rejected


def _str_prompt(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RowError(name, f"wrong type: {name!r} must be a string or a message list, got {_type_name(value)}")
    return value


_PAIR_CONSUMED = {"prompt", "messages", "chosen", "rejected", "label_source", "source", "confidence", "margin"}
_CURATE_CONSUMED = {
    "pair_id", "prompt_id", "chosen_id", "rejected_id", "prompt", "chosen", "rejected", "chosen_score",
    "rejected_score", "margin", "score", "builder", "label_source", "confidence", "weight", "epsilon",
    "split", "source", "scores", "meta",
}  # fmt: skip


def pair_record(row: dict, det: Detection) -> PairRecord:
    msgs, chosen, rejected = pair_texts(row, det)
    label = row.get("label_source", "human")
    if not isinstance(label, str) or not label.strip():
        raise RowError("label_source", f"wrong type: 'label_source' must be a non-empty string, got {label!r:.60}")
    source = row.get("source")
    if source is not None and not isinstance(source, str):
        raise RowError("source", f"wrong type: 'source' must be a string, got {_type_name(source)}")
    tie = _bool(row, "tie")
    confidence = _number(row, "confidence", 0.0, 1.0)
    p_chosen = _number(row, "p_chosen", 0.0, 1.0)
    if confidence is None:
        confidence = p_chosen
    if tie:
        confidence = 0.5
    rec = PairRecord(
        msgs, chosen, rejected, label_source=label, confidence=confidence, margin=_number(row, "margin"),
        tie=tie, source=source,
    )  # fmt: skip
    if det.format == "curate":
        _curate_fields(row, rec)
    else:
        rec.meta = rest(row, _PAIR_CONSUMED)
        if tie:
            rec.meta["tie"] = True
    return rec


def _curate_fields(row: dict, rec: PairRecord) -> None:
    """Our own published rows and exports: keep builder, score, meta and per-side scores."""
    for name in ("score", "builder"):
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            raise RowError(name, f"wrong type: {name!r} must be a string, got {_type_name(value)}")
    rec.score = row.get("score")
    rec.builder = row.get("builder") or "dataset"
    rec.meta = _json_object(row, "meta")
    rec.meta.update(rest(row, _CURATE_CONSUMED))
    for scorer, sides in _json_object(row, "scores").items():
        if not isinstance(sides, dict):
            raise RowError("scores", f"wrong type: scores[{scorer!r}] must be an object")
        detail = sides.get("detail")
        detail = None if detail is None else detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
        for side in ("chosen", "rejected", "pair"):
            value = sides.get(side)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise RowError("scores", f"wrong type: scores[{scorer!r}][{side!r}] must be a number")
            if side in sides:
                rec.scores.append((side, scorer, None if value is None else float(value), detail))
    upstream = row.get("pair_id")
    if upstream is not None:
        rec.meta["upstream_pair_id"] = upstream


def _json_object(row: dict, name: str) -> dict[str, Any]:
    value = row.get(name)
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise RowError(name, f"malformed JSON in {name!r}: {exc}") from None
    if not isinstance(value, dict):
        raise RowError(name, f"wrong type: {name!r} must be a JSON object, got {_type_name(value)}")
    return dict(value)


# ---------------------------------------------------------------- rated formats


def _instruction(row: dict) -> list[dict[str, str]]:
    text = need_str(row, "instruction")
    return text_prompt(text, "instruction")


def _rating(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RowError(name, f"wrong type: {name!r} must be a number, got {value!r:.40}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RowError(name, f"wrong type: {name!r} must be a number, got {_type_name(value)}")
    return float(value)


def ultrafeedback_record(row: dict, det: Detection) -> RatedRecord:
    msgs = _instruction(row)
    completions = need(row, "completions")
    if not isinstance(completions, list):
        raise RowError("completions", f"wrong type: 'completions' must be a list, got {_type_name(completions)}")
    items, skipped = [], []
    for i, comp in enumerate(completions):
        where = f"completions[{i}]"
        try:
            if not isinstance(comp, dict):
                raise RowError(where, f"wrong type: {where} must be an object, got {_type_name(comp)}")
            text = response(need(comp, "response"), f"{where}.response")
            value = _rating(comp.get("overall_score"), f"{where}.overall_score")
        except RowError as exc:
            skipped.append((exc.field if exc.field.startswith(where) else f"{where}.{exc.field}", exc.reason))
            continue
        detail = {k: comp[k] for k in ("model", "annotations", "fine-grained_score", "critique") if comp.get(k) is not None}
        items.append((text, value, detail))
    meta = rest(row, {"instruction", "completions", "source"})
    return RatedRecord(msgs, "ultrafeedback:overall_score", "ai:ultrafeedback", items, skipped, _source(row), meta)


def distilabel_record(row: dict, det: Detection) -> RatedRecord:
    msgs = _instruction(row)
    generations = need(row, "generations")
    ratings = need(row, "ratings")
    for name, value in (("generations", generations), ("ratings", ratings)):
        if not isinstance(value, list):
            raise RowError(name, f"wrong type: {name!r} must be a list, got {_type_name(value)}")
    if len(ratings) != len(generations):
        raise RowError("ratings", f"length mismatch: {len(ratings)} ratings for {len(generations)} generations")
    rationales = row.get("rationales") or [None] * len(generations)
    models = row.get("model_names") if isinstance(row.get("model_names"), list) else None
    items, skipped = [], []
    for i, text in enumerate(generations):
        try:
            text = response(text, f"generations[{i}]")
            value = _rating(ratings[i], f"ratings[{i}]")
        except RowError as exc:
            skipped.append((exc.field, exc.reason))
            continue
        detail = {"rationale": rationales[i] if i < len(rationales) else None}
        if models and i < len(models):
            detail["model"] = models[i]
        items.append((text, value, {k: v for k, v in detail.items() if v is not None}))
    meta = rest(row, {"instruction", "generations", "ratings", "rationales", "model_names", "source"})
    return RatedRecord(msgs, "distilabel:rating", "ai:distilabel", items, skipped, _source(row), meta)


def kto_record(row: dict, det: Detection) -> RatedRecord:
    """Unpaired rows (prompt, completion, label: bool): a completion rated 1 (desirable) or 0."""
    prompt = need(row, "prompt")
    msgs = _prompt_value(prompt, "prompt")
    completion = need(row, "completion")
    if isinstance(completion, list):
        text = _assistant_turn(completion[len(msgs) :] if completion[: len(msgs)] == msgs else completion, "completion")
    else:
        text = response(completion, "completion")
    label = need(row, "label")
    if not isinstance(label, bool):
        raise RowError("label", f"wrong type: 'label' must be true or false, got {label!r:.40}")
    label_source = row.get("label_source") if isinstance(row.get("label_source"), str) else "human"
    meta = rest(row, {"prompt", "completion", "label", "label_source", "source"})
    return RatedRecord(msgs, "kto:label", label_source, [(text, float(label), {})], [], _source(row), meta)


def _source(row: dict) -> str | None:
    value = row.get("source")
    return value if isinstance(value, str) and value else None


# ---------------------------------------------------------------- prompts only


def prompt_record(row: dict, det: Detection) -> PromptRecord:
    if row.get("messages") is not None:
        msgs, consumed = to_messages(row["messages"], "messages"), {"messages", "prompt"}
    elif row.get("prompt") is not None:
        msgs, consumed = _prompt_value(row["prompt"], "prompt"), {"prompt"}
    elif row.get("instruction") is not None:
        text = need_str(row, "instruction")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise RowError("input", f"wrong type: 'input' must be a string, got {_type_name(extra)}")
        msgs = text_prompt(text + (f"\n\n{extra}" if extra and extra.strip() else ""), "instruction")
        consumed = {"instruction", "input"}
    elif row.get("question") is not None:
        msgs, consumed = text_prompt(need_str(row, "question"), "question"), {"question"}
    else:
        present = [f for f in PROMPT_FIELDS if f in row]
        if present:
            raise RowError(present[0], f"wrong type: {present[0]!r} is null")
        hints = "".join(suggest(f, row) for f in PROMPT_FIELDS)
        raise RowError("prompt", f"missing field: none of {list(PROMPT_FIELDS)}{hints}")
    return PromptRecord(msgs, _source(row), rest(row, consumed | {"source"}))


def _prompt_value(value: Any, name: str) -> list[dict[str, str]]:
    if isinstance(value, list):
        return to_messages(value, name)
    return text_prompt(_str_prompt(value, name), name)


# ---------------------------------------------------------------- formats: how each is recognised and read


def _vote_kind(value: Any) -> str | None:
    """The kind of a chosen/rejected value, when it plausibly is one (junk rows do not vote)."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and value and all(isinstance(t, dict) and "role" in t and "content" in t for t in value):
        return "messages"
    return None


def _is_pair(row: dict) -> bool:
    return "chosen" in row or "rejected" in row


def _pair_kind(row: dict) -> str | None:
    return _vote_kind(row.get("chosen")) or _vote_kind(row.get("rejected"))


def _cols(row: dict) -> str:
    return ", ".join(sorted(map(str, row.keys()))[:12])


def _variant(row: dict) -> str:
    return "explicit" if "prompt" in row else "implicit"


def _detect_curate(row: dict) -> Detection | None:
    kind = _pair_kind(row)
    if _is_pair(row) and "pair_id" in row and kind:
        return Detection("curate", _variant(row), kind, f"columns pair_id, chosen, rejected: a curate version or export (columns: {_cols(row)})")
    return None


def _detect_keys(name: str, keys: set[str], reason: str) -> Callable[[dict], Detection | None]:
    """A format recognised by a set of columns alone."""
    return lambda row: Detection(name, "", "", reason) if keys <= row.keys() else None


def _detect_corpus(row: dict) -> Detection | None:
    if _is_pair(row) and _pair_kind(row) == "string" and _vote_kind(row.get("messages")) == "messages":
        return Detection("corpus", "explicit", "string", f"messages (list) with string chosen/rejected: the shared corpus schema (columns: {_cols(row)})")
    return None


def _detect_trl_conversational(row: dict) -> Detection | None:
    if _is_pair(row) and _pair_kind(row) == "messages":
        variant = _variant(row)
        how = "an explicit prompt column" if variant == "explicit" else "no prompt column (the shared leading turns are the prompt)"
        return Detection("trl_conversational", variant, "messages", f"chosen/rejected are message lists with {how}: TRL conversational preference")
    return None


def _detect_hh_rlhf(row: dict) -> Detection | None:
    if _is_pair(row) and _pair_kind(row) == "string" and "prompt" not in row:
        text = row.get("chosen") if isinstance(row.get("chosen"), str) else row.get("rejected")
        if HH_ASSISTANT in text:
            return Detection("hh_rlhf", "implicit", "string", "chosen/rejected are whole '\\n\\nHuman: ... \\n\\nAssistant: ...' transcripts: hh-rlhf")
    return None


def _detect_trl_standard(row: dict) -> Detection | None:
    if _is_pair(row) and _pair_kind(row) == "string":
        if "prompt" in row:
            return Detection("trl_standard", "explicit", "string", "string prompt, chosen, rejected: TRL standard preference, explicit prompt")
        return Detection("trl_standard", "implicit", "string", "string chosen/rejected without a prompt column: TRL standard preference, implicit prompt")
    return None


def _detect_prompts(row: dict) -> Detection | None:
    if _is_pair(row):  # a row with only one of chosen/rejected is a broken pair, never a prompt
        return None
    for name in PROMPT_FIELDS:
        value = row.get(name)
        if isinstance(value, str) or _vote_kind(value) == "messages":
            return Detection("prompts", "", "", f"column {name!r} and no chosen/rejected: prompts only (other columns go to prompt meta)")
    return None


@dataclass(frozen=True)
class SourceFormat:
    """One source format: how a row of it is recognised (`detect`, tried in `priority` order,
    lowest first) and read (`read`). A new format is one entry in SOURCE_FORMATS."""

    name: str
    detect: Callable[[dict], Detection | None]
    read: Callable[[dict, Detection], Any]
    priority: int
    pairs: bool = False  # rows are chosen/rejected pairs (a given format's variant and kind come from detection)


SOURCE_FORMATS: tuple[SourceFormat, ...] = (
    SourceFormat("corpus", _detect_corpus, pair_record, priority=50, pairs=True),
    SourceFormat("hh_rlhf", _detect_hh_rlhf, pair_record, priority=70, pairs=True),
    SourceFormat("trl_standard", _detect_trl_standard, pair_record, priority=80, pairs=True),
    SourceFormat("trl_conversational", _detect_trl_conversational, pair_record, priority=60, pairs=True),
    SourceFormat("curate", _detect_curate, pair_record, priority=10, pairs=True),
    SourceFormat("ultrafeedback", _detect_keys("ultrafeedback", {"completions", "instruction"},
                 "columns instruction and completions (list of {model, response, overall_score}): raw UltraFeedback"),
                 ultrafeedback_record, priority=20),
    SourceFormat("distilabel", _detect_keys("distilabel", {"instruction", "generations", "ratings"},
                 "columns instruction, generations, ratings: distilabel UltraFeedback-task output"),
                 distilabel_record, priority=40),
    SourceFormat("kto", _detect_keys("kto", {"prompt", "completion", "label"},
                 "columns prompt, completion, label: unpaired (KTO) rows; pairs are rebuilt per prompt from labels 1/0"),
                 kto_record, priority=30),
    SourceFormat("prompts", _detect_prompts, prompt_record, priority=90),
)
ADAPTERS: dict[str, SourceFormat] = {f.name: f for f in SOURCE_FORMATS}
FORMATS = tuple(ADAPTERS)
PAIR_FORMATS = tuple(f.name for f in SOURCE_FORMATS if f.pairs)
_BY_PRIORITY = sorted(SOURCE_FORMATS, key=lambda f: f.priority)


# ---------------------------------------------------------------- detection


def detect(rows: list[dict], label: str, given: str = "auto") -> Detection:
    """Which format the sampled rows are in, and why: each row votes, the majority wins (a few
    malformed rows near the top cannot change the format). Undetectable raises ValueError."""
    keys: dict[str, None] = {}
    votes: Counter[tuple[str, str, str]] = Counter()
    reasons: dict[tuple[str, str, str], str] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
        d = _detect_row(r)
        if d is not None:
            votes[(d.format, d.variant, d.kind)] += 1
            reasons.setdefault((d.format, d.variant, d.kind), d.reason)
    det = None
    if votes:
        best, n = votes.most_common(1)[0]  # ties go to the earliest row's vote (Counter keeps insertion order)
        det = Detection(*best, f"{reasons[best]} ({n} of {len(rows)} sampled rows)")
    if given != "auto":
        if given not in FORMATS:
            raise ValueError(f"{label}: unknown format {given!r}; known: auto, {', '.join(FORMATS)}")
        if given not in PAIR_FORMATS:
            return Detection(given, "", "", "given by the caller")
        kind = det.kind if det and det.format in PAIR_FORMATS else ""
        variant = det.variant if det and det.format == given else ("explicit" if "prompt" in keys else "implicit")
        return Detection(given, variant, kind, "given by the caller")
    if det is None:
        raise ValueError(_undetected(label, list(keys)))
    return det


def _detect_row(row: dict) -> Detection | None:
    """The format one row looks like (the first format whose `detect` recognises it); None when
    it looks like none (it does not vote)."""
    for fmt in _BY_PRIORITY:
        found = fmt.detect(row)
        if found is not None:
            return found
    return None


_EXPECTED = {
    "corpus / TRL": ("prompt", "messages", "chosen", "rejected"),
    "UltraFeedback": ("instruction", "completions"),
    "distilabel": ("instruction", "generations", "ratings"),
    "prompts": PROMPT_FIELDS,
}


def _undetected(label: str, seen: list[str]) -> str:
    hints = []
    for col in seen:
        close = difflib.get_close_matches(col, [c for cs in _EXPECTED.values() for c in cs], n=1, cutoff=0.6)
        if close and close[0] != col:
            hints.append(f"{col!r} -> {close[0]!r}?")
    expected = "; ".join(f"{k}: {', '.join(v)}" for k, v in _EXPECTED.items())
    msg = f"{label}: format not detected: saw columns {seen[:20]}; expected one of [{expected}]"
    return msg + (f"; did you mean {', '.join(hints)}" if hints else "")
