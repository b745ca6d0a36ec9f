"""Benchmark: publishing 1M pairs, against the first build's figures (44-71 s, 2.1 GB peak), the
in-memory publish of 061a51b (30.9 s, 2.1 GB on a loaded machine), and, side by side in this run,
the code of `--before` (default: the last commit before the row-number plan), its `curation/` taken
from git and run in the same steps, alternating with this tree's so both see the same machine load.

The synthetic tables of benchmarks/catalog.py (1M pairs over 500k prompts, two candidates and
an rm score each) are written once as Parquet files, the way a run's stages leave them. Each
step runs in a fresh process, so each peak resident memory (ru_maxrss) is that step's own:
  - tables: only the input tables in memory (the floor of an in-memory publish);
  - rows: the tables and `version_rows` (all published rows in one frame, split assigned);
  - publish_memory: `Catalog.publish` of in-memory tables (what callers passing frames get);
  - publish_scan: `Catalog.publish` of lazy scans of the Parquet files (what a run's publish
    stage does): rows are planned from the columns they need and streamed into pairs.parquet;
  - load: `Catalog.load` of the published version (polars), verified against its manifest;
  - publish_scan_long_texts: publish_scan with ~650-character candidate texts (2M of them, 1.3 GB:
    a run's answers), where the copy of the candidates into the version mattered;
  - small: a publish of 300 pairs (frames and scans), median of 5, so the small case keeps its time.
Wall seconds depend on the machine's load (it is shared): CPU seconds are given beside them.

Usage:  python benchmarks/publish_1m.py [--pairs 1000000] [--repeats 2] [--before REV]
Writes benchmarks/results/publish_1m.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
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
BEFORE_REV = "8c081c0"  # the last commit before the row-number plan (rows.py, catalog.py as of fb91bfc)
LONG_TEXT_CHARS = 650


def _use(tree: str | None) -> None:
    """Import `curation` from `tree` (a `--before` checkout) instead of this one: before any import of it."""
    if tree:
        sys.path.insert(0, tree)


class _Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self, prefix: str) -> dict:
        return {f"{prefix}_s": round(time.perf_counter() - self.wall, 2), f"{prefix}_cpu_s": round(time.process_time() - self.cpu, 2)}


def _write_inputs(folder: str, n_pairs: int, long_texts: bool, q) -> None:
    import numpy as np
    import polars as pl

    for name, df in synthetic_tables(n_pairs).items():
        if name == "candidates" and long_texts:  # random words (zstd cannot shrink them to nothing) + a unique tail
            rng = np.random.default_rng(1)
            words = np.array("alpha beta gamma delta eps zeta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split())
            bodies = pl.Series([" ".join(rng.choice(words, 120)) for _ in range(5000)]).str.slice(0, LONG_TEXT_CHARS - 50)
            tails = pl.Series(rng.integers(0, 10**9, df.height)).cast(pl.String).str.zfill(50)
            df = df.with_columns((bodies.gather(rng.integers(0, 5000, df.height)) + tails).alias("text"))
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


def _publish(folder: str, root: str, lazy: bool, tree: str | None, q) -> None:
    _use(tree)
    import polars as pl

    from curation.catalog import open_catalog

    read = pl.scan_parquet if lazy else pl.read_parquet
    tables = {n: read(Path(folder) / f"{n}.parquet") for n in TABLES}
    clock = _Clock()
    info = open_catalog(root).publish("big", tables, test_fraction=0.05, seed=1)
    q.put({**clock.read("publish"), "rows": info.rows, "fingerprint": info.fingerprint, "peak_rss_mb": round(_rss_mb(), 1)})


def _small(tree: str | None, q) -> None:
    """Median of 5 publishes of 300 pairs (after one to warm up), from frames and from scans."""
    _use(tree)
    import polars as pl

    from curation.catalog import open_catalog

    folder = Path(tempfile.mkdtemp(prefix="curate-bench-small-"))
    try:
        tables = synthetic_tables(300)
        scans = {}
        for name, df in tables.items():
            df.write_parquet(folder / f"{name}.parquet")
            scans[name] = pl.scan_parquet(folder / f"{name}.parquet")
        cat = open_catalog(folder / "cat")
        cat.publish("warm", tables)
        out = {}
        for label, given in (("frames", tables), ("scans", scans)):
            runs = []
            for i in range(5):
                clock = _Clock()
                cat.publish(f"{label}{i}", given, test_fraction=0.05, seed=1)
                runs.append(clock.read("publish"))
            out[label] = {k: statistics.median(r[k] for r in runs) for k in ("publish_s", "publish_cpu_s")}
        q.put(out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _side(runs: list[dict]) -> dict:
    return {"runs": runs, "publish_s_median": statistics.median(r["publish_s"] for r in runs),
            "publish_cpu_s_median": statistics.median(r["publish_cpu_s"] for r in runs),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs)}


def _before_tree(rev: str, into: Path) -> str:
    """`curation/` as of `rev`, extracted into `into`."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "curation"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into)


