"""Benchmark: math answer checking, the hand-written extractor vs math-verify, on real GSM8K solutions.

Data (../shared/data): gsm8k_solution_pairs (model solutions; upstream `is_correct` says the chosen
one is right and the rejected one wrong: 4153 pairs, 8306 solutions) and gsm8k_prompts_test (500
human solutions ending in '#### N', all right). Each method decides right/wrong per solution against
the reference answer; accuracy is agreement with the upstream labels (95% Wilson intervals), with
false accepts (a wrong solution passed) and false rejects (a right one failed) apart, plus time.

Methods:
  regex        the extractor of `--baseline-ref` (git) of curation/scorers/verify.py: '####', boxed,
               'The answer is', 'A:', else the last number; numeric compare, math-verify fallback
  math_verify  math_verify.parse on the whole solution (its LaTeX + expression extraction) and
               math_verify.verify against the parsed reference
  current      curation.scorers.verify as it is in this tree (what the `verify` scorer runs)

Usage:  python benchmarks/math_extraction.py [--limit N] [--baseline-ref REF]
Writes benchmarks/results/math_extraction.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "math_extraction.json"
sys.path.insert(0, str(ROOT))


def load(limit: int | None) -> list[dict]:
    """(text, reference, truth, where) per solution."""
    rows = []
    with gzip.open(DATA / "gsm8k_solution_pairs.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                break
            p = json.loads(line)
            rows.append({"text": p["chosen"], "reference": str(p["reference_answer"]), "truth": True, "set": "model_solutions"})
            rows.append({"text": p["rejected"], "reference": str(p["reference_answer"]), "truth": False, "set": "model_solutions"})
    with gzip.open(DATA / "gsm8k_prompts_test.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                break
            p = json.loads(line)
            rows.append({"text": p["solution"], "reference": str(p["answer"]), "truth": True, "set": "human_solutions"})
    return rows


def baseline_module(ref: str) -> types.ModuleType:
    """The answer functions of curation/scorers/verify.py as it was at `ref` (the module up to its
    scorer class, which is registered already), under another name."""
    source = subprocess.run(["git", "show", f"{ref}:curation/scorers/verify.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    source = source[: source.index("\nclass VerifyConfig")]
    module = types.ModuleType("verify_baseline")
    exec(compile(source, f"{ref}:curation/scorers/verify.py", "exec"), module.__dict__)
    return module


def regex_check(module: types.ModuleType):
    def check(text: str, reference: str) -> bool:
        answer, _ = module.extract_answer(text)
        return answer is not None and module.answers_match(answer, reference)[0]

    return check


def math_verify_check(text: str, reference: str) -> bool:
    from math_verify import parse, verify

    gold, pred = parse(reference), parse(text)
    return bool(gold and pred and verify(gold, pred))


def wilson(k: float, n: int, z: float = 1.96) -> list[float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [round(centre - half, 4), round(centre + half, 4)]


def measure(name: str, check, rows: list[dict]) -> tuple[dict, list[bool]]:
    started = time.perf_counter()
    verdicts = [check(r["text"], r["reference"]) for r in rows]
    seconds = time.perf_counter() - started
    out: dict = {"seconds": round(seconds, 3), "ms_per_solution": round(1000 * seconds / len(rows), 3)}
    for subset in ("model_solutions", "human_solutions", "all"):
        idx = [i for i, r in enumerate(rows) if subset in ("all", r["set"])]
        right = sum(verdicts[i] == rows[i]["truth"] for i in idx)
        out[subset] = {
            "n": len(idx),
            "accuracy": round(right / len(idx), 4),
            "accuracy_ci95": wilson(right, len(idx)),
            "false_accepts": sum(verdicts[i] and not rows[i]["truth"] for i in idx),
            "false_rejects": sum(not verdicts[i] and rows[i]["truth"] for i in idx),
        }
    print(f"{name}: accuracy {out['all']['accuracy']:.4f} {out['all']['accuracy_ci95']} "
          f"(false accepts {out['all']['false_accepts']}, false rejects {out['all']['false_rejects']}), "
          f"{out['ms_per_solution']:.3f} ms/solution", flush=True)
    return out, verdicts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="first N pairs and N human solutions")
    ap.add_argument("--baseline-ref", default="286d7ff", help="git ref holding the hand-written extractor")
    args = ap.parse_args()
    from curation.scorers import verify as current

    rows = load(args.limit)
    methods = {"regex": regex_check(baseline_module(args.baseline_ref)), "math_verify": math_verify_check,
               "current": regex_check(current)}
    results, verdicts = {}, {}
    for name, check in methods.items():
        results[name], verdicts[name] = measure(name, check, rows)
    agree = {f"{a}_vs_{b}": round(sum(x == y for x, y in zip(verdicts[a], verdicts[b])) / len(rows), 4)
             for a in methods for b in methods if a < b}
    disagreements = [
        {"text": r["text"][-160:], "reference": r["reference"], "truth": r["truth"],
         **{name: verdicts[name][i] for name in methods}}
        for i, r in enumerate(rows) if verdicts["regex"][i] != verdicts["math_verify"][i]
    ]
    out = {
        "data": {"model_solutions": sum(r["set"] == "model_solutions" for r in rows),
                 "human_solutions": sum(r["set"] == "human_solutions" for r in rows)},
        "baseline_ref": args.baseline_ref,
        "methods": results,
        "agreement": agree,
        "disagreements_regex_vs_math_verify": len(disagreements),
        "disagreement_examples": disagreements[:25],
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(agree), f"-> {RESULTS}")


if __name__ == "__main__":
    main()
