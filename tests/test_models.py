"""One model-folder fingerprint for generation, scoring, embedding and training; hub ids; folder checks."""

from __future__ import annotations

import shutil

import pytest

from curation.models import ModelError, check_model_dir, context_length, is_hub_id, model_fingerprint


def test_the_fingerprint_follows_the_weights_not_the_training_bookkeeping(tmp_path, tiny_chat):
    model = tmp_path / "m"
    shutil.copytree(tiny_chat, model)
    before = model_fingerprint(model)
    (model / "curate_run.json").write_text("{}")  # what `curate train` writes beside the model
    (model / "checkpoint-5").mkdir()
    (model / "checkpoint-5" / "optimizer.pt").write_bytes(b"state")
    (model / ".cache").mkdir()
    (model / ".cache" / "x").write_text("y")
    assert model_fingerprint(model) == before
    weights = next(p for p in model.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")  # retrained in place
    assert model_fingerprint(model) != before


def test_hub_ids_and_model_folders(tmp_path):
    assert is_hub_id("org/model-1.5") and not is_hub_id("./org/model") and not is_hub_id("/abs/path")
    assert not is_hub_id("just-a-name") and not is_hub_id("a/b/c")
    with pytest.raises(ModelError, match="does not exist"):
        check_model_dir(tmp_path / "missing")
    with pytest.raises(ModelError, match="no config.json or adapter_config.json"):
        check_model_dir(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    assert check_model_dir(tmp_path) == tmp_path


def test_context_length_reads_every_spelling_configs_use():
    """GPT-2 says n_positions, Llama max_position_embeddings, multimodal configs nest it: generation,
    reward scoring and training all read it through this one function."""
    assert context_length({"n_positions": 1024, "vocab_size": 50257}) == 1024
    assert context_length({"max_position_embeddings": 512}) == 512
    assert context_length({"text_config": {"max_position_embeddings": 8192}, "max_position_embeddings": None}) == 8192
    assert context_length({"seq_length": 2048, "max_position_embeddings": "n/a"}) == 2048
    assert context_length({"hidden_size": 64}) is None
