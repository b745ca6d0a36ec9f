from __future__ import annotations

import pytest

from curation.scorers import SCORERS, ScorerError
from curation.scorers.density_ratio import load_causal_lm, response_logprobs

from .conftest import candidate_rows


@pytest.fixture(scope="module")
def tuned(tiny_chat, hh_pairs, tmp_path_factory):
    """The tiny chat model after a few steps on the chosen responses: 'stronger' on them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_chat)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    texts = [p["chosen"] for p in hh_pairs[:4]]
    for _ in range(5):
        for t in texts:
            ids = torch.tensor([tok(t)["input_ids"][:48]])
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    out = tmp_path_factory.mktemp("tuned")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def cdr(strong, weak, **kw):
    return SCORERS.build(
        "density_ratio", {"name": "cdr", "kind": "density_ratio", "strong_model": str(strong), "weak_model": str(weak), **kw}
    )


def test_same_model_gives_zero(tiny_chat, hh_pairs):
    values = cdr(tiny_chat, tiny_chat).score(candidate_rows(hh_pairs[:4])).get_column("value").to_list()
    assert values == pytest.approx([0.0] * 8, abs=1e-6)


def test_batched_log_probs_equal_one_at_a_time(tiny_chat, hh_pairs):
    tok, model = load_causal_lm(str(tiny_chat), "cpu")
    rows = candidate_rows(hh_pairs[:5]).to_dicts()
    items = [(r["messages"], r["text"]) for r in rows if r["text"]]
    batched = response_logprobs(tok, model, items, 4, 2048, "cpu")
    single = response_logprobs(tok, model, items, 1, 2048, "cpu")
    assert [n for _, n in batched] == [n for _, n in single]
    assert [s for s, _ in batched] == pytest.approx([s for s, _ in single], rel=1e-4, abs=1e-3)
    assert all(s < 0 for s, _ in batched)


def test_stronger_model_on_its_training_texts_scores_higher(tuned, tiny_chat, hh_pairs):
    seen = candidate_rows(hh_pairs[:4]).filter(candidate_rows(hh_pairs[:4])["meta"].str.contains("\"chosen\""))
    unseen = candidate_rows(hh_pairs[8:12])
    scorer = cdr(tuned, tiny_chat)
    on_seen = scorer.score(seen).get_column("value").to_list()
    on_unseen = scorer.score(unseen).get_column("value").to_list()
    assert min(on_seen) > 0
    assert sum(on_seen) / len(on_seen) > sum(on_unseen) / len(on_unseen)


def test_bad_paths(tiny_chat, tmp_path):
    with pytest.raises(ScorerError, match="weak_model .* does not exist"):
        cdr(tiny_chat, tmp_path / "missing")
