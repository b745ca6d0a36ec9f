"""MIG: maximise information gain in a label graph (Chen et al., Findings of ACL 2025, arXiv 2504.13835; spec §2).

Each item carries a set of labels and a quality s ≥ 0. Labels whose string embeddings have
cosine ≥ T are linked; the propagation matrix P (diagonal plus α × off-diagonal, column-normalised)
spreads an item's information e_i = s_i·v_i to related labels: ê_i = e_i P. The dataset's
information is E(D) = Σ_k φ((Σ_{i∈D} ê_i)_k) with φ concave (pow or exp), and items are taken
greedily by the linearised gain ê_i · φ'(z).

Storage and search (toolkit, results identical to the dense reference): ê is kept sparse, and
the greedy is lazy: a max-heap of stale gains, re-evaluated on pop. A gain can only shrink as z
grows (φ' decreases, ê ≥ 0), so a popped item whose gain is fresh for this step is the exact
argmax. Both greedies compute a gain with the same floating-point operations (numpy's pairwise
sum over the dense label axis), so they return the same sequence bit for bit, ties going to the
lowest index.

Labels come from a `tags` column (or `tags` in the meta JSON) or from an LLM tagger through a
generation backend (the paper's InsTag tagging). With neither, `labels: auto` is an error: the
embedding-cluster variant (multi-resolution k-means of the item embeddings, each cluster a
label, its centroid standing in for the label string's embedding) is a different algorithm and
runs only when asked for by name, `labels: clusters`.
"""

from __future__ import annotations

import heapq
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from curation import schema
from curation.selectors import SELECTORS
from curation.selectors._inputs import EmbedWhat, item_embeddings, item_texts, l2_normalize, quality
from curation.selectors.base import SelectionContext, SelectionError, Selector, SelectorConfig, decisions

TAG_PROMPT = (
    "You are a helpful assistant. Identify the intentions behind the user query below as a list of short, "
    "fine-grained tags (for example: \"python programming\", \"recipe request\", \"math word problem\"). "
    'Answer with JSON only: [{{"tag": "...", "explanation": "..."}}, ...].\n\nUser query:\n{query}'
)

log = logging.getLogger(__name__)

# The label graph's T. The paper's 0.9 is for e5-mistral-7b tag embeddings; with MiniLM (the
# project's default embedder) 0.9 links only near-paraphrases (2 of 120 related tag pairs).
# 0.45 had the best F1 (precision 0.76, recall 0.78) for "same intent or domain" on a
# hand-written InsTag-style tag set: benchmarks/mig_threshold.py, results/mig_threshold.json.
# Set `threshold` for another embedding model. Cluster labels are centroids: 0.9 links a
# cluster with its sub-clusters at the finer resolutions, not its siblings.
TAG_THRESHOLD = 0.45
CLUSTER_THRESHOLD = 0.9


@dataclass(frozen=True)
class Phi:
    """The concave information function φ and its derivative (spec §2.2)."""

    kind: Literal["pow", "exp"] = "pow"
    a: float = 1e-6
    b: float = 0.8
    alpha: float = 1.0

    def value(self, z: np.ndarray) -> np.ndarray:
        if self.kind == "pow":
            return (z + self.a) ** self.b
        return 1.0 - np.exp(-self.alpha * z)

    def derivative(self, z: np.ndarray) -> np.ndarray:
        if self.kind == "pow":
            return self.b * (z + self.a) ** (self.b - 1.0)
        return self.alpha * np.exp(-self.alpha * z)


# ---------------------------------------------------------------- label graph and propagation


def label_graph(label_vectors: np.ndarray, threshold: float):
    """W: cosine similarity of label embeddings, entries < T dropped, diagonal 1 (scipy CSR)."""
    from scipy import sparse

    v = l2_normalize(label_vectors).astype(np.float64)
    w = v @ v.T
    w[w < threshold] = 0.0
    np.fill_diagonal(w, 1.0)
    return sparse.csr_matrix(w)


def propagation_matrix(w, alpha: float = 1.0):
    """P = column-normalise(diag(W) + α·offdiag(W)) (the reference code's form; columns sum to 1)."""
    from scipy import sparse

    w = sparse.csr_matrix(w, dtype=np.float64)
    diag = sparse.diags(w.diagonal())
    p = (diag + alpha * (w - diag)).tocsc()
    colsum = np.asarray(p.sum(axis=0)).ravel()
    p = p @ sparse.diags(1.0 / np.where(colsum > 0, colsum, 1.0))
    return sparse.csr_matrix(p)


