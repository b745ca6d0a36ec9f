"""Benchmark: code verification in the OS sandbox (bubblewrap, checker + worker, token verdict)
against the previous in-interpreter sandbox (audit hook, tests appended, exit status 0 = pass).

On all 164 HumanEval problems (../shared/data), both implementations score:
  - the canonical solution (should pass: a failure is a false negative of the verifier);
  - a broken one (`return None`; should fail);
  - three reward hacks: wrong code that ends with sys.exit(0), os._exit(0), or returns an object
    whose __eq__ is always True (each should fail).
Reported: pass counts per group, the canonical failures with their reasons, and seconds per row
(median and 95th percentile, two rows at a time as the verify scorer's default runs them).
The previous implementation is read from git (`--baseline-commit`), not kept in the tree.

Usage:  python benchmarks/sandbox.py [--limit 164] [--baseline-commit 4a3614b]
Writes benchmarks/results/sandbox.json.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "sandbox.json"

HACKS = {
    "sys_exit_0": "    return None\nimport sys\nsys.exit(0)\n",
    "os_exit_0": "    return None\nimport os\nos._exit(0)\n",
    "eq_always_true": "    class Yes:\n        def __eq__(self, other):\n            return True\n    return Yes()\n",
}


def problems(limit: int) -> list[dict]:
    out = []
    with gzip.open(DATA / "humaneval_prompts.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) >= limit:
                break
    return out


def new_check(p: dict, body: str) -> tuple[bool, str, float]:
    from curation.scorers.sandbox import SandboxLimits, run_tests
    from curation.scorers.verify import build_solution

    res = run_tests(build_solution(p["prompt"], body, p["entry_point"]), p["test"], p["entry_point"],
                    stub=p["prompt"], limits=SandboxLimits(timeout_s=10))
    return res.passed, res.reason, res.seconds


def load_baseline(commit: str):
    """The previous sandbox module, as it was at `commit`."""
    source = subprocess.run(["git", "show", f"{commit}:curation/scorers/sandbox.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_sandbox.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_sandbox", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_sandbox"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def old_check(module, p: dict, body: str) -> tuple[bool, str, float]:
    from curation.scorers.verify import build_solution

    program = build_solution(p["prompt"], body, p["entry_point"]) + f"\n\n{p['test']}\n\ncheck({p['entry_point']})\n"
    res = module.run_python(program, module.SandboxLimits(timeout_s=10))
    return res.passed, res.status, res.seconds


def run(check, rows: list[tuple[str, dict, str]]) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: check(r[1], r[2]), rows))
    wall = time.perf_counter() - started
    groups: dict[str, dict] = {}
    for (group, p, _), (passed, reason, _) in zip(rows, results):
        g = groups.setdefault(group, {"rows": 0, "passed": 0, "failed_examples": []})
        g["rows"] += 1
        g["passed"] += int(passed)
        if group == "canonical" and not passed:
            g["failed_examples"].append({"task": p["task_id"], "reason": reason[:300]})
    seconds = sorted(s for _, _, s in results)
    return {
        "groups": groups,
        "seconds_per_row": {"median": round(statistics.median(seconds), 4),
                            "p95": round(seconds[int(0.95 * (len(seconds) - 1))], 4)},
        "wall_seconds": round(wall, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=164)
    ap.add_argument("--baseline-commit", default="4a3614b")
    args = ap.parse_args()
    probs = problems(args.limit)
    rows = [("canonical", p, p["canonical_solution"]) for p in probs]
    rows += [("broken", p, "    return None\n") for p in probs]
    rows += [(name, p, body) for name, body in HACKS.items() for p in probs]
    baseline = load_baseline(args.baseline_commit)
    result = {
        "benchmark": "sandbox",
        "data": f"humaneval_prompts.jsonl.gz, first {len(probs)} problems",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "new": {"what": "bubblewrap, checker and worker processes, token verdict", **run(new_check, rows)},
        "old": {"what": f"audit hook in one interpreter, exit status verdict (git {args.baseline_commit})",
                **run(lambda p, b: old_check(baseline, p, b), rows)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for side in ("old", "new"):
        r = result[side]
        counts = ", ".join(f"{g}: {v['passed']}/{v['rows']} passed" for g, v in r["groups"].items())
        print(f"{side}: {counts}; {r['seconds_per_row']['median']} s/row median, {r['wall_seconds']} s wall")


if __name__ == "__main__":
    main()
