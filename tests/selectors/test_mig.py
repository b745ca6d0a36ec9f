"""MIG (spec §2): lazy greedy == dense greedy exactly, the §2.6 sanity tests, the selector's label sources."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from curation.selectors import SELECTORS
from curation.selectors.base import SelectionError
from curation.selectors.mig import (
    CLUSTER_THRESHOLD,
    TAG_THRESHOLD,
    Phi,
    information,
    label_graph,
    mig_greedy_dense,
    mig_greedy_lazy,
    parse_tags,
    propagate,
    propagation_matrix,
)
from tests.selectors._synthetic import clustered, pairs_pool


def random_pool(data, n_max=60, l_max=12):
    n = data.draw(st.integers(1, n_max), label="n")
    n_labels = data.draw(st.integers(1, l_max), label="L")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    sets = [sorted(rng.choice(n_labels, size=rng.integers(1, min(4, n_labels) + 1), replace=False).tolist()) for _ in range(n)]
    # few distinct scores and label sets: many exact ties, the hard case for lazy evaluation
    s = rng.choice([0.5, 1.0, 2.0, rng.random() * 3], size=n)
    vectors = rng.standard_normal((n_labels, 4))
    threshold = data.draw(st.sampled_from([0.2, 0.6, 0.9, 1.1]), label="T")
    alpha = data.draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]), label="alpha")
    p = propagation_matrix(label_graph(vectors, threshold), alpha)
    return propagate(sets, s, p, norm=data.draw(st.booleans(), label="norm")), n


phis = st.sampled_from([Phi(), Phi("pow", 1e-3, 0.5), Phi("exp", alpha=1.0), Phi("exp", alpha=0.3)])


@settings(max_examples=150, deadline=None)
@given(st.data(), phis)
def test_lazy_greedy_returns_exactly_the_dense_sequence(data, phi):
    e_hat, n = random_pool(data)
    budget = data.draw(st.integers(1, n), label="budget")
    lazy_order, lazy_gains = mig_greedy_lazy(e_hat, budget, phi)
    dense_order, dense_gains = mig_greedy_dense(e_hat.toarray(), budget, phi)
    assert lazy_order.tolist() == dense_order.tolist()
    assert np.array_equal(lazy_gains, dense_gains)


@settings(max_examples=60, deadline=None)
@given(st.data(), phis)
def test_selected_gains_never_increase_and_no_repeats(data, phi):
    e_hat, n = random_pool(data)
    order, gains = mig_greedy_lazy(e_hat, n, phi)
    assert len(set(order.tolist())) == len(order) == n
    assert (np.diff(gains) <= 0).all()


def reference_greedy(label_sets, s, label_vectors, threshold, alpha, phi, budget):
    """Spec §2.2 transcribed with plain loops (no scipy, no heap): W, P, ê, then the linearised greedy."""
    v = np.asarray(label_vectors, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    n_labels = len(v)
    w = [[(1.0 if p == q else (v[p] @ v[q] if v[p] @ v[q] >= threshold else 0.0)) for q in range(n_labels)]
         for p in range(n_labels)]
    pt = [[w[p][q] if p == q else alpha * w[p][q] for q in range(n_labels)] for p in range(n_labels)]
    col = [sum(pt[p][q] for p in range(n_labels)) for q in range(n_labels)]
    prop = [[pt[p][q] / col[q] for q in range(n_labels)] for p in range(n_labels)]
    e_hat = [[sum(s[i] * prop[p][q] for p in set(label_sets[i])) for q in range(n_labels)] for i in range(len(s))]
    z = [0.0] * n_labels
    left, order = list(range(len(s))), []
    for _ in range(budget):
        g = [phi.b * (zk + phi.a) ** (phi.b - 1) for zk in z]
        best = max(left, key=lambda i: (sum(e * gk for e, gk in zip(e_hat[i], g)), -i))
        order.append(best)
        left.remove(best)
        z = [zk + e for zk, e in zip(z, e_hat[best])]
    return order


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.3, 0.7, 1.1]), st.sampled_from([0.5, 1.0]))
def test_lazy_greedy_matches_a_plain_transcription_of_the_spec(seed, threshold, alpha):
    rng = np.random.default_rng(seed)
    n, n_labels = 14, 5
    sets = [sorted(rng.choice(n_labels, size=rng.integers(1, 3), replace=False).tolist()) for _ in range(n)]
    s = rng.uniform(0.2, 3.0, size=n)  # unequal qualities: index order is no answer
    vectors = rng.standard_normal((n_labels, 3))
    p = propagation_matrix(label_graph(vectors, threshold), alpha)
    order, _ = mig_greedy_lazy(propagate(sets, s, p), 9)
    assert order.tolist() == reference_greedy(sets, s, vectors, threshold, alpha, Phi(), 9)


def identity_graph_items(labels, scores):
    p = propagation_matrix(label_graph(np.eye(max(labels) + 1), 1.1), 1.0)  # T > 1: only the diagonal
    return propagate([[lab] for lab in labels], np.asarray(scores, dtype=np.float64), p)


def test_identity_graph_cycles_round_robin_through_labels():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(4), 3))  # shuffled: index order is not round robin
    e_hat = identity_graph_items(labels.tolist(), np.ones(12))
    order, _ = mig_greedy_lazy(e_hat, 12)
    for r in range(3):
        assert sorted(int(labels[i]) for i in order[4 * r : 4 * r + 4]) == [0, 1, 2, 3]


def test_round_robin_survives_unequal_qualities_that_top_k_would_follow():
    """Label 0 holds the three best items: top-k by quality takes all three first; MIG moves on
    to the other labels after one (φ' falls once label 0 has information)."""
    labels = [1, 0, 2, 0, 3, 0, 1, 2, 3]
    scores = [1.0, 5.0, 1.1, 4.9, 1.2, 4.8, 0.9, 1.0, 1.1]
    order, _ = mig_greedy_lazy(identity_graph_items(labels, scores), 4)
    assert sorted(labels[i] for i in order) == [0, 1, 2, 3]
    assert order[0] == 1


def test_higher_quality_first_within_a_label():
    sets = [[0], [0], [0], [1]]
    p = propagation_matrix(label_graph(np.eye(2), 1.1))
    e_hat = propagate(sets, np.array([1.0, 3.0, 2.0, 0.1]), p)
    order, _ = mig_greedy_lazy(e_hat, 4)
    within = [i for i in order if i < 3]
    assert within == [1, 2, 0]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 5.0), st.sampled_from([0.0, 0.5, 0.95]))
