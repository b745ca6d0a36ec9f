"""`evaluate(...)`: what curation is for, measured on held-out data.

Every accuracy and rate comes with its 95% percentile bootstrap interval over the held-out items
(`<metric>_low` / `<metric>_high` beside it, and `EvalResult.intervals`): a number from a few
hundred pairs or prompts is only as good as its noise.

Reward models: pairwise accuracy on held-out pairs (ties in the data excluded and counted; equal
scores count 1/2) and calibration of σ(r_chosen - r_rejected): expected calibration error over
confidence bins in [0.5, 1], Brier score and log loss.

Policies: ranking accuracy of the DPO implicit reward β·(log π - log π_ref) on held-out pairs (and
of the policy's own length-normalised log-prob, SimPO's reward); win rate of the policy against
its reference model on held-out prompts, judged by a scorer from curation.scorers (warned when it
labelled the training data), with a length-controlled win rate: a logistic regression of the
outcome on the standardised length difference, read at zero difference; and for verifiable tasks,
pass@1 and pass@k of sampled answers under the verify scorer (unbiased estimator of Chen et al.),
with the per-prompt outcomes kept so that two models can be compared on the same prompts: a paired
bootstrap over prompts (and over training seeds when several runs exist) gives the interval of the
difference, which is what says whether a gain is more than noise.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curation import schema
from curation.models import ModelError, check_model_dir
from curation.train.config import EvaluateConfig
from curation.train.data import PairData, TrainDataError, drop_ties, load_pairs
from curation.train.models import is_adapter, read_run_info

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    kind: str  # "reward" or "policy"
    metrics: dict[str, float]
    data: str
    data_fingerprint: str
    eval_id: str | None = None
    judge: str | None = None
    warnings: list[str] = field(default_factory=list)
    per_pair: pl.DataFrame | None = None
    per_prompt: pl.DataFrame | None = None  # verify: prompt_id, correct (share of the n samples right)

    @property
    def intervals(self) -> dict[str, dict[str, float]]:
        """Each metric that has an interval: {"mean", "low", "high"} (95% bootstrap over the items)."""
        return {name: {"mean": value, "low": self.metrics[f"{name}_low"], "high": self.metrics[f"{name}_high"]}
                for name, value in self.metrics.items() if f"{name}_low" in self.metrics and f"{name}_high" in self.metrics}


# ---------------------------------------------------------------- pure metrics


def pairwise_wins(chosen: list[float], rejected: list[float]) -> list[float]:
    """Per pair: 1 when the chosen side scores higher, 1/2 on equal scores, else 0."""
    return [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)]


def with_interval(name: str, outcomes: list[float], seed: int = 0) -> dict[str, float]:
    """`name` (the mean of per-item outcomes) with `name_low` / `name_high`: its 95% bootstrap interval."""
    iv = bootstrap_interval(outcomes, seed=seed)
    return {name: iv["mean"], f"{name}_low": iv["low"], f"{name}_high": iv["high"]}


def calibration(margins: list[float], bins: int = 10) -> dict[str, float]:
    """ECE, Brier and log loss of p = σ(margin) as the probability that the label's chosen side wins.

    Kept hand-written: scikit-learn has no ECE (calibration_curve gives no bin counts, and bins
    here are on the symmetric confidence), and with one outcome (the label's side) Brier and log
    loss are one-line means; brier_score_loss / log_loss would need labels=[0, 1] for the
    single-class truth and clip differently, changing reported values of confidently wrong margins."""
    sigmoid = lambda x: 1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0)))  # noqa: E731
    probs = [sigmoid(m) for m in margins]
    conf = [sigmoid(abs(m)) for m in margins]  # symmetric, so a pair and its flip share a bin
    correct = [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins]
    ece = 0.0
    for b in range(bins):
        lo, hi = 0.5 + 0.5 * b / bins, 0.5 + 0.5 * (b + 1) / bins
        idx = [i for i, c in enumerate(conf) if lo <= c < hi or (b == bins - 1 and c == hi)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            mean_conf = sum(conf[i] for i in idx) / len(idx)
            ece += len(idx) / len(conf) * abs(acc - mean_conf)
    brier = sum((1 - p) ** 2 for p in probs) / len(probs)
    logloss = sum(-math.log(max(p, 1e-12)) for p in probs) / len(probs)
    return {"ece": ece, "brier": brier, "log_loss": logloss}


def length_controlled_win_rate(wins: list[float], len_diff: list[float]) -> float:
    """Win rate at zero length difference: logistic regression of the outcome on the length gap.

    Ties (0.5) enter as one win and one loss with weight 1/2 each. With one outcome only (all wins
    or all losses) the regression has no finite fit and the raw rate is returned.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x, y, w = [], [], []
    for win, d in zip(wins, len_diff):
        for label, weight in ((1, win), (0, 1 - win)):
            if weight > 0:
                x.append(d)
                y.append(label)
                w.append(weight)
    if len(set(y)) < 2:
        return float(sum(wins) / len(wins))
    xa = np.asarray(x, dtype=float)
    scale = xa.std() or 1.0
    model = LogisticRegression(C=1e6, max_iter=1000).fit((xa / scale)[:, None], np.asarray(y), sample_weight=np.asarray(w))
    return float(1.0 / (1.0 + math.exp(-model.intercept_[0])))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _matrix(x: Any) -> Any:
    import numpy as np

    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0 or a.shape[0] == 0:
        raise ValueError(f"expected outcomes shaped (prompts,) or (seeds, prompts), got shape {a.shape}")
    return a


def bootstrap_interval(
    outcomes: Any, baseline: Any = None, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Mean outcome (or mean paired difference to `baseline`) with a percentile bootstrap interval.

    `outcomes` is (prompts,) or (seeds, prompts): one row per training seed, one column per
    held-out prompt, the same prompts in every row. `baseline` has the same prompts, with one row
    (a model that has no seeds, e.g. the base policy) or as many rows as `outcomes` (paired by
    seed). Each resample draws seeds and prompts with replacement, so the interval covers both
    the training noise and the sampling of the test set.
    """
    import numpy as np

    a = _matrix(outcomes)
    if baseline is not None:
        b = _matrix(baseline)
        if b.shape[1] != a.shape[1] or b.shape[0] not in (1, a.shape[0]):
            raise ValueError(f"baseline shape {b.shape} does not pair with outcomes shape {a.shape} (same prompts, 1 or the same seeds)")
        a = a - b
    rng = np.random.default_rng(seed)
    seeds, prompts = a.shape
    means = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, seeds, seeds) if seeds > 1 else np.zeros(1, dtype=int)
        cols = rng.integers(0, prompts, prompts)
        means[i] = a[np.ix_(rows, cols)].mean()
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    point = float(a.mean())
    return {"mean": point, "low": float(low), "high": float(high), "seeds": float(seeds), "prompts": float(prompts)}


# ---------------------------------------------------------------- models


def _model_kind(path: Path, run: dict[str, Any]) -> str:
    if run.get("method"):
        return "reward" if run["method"] == "reward" else "policy"
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        arch = json.loads(cfg_file.read_text()).get("architectures") or [""]
        return "reward" if arch[0].endswith("ForSequenceClassification") else "policy"
    adapter = json.loads((path / "adapter_config.json").read_text())
    return "reward" if adapter.get("task_type") == "SEQ_CLS" else "policy"


def _load_causal(path: str | Path) -> Any:
    from transformers import AutoModelForCausalLM

    if is_adapter(path):
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(str(path)).merge_and_unload().eval()
    return AutoModelForCausalLM.from_pretrained(str(path)).eval()


def _tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        raise ModelError(f"{path}: the tokenizer has no pad token; set `pad_token` in tokenizer_config.json")
    return tok


def _ids(tok: Any, messages: list[dict[str, str]], **kw: Any) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, **kw)
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def completion_logps(model: Any, tok: Any, prompts: list[list[dict[str, str]]], responses: list[str],
                     *, batch_size: int = 8, max_length: int = 1024) -> tuple[list[float], list[int]]:
    """Sum of log-probs of each response given its prompt (chat template), and its token count."""
    import torch

    seqs: list[tuple[list[int], int]] = []
    for prompt, resp in zip(prompts, responses):
        p_ids = _ids(tok, prompt, add_generation_prompt=True)
        full = _ids(tok, prompt + [{"role": "assistant", "content": resp}])
        start = next((i for i, (a, b) in enumerate(zip(p_ids, full)) if a != b), min(len(p_ids), len(full)))
        seqs.append((full[:max_length], start))
    logps, counts = [], []
    with torch.no_grad():
        for b in range(0, len(seqs), batch_size):
            chunk = seqs[b : b + batch_size]
            width = max(len(s) for s, _ in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            att = torch.zeros_like(ids)
            for i, (s, _) in enumerate(chunk):
                ids[i, : len(s)] = torch.tensor(s)
                att[i, : len(s)] = 1
            logits = model(input_ids=ids, attention_mask=att).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            for i, (s, start) in enumerate(chunk):
                tokens = lp[i, max(start - 1, 0) : len(s) - 1]
                logps.append(float(tokens.sum()))
                counts.append(int(tokens.numel()))
    return logps, counts


def generate(model: Any, tok: Any, prompts: list[list[dict[str, str]]], *, n: int, max_new_tokens: int,
             temperature: float, batch_size: int, seed: int) -> list[list[str]]:
    """n completions per prompt (greedy when temperature is 0), decoded without special tokens."""
    import torch

    torch.manual_seed(seed)
    side = tok.padding_side
    tok.padding_side = "left"
    out: list[list[str]] = []
    try:
        for b in range(0, len(prompts), batch_size):
            texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts[b : b + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=None,
                    top_k=None,
                    num_return_sequences=n,
                    pad_token_id=tok.pad_token_id,
                )
            new = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            out.extend([[t.strip() for t in new[i * n : (i + 1) * n]] for i in range(len(texts))])
    finally:
        tok.padding_side = side
    return out


# ---------------------------------------------------------------- evaluation


def _config(config: EvaluateConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> EvaluateConfig:
    base = config.model_dump() if isinstance(config, EvaluateConfig) else dict(config or {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    return EvaluateConfig(**base)


def _prompts_frame(ref: str, catalog: Any) -> pl.DataFrame:
    """Held-out prompts (with meta, e.g. reference answers) from a file or a catalog version."""
    from curation.train.data import looks_like_file

    if looks_like_file(ref):
        from curation.sources import read_source

        prompts = read_source(ref).prompts
    else:
        prompts = catalog.load(ref, table="prompts")
    if prompts.height == 0:
        raise TrainDataError(f"{ref}: no prompts to evaluate on")
    return prompts


def evaluate(
    model: str | Path | None = None,
    pairs: str | pl.DataFrame | None = None,
    config: EvaluateConfig | dict[str, Any] | None = None,
    catalog: Any = None,
    **overrides: Any,
) -> EvalResult:
    """Evaluate a trained run folder (or any local model) on held-out pairs / prompts."""
    cfg = _config(config, {"model": None if model is None else str(model), "pairs": pairs if isinstance(pairs, str) else None, **overrides})
    if cfg.model is None:
        raise ModelError("no model to evaluate: pass a run folder written by `curate train`")
    path = check_model_dir(cfg.model)
    run = read_run_info(path)
    kind = _model_kind(path, run)
    source: str | pl.DataFrame | None = pairs if isinstance(pairs, pl.DataFrame) else cfg.pairs
    if source is None and run.get("version") and cfg.prompts is None:
        source = f"{run['version']}:test"
    if source is None and cfg.prompts is None:
        raise TrainDataError("no evaluation data: pass held-out pairs (name@vN:test or a file) or `prompts`")
    if kind == "reward" and source is None:
        raise TrainDataError("a reward model is evaluated on held-out pairs: pass --pairs")
    if isinstance(source, str) and not Path(source).exists() or cfg.prompts and not Path(cfg.prompts).exists():
        from curation.train.trainer import _open_catalog

        catalog = _open_catalog(catalog)

    data: PairData | None = None
    rows = None
    ties = 0
    if source is not None:
        data = load_pairs(source, catalog)
        rows, ties = drop_ties(data.rows)
        if cfg.limit:
            rows = rows.head(cfg.limit)
        if rows.height == 0:
            raise TrainDataError(f"{data.label}: all {ties} pairs are ties; nothing to evaluate")
    prompts = _prompts_frame(cfg.prompts, catalog) if cfg.prompts else None

    warnings: list[str] = []
    if cfg.judge is not None:
        warnings += _judge_overlap(cfg.judge, run)
        for w in warnings:
            log.warning(w)
    label = data.label if data is not None else str(cfg.prompts)
    fingerprint = data.fingerprint if data is not None else schema.content_hash("prompts", str(cfg.prompts))
    metrics: dict[str, float] = {}
    per_pair = per_prompt = None
    if kind == "reward":
        metrics, per_pair = _evaluate_reward(path, rows, cfg)  # type: ignore[arg-type]
    else:
        metrics, per_pair, per_prompt = _evaluate_policy(path, run, rows, prompts, cfg)
    if data is not None:
        metrics["ties_excluded"] = float(ties)
    result = EvalResult(kind, metrics, label, fingerprint, judge=(cfg.judge or {}).get("name"), warnings=warnings,
                        per_pair=per_pair, per_prompt=per_prompt)
    if cfg.record and run.get("model_id"):
        catalog = _catalog_for(catalog, run)
        if catalog is not None:
            result.eval_id = catalog.record_evaluation(run["model_id"], label, fingerprint, metrics, judge=result.judge)
    return result


def _catalog_for(catalog: Any, run: dict[str, Any]) -> Any:
    if catalog is not None:
        return catalog
    from curation.train.trainer import _open_catalog

    return _open_catalog(run.get("catalog"))


def _judge_overlap(judge: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """A judge that labelled or scored the training pairs would grade its own homework."""
    used = set(run.get("label_sources") or []) | set(run.get("score") or [])
    names = {judge.get("name"), judge.get("model")}
    hit = sorted(n for n in names if n and (n in used or any(str(n) in u for u in used)))
    if hit:
        return [
            f"judge {judge.get('name')!r} ({judge['kind']}) also labelled or scored the training data "
            f"({', '.join(sorted(used))}); its win rate is biased toward the policy. Judge with a scorer "
            "that did not label the training data."
        ]
    return []


def _evaluate_reward(path: Path, rows: pl.DataFrame, cfg: EvaluateConfig) -> tuple[dict[str, float], pl.DataFrame]:
    from curation.scorers import SCORERS

    scorer = SCORERS.build(
        "reward_model",
        {"name": "eval", "kind": "reward_model", "model": str(path), "batch_size": cfg.batch_size, "max_length": cfg.max_length},
    )
    n = rows.height
    cand = pl.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(n)] + [f"r{i}" for i in range(n)],
            "prompt_id": rows["prompt_id"].to_list() * 2,
            "messages": rows["prompt"].to_list() * 2,
            "text": rows["chosen"].to_list() + rows["rejected"].to_list(),
            "meta": pl.Series([None] * (2 * n), dtype=pl.String),
        }
    )
    scores = scorer.score(cand)
    value = dict(zip(scores["target_id"].to_list(), scores["value"].to_list()))
    failed = [i for i in range(n) if value.get(f"c{i}") is None or value.get(f"r{i}") is None]
    if failed:
        raise ModelError(f"{path}: the reward model failed on {len(failed)} pair(s), e.g. pair_id {rows['pair_id'][failed[0]]}")
    chosen = [float(value[f"c{i}"]) for i in range(n)]
    rejected = [float(value[f"r{i}"]) for i in range(n)]
    margins = [c - r for c, r in zip(chosen, rejected)]
    metrics = {"pairs": float(n), **with_interval("accuracy", pairwise_wins(chosen, rejected), cfg.seed),
               "score_ties": float(sum(1 for m in margins if m == 0)), "mean_margin": sum(margins) / n}
    metrics.update(calibration(margins, cfg.calibration_bins))
    per_pair = pl.DataFrame({"pair_id": rows["pair_id"], "chosen_score": chosen, "rejected_score": rejected, "margin": margins})
    return metrics, per_pair


def _evaluate_policy(path: Path, run: dict[str, Any], rows: pl.DataFrame | None, prompts: pl.DataFrame | None,
                     cfg: EvaluateConfig) -> tuple[dict[str, float], pl.DataFrame | None, pl.DataFrame | None]:
    tok = _tokenizer(path)
    policy = _load_causal(path)
    ref_path = run.get("reference_model") or run.get("base_model")
    reference = None
    if rows is not None or cfg.judge is not None:  # verify alone needs no reference: base policies qualify
        if ref_path is None:
            raise ModelError(f"{path}: no {'curate_run.json'} naming the reference model; evaluate a folder written by `curate train`")
        check_model_dir(ref_path, role="reference model")
        reference = _load_causal(ref_path)
    beta = cfg.beta or (run.get("config") or {}).get("beta") or 0.1
    metrics: dict[str, float] = {}
    per_pair = per_prompt = None
    if rows is not None:
        p = [[dict(m) for m in x] for x in rows["prompt"].to_list()]
        kw = {"batch_size": cfg.batch_size, "max_length": cfg.max_length}
        pc, nc = completion_logps(policy, tok, p, rows["chosen"].to_list(), **kw)
        pr, nr = completion_logps(policy, tok, p, rows["rejected"].to_list(), **kw)
        rc, _ = completion_logps(reference, tok, p, rows["chosen"].to_list(), **kw)
        rr, _ = completion_logps(reference, tok, p, rows["rejected"].to_list(), **kw)
        reward_c = [beta * (a - b) for a, b in zip(pc, rc)]
        reward_r = [beta * (a - b) for a, b in zip(pr, rr)]
        metrics["pairs"] = float(rows.height)
        metrics.update(with_interval("implicit_reward_accuracy", pairwise_wins(reward_c, reward_r), cfg.seed))
        metrics["implicit_reward_margin"] = sum(c - r for c, r in zip(reward_c, reward_r)) / rows.height
        metrics.update(with_interval("avg_logp_accuracy", pairwise_wins([a / max(n, 1) for a, n in zip(pc, nc)],
                                                                        [a / max(n, 1) for a, n in zip(pr, nr)]), cfg.seed))
        per_pair = pl.DataFrame({"pair_id": rows["pair_id"], "reward_chosen": reward_c, "reward_rejected": reward_r})
    if cfg.judge is not None:
        metrics.update(_win_rate(policy, reference, tok, _held_out_prompts(rows, prompts, cfg.win_rate_prompts), cfg))
    if cfg.verify is not None:
        if prompts is None:
            raise TrainDataError("verify needs prompts with reference answers: pass `prompts` (e.g. a GSM8K prompts file)")
        verified, per_prompt = _verify(policy, tok, prompts.head(cfg.win_rate_prompts), cfg)
        metrics.update(verified)
    return metrics, per_pair, per_prompt


def _held_out_prompts(rows: pl.DataFrame | None, prompts: pl.DataFrame | None, limit: int) -> pl.DataFrame:
    if prompts is not None:
        return prompts.select("prompt_id", "messages", "meta").head(limit)
    assert rows is not None
    return (
        rows.select("prompt_id", pl.col("prompt").alias("messages"))
        .unique("prompt_id", keep="first", maintain_order=True)
        .head(limit)
        .with_columns(pl.lit(None, dtype=pl.String).alias("meta"))
    )


def _win_rate(policy: Any, reference: Any, tok: Any, prompts: pl.DataFrame, cfg: EvaluateConfig) -> dict[str, float]:
    from curation.scorers import SCORERS

    judge = SCORERS.build(cfg.judge["kind"], cfg.judge)  # type: ignore[index]
    msgs = [[dict(m) for m in x] for x in prompts["messages"].to_list()]
    kw = {"n": 1, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "batch_size": cfg.batch_size, "seed": cfg.seed}
    ours = [o[0] for o in generate(policy, tok, msgs, **kw)]
    theirs = [o[0] for o in generate(reference, tok, msgs, **kw)]
    ids = prompts["prompt_id"].to_list()
    meta = prompts["meta"].to_list()
    if judge.mode == "pairwise":
        rows = pl.DataFrame({"pair_id": [f"w{i}" for i in range(len(ids))], "prompt_id": ids, "messages": msgs,
                             "chosen_id": [f"p{i}" for i in range(len(ids))], "chosen": ours,
                             "rejected_id": [f"r{i}" for i in range(len(ids))], "rejected": theirs, "meta": meta})
        vals = dict(zip(*judge.score(rows).select("target_id", "value").to_dict(as_series=False).values()))
        outcome = [vals.get(f"w{i}") for i in range(len(ids))]
    else:
        rows = pl.DataFrame({"candidate_id": [f"p{i}" for i in range(len(ids))] + [f"r{i}" for i in range(len(ids))],
                             "prompt_id": ids * 2, "messages": msgs * 2, "text": ours + theirs, "meta": meta * 2})
        vals = dict(zip(*judge.score(rows).select("target_id", "value").to_dict(as_series=False).values()))
        outcome = []
        for i in range(len(ids)):
            a, b = vals.get(f"p{i}"), vals.get(f"r{i}")
            outcome.append(None if a is None or b is None else 1.0 if a > b else 0.5 if a == b else 0.0)
    judged = [(o, len(x) - len(y)) for o, x, y in zip(outcome, ours, theirs) if o is not None]
    if not judged:
        raise ModelError(f"judge {cfg.judge['name']!r} returned no verdicts on {len(ids)} prompts")  # type: ignore[index]
    wins = [float(o) for o, _ in judged]
    return {
        **with_interval("win_rate", wins, cfg.seed),
        "win_rate_lc": length_controlled_win_rate(wins, [float(d) for _, d in judged]),
        "win_rate_prompts": float(len(judged)),
        "win_rate_unjudged": float(len(ids) - len(judged)),
        "mean_len_diff": sum(d for _, d in judged) / len(judged),
    }


def _verify_temperature(cfg: EvaluateConfig) -> float:
    """Greedy for one answer per prompt at temperature 0; several answers are sampled (at 1 unless set)."""
    return cfg.temperature if cfg.n == 1 or cfg.temperature > 0 else 1.0


def decoding(config: Any) -> str:
    """How a verified evaluation decodes, in words for a summary: greedy or sampled (a gain under
    one need not hold under the other). `config`: an evaluate config, a recipe's section or a dict."""
    given = config if isinstance(config, dict) else config.model_dump()
    cfg = EvaluateConfig(**{k: given[k] for k in ("n", "temperature") if k in given})
    temperature = _verify_temperature(cfg)
    return "greedy" if temperature == 0 else f"sampled at temperature {temperature:g}, {cfg.n} per prompt"


def _verify(policy: Any, tok: Any, prompts: pl.DataFrame, cfg: EvaluateConfig) -> tuple[dict[str, float], pl.DataFrame]:
    from curation.scorers import SCORERS

    scorer = SCORERS.build(cfg.verify["kind"], cfg.verify)  # type: ignore[index]
    msgs = [[dict(m) for m in x] for x in prompts["messages"].to_list()]
    samples = generate(policy, tok, msgs, n=cfg.n, max_new_tokens=cfg.max_new_tokens, temperature=_verify_temperature(cfg),
                       batch_size=cfg.batch_size, seed=cfg.seed)
    ids, meta = prompts["prompt_id"].to_list(), prompts["meta"].to_list()
    rows = pl.DataFrame({
        "candidate_id": [f"{i}:{j}" for i in range(len(ids)) for j in range(cfg.n)],
        "prompt_id": [p for p in ids for _ in range(cfg.n)],
        "messages": [m for m in msgs for _ in range(cfg.n)],
        "text": [t for s in samples for t in s],
        "meta": [m for m in meta for _ in range(cfg.n)],
    })
    vals = dict(zip(*scorer.score(rows).select("target_id", "value").to_dict(as_series=False).values()))
    correct = [sum(1 for j in range(cfg.n) if (vals.get(f"{i}:{j}") or 0) >= 1) for i in range(len(ids))]
    share = [pass_at_k(cfg.n, c, 1) for c in correct]
    out = {"verify_prompts": float(len(ids)), **with_interval("pass@1", share, cfg.seed)}
    if cfg.n > 1:
        out.update(with_interval(f"pass@{cfg.n}", [pass_at_k(cfg.n, c, cfg.n) for c in correct], cfg.seed))
    return out, pl.DataFrame({"prompt_id": ids, "correct": share}, schema={"prompt_id": pl.String, "correct": pl.Float64})
