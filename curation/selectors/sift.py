"""SIFT: variance-based transductive selection (Hübotter et al., ICLR 2025, arXiv 2410.08020; spec §1).

With a linear kernel on unit-norm embeddings and noise λ, each step takes the candidate x that
most reduces the summed posterior variance of the targets, Σ_a Σ_ax² / (Σ_xx + λ), and conditions
on it (a rank-one Schur complement). Selecting an item again is allowed (another noisy
observation of it): a repeat keeps the item once with `weight` = its count.

Scaling as in the reference (activeft): candidates are pre-selected with faiss by |inner
product| to the mean target; above `mini_batch_size` candidates a hierarchy applies (shuffle
into mini-batches, select N from each, keep the union with repeats, repeat until one batch).
Our step keeps only the candidate-target block and a low-rank factor instead of the full
(K+m)² covariance: O(mK + Kd) per step.

Targets: embeddings of given prompts (a list, or a file: one per line, or JSONL with
`prompt`/`messages`), or none: undirected VTL, each mini-batch targets itself.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors._inputs import EmbedWhat, item_embeddings, l2_normalize
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions

log = logging.getLogger(__name__)


@dataclass
class VTLResult:
    picks: np.ndarray  # candidate indices in selection order (repeats allowed)
    values: np.ndarray  # acquisition value of each pick: −(total target variance after it)
    total_variance: np.ndarray  # Σ_a σ²(a) after each step


def vtl(x: np.ndarray, targets: np.ndarray | None, n_select: int, lam: float) -> VTLResult:
    """Sequential VTL on candidates `x` (K × d) for `targets` (m × d; None: the candidates themselves).

    Σ over candidates is kept as X Xᵀ − V Vᵀ (V: scaled conditioning columns), and the
    candidate-target block C (m × K) is updated in place. Ties go to the lowest index.
    """
    x = np.asarray(x, dtype=np.float64)
    a = x if targets is None else np.asarray(targets, dtype=np.float64)
    k = x.shape[0]
    c = a @ x.T  # (m, K) covariance of targets with candidates
    var = np.einsum("ij,ij->i", x, x)  # candidates' variances
    target_var = np.einsum("ij,ij->i", a, a)
    v = np.zeros((k, n_select))
    picks, values, totals = [], [], []
    for t in range(n_select):
        reduction = np.einsum("ij,ij->j", c, c) / (var + lam)
        j = int(np.argmax(reduction))
        values.append(-(target_var.sum() - reduction[j]))
        denom = var[j] + lam
        col_x = x @ x[j] - v[:, :t] @ v[j, :t]
        col_a = c[:, j].copy()
        var -= col_x * col_x / denom
        c -= np.outer(col_a / denom, col_x)
        target_var -= col_a * col_a / denom
        v[:, t] = col_x / np.sqrt(denom)
        picks.append(j)
        totals.append(target_var.sum())
    return VTLResult(np.asarray(picks, dtype=np.int64), np.asarray(values), np.asarray(totals))


def preselect(x: np.ndarray, query: np.ndarray, k: int | None, index=None) -> np.ndarray:
    """Indices of the k items with the largest |⟨x, query⟩| (all when k is None), largest first.

    faiss searches the query and its negation (the reference's also_query_opposite); pass a
    prebuilt inner-product `index` over `x` to reuse it across searches.
    """
    if k is None or k >= x.shape[0]:
        return np.argsort(-np.abs(x @ query), kind="stable")
    import faiss

    if index is None:
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(np.ascontiguousarray(x, dtype=np.float32))
    q = np.ascontiguousarray(np.stack([query, -query]), dtype=np.float32)
    sims, ids = index.search(q, k)
    ids, sims = ids.ravel(), sims.ravel()
    best: dict[int, float] = {}
    for i, s in zip(ids.tolist(), sims.tolist()):
        if i >= 0 and s > best.get(i, -np.inf):
            best[i] = s
    cand = np.fromiter(best, dtype=np.int64)
    score = np.fromiter(best.values(), dtype=np.float64)
    return cand[np.lexsort((cand, -score))][:k]


@dataclass
class SIFTResult:
    picks: np.ndarray  # item indices (into the embeddings given), in selection order, repeats allowed
    values: np.ndarray
    total_variance: np.ndarray
    candidates: int  # how many were pre-selected
    levels: int  # mini-batch hierarchy levels run (1: a single batch)


def sift_select(
    x: np.ndarray,
    targets: np.ndarray | None,
    n_select: int,
    *,
    lam: float = 0.01,
    preselect_k: int | None = None,
    mini_batch_size: int = 1000,
    mean_pooling: bool = False,
    seed: int = 0,
    index=None,
    progress=None,
) -> SIFTResult:
    """SIFT over unit-norm rows `x`: pre-select (through `index` when given), then VTL through
    the mini-batch hierarchy."""
    if n_select < 1:
        raise SelectionError("sift: budget must be at least 1")
    if targets is not None:
        if targets.shape[0] == 0:
            raise SelectionError("sift: no target embeddings")
        if mean_pooling:
            targets = targets.mean(axis=0, keepdims=True)
        current = preselect(x, targets.mean(axis=0), preselect_k, index)
    else:
        current = np.arange(x.shape[0])
    if len(current) > mini_batch_size and n_select > mini_batch_size // 2:
        raise SelectionError(
            f"sift: budget {n_select} must be at most mini_batch_size/2 = {mini_batch_size // 2} when there are "
            f"more candidates ({len(current)}) than one mini-batch; raise mini_batch_size"
        )
    n_candidates = len(current)
    rng = np.random.default_rng(seed)
    levels = 0
    while True:
        levels += 1
        if len(current) <= mini_batch_size:
            res = vtl(x[current], targets, n_select, lam)
            return SIFTResult(current[res.picks], res.values, res.total_variance, n_candidates, levels)
        shuffled = current[rng.permutation(len(current))]
        kept = []
        for s in range(0, len(shuffled), mini_batch_size):
            batch = shuffled[s : s + mini_batch_size]
            res = vtl(x[batch], targets, min(n_select, len(batch)), lam)
            kept.append(batch[res.picks])
            if progress is not None:
                progress(len(batch))
        current = np.concatenate(kept)


def gram(a: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """AᵀA in float64, a block of rows at a time (no float64 copy of a large A)."""
    out = np.zeros((a.shape[1], a.shape[1]))
    for s in range(0, a.shape[0], chunk):
        block = a[s : s + chunk].astype(np.float64)
        out += block.T @ block
    return out


def adaptive_mask(total_variance: np.ndarray, alpha: float) -> np.ndarray:
    """Adaptive SIFT: keep step i (1-based) unless sqrt(total variance after it) > 1/(α·i)."""
    i = np.arange(1, len(total_variance) + 1)
    return ~(np.sqrt(np.maximum(total_variance, 0.0)) > 1.0 / (alpha * i))


def read_targets(spec: list[str] | str) -> list[str]:
    """Target prompts: a list, or a file (text: one per line; JSONL: `prompt` or `messages`)."""
    if isinstance(spec, list):
        return spec
    path = Path(spec)
    if not path.is_file():
        raise SelectionError(f"sift: targets file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if ".jsonl" in path.name:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SelectionError(f"sift: {path}:{line_no}: not JSON ({exc})") from None
                if isinstance(row.get("prompt"), str):
                    out.append(row["prompt"])
                elif isinstance(row.get("messages"), list):
                    out.append(schema.messages_to_text(row["messages"]))
                else:
                    raise SelectionError(f"sift: {path}:{line_no}: needs a 'prompt' string or 'messages' list")
            else:
                out.append(line.rstrip("\n"))
    if not out:
        raise SelectionError(f"sift: targets file {path} has no prompts")
    return out


@SELECTORS.register("sift")
class SIFT(Selector):
    """SIFT towards target prompts (or undirected). `weight` counts repeats; `detail` has the value."""

    class Config(SelectorConfig):
        targets: list[str] | str | None = None
        lam: float = Field(0.01, gt=0.0)
        preselect: int | None = Field(None, ge=1)
        mini_batch_size: int | None = Field(None, ge=2)  # default: 1000, or 2·budget if larger
        mean_pooling: bool = False
        alpha: float | None = Field(None, gt=0.0)
        embed: EmbedWhat = "prompt"

    objective_name = "posterior_variance"

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        cfg = self.config
        n = pool.height
        budget = n if budget is None else budget
        target_texts = read_targets(cfg.targets) if cfg.targets is not None else None
        if target_texts is not None and not target_texts:
            raise SelectionError(f"{context.stage}: sift targets is an empty list")
        mbs = cfg.mini_batch_size or max(1000, 2 * budget)
        x = l2_normalize(item_embeddings(pool, context, cfg.embed))
        targets = l2_normalize(context.embeddings(target_texts)) if target_texts else None
        measured = x if targets is None else targets.mean(axis=0, keepdims=True) if cfg.mean_pooling else targets
        self._x, self._target_gram = x, gram(measured)
        res = sift_select(
            x, targets, budget, lam=cfg.lam, preselect_k=cfg.preselect, mini_batch_size=mbs,
            mean_pooling=cfg.mean_pooling, seed=cfg.seed,
            progress=lambda size: log.info("%s SIFT: one mini-batch of %d candidates done", context.stage, size),
        )
        keep_step = adaptive_mask(res.total_variance, cfg.alpha) if cfg.alpha else np.ones(len(res.picks), bool)
        picks = res.picks[keep_step]
        counts = np.bincount(picks, minlength=n)
        first_value = np.full(n, np.nan)
        rank = np.full(n, -1, dtype=np.int64)
        for i, val in zip(picks[::-1], res.values[keep_step][::-1]):
            first_value[i] = val  # reversed, so the first pick of an item wins
        uniq, first = np.unique(picks, return_index=True)
        rank[uniq] = np.argsort(np.argsort(first))
        stopped = np.zeros(n, dtype=bool)
        stopped[res.picks[~keep_step]] = True
        self.report = {"targets": len(target_texts) if target_texts else "undirected", "candidates": res.candidates,
                       "levels": res.levels, "mini_batch_size": mbs, "picks": int(len(picks)),
                       "distinct": int((counts > 0).sum()), "final_total_variance": float(res.total_variance[-1])}
        log.info("%s %s: %s", context.stage, "SIFT", self.report)
        detail = [
            {"count": int(counts[i]), "value": float(first_value[i])} if counts[i] else None for i in range(n)
        ]
        reasons = ["adaptive_stop" if stopped[i] else "budget" for i in range(n)]
        return decisions(
            context, context.ids(pool), counts > 0, rank=[int(r) if r >= 0 else None for r in rank],
            weight=counts.astype(float).clip(min=1.0), reason_kept="selected", reason_dropped=reasons, detail=detail,
        )

    def objective(self, rows: np.ndarray, weights: np.ndarray | None = None) -> float | None:
        """Σ over targets of the posterior variance after observing `rows` (`weights` = how often each).

        Undirected selection measures it over the whole pool. With a linear kernel this is
        λ·tr((Xᵀ W X + λI)⁻¹ AᵀA) (Woodbury), so it costs O(|rows| d² + d³), not O(|rows|²·m).
        """
        lam = self.config.lam
        x = self._x[np.asarray(rows, dtype=np.int64)].astype(np.float64)
        w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
        precision = (x * w[:, None]).T @ x + lam * np.eye(x.shape[1])
        return float(lam * np.trace(np.linalg.solve(precision, self._target_gram)))

