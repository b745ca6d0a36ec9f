"""Shared generation logic: bad input is refused up front, long prompts are cut or skipped and counted."""

from __future__ import annotations

import json

import polars as pl
import pytest
from pydantic import ValidationError

from curation import schema
from curation.generate import GENERATORS, GenerationError, GeneratorConfig, build_generator, run_generation
from curation.generate.base import Request, SamplingParams, apply_length_rule, check_prompts, resolve_model
from curation.stats import Stats
from tests.generate.conftest import make_prompts


def test_backends_are_registered_with_their_configs():
    assert {"vllm", "openai", "transformers"} <= set(GENERATORS.names())
    with pytest.raises(ValidationError, match="engine_args"):
        GENERATORS.config_model("openai")(model="m", engine_args={})  # a vllm field, not an openai one
    vllm = GENERATORS.config_model("vllm")(model="m", tensor_parallel_size=4, engine_args={"swap_space": 1})
    assert vllm.tensor_parallel_size == 4 and vllm.backend == "vllm"


def test_base_config_is_revalidated_for_its_backend(tiny_chat):
    gen = build_generator(GeneratorConfig(backend="transformers", model=str(tiny_chat), n=3))
    assert type(gen).__name__ == "TransformersGenerator"
    assert gen.config.n == 3 and gen.config.batch_size == 16


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"temperature_range": (1.0, 0.5)}, "temperature_range"),
        ({"perturbations": ["  "]}, "perturbations"),
        ({"n": 0}, "n"),
        ({"strategy": "beam"}, "strategy"),
        ({"sampling": {"top_p": 0}}, "top_p"),
    ],
)
def test_config_errors(bad, message):
    with pytest.raises(ValidationError, match=message):
        GeneratorConfig(backend="vllm", model="m", **bad)


def test_empty_and_malformed_prompts_are_clear_errors(tiny_chat):
    config = {"backend": "transformers", "model": str(tiny_chat)}
    with pytest.raises(GenerationError, match="empty"):
        run_generation(schema.empty("prompts"), config)
    with pytest.raises(GenerationError, match="lacks column"):
        run_generation(pl.DataFrame({"text": ["hi"]}), config)
    bad = schema.frame(
        [
            {"prompt_id": "a", "messages": schema.user_prompt("fine")},
            {"prompt_id": "b", "messages": [{"role": "assistant", "content": "no user turn last"}]},
        ],
        "prompts",
    )
    with pytest.raises(GenerationError, match=r"row 1 \(prompt_id b\): field 'messages' must end with a user turn"):
        run_generation(bad, config)


def test_missing_model_fails_before_any_loading(tmp_path):
    import curation.generate.vllm_engine as vllm_engine

    loads = vllm_engine.engine_loads
    prompts = make_prompts(["hello"])
    with pytest.raises(GenerationError, match="not found: no such folder"):
        run_generation(prompts, {"backend": "vllm", "model": str(tmp_path / "nope")})
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(GenerationError, match="is a file, not a model folder"):
        run_generation(prompts, {"backend": "vllm", "model": str(tmp_path / "weights.bin")})
    with pytest.raises(GenerationError, match="config.json is missing"):
        run_generation(prompts, {"backend": "transformers", "model": str(tmp_path)})
    with pytest.raises(GenerationError, match="not in the local Hugging Face cache"):
        resolve_model("no-such-org/no-such-model")  # offline in tests
    assert vllm_engine.engine_loads == loads  # no engine was started for any of these


def test_duplicate_prompts_are_generated_once():
    stats = Stats()
    frame = make_prompts(["a", "b", "a"])
    rows = check_prompts(frame, stats)
    assert [r["prompt_id"] for r in rows] == [frame["prompt_id"][0], frame["prompt_id"][1]]
    assert stats.duplicate_prompts == 1 and stats.prompts == 2


def _requests(texts: list[str]) -> list[Request]:
    out = []
    for t in texts:
        m = schema.user_prompt(t)
        out.append(Request(schema.prompt_id(m), m, 0, 1, SamplingParams()))
    return out


@pytest.mark.parametrize("rule", ["skip", "truncate"])
def test_length_rule_cuts_or_skips_long_prompts(tiny_chat, rule):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat)
    config = GeneratorConfig(backend="vllm", model="m", on_long_prompt=rule, sampling={"max_tokens": 40})
    reqs = _requests(["short question", "word " * 300])
    apply_length_rule(reqs, tok, 128, config)  # limit: 128 - 40 = 88 prompt tokens
    short, long = reqs
    assert short.skip_reason is None and 0 < len(short.prompt_token_ids) <= 88
    if rule == "skip":
        assert long.prompt_token_ids is None
        assert "prompt too long" in long.skip_reason and "limit 88" in long.skip_reason
    else:
        assert long.skip_reason is None and len(long.prompt_token_ids) == 88
        assert long.meta["truncated_from"] > 88
        # the end is kept: the assistant header the model continues from
        assert tok.decode(long.prompt_token_ids).endswith("<|im_start|>assistant\n")


def test_max_tokens_larger_than_context_is_an_error(tiny_chat):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat)
    config = GeneratorConfig(backend="vllm", model="m", sampling={"max_tokens": 4096})
    with pytest.raises(GenerationError, match="leaves no room for a prompt"):
        apply_length_rule(_requests(["hi"]), tok, 2048, config)


def test_stats_summary_names_the_costs():
    text = Stats(calls=3, cache_hits=5, tokens=70, errors=1, failed_calls=1, prompts=2, candidates=8).summary()
    assert "3 calls" in text and "5 cache hits" in text and "70 tokens" in text and "1 rows with errors" in text
    assert json.dumps(Stats().__dict__)  # plain numbers, for run records
