"""Benchmark: publishing 1M pairs today, against the first build's figures (44-71 s, 2.1 GB peak).

The synthetic tables of benchmarks/catalog.py (1M pairs over 500k prompts, two candidates and
an rm score each) are built in a fresh process for each step, so each peak resident memory
(ru_maxrss) is that step's own:
  - tables: only the input tables (the floor any publish of them starts from);
  - rows: the tables and `version_rows` (the published rows, split assigned);
  - publish: the tables and `Catalog.publish` (rows, Parquet files, digests, the database).
`--repeats` publish runs (each into a fresh catalog) give a median.

Usage:  python benchmarks/publish_1m.py [--pairs 1000000] [--repeats 2]
Writes benchmarks/results/publish_1m.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from catalog import _rss_mb, _run, synthetic_tables  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "publish_1m.json"
BEFORE = {"publish_s": "44-71", "peak_rss_mb": 2139, "source": "benchmarks/results/catalog.json (first build)"}


def _tables(n_pairs: int, q) -> None:
    t = time.perf_counter()
    synthetic_tables(n_pairs)
    q.put({"build_tables_s": round(time.perf_counter() - t, 2), "peak_rss_mb": round(_rss_mb(), 1)})


def _rows(n_pairs: int, q) -> None:
    from curation.rows import version_rows

    tables = synthetic_tables(n_pairs)
    t = time.perf_counter()
    rows, _ = version_rows(tables, test_fraction=0.05, seed=1)
    q.put({"version_rows_s": round(time.perf_counter() - t, 2), "rows": rows.height, "peak_rss_mb": round(_rss_mb(), 1)})


def _publish(root: str, n_pairs: int, q) -> None:
    from curation.catalog import open_catalog

    tables = synthetic_tables(n_pairs)
    t = time.perf_counter()
    info = open_catalog(root).publish("big", tables, test_fraction=0.05, seed=1)
    q.put({"publish_s": round(time.perf_counter() - t, 2), "rows": info.rows, "peak_rss_mb": round(_rss_mb(), 1)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="curate-bench-publish-"))
    try:
        result: dict = {
            "benchmark": f"publish {args.pairs:,} synthetic pairs (benchmarks/catalog.py tables)",
            "before": BEFORE,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_at_start": os.getloadavg()},
            "tables_only": _run(_tables, args.pairs),
            "version_rows": _run(_rows, args.pairs),
        }
        runs = [_run(_publish, str(work / f"catalog{i}"), args.pairs) for i in range(args.repeats)]
        result["publish_runs"] = runs
        result["publish_s_median"] = statistics.median(r["publish_s"] for r in runs)
        result["publish_peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in runs)
        result["target"] = {"publish_s": 15, "peak_rss_mb": 1024}
        result["machine"]["load_average_at_end"] = os.getloadavg()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
