"""How long read_source takes on the shared corpus, next to the bare cost of decompressing and parsing.

    python benchmarks/sources_read.py   ->  benchmarks/results/sources_read.json

For each pair file: best-of-3 wall time of read_source (detection, validation, ids, dedup,
frames) and of `gzip + json.loads` per line, measured side by side in one run; the ratio says
what the import adds on top of parsing. The first read_source call of the process is reported
apart (it pays one-off imports).
"""

from __future__ import annotations

import gzip
import json
import platform
import time
from pathlib import Path

from curation.sources import read_source

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results" / "sources_read.json"
FILES = [
    "alpaca_eval2_gpt4turbo_pairs.jsonl.gz",
    "alpaca_eval1_gpt4_pairs.jsonl.gz",
    "gsm8k_solution_pairs.jsonl.gz",
    "hh_rlhf_test.jsonl.gz",
    "llmbar.jsonl.gz",
    "pandalm_testset.jsonl.gz",
]


def best_of(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def parse_only(path: Path) -> int:
    with gzip.open(path, "rb") as f:
        return sum(1 for line in f if json.loads(line))


def main() -> None:
    t = time.perf_counter()
    read_source(DATA / FILES[-1])
    first_call = time.perf_counter() - t
    results = []
    for name in FILES:
        path = DATA / name
        data = read_source(path)
        t_read = best_of(lambda: read_source(path))
        t_parse = best_of(lambda: parse_only(path))
        results.append(
            {
                "file": name,
                "mb": round(path.stat().st_size / 1e6, 2),
                "rows": data.rows_read,
                "counts": data.counts,
                "read_source_s": round(t_read, 3),
                "parse_only_s": round(t_parse, 3),
                "ratio": round(t_read / t_parse, 2),
                "rows_per_s": round(data.rows_read / t_read),
            }
        )
        print(f"{name}: read_source {t_read:.2f}s, parse only {t_parse:.2f}s (x{t_read / t_parse:.1f})")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"machine": platform.machine(), "python": platform.python_version(), "first_call_s": round(first_call, 3), "files": results},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
