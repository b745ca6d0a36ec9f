"""Apply a recipe's `select:` list: selectors in order, each seeing only what the previous kept.

Nothing is deleted: every step writes one decision row per pool item (stage
"select.<i>:<kind>"); items an earlier step dropped get `kept` = false with reason
`not_considered`, so "kept iff all decisions keep it" holds. Flips from a noise step are
applied before the next step sees the pairs.

Every step also reports a random control: `control_draws` uniform subsets of the same size
(distinct items kept) drawn from the step's input, with seeds of their own (never the
selector's, so a `random` step is not its own control), each measured the same way as the
selection: coverage of prompt clusters (or of prompts when there are no embeddings), mean
margin and length balance, weighted by the decisions' weights for the selection, and the
selector's own objective (MIG's information, SIFT's posterior variance, FiFA's importance,
kMQ's cluster coverage). The control reports each figure's mean, standard deviation and the
central 95% of its draws, so a user sees whether the selector did anything a coin would not.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from curation import schema
from curation.progress import tracked
from curation.rows import apply_flips
from curation.selectors import SELECTORS
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, default_embedder

log = logging.getLogger(__name__)


@dataclass
class SelectionResult:
    decisions: pl.DataFrame  # every pool item x every step
    kept_ids: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    def kept(self, pool: pl.DataFrame, id_column: str | None = None) -> pl.DataFrame:
        """The pool rows every step kept, in pool order."""
        col = id_column or ("pair_id" if "pair_id" in pool.columns else "candidate_id")
        return pool.filter(pl.col(col).is_in(pl.Series(self.kept_ids, dtype=pl.String).implode()))


def build_selectors(configs: list[SelectorConfig | dict[str, Any]]) -> list[Selector]:
    """Validate every step's configuration up front, so a typo in step 3 fails before step 1 runs."""
    out = []
    for i, cfg in enumerate(configs):
        if isinstance(cfg, dict):
            if "kind" not in cfg:
                raise SelectionError(f"select step {i}: no `kind`; known: {', '.join(SELECTORS.names())}")
            out.append(SELECTORS.build(cfg["kind"], cfg))
        else:
            out.append(SELECTORS.build(cfg.kind, cfg))
    return out


def apply_selectors(
    pool: pl.DataFrame,
    configs: list[SelectorConfig | dict[str, Any]],
    context: SelectionContext | None = None,
    *,
    scores: pl.DataFrame | None = None,
    candidates: pl.DataFrame | None = None,
    embed: Any = "default",
    coverage: Literal["auto", "clusters", "prompts"] = "auto",
    allow_empty: bool = False,
    control_draws: int = 20,
) -> SelectionResult:
    """Run the selectors in order and report each step beside its random control.

    Without a `context`, one is made for the pool (pairs if it has `pair_id`) with `scores`,
    `candidates` (who wrote each response) and `embed` ("default": the project embedder, loaded
    only if a step needs it).
    `coverage`: "clusters" = k-means on prompt embeddings, "prompts" = distinct prompts,
    "auto" = clusters when the context has an embedder. A selection that keeps nothing raises
    (unless `allow_empty`), with the per-step counts. `control_draws`: random subsets per step.
    """
    selectors = build_selectors(configs)
    if context is None:
        id_column = "pair_id" if "pair_id" in pool.columns else "candidate_id"
        context = SelectionContext(
            id_column=id_column,
            scores=scores if scores is not None else schema.empty("scores"),
            embed=default_embedder() if embed == "default" else embed,
            candidates=candidates,
        )
    if pool.height == 0:
        raise SelectionError("select: the pool is empty; nothing to select from")
    ids = context.ids(pool)
    if len(set(ids)) != len(ids):
        raise SelectionError(f"select: the pool has duplicate {context.id_column} values; ids must be unique")
    clusters = _prompt_clusters(pool, context, coverage, seed=0)  # a fixed ruler, whatever the selectors' seeds

    frames: list[pl.DataFrame] = []
    steps: list[dict[str, Any]] = []
    alive = np.ones(pool.height, dtype=bool)
    current = pool
    for i, selector in enumerate(tracked(selectors, "select", lambda s: f"select: {s.name}")):
        stage = f"select.{i}:{selector.name}"
        step_ctx = dataclasses.replace(context, stage=stage)
        idx = np.flatnonzero(alive)
        step_pool = current[idx.tolist()]
        if step_pool.height == 0:
            raise SelectionError(f"{stage}: every item was dropped before this step: {_counts(steps)}")
        log.info("%s: %d items in", stage, step_pool.height)
        decided = selector.select(step_pool, step_ctx)
        kept_here = decided["kept"].to_numpy()
        steps.append(_step_report(selector, i, stage, step_pool, decided,
                                  clusters[idx] if clusters is not None else None, control_draws))
        if hasattr(selector, "naive_baseline"):  # the noise filter beside a length-only model
            steps[-1]["naive_baseline"] = selector.naive_baseline(step_pool, step_ctx, decided)
        frames.append(_with_unconsidered(decided, ids, alive, stage))
        if context.pool_kind == "pairs" and decided["flip"].any():
            current = apply_flips(current, decided)
        alive[idx[~kept_here]] = False

    kept_ids = [ids[i] for i in np.flatnonzero(alive)]
    report = {
        "pool": pool.height,
        "kept": len(kept_ids),
        "coverage": "clusters" if clusters is not None else "prompts",
        "steps": steps,
    }
    if not kept_ids and selectors and not allow_empty:
        raise SelectionError(f"select: no item survived the selection: {_counts(steps)}")
    log.info("select: kept %d of %d", len(kept_ids), pool.height)
    decisions = pl.concat(frames) if frames else schema.empty("decisions")
    return SelectionResult(decisions, kept_ids, report)