def test_propagation_columns_sum_to_one_and_alpha_zero_is_identity(seed, alpha, threshold):
    v = np.random.default_rng(seed).standard_normal((7, 3))
    p = propagation_matrix(label_graph(v, threshold), alpha).toarray()
    assert np.allclose(p.sum(axis=0), 1.0)
    assert (p >= 0).all()
    assert np.array_equal(propagation_matrix(label_graph(v, threshold), 0.0).toarray(), np.eye(7))


def test_label_graph_links_labels_above_threshold_only():
    v = np.array([[1.0, 0.0], [0.95, 0.31], [0.0, 1.0]])
    w = label_graph(v, 0.9).toarray()
    assert w[0, 1] > 0.9 and w[0, 2] == 0 and np.array_equal(np.diag(w), np.ones(3))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), phis)
def test_exact_gain_greedy_is_within_1_minus_1_over_e_of_optimum(seed, phi):
    rng = np.random.default_rng(seed)
    n, n_labels, budget = 7, 4, 3
    sets = [sorted(rng.choice(n_labels, size=rng.integers(1, 3), replace=False).tolist()) for _ in range(n)]
    p = propagation_matrix(label_graph(rng.standard_normal((n_labels, 3)), 0.3), 1.0)
    e_hat = propagate(sets, rng.random(n) * 2, p).toarray()
    order, _ = mig_greedy_dense(e_hat, budget, phi, gain="exact")
    best = max(information(e_hat[list(c)], phi) for c in itertools.combinations(range(n), budget))
    assert information(e_hat[order], phi) >= (1 - 1 / np.e) * best - 1e-12


