import polars as pl
import pytest

from curation import schema


def test_ids_are_stable_and_content_based():
    msgs = [{"role": "user", "content": "hi"}]
    assert schema.prompt_id(msgs) == schema.prompt_id([dict(m) for m in msgs])
    assert schema.prompt_id(msgs) != schema.prompt_id([{"role": "user", "content": "hi "}])
    pid = schema.prompt_id(msgs)
    assert len(pid) == schema.ID_HEX_CHARS
    assert schema.response_id(pid, "a") != schema.response_id(pid, "b")
    assert schema.pair_id(pid, "x", "y") != schema.pair_id(pid, "y", "x")
    assert schema.candidate_id(pid, "g", 0, 0) != schema.candidate_id(pid, "g", 0, 1)


def test_messages_text_round_trip():
    msgs = [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Flour, water, yeast."},
        {"role": "user", "content": "And salt?"},
    ]
    text = schema.messages_to_text(msgs)
    assert text == "Human: How do I bake bread?\n\nAssistant: Flour, water, yeast.\n\nHuman: And salt?"
    assert schema.text_to_messages(text) == msgs
    assert schema.messages_to_text([{"role": "user", "content": "plain"}]) == "plain"
    assert schema.text_to_messages("plain question") == [{"role": "user", "content": "plain question"}]


@pytest.mark.parametrize(
    "messages, problem",
    [
        ([], "non-empty"),
        ([{"role": "user"}], "exactly"),
        ([{"role": "robot", "content": "x"}], "unknown role"),
        ([{"role": "user", "content": 3}], "must be a string"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "end with a user"),
        ([{"role": "user", "content": "  "}], "no non-empty"),
    ],
)
def test_check_messages_names_the_problem(messages, problem):
    assert problem in schema.check_messages(messages)


def test_conform_fills_missing_and_rejects_unknown_columns():
    df = pl.DataFrame({"target_id": ["a"], "scorer": ["rm"], "value": [1]})
    out = schema.conform(df, "scores")
    assert out.columns == schema.SCORES.names
    assert out["value"].dtype == pl.Float64 and out["error"][0] is None
    with pytest.raises(schema.SchemaError, match="valeu"):
        schema.conform(df.rename({"value": "valeu"}), "scores")
    with pytest.raises(schema.SchemaError, match="value"):
        schema.conform(pl.DataFrame({"target_id": ["a"], "value": ["high"]}), "scores")


def test_frame_builds_typed_tables():
    df = schema.frame([{"prompt_id": "p", "messages": [{"role": "user", "content": "q"}]}], "prompts")
    assert df.schema["messages"] == pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    assert schema.to_arrow(df, "prompts").schema == schema.PROMPTS
