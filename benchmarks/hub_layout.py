"""Publish a real slice (hh-rlhf test + AlpacaEval-2 pairs) and load it back the ways a user would.

Times `Catalog.publish` (files, card, plots, catalog transaction), `Catalog.load`, and, where the
version folder is a Hub-style dataset, `datasets.load_dataset(version_dir)` with its split sizes.
Each source is published `--repeats` times; the median and the spread are reported.

    python -m benchmarks.hub_layout [--repeats 3] [--label after]
    python -m benchmarks.hub_layout --synthetic 200000 --label after   # benchmarks.catalog's pairs: time, peak RSS

Results: benchmarks/results/hub_layout.json (one entry per --label).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "hub_layout.json"
SHARED = Path(os.environ.get("CURATE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
SOURCES = ("hh_rlhf_test.jsonl.gz", "alpaca_eval2_gpt4turbo_pairs.jsonl.gz")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--label", default="after")
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--synthetic", type=int, default=0, help="publish this many synthetic pairs instead")
    args = ap.parse_args()
    if args.synthetic:
        return synthetic(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from curation.catalog import Catalog
    from curation.sources import read_source

    out: dict = {"label": args.label, "test_fraction": args.test_fraction, "repeats": args.repeats, "sources": {}}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_HOME"] = str(Path(tmp) / "hf")
        cat = Catalog(Path(tmp) / "cat")
        for name in SOURCES:
            data = read_source(str(SHARED / name))
            tables = {"prompts": data.prompts, "candidates": data.candidates, "pairs": data.pairs,
                      "scores": data.scores, "quarantine": data.quarantine}
            times, info = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                info = cat.publish(name.split(".")[0], tables, recipe={"import": {"path": str(SHARED / name)}},
                                   test_fraction=args.test_fraction, seed=0)
                times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rows = cat.load(info)
            load_s = time.perf_counter() - t0
            entry = {"rows": info.rows, "publish_s": {"median": statistics.median(times), "min": min(times), "max": max(times)},
                     "load_s": load_s, "splits": rows["split"].value_counts().sort("split").rows(),
                     "files": sorted(str(p.relative_to(info.path)) for p in info.path.rglob("*") if p.is_file())}
            import datasets

            # a Hub-style folder loads as it is; an older one only as "parquet" with its folder
            args_ = (str(info.path),) if (info.path / "README.md").is_file() else ("parquet",)
            kwargs = {} if (info.path / "README.md").is_file() else {"data_files": str(info.path / "pairs.parquet")}
            t0 = time.perf_counter()
            try:
                ds = datasets.load_dataset(*args_, **kwargs)
                entry["load_dataset_splits"] = {k: v.num_rows for k, v in ds.items()}
            except Exception as exc:  # noqa: BLE001 - recorded, it is the finding
                entry["load_dataset_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            entry["load_dataset_s"] = time.perf_counter() - t0
            entry["load_dataset_call"] = f"load_dataset({', '.join(map(repr, args_))}{', data_files=<pairs.parquet>' if kwargs else ''})"
            out["sources"][name] = entry
            print(name, json.dumps(entry, default=str))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.label] = out
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")


def synthetic(args: argparse.Namespace) -> None:
    """Publish, load and fully verify benchmarks.catalog's synthetic pairs; peak RSS of this process."""
    import resource

    from benchmarks.catalog import synthetic_tables
    from curation.catalog import Catalog

    tables = synthetic_tables(args.synthetic)
    with tempfile.TemporaryDirectory() as tmp:
        cat = Catalog(Path(tmp) / "cat")
        cat.publish("warm", synthetic_tables(100))  # imports and first plots out of the timing
        times, first_rss = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            info = cat.publish("big", tables, test_fraction=args.test_fraction)
            times.append(time.perf_counter() - t0)
            first_rss = first_rss or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        cat.load(info.ref)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cat.verify_version(info.ref)
        verify_s = time.perf_counter() - t0
    entry = {"pairs": args.synthetic, "publish_s": {"median": statistics.median(times), "min": min(times), "max": max(times)},
             "load_s": load_s, "verify_s": verify_s, "peak_rss_mb_first_publish": first_rss,
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # allocators keep freed memory
             "loadavg": os.getloadavg()}
    print(json.dumps(entry))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"{args.label}-synthetic"] = entry
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
