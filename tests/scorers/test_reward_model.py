from __future__ import annotations

import json

import pytest

from curation.scorers import SCORERS, ScorerError
from curation.scorers.reward_model import RewardModel

from .conftest import candidate_rows


def rm(tiny_rm, **kw):
    return SCORERS.build("reward_model", {"name": "rm", "kind": "reward_model", "model": str(tiny_rm), **kw})


def test_length_sorted_batches_restore_input_order(tiny_rm, hh_pairs):
    rows = candidate_rows(hh_pairs)  # 24 responses of very different lengths
    batched = rm(tiny_rm, batch_size=5).score(rows)
    assert batched.get_column("target_id").to_list() == rows.get_column("candidate_id").to_list()
    one_by_one = rm(tiny_rm, batch_size=1, sort_by_length=False).score(rows)
    a, b = batched.get_column("value").to_list(), one_by_one.get_column("value").to_list()
    assert all(v is not None for v in a)
    assert a == pytest.approx(b, abs=1e-4)
    assert len({round(v, 5) for v in a}) > 10  # distinct texts get distinct rewards
    # sorting really reorders: the batches are not the input order
    scorer = rm(tiny_rm, batch_size=5)
    tok, _ = scorer.load()
    items = [(r["messages"], r["text"]) for r in rows.to_dicts()]
    ids = scorer.encode(tok, items)
    for (messages, text), seq in zip(items, ids):  # batched tokenization == the template's own
        own = tok.apply_chat_template(messages + [{"role": "assistant", "content": text}], tokenize=True)
        assert seq == list(own["input_ids"] if hasattr(own, "keys") else own)
    flat = [i for b in scorer.batches(ids) for i in b]
    assert flat != list(range(len(ids))) and sorted(flat) == list(range(len(ids)))
    assert [len(ids[i]) for i in flat] == sorted(len(x) for x in ids)


def test_rows_carry_name_fingerprint_and_detail(tiny_rm, hh_pairs):
    scorer = rm(tiny_rm, max_length=16)
    out = scorer.score(candidate_rows(hh_pairs[:2]))
    assert set(out.get_column("scorer")) == {"rm"}
    assert set(out.get_column("scorer_fingerprint")) == {scorer.fingerprint}
    detail = json.loads(out.get_column("detail")[0])
    assert detail["truncated_to"] == 16 and detail["tokens"] > 16


def test_over_the_limit_the_prompt_is_cut_and_the_response_kept(tiny_rm, hh_pairs):
    rows = candidate_rows(hh_pairs[:4])
    full = rm(tiny_rm)
    tok, _ = full.load()
    lengths = [len(x) for x in full.encode(tok, [(r["messages"], r["text"]) for r in rows.to_dicts()])]
    prompts = full.prompt_lengths(tok, rows.get_column("messages").to_list())
    # a limit that leaves room for every response but not for every prompt
    limit = max(max(n - p for n, p in zip(lengths, prompts)) + 2, 8)
    assert any(n > limit for n in lengths)
    cut = rm(tiny_rm, max_length=limit)
    out = cut.score(rows)
    for row, n, text in zip(out.iter_rows(named=True), lengths, rows.get_column("text")):
        detail = json.loads(row["detail"])
        if n > limit:
            assert detail["truncated"] == "prompt" and detail["truncated_to"] == limit
        else:
            assert "truncated" not in detail
    # what is scored ends with the whole response: the same value as scoring the kept tail directly
    i = next(k for k, n in enumerate(lengths) if n > limit)
    tail = full.encode(tok, [(rows.to_dicts()[i]["messages"], rows.to_dicts()[i]["text"])])[0][-limit:]
    assert cut.forward(tok, full.load()[1], [tail])[0] == pytest.approx(out.get_column("value")[i], abs=1e-4)
    assert rows.to_dicts()[i]["text"].strip() in tok.decode(tail)


def test_missing_text_is_a_row_error_not_a_crash(tiny_rm, hh_pairs):
    rows = candidate_rows(hh_pairs[:2])
    rows = rows.with_columns(text=rows.get_column("text").scatter(1, None))
    out = rm(tiny_rm).score(rows)
    assert out.get_column("value").null_count() == 1
    assert out.get_column("error")[1] == "no response text"


def test_bad_model_paths_fail_before_loading(tmp_path):
    with pytest.raises(ScorerError, match="does not exist"):
        RewardModel(name="rm", kind="reward_model", model=str(tmp_path / "nope"))
    with pytest.raises(ScorerError, match="not a model folder"):
        RewardModel(name="rm", kind="reward_model", model=str(tmp_path))


@pytest.mark.slow
def test_vllm_pooling_runner_gives_the_transformers_scores(tiny_rm, hh_pairs):
    """The same rows through vLLM's pooling runner (CPU build) and through transformers: equal
    logits within float32 tolerance, the same truncation flags and row errors."""
    from curation.generate.vllm_engine import release_engine

    rows = candidate_rows(hh_pairs)
    rows = rows.with_columns(text=rows.get_column("text").scatter(3, None))
    hf = rm(tiny_rm, max_length=96, batch_size=4).score(rows)
    try:
        vl = rm(tiny_rm, max_length=96, backend="vllm", enforce_eager=True).score(rows)
    finally:
        release_engine()
    assert vl.get_column("target_id").to_list() == hf.get_column("target_id").to_list()
    assert vl.get_column("error").to_list() == hf.get_column("error").to_list()
    assert vl.get_column("detail").to_list() == hf.get_column("detail").to_list()
    assert any("truncated" in json.loads(d) for d in hf.get_column("detail").to_list())
    a, b = hf.get_column("value").to_list(), vl.get_column("value").to_list()
    assert a[3] is None and b[3] is None
    assert [x for x in b if x is not None] == pytest.approx([x for x in a if x is not None], abs=1e-3)
    assert len({round(x, 4) for x in b if x is not None}) > 10


def test_an_encoder_scores_inputs_longer_than_its_positions(tmp_path, hh_pairs):
    """MiniLM has 512 positions; `curate eval` asks for 1,024 tokens: the context wins, cut on the left."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from curation.embed import default_model

    folder = tmp_path / "minilm-rm"
    AutoModelForSequenceClassification.from_pretrained(default_model(), num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model()).save_pretrained(folder)
    rows = candidate_rows(hh_pairs[:2])
    long = rows.with_columns(text=rows.get_column("text") + " word" * 700)
    out = rm(folder, max_length=1024).score(long)
    assert out.get_column("error").is_null().all() and out.get_column("value").is_not_null().all()
    assert {json.loads(d)["truncated_to"] for d in out.get_column("detail")} == {512}
