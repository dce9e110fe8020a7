"""Anomalies that learn from the astronomer's marks (active anomaly detection, as Astronomaly does).

The plain anomaly list shows what is unlike the rest, and much of that is artefacts or
kinds the astronomer does not want. :func:`discover` re-ranks the anomaly list with
the relevance learned from the marks (:func:`ulisse.relevance.relevance_scores`, the
model behind ``ulisse rank``): objects like those marked relevant rise, objects like
those marked not relevant sink, and marked objects are left out ("show only unmarked").

Combined score (``combine``), higher first; ``a`` is the anomaly score's percentile
in the index (0-1], ``r`` the relevance probability:

``product`` (default)
    ``a * r``: an anomalous object the marks call irrelevant sinks, a relevant one
    that is barely anomalous stays low. Chosen on ``ulisse benchmark anomalies``
    (benchmarks/anomalies.md), against the others below.
``rank_product``
    ``a * rank-percentile(r)``: the two rankings weighted alike, whatever the spread of ``r``.
``sum``
    ``(a + r) / 2``.
``relevance``
    ``r`` alone (``ulisse rank`` restricted to unmarked objects: the anomaly score plays no part).

With marks but no relevant one, ``r`` is one minus the probability of looking like the
not-relevant marks (those against random unmarked objects); with no mark at all the
ranking is the plain anomaly list.

Artefacts (``artefacts``: ``hide``, the default, ``show`` or ``only``) are the flags of
:mod:`ulisse.plugins.anomalies.artefacts`; the stored derived set is used when fresh,
else only the candidates are checked, so a large index never reads every cutout for it.

Example:
    >>> from ulisse.plugins.anomalies.feedback import discover
    >>> r = discover(index, top=20, positives=["obj7"], negatives=["obj2", "obj9"])   # doctest: +SKIP
    >>> r.table[["rank", "id", "score", "anomaly", "relevance"]]                       # doctest: +SKIP
    >>> r.feedback                                                                    # doctest: +SKIP
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ulisse.errors import QueryError
from ulisse.plugins.anomalies import DEFAULT_K, AnomalyRanking, _method, anomaly_scores, default_method
from ulisse.plugins.anomalies.artefacts import SET as ARTEFACT_SET, artefact_kind
from ulisse.plugins.morphology import morphology_features, relevance as morphology_relevance, use_morphology

COMBINE = ("product", "rank_product", "sum", "relevance")
DEFAULT_COMBINE = "product"
ARTEFACT_MODES = ("hide", "show", "only")
STAND_IN = 100  # random unmarked objects added to the negatives (see relevance_of; 0, 100, 300 tried)


def _percentile(x: np.ndarray) -> np.ndarray:
    """Each value's percentile rank in (0, 1], ties sharing the highest."""
    return pd.Series(x).rank(method="max", pct=True).to_numpy()


def combine_scores(anomaly: np.ndarray, relevance: np.ndarray | None, combine: str = DEFAULT_COMBINE) -> np.ndarray:
    """The anomaly scores of every object combined with its relevance probability (None: the anomaly percentile)."""
    if combine not in COMBINE:
        raise QueryError(f"combine={combine!r}: expected one of {', '.join(COMBINE)}")
    a = _percentile(np.asarray(anomaly, np.float64))
    if relevance is None:
        return a
    r = np.asarray(relevance, np.float64)
    if combine == "product":
        return a * r
    if combine == "rank_product":
        return a * _percentile(r)
    if combine == "sum":
        return (a + r) / 2
    return r


def gather_marks(index, positives: Iterable[str] = (), negatives: Iterable[str] = (),
                 use_marks: bool | None = None) -> tuple[list[str], list[str], bool]:
    """(positives, negatives, whether the stored marks were used): the given ids and, by default, the stored marks.

    ``use_marks`` None uses the marks stored with the index when there are any. A given id
    overrides its stored mark.

    Raises:
        QueryError: an id given both relevant and not relevant, or not in the index.
    """
    from ulisse.plugins.feedback import marks

    pos = list(dict.fromkeys(str(i) for i in positives))
    neg = list(dict.fromkeys(str(i) for i in negatives))
    both = set(pos) & set(neg)
    if both:
        raise QueryError(f"marked both relevant and not: {', '.join(sorted(both)[:5])}")
    stored = marks(index) if use_marks is not False else None
    used = stored is not None and len(stored) > 0
    if used:
        given = set(pos) | set(neg)
        rest = stored[~stored["id"].astype(str).isin(given)]
        pos += [str(i) for i in rest.loc[rest["relevant"].astype(bool), "id"]]
        neg += [str(i) for i in rest.loc[~rest["relevant"].astype(bool), "id"]]
    for i in pos + neg:
        index.row_of(i)  # an unknown id is an error
    return pos, neg, used


