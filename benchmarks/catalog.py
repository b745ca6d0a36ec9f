"""Catalog benchmark: publish and load 1M synthetic pairs; `curate ls` / `curate show` on 1,000 versions.

Each step runs in its own process so its peak resident memory (ru_maxrss) is its own; Python-level
allocations are also traced (tracemalloc) where they matter. Results: benchmarks/results/catalog.json.

    python -m benchmarks.catalog [--pairs 1000000] [--versions 1000] [--keep DIR]

"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "catalog.json"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def synthetic_tables(n_pairs: int, prompts_per_pair: float = 0.5):
    """n_pairs pairs over n_pairs * prompts_per_pair prompts, two candidates per pair, rm scores."""
    import numpy as np
    import polars as pl

    from curation import schema

    n_prompts = max(1, int(n_pairs * prompts_per_pair))
    rng = np.random.default_rng(0)
    pidx = np.arange(n_prompts)
    prompt_ids = pl.Series("prompt_id", pidx).cast(pl.String).str.zfill(16)
    question = "Question number " + pl.col("prompt_id") + " about something"
    prompts = pl.DataFrame({"prompt_id": prompt_ids}).with_columns(
        pl.concat_list(pl.struct(pl.lit("user").alias("role"), question.alias("content"))).alias("messages"),
        pl.lit("synthetic").alias("source"),
    )
    k = np.arange(n_pairs)
    pair_prompt = prompt_ids.gather(k % n_prompts)
    chosen_ids = ("c" + pl.Series(k).cast(pl.String).str.zfill(15)).alias("candidate_id")
    rejected_ids = ("r" + pl.Series(k).cast(pl.String).str.zfill(15)).alias("candidate_id")
    lengths = rng.integers(20, 400, size=2 * n_pairs)
    filler = "lorem ipsum dolor sit amet " * 16
    texts = pl.Series("text", [filler[: int(n)] for n in lengths])
    candidates = pl.DataFrame(
        {
            "candidate_id": pl.concat([chosen_ids, rejected_ids]),
            "prompt_id": pl.concat([pair_prompt, pair_prompt]),
            "text": texts,
            "generator": ["synthetic"] * (2 * n_pairs),
        }
    )
    chosen_v, rejected_v = rng.normal(1.0, 1.0, n_pairs), rng.normal(0.0, 1.0, n_pairs)
    scores = pl.DataFrame(
        {
            "target_id": pl.concat([chosen_ids, rejected_ids]),
            "scorer": ["rm"] * (2 * n_pairs),
            "value": np.concatenate([chosen_v, rejected_v]),
        }
    )
    pairs = pl.DataFrame(
        {
            "pair_id": ("p" + pl.Series(k).cast(pl.String).str.zfill(15)),
            "prompt_id": pair_prompt,
            "chosen_id": chosen_ids,
            "rejected_id": rejected_ids,
            "score": ["rm"] * n_pairs,
            "builder": ["best_worst"] * n_pairs,
            "label_source": ["rm"] * n_pairs,
        }
    )
    return {t: schema.conform(df, t) for t, df in {"prompts": prompts, "candidates": candidates, "scores": scores, "pairs": pairs}.items()}


def _step_publish_big(root: str, n_pairs: int, q: mp.Queue) -> None:
    from curation.catalog import open_catalog

    t0 = time.perf_counter()
    tables = synthetic_tables(n_pairs)
    t1 = time.perf_counter()
    info = open_catalog(root).publish("big", tables, test_fraction=0.05, seed=1)
    t2 = time.perf_counter()
    size = sum(p.stat().st_size for p in info.path.iterdir())
    q.put({"build_tables_s": t1 - t0, "publish_s": t2 - t1, "rows": info.rows, "version_bytes": size,
           "pairs_parquet_bytes": sum(p.stat().st_size for p in info.files()), "peak_rss_mb": _rss_mb()})


def _step_load_big(root: str, out: str, q: mp.Queue) -> None:
    import tracemalloc

    from curation.catalog import open_catalog

    cat = open_catalog(root)
    res = {}
    tracemalloc.start()
    t = time.perf_counter()
    df = cat.load("big")
    res["load_polars_s"] = time.perf_counter() - t
    res["load_polars_rows"] = df.height
    res["load_polars_python_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    del df
    t = time.perf_counter()
    ds = cat.load("big:train", as_="hf")
    res["load_hf_train_s"] = time.perf_counter() - t
    res["load_hf_train_rows"] = len(ds)
    del ds
    t = time.perf_counter()
    cat.load("big", as_="duckdb").aggregate("count(*), avg(margin)").fetchall()
    res["duckdb_count_avg_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cat.sql("SELECT dataset, version, split, count(*) AS n, avg(margin) AS m FROM pairs GROUP BY ALL")
    res["sql_groupby_s"] = time.perf_counter() - t
    t = time.perf_counter()
    from curation.export import export_version

    rep = export_version(cat, "big", "trl_dpo", out)
    res["export_trl_dpo_s"] = time.perf_counter() - t
    res["export_trl_dpo_written"] = rep.written
    res["peak_rss_mb"] = _rss_mb()
    q.put(res)


def _step_many_versions(root: str, n_versions: int, q: mp.Queue) -> None:
    from curation.catalog import open_catalog

    cat = open_catalog(root)
    tables = synthetic_tables(10)
    t = time.perf_counter()
    for i in range(n_versions):
        cat.publish(f"ds{i % 10}", tables)
    elapsed = time.perf_counter() - t
    t = time.perf_counter()
    n = cat.sql("SELECT count(*) AS n FROM pairs")["n"][0]
    sql_s = time.perf_counter() - t
    q.put({"publish_total_s": elapsed, "publish_each_ms": 1000 * elapsed / n_versions, "sql_count_all_versions_s": sql_s,
           "sql_rows": int(n), "peak_rss_mb": _rss_mb()})


def _run(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    if p.exitcode:
        raise RuntimeError(f"{target.__name__} failed with exit code {p.exitcode}")
    return res


def _time_cli(args: list[str], repeats: int = 3) -> dict:
    """Wall time and peak RSS of `curate ...` as a user runs it (a fresh process each time)."""
    walls, rss = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "curation", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t)
        rss.append(usage.ru_maxrss / 1024)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"curate {' '.join(args)} failed: {proc.stderr.read().decode()}")
    return {"wall_s_min": min(walls), "wall_s_median": sorted(walls)[len(walls) // 2], "peak_rss_mb": max(rss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--keep", help="Keep the catalogs in this folder")
    a = ap.parse_args()
    work = Path(a.keep or tempfile.mkdtemp(prefix="curate-bench-catalog-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_start": os.getloadavg()},
        "pairs": a.pairs,
        "versions": a.versions,
    }
    try:
        print(f"publishing {a.pairs} pairs …", flush=True)
        result["publish_1m"] = _run(_step_publish_big, str(work / "big"), a.pairs)
        print(result["publish_1m"], flush=True)
        print("loading …", flush=True)
        result["load_1m"] = _run(_step_load_big, str(work / "big"), str(work / "export-dpo"))
        print(result["load_1m"], flush=True)
        print(f"publishing {a.versions} small versions …", flush=True)
        result["many_versions"] = _run(_step_many_versions, str(work / "many"), a.versions)
        print(result["many_versions"], flush=True)
        cat = str(work / "many")
        result["cli_ls_json"] = _time_cli(["ls", "--catalog", cat, "--json"])
        result["cli_ls_table"] = _time_cli(["ls", "--catalog", cat])
        result["cli_show"] = _time_cli(["show", f"ds5@v{a.versions // 20}", "--sample", "3", "--catalog", cat])
        result["cli_show_1m"] = _time_cli(["show", "big", "--catalog", str(work / "big")], repeats=1)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import curation.catalog, curation.export, curation.report"], check=True)
        result["import_modules_s_incl_python_start"] = time.perf_counter() - t
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["machine"]["loadavg_at_end"] = os.getloadavg()  # other processes share the cores: read timings with it
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
