"""Simulated rounds of oracle marks for the "more like my marks" re-ranking (benchmarks/feedback.md).

The labelling loop of :mod:`ulisse.plugins.feedback` with an oracle that marks every
shown object by its true label; the re-ranking is the product's own
:func:`ulisse.plugins.feedback.rank`, the neighbours its own ``Index.query``.

Example::

    >>> import ulisse
    >>> from ulisse_bench.feedback import oracle_rounds
    >>> index = ulisse.open_index("agn-index")                                                # doctest: +SKIP
    >>> oracle_rounds(index, "label", "AGN", prototypes=20, rounds=3, per_round=16).mean(numeric_only=True)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ulisse.plugins.feedback import rank


def oracle_rounds(index, label: str, positive: str, prototypes: int = 20, rounds: int = 3, per_round: int = 16,
                  seed: int = 0, vectors: np.ndarray | None = None) -> pd.DataFrame:
    """The labelling loop with an oracle: per prototype, the fraction of ``positive`` in each round of ``per_round``.

    Round 1 shows the prototype's nearest neighbours; they are marked by their true
    labels, the index is re-ranked (:func:`~ulisse.plugins.feedback.rank`, only unmarked
    objects), the next ``per_round`` are shown and marked, and so on. Beside it, direct
    kNN shows the next ``per_round`` neighbours each round (ranks 17-32, 33-48, ...).
    Prototypes are drawn as ``ulisse benchmark agn`` draws them (``numpy.random.default_rng(seed)``).

    Args:
        index: an open :class:`ulisse.Index` with the catalogue column ``label``.
        label, positive: objects whose ``label`` is ``positive`` are the relevant ones.
        vectors: the index's vectors (row order), when the caller has them already.

    Returns:
        One row per prototype: ``prototype``, ``knn_1``.., ``feedback_1``.. (fractions).
    """
    truth = (index.metadata[label].astype(str) == positive).to_numpy()
    ids = index.metadata["id"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(ids[truth], size=min(prototypes, int(truth.sum())), replace=False)
    X = np.asarray(index.all_vectors() if vectors is None else vectors, dtype=np.float32)
    rows = []
    for pid in chosen:
        pid = str(pid)
        knn = index.query(pid, k=rounds * per_round).table["id"].astype(str).tolist()
        row = {"prototype": pid}
        for r in range(rounds):
            row[f"knn_{r + 1}"] = float(np.mean([truth[index.row_of(i)] for i in knn[r * per_round:(r + 1) * per_round]]))
        positives, negatives = [pid], []
        shown = knn[:per_round]
        for r in range(rounds):
            row[f"feedback_{r + 1}"] = float(np.mean([truth[index.row_of(i)] for i in shown]))
            positives += [i for i in shown if truth[index.row_of(i)]]
            negatives += [i for i in shown if not truth[index.row_of(i)]]
            if r + 1 < rounds:
                shown = rank(index, positives, negatives, per_round, seed=seed, vectors=X)["id"].astype(str).tolist()
        rows.append(row)
    return pd.DataFrame(rows)