def _load(root: str, q) -> None:
    from curation.catalog import open_catalog

    clock = _Clock()
    df = open_catalog(root).load("big")
    q.put({**clock.read("load"), "rows": df.height, "peak_rss_mb": round(_rss_mb(), 1)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--before", default=BEFORE_REV, help="git revision whose curation/ runs beside this tree's")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="curate-bench-publish-"))
    try:
        inputs, long_inputs = work / "inputs", work / "inputs_long"
        inputs.mkdir()
        long_inputs.mkdir()
        trees = {"before": _before_tree(args.before, work / "before"), "after": None}
        result: dict = {
            "benchmark": f"publish {args.pairs:,} synthetic pairs (benchmarks/catalog.py tables)",
            "before": BEFORE,
            "side_by_side": {"before": f"curation/ at {args.before}", "after": "this tree"},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_at_start": os.getloadavg()},
            "inputs": _run(_write_inputs, str(inputs), args.pairs, False),
        }
        result["tables_only"] = _run(_tables, str(inputs))
        result["version_rows"] = _run(_rows, str(inputs))
        for mode, lazy in (("publish_scan", True), ("publish_memory", False)):
            runs: dict[str, list] = {"before": [], "after": []}
            for i in range(args.repeats):  # alternating, so both sides see the same load
                for side, tree in trees.items():
                    runs[side].append(_run(_publish, str(inputs), str(work / f"{mode}-{side}{i}"), lazy, tree))
            result[mode] = {side: _side(r) for side, r in runs.items()}
        fps = {r["fingerprint"] for m in ("publish_memory", "publish_scan") for side in trees for r in result[m][side]["runs"]}
        result["same_fingerprint_every_run"] = len(fps) == 1
        result["load"] = [_run(_load, str(work / "publish_scan-after0")) for _ in range(args.repeats)]
        for side in trees:
            shutil.rmtree(work / f"publish_memory-{side}0", ignore_errors=True)
        result["inputs_long_texts"] = _run(_write_inputs, str(long_inputs), args.pairs, True)
        result["publish_scan_long_texts"] = {side: _side([_run(_publish, str(long_inputs), str(work / f"long-{side}"), True, tree)])
                                             for side, tree in trees.items()}
        result["same_fingerprint_long_texts"] = len({r["publish_scan_long_texts"][s]["runs"][0]["fingerprint"]
                                                     for r in [result] for s in trees}) == 1
        result["small"] = {side: _run(_small, tree) for side, tree in trees.items()}
        result["summary"] = {
            mode: {side: {"cpu_s": result[mode][side]["publish_cpu_s_median"], "wall_s": result[mode][side]["publish_s_median"],
                          "peak_mb": result[mode][side]["peak_rss_mb_max"]} for side in trees}
            for mode in ("publish_scan", "publish_memory", "publish_scan_long_texts")
        }
        result["target"] = {"publish_s": 15, "peak_rss_mb": 1024, "load_s": 3}
        result["machine"]["load_average_at_end"] = os.getloadavg()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["summary"], indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
