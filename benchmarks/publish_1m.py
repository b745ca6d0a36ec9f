"""Benchmark: publishing 1M pairs, against the first build's figures (44-71 s, 2.1 GB peak) and the
in-memory publish of 061a51b (30.9 s, 2.1 GB on a loaded machine).

The synthetic tables of benchmarks/catalog.py (1M pairs over 500k prompts, two candidates and
an rm score each) are written once as Parquet files, the way a run's stages leave them. Each
step runs in a fresh process, so each peak resident memory (ru_maxrss) is that step's own:
  - tables: only the input tables in memory (the floor of an in-memory publish);
  - rows: the tables and `version_rows` (all published rows in one frame, split assigned);
  - publish_memory: `Catalog.publish` of in-memory tables (what callers passing frames get);
  - publish_scan: `Catalog.publish` of lazy scans of the Parquet files (what a run's publish
    stage does): rows are planned from the columns they need and streamed into pairs.parquet;
  - load: `Catalog.load` of the published version (polars), verified against its manifest.
Wall seconds depend on the machine's load (it is shared): CPU seconds are given beside them.

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
BEFORE = {
    "first_build": {"publish_s": "44-71", "peak_rss_mb": 2139, "source": "benchmarks/results/catalog.json"},
    "061a51b": {"publish_s_median": 30.89, "peak_rss_mb": 2103, "version_rows_s": 21.34,
                "load_average": "13-19", "source": "benchmarks/results/publish_1m.json at 061a51b"},
}
TABLES = ("prompts", "candidates", "scores", "pairs")


class _Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self, prefix: str) -> dict:
        return {f"{prefix}_s": round(time.perf_counter() - self.wall, 2), f"{prefix}_cpu_s": round(time.process_time() - self.cpu, 2)}


def _write_inputs(folder: str, n_pairs: int, q) -> None:
    for name, df in synthetic_tables(n_pairs).items():
        df.write_parquet(Path(folder) / f"{name}.parquet", compression="zstd")
    q.put({"bytes": {n: (Path(folder) / f"{n}.parquet").stat().st_size for n in TABLES}})


def _tables(folder: str, q) -> None:
    import polars as pl

    clock = _Clock()
    {n: pl.read_parquet(Path(folder) / f"{n}.parquet") for n in TABLES}
    q.put({**clock.read("read_tables"), "peak_rss_mb": round(_rss_mb(), 1)})


def _rows(folder: str, q) -> None:
    import polars as pl

    from curation.rows import version_rows

    tables = {n: pl.read_parquet(Path(folder) / f"{n}.parquet") for n in TABLES}
    clock = _Clock()
    rows, _ = version_rows(tables, test_fraction=0.05, seed=1)
    q.put({**clock.read("version_rows"), "rows": rows.height, "peak_rss_mb": round(_rss_mb(), 1)})


def _publish(folder: str, root: str, lazy: bool, q) -> None:
    import polars as pl

    from curation.catalog import open_catalog

    read = pl.scan_parquet if lazy else pl.read_parquet
    tables = {n: read(Path(folder) / f"{n}.parquet") for n in TABLES}
    clock = _Clock()
    info = open_catalog(root).publish("big", tables, test_fraction=0.05, seed=1)
    q.put({**clock.read("publish"), "rows": info.rows, "fingerprint": info.fingerprint, "peak_rss_mb": round(_rss_mb(), 1)})


def _load(root: str, q) -> None:
    from curation.catalog import open_catalog

    clock = _Clock()
    df = open_catalog(root).load("big")
    q.put({**clock.read("load"), "rows": df.height, "peak_rss_mb": round(_rss_mb(), 1)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="curate-bench-publish-"))
    try:
        inputs = work / "inputs"
        inputs.mkdir()
        result: dict = {
            "benchmark": f"publish {args.pairs:,} synthetic pairs (benchmarks/catalog.py tables)",
            "before": BEFORE,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_at_start": os.getloadavg()},
            "inputs": _run(_write_inputs, str(inputs), args.pairs),
        }
        result["tables_only"] = _run(_tables, str(inputs))
        result["version_rows"] = _run(_rows, str(inputs))
        for mode, lazy in (("publish_memory", False), ("publish_scan", True)):
            runs = [_run(_publish, str(inputs), str(work / f"{mode}{i}"), lazy) for i in range(args.repeats)]
            result[mode] = {"runs": runs, "publish_s_median": statistics.median(r["publish_s"] for r in runs),
                            "publish_cpu_s_median": statistics.median(r["publish_cpu_s"] for r in runs),
                            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs)}
        fps = {r["fingerprint"] for m in ("publish_memory", "publish_scan") for r in result[m]["runs"]}
        result["same_fingerprint_every_run"] = len(fps) == 1
        result["load"] = [_run(_load, str(work / "publish_scan0")) for _ in range(args.repeats)]
        result["target"] = {"publish_s": 15, "peak_rss_mb": 1024, "load_s": 3}
        result["machine"]["load_average_at_end"] = os.getloadavg()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