def relevance_of(vectors: np.ndarray, pos_rows: Sequence[int], neg_rows: Sequence[int], seed: int = 0,
                 stand_in: int | None = None, morphology: np.ndarray | None = None) -> np.ndarray | None:
    """The relevance probability of every row (:func:`ulisse.relevance.relevance_scores`); None without any mark.

    ``stand_in`` random unmarked rows join the negatives (default :data:`STAND_IN`): among anomalies the
    relevant kinds are rare, so a random object is almost surely not one, and a handful of marks alone
    (19 relevant against 1 not, say) teaches the model little of what is not wanted.
    ``morphology``: the statmorph statistics' z-scores (:func:`ulisse.plugins.morphology.morphology_features`);
    with a relevant mark, a model on them is averaged with the vectors' (:func:`ulisse.plugins.morphology.relevance`).
    """
    from ulisse.relevance import relevance_scores

    stand_in = STAND_IN if stand_in is None else stand_in
    pos, neg = np.asarray(pos_rows, np.int64), np.asarray(neg_rows, np.int64)
    if pos.size and stand_in:
        free = np.setdiff1d(np.arange(len(vectors)), np.concatenate([pos, neg]))
        extra = np.random.default_rng(seed).choice(free, size=min(stand_in, free.size), replace=False)
        neg = np.concatenate([neg, extra])
    if pos.size:
        r = relevance_scores(vectors, pos, neg, seed=seed)
        if morphology is not None:
            r = morphology_relevance(morphology, r, pos, neg, seed=seed)
        return r
    if neg.size:  # only "not this": one minus the likeness to the not-relevant marks
        return 1.0 - relevance_scores(vectors, neg, (), seed=seed)
    return None


class ArtefactFlags:
    """Artefact kinds by row (``kind(row)``, ``''`` when clean): the stored derived set when fresh, else each
    asked-for cutout checked once (so a large index never reads every cutout for a top-20 list)."""

    def __init__(self, index):
        self.index = index
        self.stored = None
        if "source" not in index.metadata_columns:  # vectors without cutouts: nothing to check
            self.stored = np.full(len(index), "", dtype=object)
        elif ARTEFACT_SET in index.derived_names() and index.derived_is_fresh(ARTEFACT_SET):
            self.stored = index.derived(ARTEFACT_SET)["artefact_kind"].astype(str).to_numpy()
        self.checked: dict[int, str] = {}

    def kind(self, row: int) -> str:
        if self.stored is not None:
            return str(self.stored[row])
        if row not in self.checked:
            from ulisse.plot import thumbnail

            image = thumbnail(self.index, self.index.id_of(row))
            self.checked[row] = artefact_kind(image) if image is not None else ""
        return self.checked[row]


