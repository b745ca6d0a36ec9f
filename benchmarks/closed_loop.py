"""Closed-loop benchmark: examples/closed-loop.yaml for several training seeds, gains with intervals.

    python benchmarks/closed_loop.py [--seeds 0 1 2] [--catalog DIR] [--out benchmarks/results/closed_loop.json]

Runs the recipe in-process (the same stages as `curate run`, without Prefect) once per training
seed, into one catalog, so what does not depend on the seed (round 1's generation, scores, pairs,
selection and version) is computed once. Every round evaluates the base policy, the policy trained
on the selection and the random-pairs control on the same 500 held-out problems (greedy decoding);
this script pools the per-problem outcomes over seeds and reports, per round, each model's accuracy
and the paired bootstrap interval (over seeds and problems) of curated - base, curated - control
and each side minus its previous round. It records which prompts each round's version holds (fresh
ones per round with `round_prompts`) and what each round's control trained on.

"seconds" and "cpu_seconds" are this invocation's; stages it found already computed by an earlier
invocation are listed under "reused_from_earlier_runs" (their time is in no figure here), so a
re-run over a full catalog says so instead of passing for the run's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def add_lineage(seed_entry: dict, catalog) -> None:
    """Each round's version, the checkpoint that generated it (the catalog's lineage), its prompts,
    and how many of them an earlier round of the same seed already sampled."""
    seen: set[str] = set()
    for _, entry in sorted(seed_entry["rounds"].items()):
        if entry.get("version"):
            entry["generated_by"] = catalog.generated_by(entry["version"])
            prompts = set(catalog.load(entry["version"], table="candidates")["prompt_id"])
            entry.update(prompts_sampled=len(prompts), prompts_seen_in_earlier_rounds=len(prompts & seen))
            seen |= prompts


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (vLLM's engine runs in one)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "examples" / "closed-loop.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--catalog", default=str(ROOT / ".curate" / "closed-loop" / "catalog"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "closed_loop.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # a tiny model: more threads only spin on a shared machine

    import numpy as np

    from curation.recipe import load_recipe
    from curation.stages import RunContext, read_record, run_recipe
    from curation.stages.rounds import label as stage_label
    from curation.train.evaluate import bootstrap_interval, decoding

    recipe_path = Path(args.recipe).resolve()
    ctx = RunContext(str(Path(args.catalog).resolve()))
    started, cpu_started = time.perf_counter(), cpu_seconds()
    computed: set[tuple[str, str]] = set()  # (stage, fingerprint) computed by this invocation
    reused: list[str] = []  # stages an earlier invocation computed
    outcomes: dict[int, dict[str, list[list[float]]]] = {}  # round -> model -> one row per seed
    prompt_ids: list[str] | None = None
    per_seed = {}
    for seed in args.seeds:
        spec = yaml.safe_load(recipe_path.read_text())
        spec["train"]["seed"] = seed
        seeded = recipe_path.with_name(f".{recipe_path.stem}-seed{seed}.yaml")  # beside it: relative paths hold
        seeded.write_text(yaml.safe_dump(spec, sort_keys=False))
        try:
            t0 = time.perf_counter()
            _, reports = run_recipe(load_recipe(seeded), ctx.catalog_root,
                                    on_stage=lambda r: print(f"seed {seed} round {r.detail.get('round', 1)} "
                                                             f"{r.stage}: {r.rows_out} rows, {r.seconds:.0f}s", flush=True))
        finally:
            seeded.unlink()
        per_seed[seed] = {"seconds": round(time.perf_counter() - t0, 1), "rounds": {}}
        for report in reports:
            key = (report.stage, report.fingerprint)
            if not report.cached:
                computed.add(key)
            elif key not in computed:
                reused.append(f"seed {seed}: {stage_label(report.stage, report.detail)}")
            if report.stage == "train" and not report.detail.get("chain"):
                per_seed[seed]["rounds"].setdefault(report.detail.get("round", 1), {})["control_pool"] = report.detail.get("control_pool")
            if report.stage == "publish":
                per_seed[seed]["rounds"].setdefault(report.detail.get("round", 1), {})["version"] = report.detail["version"]
            if report.stage != "evaluate":
                continue
            record = read_record(ctx.store.ref("evaluate", report.fingerprint))
            rnd = int(record.get("round", 1))
            if prompt_ids is None:
                prompt_ids = record["prompt_ids"]
            if record["prompt_ids"] != prompt_ids:
                raise SystemExit("the evaluations of different seeds used different held-out problems")
            for label, values in record["per_prompt"].items():
                outcomes.setdefault(rnd, {}).setdefault(label, []).append(values)
            per_seed[seed]["rounds"].setdefault(rnd, {}).update(
                {label: round(float(np.mean(v)), 4) for label, v in record["per_prompt"].items()},
                model=record["models"].get("after"))
        add_lineage(per_seed[seed], ctx.catalog())

    rounds = {}
    for rnd, by_model in sorted(outcomes.items()):
        mats = {label: np.asarray(rows) for label, rows in by_model.items()}
        base = mats["before"][:1]  # the base policy is the same model in every seed
        entry = {"accuracy": {label: bootstrap_interval(m) for label, m in mats.items()}}
        entry["accuracy"]["before"] = bootstrap_interval(base)
        entry["curated_minus_base"] = bootstrap_interval(mats["after"], base)
        if "control" in mats:
            entry["curated_minus_control"] = bootstrap_interval(mats["after"], mats["control"])
            entry["control_minus_base"] = bootstrap_interval(mats["control"], base)
        if rnd - 1 in outcomes:  # what the on-policy round added to each side's previous round
            previous = {label: np.asarray(rows) for label, rows in outcomes[rnd - 1].items()}
            entry["curated_minus_previous_round"] = bootstrap_interval(mats["after"], previous["after"])
            if "control" in mats:
                entry["control_minus_previous_round"] = bootstrap_interval(mats["control"], previous["control"])
        rounds[rnd] = entry
    result = {
        "benchmark": "closed_loop",
        "recipe": str(recipe_path.relative_to(ROOT)),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "seeds": args.seeds,
        "held_out_problems": len(prompt_ids or []),
        "decoding": decoding(load_recipe(recipe_path).evaluate),
        "interval": "95% percentile bootstrap, 2000 resamples of seeds and problems (paired)",
        "round_prompts": load_recipe(recipe_path).round_prompts,
        "control": "DPO on as many uniformly random pool pairs (no ties, no empty side) as the selection kept; from "
                   "round 2 on the pool is the control's own: its previous round's model samples the round's prompts, "
                   "the same scorers and pair builder pair them",
        "rounds": rounds,
        "per_seed": per_seed,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(cpu_seconds() - cpu_started, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "reused_from_earlier_runs": reused,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for rnd, entry in rounds.items():
        acc = entry["accuracy"]
        line = ", ".join(f"{k} {v['mean']:.3f}" for k, v in acc.items())
        gain = entry["curated_minus_base"]
        print(f"round {rnd}: {line}; curated - base {gain['mean']:+.3f} [{gain['low']:+.3f}, {gain['high']:+.3f}]", end="")
        if "curated_minus_control" in entry:
            c = entry["curated_minus_control"]
            print(f"; curated - control {c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]", end="")
        print()
    if reused:
        print(f"note: {len(reused)} stage(s) came from an earlier invocation's catalog; seconds leave them out")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
