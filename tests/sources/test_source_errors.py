"""Bad input: bad rows are quarantined with file, line, field and reason; file-level problems raise SourceError."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import pytest

from curation.sources import SourceError, read_source

GOOD = {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}


def write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    out = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        out += (line.encode() if isinstance(line, str) else line) + b"\n"
    path.write_bytes(out)
    return path


def good(i: int) -> dict:
    return {"prompt": f"Say hi {i}.", "chosen": f"Hi {i}!", "rejected": f"No {i}."}


BAD_ROWS = [
    ("malformed_json", '{"prompt": "x", "chosen": "a", "rejected": ', "(line)", "malformed JSON"),
    ("truncated", '{"prompt": "x", "cho', "(line)", "malformed JSON"),
    ("not_an_object", "[1, 2, 3]", "(row)", "wrong type"),
    ("missing_rejected", {"prompt": "x", "chosen": "a"}, "rejected", "missing field 'rejected'"),
    ("misnamed_rejected", {"prompt": "x", "chosen": "a", "rejectd": "b"}, "rejected", "did you mean 'rejectd'?"),
    ("wrong_type", {"prompt": "x", "chosen": 3, "rejected": "b"}, "chosen", "wrong type"),
    ("null_prompt", {"prompt": None, "chosen": "a", "rejected": "b"}, "prompt", "wrong type"),
    ("empty_prompt", {"prompt": "  ", "chosen": "a", "rejected": "b"}, "prompt", "empty prompt"),
    ("empty_response", {"prompt": "x", "chosen": "a", "rejected": " "}, "rejected", "empty response"),
    ("identical", {"prompt": "x", "chosen": "same", "rejected": "same"}, "chosen/rejected", "chosen equals rejected"),
    ("mixed_row", {"prompt": "x", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}, "rejected", "mixed string/message row"),
    ("mixed_file", {"prompt": "x", "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}, "chosen", "mixed string/message rows"),
    ("bad_role", {"prompt": [{"role": "human", "content": "x"}], "chosen": "a", "rejected": "b"}, "prompt", "bad message role"),
    ("bad_tie", {**GOOD, "chosen": "Hey", "tie": "yes"}, "tie", "wrong type"),
    ("bad_p_chosen", {**GOOD, "chosen": "Hey", "p_chosen": 1.7}, "p_chosen", "out of range"),
]  # fmt: skip


@pytest.mark.parametrize("case,row,field,reason", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_bad_row_is_quarantined_next_to_good_rows(tmp_path, case, row, field, reason):
    path = write_lines(tmp_path / f"{case}.jsonl", [good(1), good(2), row, good(3)])
    data = read_source(path)
    assert data.format == "trl_standard"
    assert data.counts["imported"] == 3 and data.counts["quarantined"] == 1
    q = data.quarantine.row(0, named=True)
    assert (q["file"], q["line"], q["field"]) == (str(path), 3, field)
    assert reason in q["reason"]
    assert q["raw"]
    assert data.lines["imported"] == [1, 2, 4]


def test_non_utf8_bytes_are_quarantined(tmp_path):
    path = write_lines(tmp_path / "latin1.jsonl", [good(1), '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}'.encode("latin-1"), good(2)])
    data = read_source(path)
    q = data.quarantine.row(0, named=True)
    assert (q["line"], q["field"]) == (2, "(line)") and q["reason"].startswith("not valid UTF-8")
    assert data.counts["imported"] == 2


def test_blank_lines_are_counted_not_lost(tmp_path):
    path = write_lines(tmp_path / "blank.jsonl", [good(1), "", "   ", good(2)])
    data = read_source(path)
    assert data.counts["blank_lines"] == 2 and data.rows_read == 4 and data.counts["imported"] == 2


def test_file_that_does_not_exist(tmp_path):
    with pytest.raises(SourceError, match=r"nope\.jsonl: file does not exist"):
        read_source(tmp_path / "nope.jsonl")


def test_empty_files(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.jsonl: empty file"):
        read_source(tmp_path / "empty.jsonl")
    (tmp_path / "blank.jsonl.gz").write_bytes(gzip.compress(b"\n\n"))
    with pytest.raises(SourceError, match=r"blank\.jsonl\.gz: empty file"):
        read_source(tmp_path / "blank.jsonl.gz")


def test_unreadable_files(tmp_path):
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(json.dumps(GOOD).encode() * 50)[:40])
    with pytest.raises(SourceError, match=r"cut\.jsonl\.gz: unreadable: broken or truncated gzip"):
        read_source(tmp_path / "cut.jsonl.gz")
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match=r"x\.parquet: unreadable Parquet"):
        read_source(tmp_path / "x.parquet")
    (tmp_path / "folder").mkdir()
    with pytest.raises(SourceError, match="not a saved HF dataset"):
        read_source(tmp_path / "folder")


def test_format_not_detected_lists_columns_and_suggests_names(tmp_path):
    path = write_lines(tmp_path / "odd.jsonl", [{"promt": "x", "answer_a": "a", "answer_b": "b"}])
    with pytest.raises(SourceError) as err:
        read_source(path)
    msg = str(err.value)
    assert str(path) in msg and "format not detected" in msg
    assert "'promt'" in msg and "'answer_a'" in msg  # what was seen
    assert "'promt' -> 'prompt'?" in msg  # the close name


def test_no_readable_row_at_all(tmp_path):
    path = write_lines(tmp_path / "junk.jsonl", ["{nope", "[1]"])
    with pytest.raises(SourceError, match=r"junk\.jsonl: format not detected: no readable row among 2 \(line 1: malformed JSON"):
        read_source(path)


def test_hub_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError, match=r"hf://Anthropic/hh-rlhf: the Hugging Face Hub is unreachable: offline mode"):
        read_source("Anthropic/hh-rlhf")


def test_hub_unreachable_names_the_endpoint(monkeypatch):
    with socket.socket() as s:  # a local port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(SourceError, match=rf"hf://org/data: the Hugging Face Hub is unreachable \(127\.0\.0\.1:{port}"):
        read_source("hf://org/data")