def propagate(label_sets: list[list[int]], s: np.ndarray, p, *, norm: bool = False):
    """Ê (n × L, sparse CSR float64): row i = s_i·v_i·P (s_i/|L_i| per label when `norm`)."""
    from scipy import sparse

    n, n_labels = len(label_sets), p.shape[0]
    lens = np.fromiter((len(ls) for ls in label_sets), dtype=np.int64, count=n)
    cols = np.fromiter((c for ls in label_sets for c in ls), dtype=np.int64, count=int(lens.sum()))
    per_label = s / np.maximum(lens, 1) if norm else s
    vals = np.repeat(per_label.astype(np.float64), lens)
    indptr = np.concatenate([[0], np.cumsum(lens)])
    e = sparse.csr_matrix((vals, cols, indptr), shape=(n, n_labels))
    e.sum_duplicates()
    out = sparse.csr_matrix(e @ p)
    out.sum_duplicates()
    out.sort_indices()
    out.eliminate_zeros()
    return out


def information(e_hat_rows, phi: Phi) -> float:
    """E(D) = Σ_k φ(Σ_{i∈D} ê_ik) for a set of rows (dense or sparse)."""
    z = np.asarray(e_hat_rows.sum(axis=0)).ravel()
    return float(phi.value(z).sum())


# ---------------------------------------------------------------- greedy