def test_parse_tags_reads_json_answers():
    assert parse_tags('Sure: [{"tag": "Math", "explanation": "x"}, {"tag": " algebra "}]') == ["math", "algebra"]
    assert parse_tags('["cooking", "recipes"]') == ["cooking", "recipes"]
    assert parse_tags("no tags here") == [] and parse_tags(None) == []


# ---------------------------------------------------------------- the selector


def test_selector_with_tags_matches_the_reference_and_is_not_top_k():
    rng = np.random.default_rng(7)
    n = 40
    topic = rng.permutation(np.arange(n) % 4)  # shuffled layout
    tags = [[f"topic {t}"] for t in topic]
    margin = rng.normal(size=n) + 2.0 * (topic == 2)  # topic 2 is best by quality
    pool, ctx = pairs_pool(clustered(n, 8, 4, 0), margin, tags=tags)
    sel = SELECTORS.build("mig", {"kind": "mig", "budget": 8})
    d = sel.select(pool, ctx)
    assert sel.report["label_source"] == "tags" and sel.report["threshold"] == TAG_THRESHOLD
    got = [pool["pair_id"].to_list().index(t) for t in d.filter(d["kept"]).sort("rank")["target_id"].to_list()]
    vocab = sorted({f"topic {t}" for t in topic})
    want = reference_greedy([[vocab.index(f"topic {t}")] for t in topic], np.logaddexp(0, margin),
                            ctx.embed(vocab), TAG_THRESHOLD, 1.0, Phi(), 8)
    assert got == want
    assert set(topic[got].tolist()) == {0, 1, 2, 3}  # spread over the topics
    top_quality = np.argsort(-margin, kind="stable")[:8]
    assert set(got) != set(top_quality.tolist())
    assert d["reason"].to_list().count("budget") == 32


def test_labels_auto_without_tags_or_tagger_is_an_error_not_clusters():
    pool, ctx = pairs_pool(clustered(30, 8, 3, 1), np.ones(30))
    with pytest.raises(SelectionError, match="no tags.*`tagger`.*labels: clusters"):
        SELECTORS.build("mig", {"kind": "mig", "budget": 5}).select(pool, ctx)


def test_cluster_variant_is_chosen_by_name_and_is_deterministic():
    x = clustered(120, 16, 6, 1)
    order = np.random.default_rng(2).permutation(120)
    x = x[order]
    pool, ctx = pairs_pool(x, np.random.default_rng(3).uniform(0.5, 1.5, size=120))
    cfg = {"kind": "mig", "budget": 12, "labels": "clusters", "cluster_resolutions": [6, 12]}
    sel = SELECTORS.build("mig", cfg)
    d1 = sel.select(pool, ctx)
    assert sel.report["label_source"] == "clusters" and sel.report["labels"] == 18
    assert sel.report["threshold"] == CLUSTER_THRESHOLD
    assert json.loads(d1.filter(d1["kept"])["detail"][0])["label_source"] == "clusters"
    assert d1.equals(SELECTORS.build("mig", cfg).select(pool, ctx))
    # six well-separated clusters: the first six picks cover all of them
    first6 = d1.filter(d1["kept"]).sort("rank")["target_id"].to_list()[:6]
    ids = pool["pair_id"].to_list()
    assert sorted(int(order[ids.index(t)]) % 6 for t in first6) == list(range(6))


def test_default_threshold_links_related_minilm_tags_that_0_9_leaves_apart():
    from curation.selectors.base import minilm_embed

    tags = ["python programming", "debugging python code", "recipe request", "cooking instructions", "algebra"]
    v = minilm_embed(tags)
    linked = label_graph(v, TAG_THRESHOLD).toarray() > 0
    assert linked[0, 1] and linked[2, 3] and not linked[0, 2] and not linked[1, 4]
    assert not (label_graph(v, 0.9).toarray() > 0)[[0, 2], [1, 3]].any()


