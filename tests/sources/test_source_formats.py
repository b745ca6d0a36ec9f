"""Format adapters and readers: every layout is detected, and one logical pair gets one id in all of them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from curation import schema
from curation.sources import SourceError, read_source

PROMPT = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]
CHOSEN, REJECTED = "Rome is the capital of Italy.", "I think it is Milan."
TRANSCRIPT = "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.\n\nHuman: And of Italy?\n\nAssistant:"


def write_jsonl(path: Path, rows: list, *, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def expected_pair_id(prompt=PROMPT, chosen=CHOSEN, rejected=REJECTED) -> str:
    pid = schema.prompt_id(prompt)
    return schema.pair_id(pid, schema.response_id(pid, chosen), schema.response_id(pid, rejected))


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# (layout, format detected, one row holding PROMPT / CHOSEN / REJECTED)
LAYOUTS = [
    (
        "corpus",
        "corpus",
        {"prompt": schema.messages_to_text(PROMPT), "messages": PROMPT, "chosen": CHOSEN, "rejected": REJECTED,
         "label_source": "human", "subset": "demo"},
    ),
    ("hh_rlhf", "hh_rlhf", {"chosen": f"{TRANSCRIPT} {CHOSEN}", "rejected": f"{TRANSCRIPT} {REJECTED}"}),
    ("trl_standard_explicit", "trl_standard", {"prompt": TRANSCRIPT.strip(), "chosen": " " + CHOSEN, "rejected": " " + REJECTED}),
    ("trl_conversational_explicit", "trl_conversational", {"prompt": PROMPT, "chosen": assistant(CHOSEN), "rejected": assistant(REJECTED)}),
    ("trl_conversational_implicit", "trl_conversational", {"chosen": PROMPT + assistant(CHOSEN), "rejected": PROMPT + assistant(REJECTED)}),
]  # fmt: skip


@pytest.mark.parametrize("layout,fmt,row", LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_every_pair_layout_is_detected_and_gives_the_same_ids(tmp_path, layout, fmt, row):
    other = {k: v for k, v in row.items()}
    data = read_source(write_jsonl(tmp_path / f"{layout}.jsonl", [row, other]))
    assert data.format == fmt and data.detected
    assert data.detection  # says why
    assert data.counts["imported"] == 1 and data.counts["duplicates_merged"] == 1
    assert data.pairs["pair_id"].to_list() == [expected_pair_id()]
    assert data.prompts["messages"].to_list() == [PROMPT]
    texts = dict(zip(data.candidates["candidate_id"], data.candidates["text"]))
    pair = data.pairs.row(0, named=True)
    assert (texts[pair["chosen_id"]], texts[pair["rejected_id"]]) == (CHOSEN, REJECTED)
    assert set(data.candidates["generator"]) == {f"dataset:{layout}"}
    merged = json.loads(pair["meta"])["merged"]
    assert [m["line"] for m in merged] == [2]


def test_implicit_string_prompt_is_the_shared_prefix_cut_at_a_word(tmp_path):
    rows = [{"chosen": "Translate 'cat' to French: chat", "rejected": "Translate 'cat' to French: chien"}]
    data = read_source(write_jsonl(tmp_path / "implicit.jsonl", rows))
    assert data.format == "trl_standard" and "implicit" in data.detection
    assert data.prompts["messages"].to_list() == [[{"role": "user", "content": "Translate 'cat' to French:"}]]
    assert sorted(data.candidates["text"]) == ["chat", "chien"]


def test_conversational_prompt_with_whole_conversations_is_not_duplicated(tmp_path):
    """The TRL trap: explicit prompt plus whole-conversation answers; the prompt turns are cut once."""
    rows = [{"prompt": PROMPT, "chosen": PROMPT + assistant(CHOSEN), "rejected": PROMPT + assistant(REJECTED)}]
    data = read_source(write_jsonl(tmp_path / "dup.jsonl", rows))
    assert data.pairs["pair_id"].to_list() == [expected_pair_id()]


def test_corpus_ties_and_soft_labels(tmp_path):
    base = {"messages": PROMPT, "chosen": CHOSEN, "rejected": REJECTED, "label_source": "AI judge"}
    rows = [
        {**base, "tie": False, "p_chosen": 0.93, "subset": "a"},
        {**base, "chosen": "Rome.", "tie": True, "p_chosen": 0.5},
    ]
    data = read_source(write_jsonl(tmp_path / "c.jsonl", rows))
    assert data.counts["ties"] == 1 and data.counts["imported"] == 2
    by_conf = {json.loads(m).get("tie", False): c for m, c in zip(data.pairs["meta"], data.pairs["confidence"])}
    assert by_conf == {False: 0.93, True: 0.5}
    assert set(data.pairs["label_source"]) == {"AI judge"}
    assert json.loads(data.pairs["meta"][0])["subset"] == "a"


def test_ultrafeedback_raw_rows_give_candidates_scores_and_best_worst_pairs(tmp_path):
    row = {
        "source": "evol_instruct",
        "instruction": "Name a prime number.",
        "models": ["a", "b", "c"],
        "completions": [
            {"model": "a", "response": "4", "overall_score": 2.0, "annotations": {"helpfulness": {"Rating": "1"}}},
            {"model": "b", "response": "7", "overall_score": 9.0, "annotations": {}},
            {"model": "c", "response": "5 is prime", "overall_score": 7.5, "annotations": {}},
            {"model": "d", "response": "", "overall_score": 1.0},
        ],
        "correct_answers": ["2", "3", "5", "7"],
    }
    data = read_source(write_jsonl(tmp_path / "uf.jsonl", [row]))
    assert data.format == "ultrafeedback"
    assert data.candidates.height == 3 and data.scores.height == 3
    assert set(data.scores["scorer"]) == {"ultrafeedback:overall_score"}
    pair = data.pairs.row(0, named=True)
    texts = dict(zip(data.candidates["candidate_id"], data.candidates["text"]))
    assert (texts[pair["chosen_id"]], texts[pair["rejected_id"]]) == ("7", "4")
    assert pair["margin"] == pytest.approx(7.0)
    # the empty completion is quarantined as an item, the row itself is imported
    assert data.counts["imported"] == 1 and data.counts["items_quarantined"] == 1
    q = data.quarantine.row(0, named=True)
    assert q["line"] == 1 and q["field"] == "completions[3].response" and q["reason"].startswith("empty response")
    assert json.loads(data.prompts["meta"][0])["correct_answers"] == ["2", "3", "5", "7"]
    detail = {json.loads(d)["model"] for d in data.scores["detail"]}
    assert detail == {"a", "b", "c"}


def test_distilabel_output_with_a_missing_rating(tmp_path):
    row = {
        "instruction": "Say hi.",
        "generations": ["hi", "hello there", "hey"],
        "ratings": [3, 5, None],
        "rationales": ["ok", "best", "unrated"],
        "model_name": "judge-x",
    }
    data = read_source(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert data.format == "distilabel"
    assert data.scores.height == 3 and data.scores["value"].null_count() == 1
    assert data.scores.filter(pl.col("value").is_null())["error"].to_list() == ["no rating in the source"]
    texts = dict(zip(data.candidates["candidate_id"], data.candidates["text"]))
    pair = data.pairs.row(0, named=True)
    assert (texts[pair["chosen_id"]], texts[pair["rejected_id"]]) == ("hello there", "hi")


def test_prompts_only_files_keep_other_fields_as_meta(tmp_path):
    rows = [
        {"prompt": "2+2=", "answer": "4", "id": 1},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+3="}], "answer": "6"},
        {"instruction": "Add", "input": "5 and 6", "answer": "11"},
        {"prompt": "2+2=", "answer": "4", "id": 9},
    ]
    data = read_source(write_jsonl(tmp_path / "p.jsonl", rows), name="arith")
    assert data.format == "prompts"
    assert data.counts == {**data.counts, "imported": 3, "duplicates_merged": 1, "quarantined": 0}
    assert set(data.prompts["source"]) == {"arith"}
    metas = [json.loads(m) for m in data.prompts["meta"]]
    assert [m["answer"] for m in metas] == ["4", "6", "11"]
    assert metas[0]["merged"] == [{"line": 4, "id": 9}]
    assert data.prompts["messages"][2].to_list() == [{"role": "user", "content": "Add\n\n5 and 6"}]
    assert data.candidates.height == 0 and data.pairs.height == 0


def _corpus_rows(n: int) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": f"q{i}"}], "chosen": f"good {i}", "rejected": f"bad {i}", "label_source": "human"}
        for i in range(n)
    ]


def test_parquet_reader(tmp_path):
    path = tmp_path / "pairs.parquet"
    pl.DataFrame(_corpus_rows(5)).write_parquet(path)
    data = read_source(path)
    assert data.reader == "parquet" and data.format == "corpus" and data.pairs.height == 5


def test_hf_save_to_disk_reader_with_splits(tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(_corpus_rows(4)), "test": datasets.Dataset.from_list(_corpus_rows(2))}
    )
    dd.save_to_disk(str(tmp_path / "ds"))
    data = read_source(tmp_path / "ds")
    assert data.reader == "hf_disk" and data.pairs.height == 4
    assert read_source(tmp_path / "ds", split="test").pairs.height == 2
    with pytest.raises(SourceError, match="no split 'dev'"):
        read_source(tmp_path / "ds", split="dev")


def test_duckdb_query_over_a_file_and_a_database(tmp_path):
    import duckdb

    src = write_jsonl(tmp_path / "pairs.jsonl", _corpus_rows(10))
    data = read_source(src, query="SELECT * FROM source WHERE chosen <> $skip ORDER BY chosen", params={"skip": "good 3"})
    assert data.reader == "duckdb" and data.format == "corpus" and data.pairs.height == 9
    db = tmp_path / "pairs.duckdb"
    con = duckdb.connect(str(db))
    con.execute(f"CREATE TABLE prefs AS SELECT * FROM read_json_auto('{src}')")
    con.close()
    data = read_source(db, query="SELECT * FROM prefs LIMIT ?", params=[3])
    assert data.pairs.height == 3
    with pytest.raises(SourceError, match="query failed"):
        read_source(db, query="SELECT * FROM missing_table")


def test_limit_counts_good_rows_only(tmp_path):
    rows = ["{broken", *[json.dumps(r) for r in _corpus_rows(10)]]
    data = read_source(write_jsonl(tmp_path / "l.jsonl.gz", rows, gz=True), limit=4)
    assert data.reader == "jsonl.gz"
    assert data.counts["imported"] == 4 and data.counts["quarantined"] == 1 and data.rows_read == 5


def test_explicit_format_overrides_detection(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    data = read_source(write_jsonl(tmp_path / "x.jsonl", rows), format="prompts")
    assert data.format == "prompts" and not data.detected and data.detection == "given by the caller"
    assert json.loads(data.prompts["meta"][0]) == {"chosen": "a", "rejected": "b"}
    with pytest.raises(SourceError, match="unknown format 'nope'"):
        read_source(tmp_path / "x.jsonl", format="nope")


def test_csv_prompts_with_quoted_newlines(tmp_path):
    path = tmp_path / "questions.csv"
    path.write_text('prompt,answer\n"What is 2+2?",4\n"Say ""hi""\nplease",hi\n')
    data = read_source(path)
    assert data.reader == "csv" and data.format == "prompts"
    assert [m[0]["content"] for m in data.prompts["messages"].to_list()] == ["What is 2+2?", 'Say "hi"\nplease']
    assert [json.loads(m) for m in data.prompts["meta"]] == [{"answer": "4"}, {"answer": "hi"}]
    assert set(data.prompts["source"]) == {"questions"}


def test_pair_rows_that_name_their_models_give_candidates_those_generators(tmp_path):
    base = {"messages": PROMPT, "label_source": "AI judge"}
    rows = [
        {**base, "chosen": CHOSEN, "rejected": REJECTED, "generator_chosen": "model-a", "generator_rejected": "model-b"},
        {**base, "chosen": "Rome.", "rejected": REJECTED, "chosen_generator": "model-c", "rejected_generator": "model-b"},
        {**base, "chosen": "Rome, of course.", "rejected": "Rome!", "generator_chosen": "model-a", "generator_rejected": "model-d"},
        {**base, "chosen": "Rome!", "rejected": REJECTED, "generator_chosen": "model-e", "generator_rejected": "model-b"},
    ]
    data = read_source(write_jsonl(tmp_path / "models.jsonl", rows))
    by_text = dict(zip(data.candidates["text"], data.candidates["generator"]))
    assert by_text == {
        CHOSEN: "dataset:models/model-a",
        REJECTED: "dataset:models/model-b",  # named three times, the same model each time
        "Rome.": "dataset:models/model-c",
        "Rome, of course.": "dataset:models/model-a",
        "Rome!": "dataset:models",  # model-d and model-e wrote the same text: unattributed
    }
    plain = read_source(write_jsonl(tmp_path / "plain.jsonl", [{k: v for k, v in r.items() if "generator" not in k} for r in rows]))
    assert plain.pairs["pair_id"].to_list() == data.pairs["pair_id"].to_list()  # ids follow the content, not the generator
    assert plain.candidates["candidate_id"].to_list() == data.candidates["candidate_id"].to_list()
    assert set(plain.candidates["generator"]) == {"dataset:plain"}


def test_our_own_exports_meta_does_not_name_generators(tmp_path):
    # a flip swaps chosen and rejected but not the upstream fields kept in meta: they would name the wrong side
    row = {"pair_id": expected_pair_id(), "prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED,
           "meta": json.dumps({"flipped": True, "generator_chosen": "model-b", "generator_rejected": "model-a"})}
    data = read_source(write_jsonl(tmp_path / "export.jsonl", [row]))
    assert data.format == "curate" and set(data.candidates["generator"]) == {"dataset:export"}
