"""Benchmark: the embedding store (curation.embed.EmbeddingStore) vs the earlier one-shard-per-call cache.

Synthetic unit vectors (no model) for `--n` texts, written in `--writes` calls, as a run that
embeds in several calls would. Each step runs in its own process so that its peak resident
memory (ru_maxrss) is its own:
  - store: `--writes` segments written (merged past 8), then a fresh process opens the store and
    looks up every text, and a fresh process looks up 1,000 texts (a small run on a big store);
  - old cache: the same vectors as `--writes` .npz shards, loaded the way the earlier cache
    loaded them (every shard into one dict at start-up), then every text looked up.

Usage:  python benchmarks/embed_store.py [--n 200000] [--dim 384] [--writes 20]
Writes benchmarks/results/embed_store.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "embed_store.json"


def _texts(n: int) -> list[str]:
    return [f"synthetic prompt number {i}" for i in range(n)]


def _vectors(start: int, stop: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(start).normal(size=(stop - start, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_store(folder: str, n: int, dim: int, writes: int) -> dict:
    from curation.embed import EmbeddingStore, text_keys

    texts = _texts(n)
    store = EmbeddingStore(folder)
    t = time.perf_counter()
    bounds = np.linspace(0, n, writes + 1, dtype=int)
    for a, b in zip(bounds, bounds[1:]):
        store.add(text_keys(texts[a:b]), _vectors(a, b, dim))
    seconds = time.perf_counter() - t
    return {"write_s": round(seconds, 2), "segments_after": len(store.segments), "peak_rss_mb": round(_peak_mb(), 1)}


def read_store(folder: str, n: int, dim: int, subset: int | None) -> dict:
    from curation.embed import EmbeddingStore, text_keys

    texts = _texts(n)
    if subset:
        texts = texts[:: max(1, n // subset)][:subset]
    t = time.perf_counter()
    store = EmbeddingStore(folder)
    opened = time.perf_counter() - t
    keys = text_keys(texts)
    hashed = time.perf_counter() - t - opened
    found, vectors = store.get(keys)
    total = time.perf_counter() - t
    check = _vectors(0, 1, dim)[0]
    return {
        "texts": len(texts),
        "open_s": round(opened, 4),
        "hash_s": round(hashed, 3),
        "lookup_s": round(total - opened - hashed, 3),
        "total_s": round(total, 3),
        "all_found": bool(found.all()),
        "first_vector_exact": bool(np.array_equal(vectors[0], check)),
        "peak_rss_mb": round(_peak_mb(), 1),
    }


def old_cache(folder: str, n: int, dim: int, writes: int) -> dict:
    """The earlier cache's layout and start-up: .npz shards, all loaded into one dict."""
    from curation.embed import text_key

    texts = _texts(n)
    bounds = np.linspace(0, n, writes + 1, dtype=int)
    for a, b in zip(bounds, bounds[1:]):
        np.savez(Path(folder) / f"{a}.npz", keys=np.array([text_key(x) for x in texts[a:b]]), vectors=_vectors(a, b, dim))
    t = time.perf_counter()
    memory: dict[str, np.ndarray] = {}
    for shard in sorted(Path(folder).glob("*.npz")):
        with np.load(shard) as data:
            memory.update(zip(data["keys"].tolist(), data["vectors"]))
    opened = time.perf_counter() - t
    out = np.stack([memory[text_key(x)] for x in texts])
    total = time.perf_counter() - t
    return {
        "texts": n,
        "open_s": round(opened, 3),
        "total_s": round(total, 3),
        "all_found": out.shape[0] == n,
        "peak_rss_mb": round(_peak_mb(), 1),
    }


def _run(fn, *args) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--writes", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="curate-bench-embed-"))
    try:
        store_dir, old_dir = work / "store", work / "old"
        old_dir.mkdir()
        result = {
            "benchmark": "embedding store vs the earlier one-shard-per-call cache",
            "n": args.n,
            "dim": args.dim,
            "writes": args.writes,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_1m": os.getloadavg()[0]},
        }
        result["store_write"] = _run(write_store, str(store_dir), args.n, args.dim, args.writes)
        result["store_files"] = sorted(p.name.split(".", 1)[1] for p in store_dir.glob("*.npy"))
        result["store_read_all"] = _run(read_store, str(store_dir), args.n, args.dim, None)
        result["store_read_1000"] = _run(read_store, str(store_dir), args.n, args.dim, 1000)
        result["old_cache_read_all"] = _run(old_cache, str(old_dir), args.n, args.dim, args.writes)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
