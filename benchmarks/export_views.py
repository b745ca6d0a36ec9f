"""Every export view of the real hh-rlhf (test) and AlpacaEval-2 pair sets: rows written, rows
skipped by reason, the KTO balance, and the time each view takes (median of `--repeats`).

    python -m benchmarks.export_views [--repeats 3]

Results: benchmarks/results/export_views.json. The "before" entry records what the exports did
before rows were quarantined (commit ceae42b), measured once by hand; it is kept for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "export_views.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {"hh_rlhf_test": "hh_rlhf_test.jsonl.gz", "alpaca_eval2": "alpaca_eval2_gpt4turbo_pairs.jsonl.gz"}
BEFORE = {  # ceae42b: ExportError for trl_dpo_text on both sets; flagged hh rows exported
    "hh_rlhf_test": {"trl_dpo": 2308, "trl_dpo_text": "ExportError: row 341, field `chosen`: repeats the prompt (2 rows)",
                     "trl_reward": 2308, "trl_kto": 4616, "openrlhf": 2308},
    "alpaca_eval2": {"trl_dpo": 7978, "trl_dpo_text": "ExportError: row 1951, field `chosen`: repeats the prompt (1 rows)",
                     "trl_reward": 7978, "trl_kto": "8109 (2060 desirable / 6049 undesirable, no weight suggested)",
                     "openrlhf": 7978},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from curation.export import CANONICAL_FORMATS, PREFERENCE_FORMATS, export_rows
    from curation.rows import version_rows
    from curation.sources import read_source

    result: dict = {"repeats": args.repeats, "before": BEFORE, "after": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, file in SOURCES.items():
            data = read_source(SHARED / file)
            rows, _ = version_rows({"prompts": data.prompts, "candidates": data.candidates, "pairs": data.pairs})
            views = {}
            for fmt in PREFERENCE_FORMATS + CANONICAL_FORMATS:
                seconds = []
                for i in range(args.repeats):
                    started = time.perf_counter()
                    report = export_rows(rows, fmt, Path(tmp) / f"{name}-{fmt}-{i}")
                    seconds.append(time.perf_counter() - started)
                views[fmt] = {"written": report.written, "skipped": report.skipped, "seconds_median": statistics.median(seconds),
                              "seconds_range": [min(seconds), max(seconds)]}
                if report.kto_balance:
                    views[fmt]["kto_balance"] = report.kto_balance
                print(name, fmt, views[fmt], flush=True)
            result["after"][name] = {"rows": rows.height, "views": views}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
