"""What the catalog's integrity checks cost: verified loads, file digests at publish, `curate doctor`,
and the check every write makes for version folders the database does not list.

    python -m benchmarks.integrity [--pairs 200000] [--versions 200] [--repeats 5]

Loads are compared with the plain Parquet read they wrap (what `Catalog.load` did before it
verified); each figure is the median of `--repeats` interleaved runs. Results:
benchmarks/results/integrity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "integrity.json"


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--versions", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import polars as pl

    from benchmarks.catalog import synthetic_tables
    from curation.catalog import Catalog, file_digest
    from curation.doctor import doctor

    out: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                             "loadavg_at_start": os.getloadavg()}, "pairs": args.pairs, "versions": args.versions,
                 "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        cat = Catalog(Path(tmp) / "big")
        tables = synthetic_tables(args.pairs)
        t = time.perf_counter()
        info = cat.publish("big", tables)
        publish_s = time.perf_counter() - t
        files = sorted(info.path.rglob("*.parquet"))
        digest_s = _median_s(lambda: [file_digest(p) for p in files], args.repeats)
        pairs = info.files("pairs")
        raw, checked, full = [], [], []
        for _ in range(args.repeats):  # interleaved, so drifting load on the machine hits all three alike
            t = time.perf_counter()
            pl.read_parquet(pairs)
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            cat.load(info.ref)
            checked.append(time.perf_counter() - t)
            t = time.perf_counter()
            cat.verify_version(info.ref)
            full.append(time.perf_counter() - t)
        resolve_s = _median_s(lambda: cat.resolve(info.ref), args.repeats)
        out["big_version"] = {
            "rows": info.rows,
            "version_bytes": sum(p.stat().st_size for p in info.path.iterdir()),
            "publish_s": publish_s,
            "digests_at_publish_s": digest_s,
            "read_parquet_s": statistics.median(raw),
            "resolve_s": resolve_s,
            "load_verified_s": statistics.median(checked),
            "cheap_check_overhead_s": statistics.median(checked) - statistics.median(raw) - resolve_s,
            "verify_version_full_s": statistics.median(full),
            "doctor_full_s": _median_s(lambda: doctor(cat.root), 1),
            "doctor_quick_s": _median_s(lambda: doctor(cat.root, full=False), 1),
        }

        many = Catalog(Path(tmp) / "many")
        small = synthetic_tables(20)
        each = []
        for i in range(args.versions):
            t = time.perf_counter()
            many.publish(f"ds{i % 20}", small)
            each.append(time.perf_counter() - t)
        check_s = []
        for _ in range(args.repeats):
            con = many._connect(read_only=True)
            t = time.perf_counter()
            many.unlisted_versions(con)
            check_s.append(time.perf_counter() - t)
            con.close()
        out["many_versions"] = {
            "datasets": 20,
            "publish_median_ms": 1000 * statistics.median(each),
            "write_check_ms": 1000 * statistics.median(check_s),
            "doctor_full_s": _median_s(lambda: doctor(many.root), 1),
        }
    out["machine"]["loadavg_at_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