def test_objective_is_the_information_of_the_rows():
    tags = [[f"t{i % 3}"] for i in range(9)]
    pool, ctx = pairs_pool(clustered(9, 4, 3, 0), np.linspace(0, 2, 9), tags=tags)
    sel = SELECTORS.build("mig", {"kind": "mig", "budget": 3, "threshold": 1.1})
    d = sel.select(pool, ctx)
    kept = np.flatnonzero(d["kept"].to_numpy())
    assert sel.objective(kept) == pytest.approx(sel.report["information"])
    s = np.logaddexp(0, np.linspace(0, 2, 9))
    by_hand = sum((s[kept[[i % 3 == t for i in kept]]].sum() + 1e-6) ** 0.8 for t in range(3))
    assert sel.objective(kept) == pytest.approx(by_hand)
    assert sel.objective(np.array([0, 3, 6])) < sel.objective(kept)  # one topic only


def test_items_without_tags_are_dropped_with_a_reason():
    x = clustered(10, 8, 2, 0)
    tags = [["a"] if i % 2 else [] for i in range(10)]
    pool, ctx = pairs_pool(x, np.ones(10), tags=tags)
    sel = SELECTORS.build("mig", {"kind": "mig", "budget": 10})
    d = sel.select(pool, ctx)
    assert d.filter(~d["kept"])["reason"].unique().to_list() == ["no_labels"]
    assert d["kept"].sum() == 5 and sel.report["unlabelled"] == 5


def test_negative_quality_without_softplus_is_a_clear_error():
    pool, ctx = pairs_pool(clustered(6, 4, 2, 0), np.array([1.0, -1.0, 2, 3, 4, 5]), tags=[["a"]] * 6)
    with pytest.raises(SelectionError, match="quality ≥ 0"):
        SELECTORS.build("mig", {"kind": "mig", "quality_transform": "none"}).select(pool, ctx)


def test_asking_for_tags_or_llm_labels_that_are_not_there_fails_early():
    pool, ctx = pairs_pool(clustered(6, 4, 2, 0))
    with pytest.raises(SelectionError, match="no 'tags' column"):
        SELECTORS.build("mig", {"kind": "mig", "labels": "tags"}).select(pool, ctx)
    with pytest.raises(SelectionError, match="needs a `tagger`"):
        SELECTORS.build("mig", {"kind": "mig", "labels": "llm"}).select(pool, ctx)


def test_sparse_propagation_equals_dense_formula():
    rng = np.random.default_rng(3)
    sets = [[0, 2], [1], [2, 3]]
    s = np.array([1.0, 2.0, 0.5])
    p = propagation_matrix(label_graph(rng.standard_normal((4, 2)), 0.5), 0.7)
    v = np.zeros((3, 4))
    for i, ls in enumerate(sets):
        v[i, ls] = 1
    assert np.allclose(propagate(sets, s, p).toarray(), (s[:, None] * v) @ p.toarray())
    assert np.allclose(propagate(sets, s, p, norm=True).toarray(), (s[:, None] * v / v.sum(1, keepdims=True)) @ p.toarray())
    assert sparse.issparse(propagate(sets, s, p))


@pytest.mark.slow
def test_llm_tagging_runs_through_a_real_generation_backend(tiny_chat):
    """The tiny offline model is untrained: its answers carry no JSON tags, which must be a clear error."""
    pool, ctx = pairs_pool(clustered(3, 4, 1, 0))
    tagger = {"backend": "transformers", "model": str(tiny_chat), "sampling": {"max_tokens": 8, "temperature": 0.0}}
    with pytest.raises(SelectionError, match="no item has a usable tag \\(source llm:"):
        SELECTORS.build("mig", {"kind": "mig", "labels": "llm", "tagger": tagger}).select(pool, ctx)
