"""Benchmark: a million prompts through the whole recipe, one stage after the other, as a run does.

No model is called: candidates are synthetic, the scorer is the heuristic length scorer, and
the embedding store (curation.embed) is pre-filled with synthetic prompt vectors (clustered,
384-d), so the selectors read cached embeddings exactly as they would after one MiniLM pass.
Stages hand each other Parquet files (a run's artifacts); each runs in a fresh process, so its
peak resident memory (ru_maxrss) is its own:

  make      prompts (1% are case/whitespace copies of others, for dedup), 2 candidates each, vectors
  score     heuristic length (words) of every candidate
  pairs     best_worst pairs from the scores
  pool      the selection pool (`version_rows`: every pair denormalised)
  dedup     exact duplicates (normalised prompt + chosen + rejected)
  noise     the stacked noise filter (default signals), on what dedup kept
  kmq       kMQ, 50% of what noise kept, on prompt embeddings
  fifa      FiFA, 50% of the same items (measured beside kMQ: the recipe runs one of them)
  fifa_recall  FiFA's approximate neighbour search against exact search (100k sample; 500 prompts at full size)
  publish   the catalog version from lazy scans of the artifacts and the decisions
  load      the published version read back

Each selector is measured against the time MiniLM needs to embed the prompts on this machine
(about 400 texts/s). `--stages` without noise runs kMQ and FiFA on what dedup kept (the stacked
noise filter is measured at smaller sizes where 1M does not fit the time at hand). A stage past `--stage-timeout` is stopped and recorded as such, with the
stages after it that need its output skipped.

Usage:  python benchmarks/recipe_1m.py [--prompts 1000000] [--stage-timeout 1800] [--stages ...] [--work DIR]
Writes benchmarks/results/recipe_<prompts>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import resource
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MINILM_TEXTS_PER_S = 400  # all-MiniLM-L6-v2 on this machine's CPU (README, embed_store benchmark)
DIM = 384
STAGES = ("make", "score", "pairs", "pool", "dedup", "noise", "kmq", "fifa", "fifa_recall", "publish", "load")
NEEDS = {"score": "make", "pairs": "score", "pool": "pairs", "dedup": "pool", "noise": "dedup", "kmq": "dedup",
         "fifa": "dedup", "fifa_recall": "dedup", "publish": "kmq", "load": "publish"}
RECALL_SAMPLE, RECALL_QUERIES, RECALL_FULL_QUERIES = 100_000, 2_000, 500


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _embedder(work: Path):
    from curation.embed import Embedder

    return Embedder(cache_dir=work / "embeddings")


# ---------------------------------------------------------------- stages (each in its own process)


def _make(work: Path, n: int) -> dict:
    import numpy as np
    import polars as pl

    from curation import schema
    from curation.embed import text_keys

    rng = np.random.default_rng(0)
    i = np.arange(n)
    words = np.array("the a model answer question data river stone light paper seven blue quick slow tree "
                     "number field sound place water story music garden window signal".split())
    topic = rng.integers(0, 2000, n)
    base = pl.Series(i).cast(pl.String)
    content = pl.select(pl.concat_str([pl.lit("Question "), pl.lit(base), pl.lit(" about "),
                                       pl.lit(pl.Series(words[topic % len(words)])), pl.lit(" number "),
                                       pl.lit(pl.Series(topic).cast(pl.String)), pl.lit("?")])).to_series()
    copies = rng.choice(n, size=n // 100, replace=False)  # these become copies of the prompt before them
    src = np.maximum(copies - 1, 0)
    content = content.scatter(copies, content.gather(src).str.to_uppercase() + "  ")
    prompt_ids = ("p" + base.str.zfill(15)).alias("prompt_id")
    prompts = pl.DataFrame({"prompt_id": prompt_ids}).with_columns(
        pl.concat_list(pl.struct(pl.lit("user").alias("role"), pl.lit(content).alias("content"))).alias("messages"),
        pl.lit("synthetic").alias("source"))
    filler = " ".join(rng.choice(words, 4000))
    starts, lengths = rng.integers(0, len(filler) - 1500, 2 * n), rng.integers(20, 1400, 2 * n)
    texts = [filler[s:s + k] for s, k in zip(starts.tolist(), lengths.tolist())]
    respond = np.arange(2 * n)
    respond[n + copies] = n + src  # a copied prompt's answers repeat its original's
    respond[copies] = src
    texts = pl.Series("text", texts).gather(respond)
    candidates = pl.DataFrame({
        "candidate_id": pl.concat([("a" + base.str.zfill(15)), ("b" + base.str.zfill(15))]),
        "prompt_id": pl.concat([prompt_ids, prompt_ids]), "text": texts,
        "generator": pl.repeat("synthetic", 2 * n, eager=True), "sample_index": np.repeat([0, 1], n).astype(np.int32)})
    candidates = candidates.gather(np.stack([i, n + i], axis=1).ravel())  # a prompt's samples side by side, as generate writes them
    schema.conform(prompts, "prompts").write_parquet(work / "prompts.parquet")
    schema.conform(candidates, "candidates").write_parquet(work / "candidates.parquet")
    made = time.perf_counter()
    # the store as one MiniLM pass would leave it: a vector per distinct prompt text, written in shards
    embedder = _embedder(work)
    centres = rng.normal(size=(200, DIM)).astype(np.float32)
    unique = content.unique(maintain_order=True)
    for start in range(0, unique.len(), 250_000):
        chunk = unique.slice(start, 250_000).to_list()
        vecs = centres[rng.integers(0, 200, len(chunk))] + 0.5 * rng.normal(size=(len(chunk), DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        keys, first = np.unique(text_keys(chunk), return_index=True)
        embedder.store.add(keys, vecs[first])
    embedder.store.compact()
    return {"prompts": n, "candidates": 2 * n, "copied_prompts": int(len(copies)), "vectors": len(embedder.store),
            "store_s": round(time.perf_counter() - made, 2)}


def _score(work: Path, n: int) -> dict:
    import polars as pl

    from curation.scorers import SCORERS
    from curation.scorers.base import pointwise_rows

    candidates = pl.read_parquet(work / "candidates.parquet")
    rows = pointwise_rows(pl.read_parquet(work / "prompts.parquet"), candidates)
    scorer = SCORERS.build("heuristic", {"name": "length", "kind": "heuristic", "measure": "length", "unit": "words"})
    scores = scorer.score(rows)
    scores.write_parquet(work / "scores.parquet")
    return {"scores": scores.height}


def _pairs(work: Path, n: int) -> dict:
    import polars as pl

    from curation.pairs import PAIR_BUILDERS

    candidates = pl.read_parquet(work / "candidates.parquet")
    scores = pl.read_parquet(work / "scores.parquet")
    result = PAIR_BUILDERS.build("best_worst", {"builder": "best_worst", "score": "length"}).build(candidates, scores)
    result.pairs.write_parquet(work / "pairs.parquet")
    return {"pairs": result.pairs.height, "counts": result.counts}


def _pool(work: Path, n: int) -> dict:
    import polars as pl

    from curation.rows import version_rows

    tables = {t: pl.scan_parquet(work / f"{t}.parquet") for t in ("prompts", "candidates", "scores", "pairs")}
    pool, _ = version_rows(tables)
    pool.write_parquet(work / "pool.parquet")
    return {"rows": pool.height}


def _select(work: Path, step: str, after: str | None, config: dict) -> dict:
    """One selector on the items the steps before it kept; its decisions beside the earlier ones."""
    import polars as pl

    from curation import schema
    from curation.select import build_selectors
    from curation.selectors.base import SelectionContext

    t = time.perf_counter()
    pool = pl.read_parquet(work / "pool.parquet")
    earlier = pl.read_parquet(work / f"decisions_{after}.parquet") if after else schema.empty("decisions")
    dropped = earlier.filter(~pl.col("kept"))["target_id"]
    pool = pool.filter(~pl.col("pair_id").is_in(dropped.implode()))
    scores = pl.read_parquet(work / "scores.parquet")
    embedder = _embedder(work)
    context = SelectionContext(id_column="pair_id", scores=scores, embed=embedder.embed, stage=f"select:{step}")
    read_s = time.perf_counter() - t
    t, cpu = time.perf_counter(), time.process_time()
    decided = build_selectors([config])[0].select(pool, context)
    out = {"select_s": round(time.perf_counter() - t, 2), "select_cpu_s": round(time.process_time() - cpu, 2),
           "read_inputs_s": round(read_s, 2), "items_in": pool.height, "kept": int(decided["kept"].sum()),
           "embed_hits": embedder.stats.hits, "embed_model_calls": embedder.stats.model_calls}
    pl.concat([earlier, schema.conform(decided, "decisions")]).write_parquet(work / f"decisions_{step}.parquet")
    return out


def _fifa_recall(work: Path, n: int) -> dict:
    """FiFA's approximate k-th neighbour search against exact search.

    On a 100k sample of the distinct prompt vectors FiFA sees: recall of the k nearest for 2,000
    queries (exact = flat search over the sample), the k-th distance ratio (approximate / exact,
    >= 1: a missed neighbour can only lengthen it) and the correlation of log distances (what
    FiFA's diversity term uses). At full size, when the fifa stage finished: the k-th distances it
    recorded for 500 prompts against exact search over all distinct prompts.
    """
    import faiss
    import numpy as np
    import polars as pl

    from curation.selectors._inputs import l2_normalize
    from curation.selectors.dedup import prompt_text_column
    from curation.selectors.fifa import FiFA, nearest

    cfg = FiFA.Config(kind="fifa")
    kept = pl.read_parquet(work / "decisions_dedup.parquet").filter(pl.col("kept"))["target_id"]
    pool = pl.read_parquet(work / "pool.parquet", columns=["pair_id", "prompt"]).filter(pl.col("pair_id").is_in(kept.implode()))
    items = pool.select("pair_id", prompt_text_column(pool).alias("text")).unique("text", keep="first", maintain_order=True)
    del pool
    embedder = _embedder(work)
    rng = np.random.default_rng(0)

    def exact(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        flat = faiss.IndexFlatL2(base.shape[1])
        flat.add(base)
        return flat.search(queries, k)

    def kth_without_self(dist: np.ndarray, ids: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, list[set]]:
        kth, found = [], []
        for d, i, r in zip(dist, ids, rows):
            keep = i != r
            kth.append(np.sqrt(max(float(d[keep][k - 1]), 0.0)))
            found.append(set(i[keep][:k].tolist()))
        return np.array(kth), found

    k = cfg.k
    picked = np.sort(rng.choice(items.height, size=min(RECALL_SAMPLE, items.height), replace=False))
    sample = l2_normalize(embedder.embed(items["text"].gather(picked).to_list()))
    queries = np.sort(rng.choice(len(sample), size=min(RECALL_QUERIES, len(sample)), replace=False))
    t = time.process_time()
    approx_d, approx_i = nearest(sample, k, index="ivf", nprobe=cfg.nprobe, seed=cfg.seed)
    approx_s = time.process_time() - t
    true_kth, true_sets = kth_without_self(*exact(sample, sample[queries], k + 1), queries, k)
    got_kth, got_sets = kth_without_self(approx_d[queries], approx_i[queries], queries, k)
    ratio = got_kth / np.maximum(true_kth, 1e-12)
    out = {"sample": {"items": len(sample), "queries": len(queries), "k": k, "nprobe": cfg.nprobe,
                      "lists": int(round(np.sqrt(len(sample)))), "approx_cpu_s": round(approx_s, 1),
                      "recall_at_k": round(float(np.mean([len(a & b) / k for a, b in zip(got_sets, true_sets)])), 4),
                      "kth_distance_ratio_mean": round(float(ratio.mean()), 4),
                      "kth_distance_ratio_p95": round(float(np.quantile(ratio, 0.95)), 4),
                      "log_kth_distance_correlation": round(float(np.corrcoef(np.log(got_kth), np.log(true_kth))[0, 1]), 4)}}
    if not (work / "decisions_fifa.parquet").exists():
        out["full"] = "not measured: the fifa stage did not finish"
        return out
    x = l2_normalize(embedder.embed(items["text"].to_list()))
    fifa = pl.read_parquet(work / "decisions_fifa.parquet").filter(pl.col("stage") == "select:fifa")
    recorded = fifa.select("target_id", pl.col("detail").str.json_path_match("$.log_knn_distance").cast(pl.Float64).alias("log_d"))
    rows = np.sort(rng.choice(len(x), size=min(RECALL_FULL_QUERIES, len(x)), replace=False))
    full_kth, _ = kth_without_self(*exact(x, x[rows], k + 1), rows, k)
    logged = items[rows].select("pair_id").join(recorded, left_on="pair_id", right_on="target_id", how="left",
                                                 maintain_order="left")["log_d"].to_numpy()
    full_ratio = (np.exp(logged) - cfg.epsilon) / np.maximum(full_kth, 1e-12)
    out["full"] = {"items": len(x), "queries": len(rows), "kth_distance_ratio_mean": round(float(full_ratio.mean()), 4),
                   "kth_distance_ratio_p95": round(float(np.quantile(full_ratio, 0.95)), 4),
                   "exact_share": round(float(np.mean(full_ratio < 1 + 1e-4)), 4),
                   "log_kth_distance_correlation": round(float(np.corrcoef(logged, np.log(full_kth + cfg.epsilon))[0, 1]), 4)}
    return out


def _publish(work: Path, n: int) -> dict:
    import polars as pl

    from curation.catalog import open_catalog

    tables = {t: pl.scan_parquet(work / f"{t}.parquet") for t in ("prompts", "candidates", "scores", "pairs")}
    tables["decisions"] = pl.scan_parquet(work / "decisions_kmq.parquet")
    info = open_catalog(work / "catalog").publish("recipe", tables, test_fraction=0.05, seed=1)
    return {"rows": info.rows, "counts": info.counts, "fingerprint": info.fingerprint,
            "pairs_parquet_bytes": sum(p.stat().st_size for p in info.files("pairs"))}


def _load(work: Path, n: int) -> dict:
    from curation.catalog import open_catalog

    return {"rows": open_catalog(work / "catalog").load("recipe").height}


def _stage(name: str, work: str, n: int, q) -> None:
    os.environ["CURATE_EMBED_CACHE"] = str(Path(work) / "embeddings")
    t, cpu = time.perf_counter(), time.process_time()
    w = Path(work)
    if name == "dedup":
        out = _select(w, "dedup", None, {"kind": "dedup", "method": "exact"})
    elif name == "noise":
        out = _select(w, "noise", "dedup", {"kind": "noise"})
    elif name in ("kmq", "fifa"):  # after noise, or after dedup when noise was not run at this size
        after = "noise" if (w / "decisions_noise.parquet").exists() else "dedup"
        out = {"after": after, **_select(w, name, after, {"kind": name, "fraction": 0.5})}
    else:
        out = {"make": _make, "score": _score, "pairs": _pairs, "pool": _pool, "fifa_recall": _fifa_recall,
               "publish": _publish, "load": _load}[name](w, n)
    q.put({"wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - cpu, 2),
           "peak_rss_mb": round(_rss_mb(), 1), **out})


def _run(name: str, work: Path, n: int, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_stage, args=(name, str(work), n, q))
    started = time.perf_counter()
    p.start()
    while True:
        try:
            res = q.get(timeout=2)
            break
        except queue.Empty:
            if not p.is_alive():
                return {"status": f"failed (exit code {p.exitcode})"}
            if time.perf_counter() - started > timeout:
                p.terminate()
                p.join()
                return {"status": "timed_out", "after_s": round(time.perf_counter() - started, 1)}
    p.join()
    return {"status": "ok", **res}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=1_000_000)
    ap.add_argument("--stage-timeout", type=float, default=1800)
    ap.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES)
    ap.add_argument("--work", help="keep the artifacts here (default: a temporary folder, removed)")
    ap.add_argument("--out", help="the result file (default: benchmarks/results/recipe_<prompts>.json)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="curate-bench-recipe-"))
    work.mkdir(parents=True, exist_ok=True)
    embed_s = args.prompts / MINILM_TEXTS_PER_S
    result: dict = {
        "benchmark": f"{args.prompts:,} synthetic prompts through make, score, pairs, pool, dedup, noise, kMQ/FiFA, publish",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_at_start": os.getloadavg()},
        "embed_budget_s": round(embed_s, 1),
        "embed_budget_note": f"MiniLM at ~{MINILM_TEXTS_PER_S} texts/s: the time to embed the prompts once",
        "targets": {"publish_s": 15, "publish_peak_rss_mb": 1024, "load_s": 3, "selector_s": round(embed_s, 1)},
        "stages": {},
    }
    out = Path(args.out) if args.out else RESULTS / f"recipe_{args.prompts}.json"
    try:
        for name in args.stages:
            need = NEEDS.get(name)
            if need in result["stages"] and result["stages"][need]["status"] != "ok":
                result["stages"][name] = {"status": f"skipped ({need} did not finish)"}
                continue
            print(f"{name} ...", flush=True)
            result["stages"][name] = _run(name, work, args.prompts, args.stage_timeout)
            print(name, json.dumps(result["stages"][name]), flush=True)
            result["machine"]["load_average_at_end"] = os.getloadavg()
            out.write_text(json.dumps(result, indent=2) + "\n")
        for sel in ("dedup", "noise", "kmq", "fifa"):
            s = result["stages"].get(sel, {})
            if s.get("status") == "ok":
                s["within_embed_budget"] = s["select_s"] <= embed_s
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
