"""Property tests: malformed rows thrown at the JSONL importer never crash it and never get lost."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation import schema
from curation.sources import read_source

# keys of junk objects; no prompt field, so junk never outvotes the good rows as a prompts-only file
KEYS = ["chosen", "rejected", "tie", "p_chosen", "label_source", "x"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4),
    max_leaves=8,
)


def good_row(i: int) -> dict:
    return {"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"}


def expected_pair_id(row: dict) -> str:
    pid = schema.prompt_id([{"role": "user", "content": row["prompt"]}])
    return schema.pair_id(pid, schema.response_id(pid, row["chosen"]), schema.response_id(pid, row["rejected"]))


@st.composite
def bad_line(draw, i: int) -> tuple[str, bytes]:
    """A line that must not import as the good row `i` would: (kind, bytes)."""
    row = good_row(i)
    kind = draw(st.sampled_from(["junk_json", "wrong_type", "missing_key", "non_utf8", "truncated", "not_json", "blank"]))
    if kind == "junk_json":
        return kind, json.dumps(draw(json_values)).encode()
    if kind == "wrong_type":
        key = draw(st.sampled_from(["prompt", "chosen", "rejected"]))
        row[key] = draw(st.none() | st.integers() | st.booleans() | st.lists(st.integers(), max_size=2) | st.just({}))
        return kind, json.dumps(row).encode()
    if kind == "missing_key":
        del row[draw(st.sampled_from(["chosen", "rejected"]))]
        return kind, json.dumps(row).encode()
    if kind == "non_utf8":
        text = json.dumps(row).encode()
        at = draw(st.integers(1, len(text) - 2))
        return kind, text[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe9", b"\x80\x80"])) + text[at:]
    if kind == "truncated":
        text = json.dumps(row).encode()
        return kind, text[: draw(st.integers(1, len(text) - 1))]
    if kind == "not_json":
        return kind, draw(st.binary(max_size=20).filter(lambda b: b"\n" not in b and b.strip() and not _is_json(b)))
    return kind, draw(st.sampled_from([b"", b"   ", b"\t"]))


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b.decode("utf-8"))
        return True
    except (UnicodeDecodeError, ValueError):
        return False


@st.composite
def files(draw):
    """Line 1 is good (so the format is known); then good and bad lines in any order."""
    n = draw(st.integers(1, 30))
    lines = [("good", 0, json.dumps(good_row(0)).encode())]
    for i in range(1, n):
        if draw(st.booleans()):
            lines.append(("good", i, json.dumps(good_row(i)).encode()))
        else:
            kind, raw = draw(bad_line(i))
            lines.append((kind, i, raw))
    return lines


def _read(lines, fmt="auto"):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(b"\n".join(raw for _, _, raw in lines) + b"\n")
        return path, read_source(path, format=fmt)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files(), st.sampled_from(["auto", "trl_standard"]))
def test_every_line_is_accounted_for_and_good_rows_survive(lines, fmt):
    path, data = _read(lines, fmt)
    assert data.format == "trl_standard"
    n = len(lines)
    assert data.rows_read == n
    c = data.counts
    assert c["imported"] + c["quarantined"] + c["duplicates_merged"] + c["blank_lines"] == n
    assert c["quarantined"] == data.quarantine.height
    # each line lands in exactly one place
    q_lines = data.quarantine["line"].to_list()
    places = data.lines["imported"] + data.lines["duplicates_merged"] + data.lines["blank_lines"] + q_lines
    assert sorted(places) == list(range(1, n + 1))
    # quarantine rows name the file, the line, the field and a reason
    for q in data.quarantine.iter_rows(named=True):
        assert q["file"] == str(path) and q["field"] and q["reason"]
    # good rows survive next to the bad ones, with their content ids
    good_lines = [k + 1 for k, (kind, _, _) in enumerate(lines) if kind == "good"]
    assert set(good_lines) <= set(data.lines["imported"])
    expected = {expected_pair_id(good_row(i)) for kind, i, _ in lines if kind == "good"}
    assert expected <= set(data.pairs["pair_id"])
    # lines that cannot be a pair never import
    never = {"non_utf8", "truncated", "not_json", "wrong_type", "missing_key"}
    for k, (kind, _, _) in enumerate(lines, start=1):
        if kind in never:
            assert k in q_lines, (kind, lines[k - 1])
        if kind == "blank":
            assert k in data.lines["blank_lines"]
