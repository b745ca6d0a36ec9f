"""Benchmark: the `openai` generation backend's client, hand-written httpx retries vs the openai SDK.

Both trees (this one and `--baseline-ref`, the last commit before the SDK, unpacked with git
archive) run the same workload in their own interpreter against the test suite's fault-injecting
OpenAI-compatible server on 127.0.0.1 (tests/generate/test_openai_server.FaultServer), which
answers at once, so the client's own cost shows:
  clean   N prompts, every reply fine
  faults  N prompts where every 4th is rate limited twice (429, Retry-After: 0), every 4th+1
          answers 503 once and every 4th+2 sends an unreadable 200 once
Reported: seconds and requests/s (median of `--repeats`), calls, retries and errors (which must
match between the trees).

Usage:  python benchmarks/openai_client.py [--prompts 400] [--repeats 3] [--baseline-ref 286d7ff]
Writes benchmarks/results/openai_client.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "openai_client.json"


def workload(prompts: int, repeats: int) -> dict:
    """Runs inside the tree under test (PYTHONPATH)."""
    from curation.generate import run_generation
    from tests.generate import test_openai_server as t
    from tests.generate.conftest import make_prompts

    out = {}
    for name in ("clean", "faults"):
        texts = [f"q{i}" for i in range(prompts)]
        if name == "faults":
            for i in range(prompts):
                script = [["429", "429", "ok"], ["503", "ok"], ["garbage", "ok"], ["ok"]][i % 4]
                t.SCRIPTS[texts[i]] = script
        runs = []
        for r in range(repeats):
            texts_r = [f"{x} r{r}" for x in texts]
            if name == "faults":
                for x, y in zip(texts, texts_r):
                    t.SCRIPTS[y] = t.SCRIPTS[x]
            with t.FaultServer() as server:
                cfg = {"backend": "openai", "model": "fake", "base_url": server.base_url, "timeout": 10,
                       "max_retries": 3, "backoff_base": 0.01, "max_concurrency": 16}
                started = time.perf_counter()
                cands, stats = run_generation(make_prompts(texts_r), cfg)
                runs.append({"seconds": time.perf_counter() - started, "calls": stats.calls, "retries": stats.retries,
                             "errors": int(cands["error"].is_not_null().sum()), "attempts": sum(server.attempts.values())})
        secs = statistics.median(r["seconds"] for r in runs)
        out[name] = {"seconds": round(secs, 3), "requests_per_s": round(prompts / secs, 1),
                     **{k: runs[0][k] for k in ("calls", "retries", "errors", "attempts")}}
    return out


def run_tree(tree: Path, prompts: int, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    code = (f"import json, sys; sys.path.insert(0, {str(tree)!r}); from benchmarks.openai_client import workload; "
            f"print(json.dumps(workload({prompts}, {repeats})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-ref", default="286d7ff", help="git ref with the hand-written httpx client")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        archive = subprocess.run(["git", "archive", args.baseline_ref], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        (base / "benchmarks" / "openai_client.py").write_text(Path(__file__).read_text())  # the same workload
        results = {"httpx_hand_written": run_tree(base, args.prompts, args.repeats),
                   "openai_sdk": run_tree(ROOT, args.prompts, args.repeats)}
    for name, r in results.items():
        print(name, json.dumps(r), flush=True)
    out = {"prompts": args.prompts, "repeats": args.repeats, "baseline_ref": args.baseline_ref, "results": results,
           "load_average": os.getloadavg()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
