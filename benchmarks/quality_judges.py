"""Scorers checked against human labels (LLMBar, PandaLM) as `curate check-scorer` does, with intervals.

Not a test: writes benchmarks/results/quality_judges.json. The scorers: the length heuristic
(the baseline every judge must beat) and reward models folders given with --reward-model (e.g.
ones `benchmarks.quality` trained; the newest of them by default).

    python -m benchmarks.quality_judges [--reward-model DIR ...] [--limit 400]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from curation.scorers.fitness import check_scorer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "quality_judges.json"
RUNS = ROOT / ".curate" / "benchmarks" / "runs"
SLICES = [
    ("llmbar.jsonl.gz", {}),
    ("llmbar.jsonl.gz", {"subset": "LLMBar/Natural"}),
    ("llmbar.jsonl.gz", {"subset": "LLMBar/Adversarial/Neighbor"}),
    ("pandalm_testset.jsonl.gz", {}),
]
log = logging.getLogger("quality_judges")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reward-model", type=Path, nargs="*", default=None)
    p.add_argument("--limit", type=int, default=None, help="pairs per slice")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    models = args.reward_model
    if models is None:
        trained = sorted(RUNS.glob("*/config.json"), key=lambda f: f.stat().st_mtime)
        models = [trained[-1].parent] if trained else []
    scorers = [{"name": "length", "kind": "heuristic", "unit": "chars"}] + [
        {"name": m.name, "kind": "reward_model", "model": str(m), "batch_size": 32, "max_length": 256} for m in models
    ]
    results = []
    for scorer in scorers:
        for file, where in SLICES:
            t0 = time.perf_counter()
            report = check_scorer(scorer, DATA / file, where=where, limit=args.limit).to_dict()
            results.append(report)
            log.info("%s on %s %s: agreement %.3f %s (length %.3f), %d pairs, %.0f s", scorer["name"], file, where,
                     report["agreement"], report["agreement_ci"], report["longer_is_better"], report["scored"], time.perf_counter() - t0)
    OUT.write_text(json.dumps({"scorers": scorers, "results": results}, indent=1))
    for r in results:
        where = ",".join(r["where"].values()) or "all"
        lo, hi = r["agreement_ci"]
        print(f"| {r['scorer']} | {Path(r['source']).name} {where} | {r['scored']} | {r['agreement']:.3f} ({lo:.3f}-{hi:.3f}) "
              f"| {r['longer_is_better']:.3f} | {r['length_correlation']:.2f} |")


if __name__ == "__main__":
    main()