def _counts(steps: list[dict[str, Any]]) -> str:
    return "; ".join(f"{s['stage']} kept {s['kept']} of {s['input']} ({s['reasons']})" for s in steps) or "no steps"


def _with_unconsidered(decided: pl.DataFrame, ids: list[str], alive: np.ndarray, stage: str) -> pl.DataFrame:
    gone = [ids[i] for i in np.flatnonzero(~alive)]
    if not gone:
        return decided
    extra = schema.frame(
        [{"target_id": t, "stage": stage, "kept": False, "weight": 1.0, "flip": False, "reason": "not_considered"} for t in gone],
        "decisions",
    )
    order = {t: i for i, t in enumerate(ids)}
    both = pl.concat([decided, extra])
    return both.with_columns(_o=pl.col("target_id").replace_strict(order, return_dtype=pl.Int64)).sort("_o").drop("_o")


# ---------------------------------------------------------------- reports and the random control


def _prompt_clusters(pool: pl.DataFrame, context: SelectionContext, coverage: str, seed: int) -> np.ndarray | None:
    """k-means cluster of each pool item's prompt (k ≈ √(distinct prompts), at most 100), or None."""
    if coverage == "prompts" or (coverage == "auto" and context.embed is None):
        return None
    import faiss

    prompt_ids = pool.get_column("prompt_id").to_list()
    first: dict[str, int] = {}
    for i, p in enumerate(prompt_ids):
        first.setdefault(p, i)
    emb = context.prompt_embeddings(pool[list(first.values())])
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    faiss.normalize_L2(emb)
    k = int(min(100, max(2, round(math.sqrt(len(first))))))
    if len(first) <= k:
        labels = np.arange(len(first))
    else:
        km = faiss.Kmeans(emb.shape[1], k, niter=20, seed=seed, verbose=False)
        km.train(emb)
        labels = km.index.search(emb, 1)[1][:, 0]
    of_prompt = {p: int(labels[j]) for j, p in enumerate(first)}
    return np.array([of_prompt[p] for p in prompt_ids])


CONTROL_ENTROPY = 0x5E1EC7  # root of the control draws' seeds: fixed, and no selector's seed


def control_seeds(step: int, draws: int) -> list[np.random.Generator]:
    """Independent generators for the random control of step `step` (reproducible, selector-independent)."""
    root = np.random.SeedSequence(CONTROL_ENTROPY, spawn_key=(step,))
    return [np.random.default_rng(s) for s in root.spawn(draws)]


