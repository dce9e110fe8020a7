"""``ulisse.relevance``: the relevance model learned from marks (rank, anomalies with marks, confirmed expansion)."""

from __future__ import annotations

import numpy as np
import pytest

from ulisse.relevance import features, relevance_scores


def _two_kinds(n=300, dim=64, rare=30, shift=3.0, seed=0):
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(size=(n, dim))).astype(np.float32)  # non-negative, as pooled CNN features are
    truth = np.zeros(n, bool)
    truth[:rare] = True
    x[truth, :4] += shift
    return x, truth


def test_features_are_signed_roots_standardised_over_every_row():
    x = np.array([[4.0, -9.0, 1.0], [0.0, 0.0, 1.0], [16.0, 9.0, 1.0]], np.float32)
    z = features(x)
    roots = np.sign(x) * np.sqrt(np.abs(x))
    assert np.allclose(z[:, :2], (roots[:, :2] - roots[:, :2].mean(0)) / roots[:, :2].std(0), atol=1e-6)
    assert np.allclose(z[:, 2], 0)  # a constant column stays finite
    plain = features(x, root=False)
    assert np.allclose(plain[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(), atol=1e-6)


def test_marks_teach_the_kind():
    x, truth = _two_kinds()
    pos, neg = np.flatnonzero(truth)[:5], np.flatnonzero(~truth)[:15]
    s = relevance_scores(x, pos, neg)
    assert s.shape == (len(x),) and ((s >= 0) & (s <= 1)).all()
    unmarked = np.setdiff1d(np.arange(len(x)), np.r_[pos, neg])
    top = unmarked[np.argsort(-s[unmarked])[:20]]
    assert truth[top].mean() >= 0.9  # 25 rare among 280 unmarked (9 %)
    ranks = np.argsort(np.argsort(s))  # the area under the ROC curve, from the ranks
    auc = (ranks[truth].mean() - (truth.sum() - 1) / 2) / (~truth).sum()
    assert auc >= 0.95


def test_random_stand_in_negatives_and_seed():
    x, truth = _two_kinds()
    a = relevance_scores(x, [0, 1], seed=3)
    assert np.array_equal(a, relevance_scores(x, [0, 1], [], seed=3))
    assert not np.array_equal(a, relevance_scores(x, [0, 1], seed=4))
    assert a[truth].mean() > a[~truth].mean()
    assert np.array_equal(relevance_scores(x[:2], [0, 1]), np.ones(2))  # nothing left to stand in: all relevant
    with pytest.raises(ValueError, match="positive"):
        relevance_scores(x, [], [3])


def test_options_change_the_model():
    x, truth = _two_kinds()
    pos, neg = [0, 1, 2], [200, 201, 202, 203]
    default = relevance_scores(x, pos, neg)
    assert np.array_equal(default, relevance_scores(x, pos, neg, C=0.01, root=True))
    assert not np.allclose(default, relevance_scores(x, pos, neg, root=False))
    assert not np.allclose(default, relevance_scores(x, pos, neg, C=1.0))


def test_prepared_features_give_the_same_model():
    """A caller fitting many models (the marks check) computes the features once: the same scores."""
    x, truth = _two_kinds()
    pos, neg = [0, 1, 2], [200, 201, 202, 203]
    assert np.allclose(relevance_scores(features(x), pos, neg, prepared=True), relevance_scores(x, pos, neg))
    assert not np.allclose(relevance_scores(x, pos, neg, prepared=True), relevance_scores(x, pos, neg))
