from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.embed import Embedder, EmbeddingStore, text_keys
from curation.models import model_fingerprint

TEXTS = [
    "How do I bake banana bread?",
    "What is the capital of France?",
    "Recipe for a loaf of banana bread",
    "How do I bake banana bread?",  # repeated within one call
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embed-cache")


def segment_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.keys.npy"))


def test_embeddings_shape_norm_and_meaning(cache):
    e = Embedder(cache_dir=cache)
    v = e.embed(TEXTS)
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(v[0], v[3])
    assert v[0] @ v[2] > v[0] @ v[1]  # bread is closer to bread than to Paris
    assert e.stats.misses == 4 and e.stats.encoded == 3 and e.stats.model_calls == 1
    # the same texts again, and mixed with a new one: only the new one reaches the model
    assert np.array_equal(e.embed(TEXTS[::-1]), v[::-1])
    assert e.stats.model_calls == 1
    w = e.embed(["A new question", TEXTS[1]])
    assert e.stats.model_calls == 2 and e.stats.encoded == 4
    assert np.array_equal(w[1], v[1]) and not np.array_equal(w[0], v[1])


def test_another_process_reads_the_store_without_loading_the_model(cache):
    """Across runs: a fresh process embeds the same texts with zero model calls."""
    vectors = Embedder(cache_dir=cache).embed(TEXTS)
    code = (
        "import json, sys; from curation.embed import Embedder; "
        f"e = Embedder(cache_dir={str(cache)!r}); v = e.embed({TEXTS!r}); "
        "print(json.dumps({'calls': e.stats.model_calls, 'loaded': e._model is not None, "
        "'torch': 'torch' in sys.modules, 'v': v.tolist()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["calls"] == 0 and not got["loaded"] and not got["torch"]
    assert np.array_equal(np.asarray(got["v"], dtype=np.float32), vectors)


def test_store_is_keyed_by_model(cache, tiny_chat, tmp_path):
    assert model_fingerprint(tiny_chat) != Embedder(cache_dir=cache).fingerprint[:-1]
    assert Embedder(cache_dir=cache, normalize=False).fingerprint != Embedder(cache_dir=cache).fingerprint
    with pytest.raises(ValueError, match="not a local model folder"):
        Embedder(tmp_path / "missing")


def test_many_small_segments_compact_into_one(tmp_path):
    rng = np.random.default_rng(0)
    texts = [f"text {i}" for i in range(50)]
    vecs = rng.normal(size=(50, 8)).astype(np.float32)
    store = EmbeddingStore(tmp_path, max_segments=100)
    for start in range(0, 50, 5):  # ten writes, the last overlapping the first
        store.add(text_keys(texts[start : start + 5]), vecs[start : start + 5])
    store.add(text_keys(texts[:3]), vecs[:3])
    assert len(segment_files(tmp_path)) == 11
    store.compact()
    assert len(segment_files(tmp_path)) == 1 and len(list(tmp_path.glob("*.vectors.npy"))) == 1
    fresh = EmbeddingStore(tmp_path)
    assert len(fresh) == 50  # each text once
    found, got = fresh.get(text_keys(texts[::-1] + ["never stored"]))
    assert found[:50].all() and not found[50]
    assert np.array_equal(got[:50], vecs[::-1]) and not got[50].any()
    assert isinstance(fresh.segments[0].vectors, np.memmap)


def test_writes_past_max_segments_merge_by_themselves(tmp_path):
    store = EmbeddingStore(tmp_path, max_segments=3)
    for i in range(7):
        store.add(text_keys([f"t{i}"]), np.full((1, 4), i, dtype=np.float32))
        assert len(segment_files(tmp_path)) <= 3
    found, got = EmbeddingStore(tmp_path).get(text_keys([f"t{i}" for i in range(7)]))
    assert found.all() and got[:, 0].tolist() == list(range(7))


def test_earlier_cache_shards_are_folded_in(tmp_path):
    """The one-shard-per-call `.npz` files of the earlier cache become part of the store."""
    keys = [k.decode() for k in text_keys(["old a", "old b"])]
    np.savez(tmp_path / "abc.npz", keys=np.array(keys), vectors=np.eye(2, 3, dtype=np.float32))
    (tmp_path / "zz-broken.npz").write_bytes(b"not a zip")
    store = EmbeddingStore(tmp_path)
    assert not list(tmp_path.glob("*.npz")) and len(segment_files(tmp_path)) == 1
    found, got = store.get(text_keys(["old b", "old a"]))
    assert found.all() and np.array_equal(got, np.eye(2, 3, dtype=np.float32)[::-1])


def test_damaged_segment_costs_a_recompute_not_a_crash(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.add(text_keys(["a"]), np.ones((1, 4), dtype=np.float32))
    (tmp_path / "broken.keys.npy").write_bytes(b"not numpy")
    (tmp_path / "broken.vectors.npy").write_bytes(b"not numpy")
    fresh = EmbeddingStore(tmp_path)
    found, _ = fresh.get(text_keys(["a", "b"]))
    assert found.tolist() == [True, False]
    fresh.compact()  # the damaged one is dropped, the good one kept
    assert len(segment_files(tmp_path)) == 1 and EmbeddingStore(tmp_path).get(text_keys(["a"]))[0].all()


def _writer(folder: str, worker: int, n: int) -> None:
    try:
        store = EmbeddingStore(folder, max_segments=4)
        for i in range(n):
            texts = [f"w{worker}-{i}", "shared"]
            store.add(text_keys(texts), np.array([[worker, i], [7, 7]], dtype=np.float32))
    except BaseException:  # the parent's assertion shows what went wrong in the child
        Path(folder, f"writer-{worker}.error").write_text(traceback.format_exc())
        raise


def test_concurrent_writers_lose_nothing(tmp_path):
    """Four processes add and merge at once; every vector is there afterwards, once."""
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: a fork would inherit after-fork hooks of earlier tests
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    reader = EmbeddingStore(tmp_path)
    while any(p.is_alive() for p in procs):  # reads during merges never fail
        reader.refresh()
        reader.get(text_keys(["shared"]))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, [e.read_text() for e in tmp_path.glob("writer-*.error")]
    store = EmbeddingStore(tmp_path)
    store.compact()
    texts = [f"w{w}-{i}" for w in range(4) for i in range(15)] + ["shared"]
    found, got = store.get(text_keys(texts))
    assert found.all() and len(store) == 61
    assert got[:-1].tolist() == [[w, i] for w in range(4) for i in range(15)] and got[-1].tolist() == [7, 7]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp.npy")]


def test_selectors_of_a_run_share_the_store_and_a_rerun_costs_no_model_call(tmp_path, shared_data):
    """dedup, noise, kMQ, MIG, SIFT and FiFA in one selection: each distinct text reaches the model
    once; the same selection with a fresh store object (another run) makes no model call."""
    from curation.select import apply_selectors
    from curation.train.data import drop_ties, load_pairs

    rows, _ = drop_ties(load_pairs(str(shared_data / "hh_rlhf_test.jsonl.gz")).rows)
    pool = rows.unique("pair_id", keep="first", maintain_order=True).filter(pl.col("chosen").str.len_chars() < 200).head(16)
    pool = pool.with_columns(margin=(pl.col("chosen").str.len_chars() - pl.col("rejected").str.len_chars()) / 100)
    steps = [
        {"kind": "dedup", "method": "semantic", "threshold": 0.99},
        {"kind": "noise", "method": "bt_heads", "heads": 2, "folds": 2, "action": "flip"},
        {"kind": "kmq", "budget": 12, "k": 3},
        {"kind": "mig", "labels": "clusters", "cluster_resolutions": [2, 4], "budget": 10},
        {"kind": "sift", "budget": 8},
        {"kind": "fifa", "budget": 5, "k": 2},
    ]

    def selection(embedder: Embedder) -> tuple[list[str], list[str]]:
        asked: list[str] = []

        def embed(texts):
            asked.extend(texts)
            return embedder.embed(texts)

        kept = apply_selectors(pool, steps, embed=embed, control_draws=2).kept_ids
        return sorted(kept), asked

    first = Embedder(cache_dir=tmp_path)
    kept, asked = selection(first)
    assert first.stats.encoded == len(set(asked)) and first.stats.hits > 0
    again = Embedder(cache_dir=tmp_path)
    again.store = EmbeddingStore(again.cache_dir)
    kept_again, asked_again = selection(again)
    assert again.stats.model_calls == 0 and again.stats.hits == len(asked_again) > 0
    assert kept_again == kept
