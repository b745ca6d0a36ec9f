"""Tiny offline models for tests, examples and first contact: no hub, built in seconds.

`tiny_chat_model(dir)` builds a ChatML chat model (Qwen2 architecture, ~0.8M parameters) that
transformers, TRL and vLLM all load; `tiny_reward_model(dir)` a sequence-classification reward
model with the same tokenizer. Both are random-initialised with a fixed seed: deterministic,
not clever. Train one briefly where a test needs a model that has learned something.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 4096

_CORPUS_WORDS = (
    "the a an is are was were be to of and in that have it for not on with he as you do at this but his "
    "by from they we say her she or will my one all would there their what so up out if about who get "
    "which go me when make can like time no just him know take people into year your good some could "
    "them see other than then now look only come its over think also back after use two how our work "
    "first well way even new want because any these give day most us answer question number sum plus "
    "minus equals sort list yes sorry help please thank assistant user human reason step result"
).split()


def _training_corpus(extra: list[str] | None = None) -> list[str]:
    import random

    rng = random.Random(0)
    lines = [" ".join(rng.choice(_CORPUS_WORDS) for _ in range(rng.randint(4, 16))) for _ in range(3000)]
    lines += [f"{a} + {b} = {a + b}" for a in range(0, 100, 3) for b in range(0, 100, 7)]
    lines += ["0123456789 ,.;:!?()[]{}<>=+-*/'\"#@$%&_\\|~^` \n\t"] * 20
    return lines + list(extra or [])


def build_tokenizer(extra_text: list[str] | None = None):
    """Byte-level BPE (vocab 4096) with ChatML special tokens, left padding and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(extra_text), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        padding_side="left",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _config(tok, **overrides):
    from transformers import Qwen2Config

    kwargs = dict(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,  # a head size vLLM's CPU attention accepts
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        torch_dtype="float32",
    )
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def _is_built(path: Path) -> bool:
    return (path / "config.json").exists() and (path / "tokenizer.json").exists()


def tiny_chat_model(path: str | os.PathLike, seed: int = 0, extra_text: list[str] | None = None) -> Path:
    """Build (once) a tiny random-init ChatML causal LM in `path`; returns the path."""
    path = Path(path)
    if _is_built(path):
        return path
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tok = build_tokenizer(extra_text)
    model = Qwen2ForCausalLM(_config(tok))
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=True
    )
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    _finish(tmp, path)
    return path


def tiny_reward_model(path: str | os.PathLike, seed: int = 1, extra_text: list[str] | None = None) -> Path:
    """Build (once) a tiny random-init sequence-classification reward model (one logit)."""
    path = Path(path)
    if _is_built(path):
        return path
    import torch
    from transformers import Qwen2ForSequenceClassification

    torch.manual_seed(seed)
    tok = build_tokenizer(extra_text)
    model = Qwen2ForSequenceClassification(_config(tok, num_labels=1))
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    _finish(tmp, path)
    return path


def _finish(tmp: Path, path: Path) -> None:
    """Move a fully written model into place, so a crash never leaves a half-built one."""
    (tmp / "curate_tiny.json").write_text(json.dumps({"built_by": "curation.testing"}))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, path)
