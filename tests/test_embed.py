from __future__ import annotations

import numpy as np
import pytest

from curation.embed import Embedder, model_fingerprint

TEXTS = [
    "How do I bake banana bread?",
    "What is the capital of France?",
    "Recipe for a loaf of banana bread",
    "How do I bake banana bread?",  # repeated within one call
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embed-cache")


def test_embeddings_shape_norm_and_meaning(cache):
    e = Embedder(cache_dir=cache)
    v = e.embed(TEXTS)
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(v[0], v[3])
    assert v[0] @ v[2] > v[0] @ v[1]  # bread is closer to bread than to Paris
    assert e.stats.misses == 4 and e.stats.model_calls == 1


def test_second_call_hits_the_cache_in_memory_and_on_disk(cache):
    first = Embedder(cache_dir=cache)
    a = first.embed(TEXTS)
    assert first.stats.hits == 4 and first.stats.model_calls == 0  # loaded from the first test's shard
    fresh = Embedder(cache_dir=cache)
    b = fresh.embed(TEXTS[:2])
    assert fresh._model is None and fresh.stats.model_calls == 0  # never loaded the model
    assert np.array_equal(a[:2], b)
    fresh.embed(["a brand new sentence"])
    assert fresh.stats.model_calls == 1 and fresh.stats.misses == 1
    assert len(list((cache / fresh.fingerprint).glob("*.npz"))) == 2


def test_cache_is_keyed_by_model(cache, tiny_chat, tmp_path):
    assert model_fingerprint(tiny_chat) != Embedder(cache_dir=cache).fingerprint[:-1]
    assert Embedder(cache_dir=cache, normalize=False).fingerprint != Embedder(cache_dir=cache).fingerprint
    with pytest.raises(ValueError, match="not a local model folder"):
        Embedder(tmp_path / "missing")


def test_damaged_shard_is_skipped(cache):
    shard_dir = cache / Embedder(cache_dir=cache).fingerprint
    (shard_dir / "zz-broken.npz").write_bytes(b"not a zip")
    e = Embedder(cache_dir=cache)
    e.embed(TEXTS[:1])
    assert e.stats.hits == 1
