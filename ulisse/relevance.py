"""Relevance learned from an astronomer's marks: the one model behind "more like my marks".

:func:`relevance_scores` trains a classifier on feature vectors, marked-relevant rows
against marked-not-relevant rows, and scores every row of the index (the probability
of "relevant"). The feedback plugin's ``rank``, the anomaly ranking with marks and the
confirmed expansion all call it, so a better model here improves them all.

Example:
    >>> import numpy as np
    >>> from ulisse.relevance import relevance_scores
    >>> X = np.random.default_rng(0).normal(size=(100, 8)).astype("float32")
    >>> s = relevance_scores(X, positives=[0, 1], negatives=[2, 3])
    >>> s.shape
    (100,)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

RANDOM_NEGATIVES = 300  # random unmarked rows standing in as negatives while none is marked
C = 0.01  # inverse regularisation strength: few labels, 1280 features (benchmarks/feedback.md)
ROOT = True  # signed square root of the features before standardising (chosen on held-out prototypes: feedback.md)


def features(vectors: np.ndarray, root: bool = ROOT) -> np.ndarray:
    """The classifier's inputs: signed square roots of the vectors (with ``root``), standardised over all rows.

    The square root tempers the few large activations of pooled CNN features, so that
    one bright channel does not dominate a classifier trained on a handful of marks.
    """
    X = np.asarray(vectors, dtype=np.float32)
    if root:
        X = np.sign(X) * np.sqrt(np.abs(X))
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)


def relevance_scores(vectors: np.ndarray, positives: Sequence[int], negatives: Sequence[int] = (), *,
                     seed: int = 0, C: float = C, root: bool = ROOT, prepared: bool = False) -> np.ndarray:
    """The probability of "relevant" for every row of ``vectors``, learned from marked rows.

    A logistic regression (balanced classes, inverse regularisation ``C``) on
    :func:`features`: the vectors' signed square roots standardised over the whole
    index, not over the few marked objects.

    Args:
        vectors: the index's vectors, one row per object (row order).
        positives: row numbers marked relevant (at least one).
        negatives: row numbers marked not relevant; with none, ``RANDOM_NEGATIVES`` random
            unmarked rows stand in.
        seed: the seed of the random stand-in negatives.
        C: the logistic regression's inverse regularisation strength.
        root: take the signed square root of the vectors first (False: the vectors as they are).
        prepared: ``vectors`` are already :func:`features` of the vectors (a caller fitting many
            models on one index computes them once; ``root`` is then not used).

    Returns:
        One float per row, in [0, 1].
    """
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(vectors, dtype=np.float32)
    pos = np.asarray(positives, dtype=np.int64)
    neg = np.asarray(negatives, dtype=np.int64)
    if pos.size == 0:
        raise ValueError("relevance needs at least one positive row")
    if neg.size == 0:
        marked = np.zeros(len(X), bool)
        marked[pos] = True
        free = np.flatnonzero(~marked)
        rng = np.random.default_rng(seed)
        neg = rng.choice(free, size=min(RANDOM_NEGATIVES, free.size), replace=False) if free.size else neg
    if neg.size == 0:
        return np.ones(len(X), dtype=float)
    rows = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    Z = X if prepared else features(X, root)
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=3000)
    model.fit(Z[rows], y)
    return model.predict_proba(Z)[:, 1]