def _gains(block: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Linearised gains of dense rows: numpy's pairwise sum along the label axis.

    The same rows give the same bits whether reduced one at a time or in a block, which is what
    makes the lazy and dense greedies agree exactly (BLAS mat-vec does not promise that).
    """
    return np.add.reduce(block * g, axis=1)


def mig_greedy_dense(
    e_hat: np.ndarray, budget: int, phi: Phi = Phi(), *, gain: Literal["linear", "exact"] = "linear", chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """The reference greedy: every step scores every remaining item (dense n × L mat-vec).

    `gain="exact"` uses the submodular marginal gain Σ_k φ(z_k + ê_ik) − φ(z_k) instead of
    the first-order one. Returns (order, gain of each pick).
    """
    e_hat = np.asarray(e_hat, dtype=np.float64)
    n, n_labels = e_hat.shape
    z = np.zeros(n_labels)
    available = np.ones(n, dtype=bool)
    order, gains = [], []
    for _ in range(min(budget, n)):
        if gain == "linear":
            g = phi.derivative(z)
            scores = np.concatenate([_gains(e_hat[s : s + chunk], g) for s in range(0, n, chunk)])
        else:
            base = phi.value(z)
            scores = np.concatenate(
                [np.add.reduce(phi.value(z + e_hat[s : s + chunk]) - base, axis=1) for s in range(0, n, chunk)]
            )
        scores[~available] = -np.inf
        j = int(np.argmax(scores))
        order.append(j)
        gains.append(float(scores[j]))
        available[j] = False
        z += e_hat[j]
    return np.asarray(order, dtype=np.int64), np.asarray(gains)


def mig_greedy_lazy(e_hat, budget: int, phi: Phi = Phi(), *, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Lazy greedy on sparse Ê (CSR); the same sequence as `mig_greedy_dense(e_hat.toarray())`.

    Heap entries are (−gain, index, step the gain was computed at). Initial entries are upper
    bounds (a sparse dot, inflated by 1e-9 relative, well above any summation-order difference);
    a popped entry computed at the current step is the argmax, since every other entry's key is
    at least its true gain and ties order by index.
    """
    from scipy import sparse

    e_hat = sparse.csr_matrix(e_hat, dtype=np.float64)
    e_hat.sort_indices()
    n, n_labels = e_hat.shape
    indptr, indices, data = e_hat.indptr, e_hat.indices, e_hat.data
    z = np.zeros(n_labels)
    g = phi.derivative(z)
    bounds = np.asarray(e_hat @ g).ravel() * (1.0 + 1e-9)
    heap = list(zip((-bounds).tolist(), range(n), [-1] * n))
    heapq.heapify(heap)
    row = np.zeros(n_labels)
    order, gains = [], []
    for step in range(min(budget, n)):
        while True:
            neg, i, stamp = heapq.heappop(heap)
            if stamp == step:
                break
            cols, vals = indices[indptr[i] : indptr[i + 1]], data[indptr[i] : indptr[i + 1]]
            row[cols] = vals
            fresh = _gains(row[None, :], g)[0]
            row[cols] = 0.0
            heapq.heappush(heap, (-fresh, i, step))
        order.append(i)
        gains.append(-neg)
        cols, vals = indices[indptr[i] : indptr[i + 1]], data[indptr[i] : indptr[i + 1]]
        z[cols] += vals
        g = phi.derivative(z)
        if progress is not None:
            progress(step + 1)
    return np.asarray(order, dtype=np.int64), np.asarray(gains)


# ---------------------------------------------------------------- labels


def parse_tags(text: str | None) -> list[str]:
    """Tags from a tagger's answer: a JSON list of strings or of {"tag": ...}; else comma-separated."""
    if not text:
        return []
    match = re.search(r"\[.*\]", text, flags=re.S)
    if match:
        try:
            items = json.loads(match.group(0))
            tags = [it.get("tag") if isinstance(it, dict) else it for it in items]
            return [t.strip().lower() for t in tags if isinstance(t, str) and t.strip()]
        except (json.JSONDecodeError, AttributeError):
            pass
    return []


def pool_tags(pool: pl.DataFrame) -> list[list[str]] | None:
    """Tags from a `tags` column or a `tags` key of the meta JSON; None when the pool has none."""
    if "tags" in pool.columns:
        raw = pool.get_column("tags").to_list()
    elif "meta" in pool.columns:
        raw = []
        for m in pool.get_column("meta").to_list():
            try:
                raw.append(json.loads(m).get("tags") if m else None)
            except (json.JSONDecodeError, AttributeError):
                raw.append(None)
        if all(r is None for r in raw):
            return None
    else:
        return None
    out = []
    for r in raw:
        if isinstance(r, str):
            r = [t for t in r.split(",")]
        out.append(sorted({t.strip().lower() for t in (r or []) if isinstance(t, str) and t.strip()}))
    return out


def llm_tags(texts: list[str], tagger: dict[str, Any]) -> list[list[str]]:
    """Tag each distinct text with a generation backend (InsTag-style prompt, JSON answer)."""
    from curation.generate import GENERATORS

    generator = GENERATORS.build(tagger["backend"], tagger)
    unique = sorted(set(texts))
    prompts = []
    for t in unique:
        messages = schema.user_prompt(TAG_PROMPT.format(query=t))
        prompts.append({"prompt_id": schema.prompt_id(messages), "messages": messages, "source": "mig:tagger", "meta": "{}"})
    candidates = generator.generate(schema.frame(prompts, "prompts"))
    answer = dict(zip(candidates["prompt_id"].to_list(), candidates["text"].to_list()))
    tags = {t: parse_tags(answer.get(p["prompt_id"])) for t, p in zip(unique, prompts)}
    return [tags[t] for t in texts]


def kmeans_labels(x: np.ndarray, resolutions: list[int], seed: int) -> tuple[list[list[int]], np.ndarray, list[str]]:
    """One label per resolution per item (its cluster); label vectors are the centroids."""
    from curation.selectors._kmeans import kmeans

    n = x.shape[0]
    sets: list[list[int]] = [[] for _ in range(n)]
    vectors, names = [], []
    offset = 0
    for k in sorted({min(k, n) for k in resolutions}):
        cl = kmeans(x, k, seed=seed)
        for i, c in enumerate(cl.labels):
            sets[i].append(offset + int(c))
        vectors.append(cl.centroids)
        names += [f"k{k}:{c}" for c in range(k)]
        offset += k
    return sets, np.vstack(vectors), names


@SELECTORS.register("mig")
class MIG(Selector):
    """MIG over label sets of the pool items; `detail` records the label source and each pick's gain.

    `labels`: `tags` (a `tags` column or meta.tags), `llm` (tag each distinct prompt with the
    `tagger` generation backend, as the paper does with InsTag), `auto` (tags when the pool
    has them, else the tagger when one is configured, else an error), or `clusters`: the
    embedding-cluster variant, not the paper's MIG, chosen only explicitly (each k-means
    cluster at `cluster_resolutions` is a label, its centroid the label's vector).
    """

    version = "2"  # labels: auto no longer falls back to k-means clusters
    objective_name = "information"

    class Config(SelectorConfig):
        labels: Literal["auto", "tags", "llm", "clusters"] = "auto"
        tagger: dict[str, Any] | None = None  # a generation backend config: {backend: ..., model: ..., ...}
        min_tag_count: int = Field(1, ge=1)
        cluster_resolutions: list[int] = Field(default_factory=lambda: [16, 64, 256])
        threshold: float | None = None  # None: TAG_THRESHOLD for tags, CLUSTER_THRESHOLD for clusters
        prop_weight: float = Field(1.0, ge=0.0)
        phi: Literal["pow", "exp"] = "pow"
        phi_a: float = Field(1e-6, gt=0.0)
        phi_b: float = Field(0.8, gt=0.0, le=1.0)
        phi_alpha: float = Field(1.0, gt=0.0)
        norm: bool = False
        quality: str = "margin"
        quality_transform: Literal["softplus", "none"] = "softplus"
        embed: EmbedWhat = "prompt"

    def _labels(self, pool: pl.DataFrame, context: SelectionContext) -> tuple[str, list[list[int]], np.ndarray, list[str]]:
        """(source, label indices of each item, label vectors, label names) for the configured `labels`."""
        cfg = self.config
        if cfg.labels == "clusters":
            x = l2_normalize(item_embeddings(pool, context, cfg.embed))
            sets, vectors, names = kmeans_labels(x, cfg.cluster_resolutions, cfg.seed)
            return "clusters", sets, vectors, names
        tags = pool_tags(pool) if cfg.labels in ("auto", "tags") else None
        if tags is not None:
            source = "tags"
        elif cfg.labels == "tags":
            raise SelectionError(f"{context.stage}: labels: tags but the pool has no 'tags' column or meta.tags")
        elif cfg.tagger is not None:
            tags = llm_tags(item_texts(pool, "prompt"), cfg.tagger)
            source = f"llm:{cfg.tagger.get('model', cfg.tagger['backend'])}"
        elif cfg.labels == "llm":
            raise SelectionError(f"{context.stage}: labels: llm needs a `tagger` generation config")
        else:
            raise SelectionError(
                f"{context.stage}: MIG needs labels and the pool has no tags (a 'tags' column or meta.tags); "
                "configure a `tagger` (a generation backend that tags prompts, as the paper does), or choose "
                "the embedding-cluster variant explicitly with labels: clusters"
            )
        counts: dict[str, int] = {}
        for ts in tags:
            for t in ts:
                counts[t] = counts.get(t, 0) + 1
        vocab = sorted(t for t, c in counts.items() if c >= cfg.min_tag_count)
        if not vocab:
            raise SelectionError(f"{context.stage}: no item has a usable tag (source {source})")
        index = {t: j for j, t in enumerate(vocab)}
        sets = [[index[t] for t in ts if t in index] for ts in tags]
        return source, sets, context.embeddings(vocab, key=("mig_labels", tuple(vocab))), vocab

    def decide(self, pool: pl.DataFrame, context: SelectionContext, budget: int | None) -> pl.DataFrame:
        cfg = self.config
        n = pool.height
        budget = n if budget is None else budget
        q = quality(pool, context, cfg.quality)
        if cfg.quality_transform == "softplus":
            s = np.logaddexp(0.0, q)
        else:
            if (q < 0).any():
                raise SelectionError(
                    f"{context.stage}: MIG needs quality ≥ 0 but {cfg.quality!r} has negative values "
                    "(information must be non-negative); use quality_transform: softplus"
                )
            s = q
        source, label_sets, label_vectors, names = self._labels(pool, context)
        threshold = cfg.threshold if cfg.threshold is not None else CLUSTER_THRESHOLD if source == "clusters" else TAG_THRESHOLD
        p = propagation_matrix(label_graph(label_vectors, threshold), cfg.prop_weight)
        e_hat = propagate(label_sets, s, p, norm=cfg.norm)
        phi = Phi(cfg.phi, cfg.phi_a, cfg.phi_b, cfg.phi_alpha)
        self._e_hat, self._phi = e_hat, phi
        labelled = np.fromiter((len(ls) > 0 for ls in label_sets), dtype=bool, count=n)
        members = np.flatnonzero(labelled)
        every = max(1, min(budget, len(members)) // 10)
        picked, gains = mig_greedy_lazy(
            e_hat[members], budget, phi,
            progress=lambda done: log.info("%s MIG: %d of %d picked", context.stage, done, budget) if done % every == 0 else None,
        )
        order = members[picked]
        kept = np.zeros(n, dtype=bool)
        kept[order] = True
        rank = np.full(n, -1, dtype=np.int64)
        rank[order] = np.arange(len(order))
        gain = np.zeros(n)
        gain[order] = gains
        self.report = {"label_source": source, "labels": len(names), "unlabelled": int((~labelled).sum()),
                       "graph_edges": int(p.nnz), "threshold": threshold, "selected": int(len(order)),
                       "information": information(e_hat[order], phi) if len(order) else 0.0}
        log.info("%s %s: %s", context.stage, "MIG", self.report)
        detail = [
            {"label_source": source, "labels": [names[j] for j in label_sets[i]][:16],
             **({"gain": float(gain[i])} if kept[i] else {})}
            for i in range(n)
        ]
        return decisions(
            context, context.ids(pool), kept, rank=[int(r) if r >= 0 else None for r in rank],
            reason_kept="selected", reason_dropped=["budget" if lab else "no_labels" for lab in labelled], detail=detail,
        )

    def objective(self, rows: np.ndarray, weights: np.ndarray | None = None) -> float | None:
        """E(rows) = Σ_k φ(Σ_i ê_ik), the dataset information MIG's greedy maximises."""
        return information(self._e_hat[np.asarray(rows, dtype=np.int64)], self._phi)