class SubsetMeasures:
    """Coverage, mean margin and length balance of subsets of one pool (measured against the pool).

    The per-item arrays are built once, so measuring many control draws costs O(subset) each.
    Means are weighted by `weights` (the decisions' weights: repeats, importance) when given;
    coverage counts the distinct rows.
    """

    def __init__(self, pool: pl.DataFrame, clusters: np.ndarray | None) -> None:
        self.clusters = clusters
        self.n_clusters = len(np.unique(clusters)) if clusters is not None else 0
        self.prompts = np.unique(pool.get_column("prompt_id").to_numpy(), return_inverse=True)[1]
        self.n_prompts = int(self.prompts.max()) + 1 if pool.height else 0
        self.margin = pool.get_column("margin").cast(pl.Float64).to_numpy() if "margin" in pool.columns else None
        length = lambda col: np.array([len(t or "") for t in pool[col].to_list()], dtype=np.float64)
        pairs = "chosen" in pool.columns and "rejected" in pool.columns
        self.chosen, self.rejected = (length("chosen"), length("rejected")) if pairs else (None, None)
        self.text = length("text") if not pairs and "text" in pool.columns else None

    def of(self, rows: np.ndarray, weights: np.ndarray | None = None) -> dict[str, Any]:
        w = np.ones(rows.size) if weights is None else np.asarray(weights, dtype=np.float64)
        out: dict[str, Any] = {"size": int(rows.size)}
        if self.clusters is not None:
            out["cluster_coverage"] = np.unique(self.clusters[rows]).size / max(self.n_clusters, 1)
        out["prompt_coverage"] = np.unique(self.prompts[rows]).size / max(self.n_prompts, 1) if rows.size else 0.0
        if self.margin is not None:
            m = self.margin[rows]
            ok = np.isfinite(m)
            out["mean_margin"] = float(np.average(m[ok], weights=w[ok])) if ok.any() else None
        if self.chosen is not None and rows.size:
            c, r = self.chosen[rows], self.rejected[rows]
            out["chosen_longer"] = float(np.average(c > r, weights=w))
            out["mean_length_diff"] = float(np.average(c - r, weights=w))
        elif self.text is not None and rows.size:
            out["mean_length"] = float(np.average(self.text[rows], weights=w))
        return out


def _spread(values: list[float]) -> dict[str, Any]:
    """Mean, standard deviation and the central 95% of the control draws' values."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.quantile(v, [0.025, 0.975])
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "ci95": [float(lo), float(hi)]}


def random_control(measures: SubsetMeasures, n: int, size: int, selector: Selector, step: int, draws: int) -> dict[str, Any]:
    """`draws` uniform subsets of `size` of the `n` rows: each metric's (and the objective's) mean, std and 95% interval."""
    per_draw: list[dict[str, Any]] = []
    objective: list[float] = []
    for rng in control_seeds(step, draws):
        rows = np.sort(rng.permutation(n)[:size])
        per_draw.append(measures.of(rows))
        value = selector.objective(rows) if selector.objective_name else None
        if value is not None:
            objective.append(value)
    out: dict[str, Any] = {"draws": draws, "size": size}
    for key in per_draw[0]:
        values = [d[key] for d in per_draw if d.get(key) is not None]
        if key != "size" and values:
            out[key] = _spread(values)
    if objective:
        out["objective"] = _spread(objective)
    return out


def _step_report(
    selector: Selector,
    step: int,
    stage: str,
    step_pool: pl.DataFrame,
    decided: pl.DataFrame,
    clusters: np.ndarray | None,
    control_draws: int,
) -> dict[str, Any]:
    kept_mask = decided["kept"].to_numpy()
    kept = np.flatnonzero(kept_mask)
    n = step_pool.height
    budget = selector.config.resolve_budget(n)
    warnings = []
    if budget is not None and budget.clipped:
        warnings.append(f"budget {budget.requested} exceeds the {n} items this step saw; it kept at most {n}")
    reasons = decided.filter(~pl.col("kept"))["reason"].value_counts(sort=True)
    measures = SubsetMeasures(step_pool, clusters)
    selection = measures.of(kept, decided["weight"].to_numpy()[kept])
    if selector.objective_name:
        selection["objective"] = selector.objective(kept, decided["weight"].to_numpy()[kept])
    return {
        "stage": stage,
        "kind": selector.name,
        "fingerprint": selector.fingerprint,
        "input": n,
        "kept": int(kept.size),
        "dropped": int(n - kept.size),
        "flipped": int(decided["flip"].sum()),
        "soft_labelled": int(decided["epsilon"].is_not_null().sum()),
        "reasons": dict(zip(reasons["reason"].to_list(), reasons["count"].to_list())),
        "budget": None if budget is None else {"requested": budget.requested, "resolved": budget.resolved,
                                               "clipped": budget.clipped},
        "warnings": warnings,
        "objective": selector.objective_name,
        "selection": selection,
        "random_control": random_control(measures, n, int(kept.size), selector, step, control_draws)
        if kept.size and control_draws > 0 else None,
        "selector": getattr(selector, "report", None),  # its own summary (e.g. MIG's label source)
    }