def discover(index, top: int = 20, method: str | None = None, k: int = DEFAULT_K, positives: Iterable[str] = (),
             negatives: Iterable[str] = (), *, use_marks: bool | None = None, artefacts: str = "hide",
             combine: str = DEFAULT_COMBINE, label: str | None = None, seed: int = 0, progress: bool = True,
             recompute: bool = False, vectors: np.ndarray | None = None, scores: np.ndarray | None = None,
             morphology: bool | None = None) -> AnomalyRanking:
    """The ``top`` unmarked objects ranked by anomaly and by what the marks teach, artefacts hidden by default.

    Parameters
    ----------
    index : ulisse.Index
    top : int
        How many objects to return.
    method, k, progress, recompute
        The anomaly score, as in :func:`ulisse.plugins.anomalies.anomaly_scores`; without ``method``,
        :func:`ulisse.plugins.anomalies.default_method` (``kth``; the relevance learned from marks
        carries the morphology).
    positives, negatives : ids
        Objects marked relevant and not relevant (added to the stored marks).
    use_marks : bool or None
        Use the marks stored with the index (None: when there are any).
    artefacts : {"hide", "show", "only"}
        Leave out objects flagged as artefacts, keep them, or show only them.
    combine : str
        How the anomaly score and the relevance combine (:data:`COMBINE`).
    label : str, optional
        A metadata column of classes: the ranking tells each class's fraction at the top.
    seed : int
        The seed of the relevance model's stand-in objects.
    vectors, scores : numpy.ndarray, optional
        The index's vectors and anomaly scores (row order), when the caller has them.
    morphology : bool or None
        Learn the relevance from statmorph's statistics of the cutouts too (:mod:`ulisse.plugins.morphology`);
        None: when they are stored, or the index keeps cutouts and is small enough to measure them now
        (:func:`ulisse.plugins.morphology.use_morphology`).

    Returns
    -------
    AnomalyRanking
        ``table``: ``rank``, ``id``, ``score`` (with marks the combined score, then ``anomaly``, the
        anomaly score, and ``relevance``; without, the anomaly score), ``artefact_kind``, then the
        metadata; ``feedback``: what was used (marks, counts, combination, artefact filter, how
        many were left out).

    Raises
    ------
    QueryError
        ``top`` < 1, an unknown or doubly marked id, an unknown ``combine`` or ``artefacts``.
    """
    from ulisse.labels import class_fractions, labels_of

    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise QueryError(f"top={top}: must be at least 1")
    if artefacts not in ARTEFACT_MODES:
        raise QueryError(f"artefacts={artefacts!r}: expected one of {', '.join(ARTEFACT_MODES)}")
    if combine not in COMBINE:
        raise QueryError(f"combine={combine!r}: expected one of {', '.join(COMBINE)}")
    names = labels_of(index, label) if label is not None else None
    pos, neg, used = gather_marks(index, positives, negatives, use_marks)
    pos_rows = np.array([index.row_of(i) for i in pos], np.int64)
    neg_rows = np.array([index.row_of(i) for i in neg], np.int64)
    with_morphology = len(pos_rows) > 0 and use_morphology(index, morphology)
    method = method or default_method()
    anomaly = (np.asarray(scores, np.float64) if scores is not None else
               anomaly_scores(index, method=method, k=k, progress=progress, recompute=recompute)["score"].to_numpy())
    relevance, morph = None, None
    if len(pos_rows) or len(neg_rows):
        X = np.asarray(index.all_vectors() if vectors is None else vectors, np.float32)
        if with_morphology:
            morph = morphology_features(index)
        relevance = relevance_of(X, pos_rows, neg_rows, seed, morphology=morph)
    combined = combine_scores(anomaly, relevance, combine)
    marked = np.zeros(len(index), bool)
    marked[pos_rows] = True
    marked[neg_rows] = True
    flags = ArtefactFlags(index)
    chosen, kinds, hidden = [], [], 0
    for row in np.argsort(-combined, kind="stable"):
        if marked[row]:
            continue
        kind = flags.kind(int(row))
        if (artefacts == "hide" and kind) or (artefacts == "only" and not kind):
            hidden += 1
            continue
        chosen.append(int(row))
        kinds.append(kind)
        if len(chosen) == top:
            break
    rows = np.array(chosen, np.int64)
    meta = index.metadata_rows(rows)
    if relevance is None:  # the plain list: its score is the anomaly score
        head = {"rank": np.arange(1, len(rows) + 1), "id": meta["id"], "score": anomaly[rows]}
    else:
        head = {"rank": np.arange(1, len(rows) + 1), "id": meta["id"], "score": combined[rows],
                "anomaly": anomaly[rows], "relevance": relevance[rows]}
    table = pd.concat([pd.DataFrame({**head, "artefact_kind": kinds}), meta.drop(columns=["id"])], axis=1)
    ranking = AnomalyRanking(table, method, int(k) if _method(method).uses_k else None, label)
    ranking.feedback = {"marks": used, "positives": len(pos), "negatives": len(neg),
                        "combine": combine if relevance is not None else None, "artefacts": artefacts,
                        "left_out": hidden, "marked_left_out": int(marked.sum()),
                        "morphology": relevance is not None and morph is not None}
    if names is not None and len(rows):
        fractions, used_classes = class_fractions(names.iloc[rows].tolist(), names, [len(rows)])
        ranking.fractions, ranking.used = fractions, used_classes
        ranking.base_rate = {str(c): float(v) for c, v in fractions["base_rate"].items()}
        ranking.precision = {str(c): float(v) for c, v in fractions[len(rows)].items()}
    return ranking


def next_unmarked(index, shown: int = 20, **options) -> AnomalyRanking:
    """The next ``shown`` objects to look at: :func:`discover` with the stored marks (the Anomalies page's "next 20")."""
    options.setdefault("use_marks", True)
    return discover(index, top=shown, **options)
