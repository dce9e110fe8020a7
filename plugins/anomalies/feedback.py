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

Whether the marks teach (:func:`marks_check`, in ``feedback["check"]`` with two relevant marks or
more): each of up to :data:`HELD_OUT` relevant marks is held out in turn, the model learns from the
other marks, and the held-out object's place among the unmarked objects by the combined score says
whether the next page would have shown it. Many held-out marks within the next page: the marks
teach the model what you look for; few: mark more, or mark differently.

With the morphology (:mod:`ulisse.plugins.morphology`), the same held-out marks choose how much the
shape statistics weigh in the relevance (:data:`WEIGHTS`, :func:`choose_weight`): the vectors know
arcs and rings, the statistics know tidal tails better, and which of the two your marks need is
what the held-out marks tell (benchmarks/anomalies.md). So with the morphology the held-out models
are fitted even when the check is not asked for.

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

from ulisse.derived import join_objects
from ulisse.checks import id_list, whole
from ulisse.errors import QueryError
from ulisse.plugins.anomalies import DEFAULT_K, AnomalyRanking, _method, anomaly_scores, default_method
from ulisse.plugins.anomalies.artefacts import SET as ARTEFACT_SET, artefact_kind
from ulisse.plugins.feedback import gather_marks
from ulisse.plugins.morphology import RELEVANCE_WEIGHT, morphology_features, shape_relevance, use_morphology
from ulisse.relevance import features, relevance_scores

COMBINE = ("product", "rank_product", "sum", "relevance")
DEFAULT_COMBINE = "product"
ARTEFACT_MODES = ("hide", "show", "only")
STAND_IN = 100  # random unmarked objects added to the negatives (see relevance_of; 0, 100, 300 tried)
HELD_OUT = 10  # relevant marks held out, at most, by the check of what the marks teach (marks_check)
WEIGHTS = (0.0, 0.25, 0.5)  # the shape statistics' share of the relevance: one chosen per call on held-out marks


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


def _with_stand_ins(n: int, pos: np.ndarray, neg: np.ndarray, seed: int, stand_in: int,
                    keep_out: Sequence[int]) -> np.ndarray:
    """The not-relevant rows and ``stand_in`` random unmarked rows (never one of ``keep_out``)."""
    free = np.setdiff1d(np.arange(n), np.concatenate([pos, neg, np.asarray(keep_out, np.int64)]))
    extra = np.random.default_rng(seed).choice(free, size=min(stand_in, free.size), replace=False)
    return np.concatenate([neg, extra])


def relevance_parts(vectors: np.ndarray, pos_rows: Sequence[int], neg_rows: Sequence[int], seed: int = 0,
                    stand_in: int | None = None, morphology: np.ndarray | None = None, keep_out: Sequence[int] = (),
                    prepared: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(the vectors' relevance, the statistics' relevance or None without ``morphology``) for at least one relevant
    mark: two models trained on the same marked rows and stand-ins (:func:`relevance_of` mixes them)."""
    stand_in = STAND_IN if stand_in is None else stand_in
    pos, neg = np.asarray(pos_rows, np.int64), np.asarray(neg_rows, np.int64)
    if stand_in:
        neg = _with_stand_ins(len(vectors), pos, neg, seed, stand_in, keep_out)
    r = relevance_scores(vectors, pos, neg, seed=seed, prepared=prepared)
    if morphology is None:
        return r, None
    return r, shape_relevance(morphology, pos, neg, seed=seed)


def mix(vector_relevance: np.ndarray, shape_relevance: np.ndarray | None, weight: float | None = None) -> np.ndarray:
    """``(1 - w) * vector_relevance + w * shape_relevance`` (``w`` = ``weight``, None: the morphology plugin's
    ``RELEVANCE_WEIGHT``); the vectors' relevance alone without the statistics'."""
    if shape_relevance is None:
        return np.asarray(vector_relevance, np.float64)
    w = RELEVANCE_WEIGHT if weight is None else float(weight)
    return (1 - w) * np.asarray(vector_relevance, np.float64) + w * np.asarray(shape_relevance, np.float64)


def relevance_of(vectors: np.ndarray, pos_rows: Sequence[int], neg_rows: Sequence[int], seed: int = 0,
                 stand_in: int | None = None, morphology: np.ndarray | None = None,
                 keep_out: Sequence[int] = (), prepared: bool = False, weight: float | None = None) -> np.ndarray | None:
    """The relevance probability of every row (:func:`ulisse.relevance.relevance_scores`); None without any mark.

    ``stand_in`` random unmarked rows join the negatives (default :data:`STAND_IN`): among anomalies the
    relevant kinds are rare, so a random object is almost surely not one, and a handful of marks alone
    (19 relevant against 1 not, say) teaches the model little of what is not wanted.
    ``morphology``: the statmorph statistics' z-scores (:func:`ulisse.plugins.morphology.morphology_features`);
    with a relevant mark, a model on them is mixed with the vectors' (:func:`relevance_parts`, :func:`mix`),
    weighing ``weight`` (None: :data:`ulisse.plugins.morphology.RELEVANCE_WEIGHT`; :func:`discover` chooses it
    from the marks, :func:`marks_check`).
    ``keep_out``: rows never drawn as stand-ins (a relevant mark held out by :func:`marks_check`).
    ``prepared``: ``vectors`` are already the model's features (:func:`ulisse.relevance.features`).
    """
    pos, neg = np.asarray(pos_rows, np.int64), np.asarray(neg_rows, np.int64)
    if pos.size:
        w = RELEVANCE_WEIGHT if weight is None else float(weight)
        shape = morphology if w else None  # a share of 0: no model on the statistics to fit
        return mix(*relevance_parts(vectors, pos, neg, seed, stand_in, shape, keep_out, prepared), w)
    if neg.size:  # only "not this": one minus the likeness to the not-relevant marks
        return 1.0 - relevance_scores(vectors, neg, (), seed=seed, prepared=prepared)
    return None


def choose_weight(places: dict) -> float | None:
    """The weight whose held-out marks came back highest (the least mean log place: one mark found at place 1
    counts as much as ten places lost far down); a tie goes to the weight nearest the default."""
    if list(places) == [None]:
        return None
    return min(places, key=lambda w: (float(np.mean(np.log(places[w]))), abs(w - RELEVANCE_WEIGHT)))


def marks_check(anomaly: np.ndarray | None, vectors: np.ndarray, pos_rows: Sequence[int], neg_rows: Sequence[int],
                combine: str = DEFAULT_COMBINE, *, seed: int = 0, morphology: np.ndarray | None = None,
                page: int = 20, limit: int = HELD_OUT, prepared: bool = False,
                weights: Sequence[float] = WEIGHTS) -> dict | None:
    """Whether the marks teach: relevant marks held out in turn, and where the others would have ranked them.

    Each of up to ``limit`` relevant marks (a seeded sample when there are more) is held out: the
    relevance is learned from the other marks (:func:`relevance_parts`, the held-out object never a
    stand-in), combined with the anomaly score as :func:`discover` combines them (``anomaly`` None: the
    relevance alone), and the object's place is 1 + the number of unmarked objects scored above it.
    Artefacts are not left out of the count (the filter would only move the places up).

    With ``morphology``, the places are found for each of ``weights`` (the statistics' share of the
    relevance, :func:`mix`), and the weight whose marks came back highest (:func:`choose_weight`) is
    the one :func:`discover` uses: its places are the ones reported (chosen on these marks, so a
    little better than a fresh mark's would be).

    ``prepared``: ``vectors`` are already the model's features (:func:`ulisse.relevance.features`).

    Returns:
        None with fewer than two relevant marks; else ``held_out`` (how many), ``places`` (sorted),
        ``median_place``, ``within`` (how many places are at most ``page``), ``page``, ``unmarked``
        (the objects the places are among), ``weight`` (the statistics' chosen weight; None without
        them) and ``weights`` (each weight tried and its median place).
    """
    pos, neg = np.asarray(pos_rows, np.int64), np.asarray(neg_rows, np.int64)
    if pos.size < 2:
        return None
    Z = vectors if prepared else features(vectors)  # once, not once a model: on a large index most of a fit
    held = pos if pos.size <= limit else np.sort(np.random.default_rng(seed).choice(pos, size=limit, replace=False))
    unmarked = np.ones(len(vectors), bool)
    unmarked[pos] = unmarked[neg] = False
    tried = tuple(float(w) for w in weights) if morphology is not None else (None,)
    places: dict = {w: [] for w in tried}
    for row in held:
        parts = relevance_parts(Z, pos[pos != row], neg, seed, morphology=morphology, keep_out=[row], prepared=True)
        for w in tried:
            relevance = mix(*parts, w)
            combined = relevance if anomaly is None else combine_scores(anomaly, relevance, combine)
            places[w].append(1 + int((combined[unmarked] > combined[row]).sum()))
    weight = choose_weight(places)
    chosen = sorted(places[weight])
    return {"held_out": len(chosen), "relevant": int(pos.size), "places": chosen, "median_place": float(np.median(chosen)),
            "within": int(sum(p <= page for p in chosen)), "page": int(page), "unmarked": int(unmarked.sum()),
            "weight": weight, "weights": {w: float(np.median(p)) for w, p in places.items() if w is not None}}


def check_text(check: dict | None) -> str:
    """The check in words: "held out in turn, 7 of 10 relevant marks came back within the next 20 (median place 6
    of 2960 unmarked)", and the statistics' weight where one was chosen; empty without a check."""
    if not check:
        return ""
    sample = (f" (a sample of your {check['relevant']})" if check.get("relevant", check["held_out"]) > check["held_out"]
              else "")
    text = (f"held out in turn, {check['within']} of {check['held_out']} relevant marks{sample} came back within the "
            f"next {check['page']} (median place {check['median_place']:g} of {check['unmarked']} unmarked)")
    if check.get("weight") is not None and len(check.get("weights", {})) > 1:
        text += (f"; shape statistics weighted {check['weight']:g} (of "
                 f"{', '.join(f'{w:g}' for w in check['weights'])}: the best on these marks)")
    return text


class ArtefactFlags:
    """Artefact kinds by row (``kind(row)``, ``''`` when clean): the stored derived set where it holds (every
    object when fresh; after an add, the objects stored before it), else each asked-for cutout checked once
    (so a large index never reads every cutout for a top-20 list)."""

    def __init__(self, index, progress: bool = False, desc: str = "artefact checks of the candidates"):
        self.index = index
        self.progress, self.desc, self.bar = progress, desc, None  # a bar from the first cutout checked on
        self.stored = None
        if "source" not in index.metadata_columns:  # vectors without cutouts: nothing to check
            self.stored = np.full(len(index), "", dtype=object)
        elif ARTEFACT_SET in index.derived_names():
            kept = index.derived_kept(ARTEFACT_SET)
            if len(kept):
                self.stored = kept["artefact_kind"].astype(str).to_numpy()
        self.checked: dict[int, str] = {}

    def kind(self, row: int) -> str:
        if self.stored is not None and row < len(self.stored):
            return str(self.stored[row])
        if row not in self.checked:
            from ulisse.plot import thumbnail

            if self.bar is None:  # long work shows progress (watchers, the web UI's bar, hear it when silent too)
                from ulisse.progress import progress_bar

                self.bar = progress_bar(total=None, desc=self.desc, unit="cutout", enabled=self.progress)
            image = thumbnail(self.index, self.index.id_of(row))
            self.checked[row] = artefact_kind(image) if image is not None else ""
            self.bar.update(1)
        return self.checked[row]

    def close(self) -> None:
        """End the progress of the checks (if any were made)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def discover(index, top: int = 20, method: str | None = None, k: int = DEFAULT_K, positives: Iterable[str] = (),
             negatives: Iterable[str] = (), *, use_marks: bool | None = None, artefacts: str = "hide",
             combine: str = DEFAULT_COMBINE, label: str | None = None, seed: int = 0, progress: bool = True,
             recompute: bool = False, vectors: np.ndarray | None = None, scores: np.ndarray | None = None,
             morphology: bool | None = None, morphology_weight: float | None = None,
             check: bool = True, leave_out: Iterable[str] = (), where: str | None = None) -> AnomalyRanking:
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
    morphology_weight : float, optional
        The statistics' share of the relevance, 0-1; None (the default): chosen from the held-out
        relevant marks among :data:`WEIGHTS` (:func:`marks_check`), or
        :data:`ulisse.plugins.morphology.RELEVANCE_WEIGHT` with fewer than two relevant marks.
    check : bool
        With two relevant marks or more, check what the marks teach (:func:`marks_check`, a page of
        ``top``) into ``feedback["check"]``; False: leave it out (without the morphology, it then fits none
        of its up to :data:`HELD_OUT` models; with it, they still choose the statistics' weight,
        ``feedback["morphology_weight"]``).
    leave_out : ids
        Objects never shown, without being learned from (the web UI: objects shown in earlier batches, and
        the marked ones while "Learn from my marks" is off); counted in ``feedback["marked_left_out"]``.
    where : str, optional
        Only objects matching this filter on metadata and derived columns (:mod:`ulisse.filters`: ``"r_mag <
        18 and artefact == false"``) are shown; the scores and the relevance are still learned over the
        whole index, and with ``label`` the base rate is the matching objects'. Counted in
        ``feedback["where_left_out"]``.

    Returns
    -------
    AnomalyRanking
        ``table``: ``rank``, ``id``, ``score`` (with marks the combined score, then ``anomaly``, the
        anomaly score, and ``relevance``; without, the anomaly score), ``artefact_kind``, then the
        metadata; ``feedback``: what was used (marks, counts, combination, artefact filter, how
        many were left out) and ``check`` (:func:`marks_check`, or None).

    Raises
    ------
    QueryError
        ``top`` < 1, an unknown or doubly marked id, an unknown ``combine`` or ``artefacts``, a
        ``morphology_weight`` outside 0-1.
    """
    from ulisse.labels import class_fractions, labels_of

    top = whole(top, "top")
    if artefacts not in ARTEFACT_MODES:
        raise QueryError(f"artefacts={artefacts!r}: expected one of {', '.join(ARTEFACT_MODES)}")
    if combine not in COMBINE:
        raise QueryError(f"combine={combine!r}: expected one of {', '.join(COMBINE)}")
    if morphology_weight is not None:
        try:
            ok = 0 <= float(morphology_weight) <= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise QueryError(f"morphology_weight={morphology_weight!r}: must be a number between 0 and 1")
    leave_out = id_list(leave_out, "leave_out")
    names = labels_of(index, label) if label is not None else None
    pos, neg, used = gather_marks(index, positives, negatives, use_marks)
    left_rows = np.array([index.row_of(str(i)) for i in leave_out], np.int64)
    keep = index.where_mask(where) if where is not None else None  # parsed (never evaluated) before the work
    pos_rows = np.array([index.row_of(i) for i in pos], np.int64)
    neg_rows = np.array([index.row_of(i) for i in neg], np.int64)
    with_morphology = len(pos_rows) > 0 and use_morphology(index, morphology)
    method = method or default_method()
    anomaly = (np.asarray(scores, np.float64) if scores is not None else
               anomaly_scores(index, method=method, k=k, progress=progress, recompute=recompute)["score"].to_numpy())
    relevance, morph, checked, weight = None, None, None, None
    if len(pos_rows) or len(neg_rows):
        Z = features(np.asarray(index.all_vectors() if vectors is None else vectors, np.float32))  # once for every fit
        if with_morphology:
            morph = morphology_features(index)
        choose = morph is not None and morphology_weight is None
        if check or choose:  # the check chooses the statistics' weight too
            checked = marks_check(anomaly, Z, pos_rows, neg_rows, combine, seed=seed, morphology=morph, page=top,
                                  prepared=True, weights=WEIGHTS if choose else (morphology_weight,))
        weight = morphology_weight if morphology_weight is not None else checked["weight"] if checked else None
        relevance = relevance_of(Z, pos_rows, neg_rows, seed, morphology=morph, prepared=True, weight=weight)
    combined = combine_scores(anomaly, relevance, combine)
    marked = np.zeros(len(index), bool)
    marked[pos_rows] = True
    marked[neg_rows] = True
    marked[left_rows] = True
    flags = ArtefactFlags(index, progress=progress and artefacts != "show")
    chosen, kinds, hidden, filtered = [], [], 0, 0
    try:
        for row in np.argsort(-combined, kind="stable"):
            if marked[row]:
                continue
            if keep is not None and not keep[row]:
                filtered += 1
                continue
            kind = flags.kind(int(row))
            if (artefacts == "hide" and kind) or (artefacts == "only" and not kind):
                hidden += 1
                continue
            chosen.append(int(row))
            kinds.append(kind)
            if len(chosen) == top:
                break
    finally:
        flags.close()
    rows = np.array(chosen, np.int64)
    objects = index.object_rows(rows)  # metadata and derived columns, as every result table
    if relevance is None:  # the plain list: its score is the anomaly score
        head = {"rank": np.arange(1, len(rows) + 1), "id": objects["id"], "score": anomaly[rows]}
    else:
        head = {"rank": np.arange(1, len(rows) + 1), "id": objects["id"], "score": combined[rows],
                "anomaly": anomaly[rows], "relevance": relevance[rows]}
    table = join_objects(pd.DataFrame({**head, "artefact_kind": kinds}), objects)
    ranking = AnomalyRanking(table, method, int(k) if _method(method).uses_k else None, label)
    ranking.feedback = {"marks": used, "positives": len(pos), "negatives": len(neg),
                        "combine": combine if relevance is not None else None, "artefacts": artefacts,
                        "left_out": hidden, "marked_left_out": int(marked.sum()), "where": where,
                        "where_left_out": filtered,
                        "morphology": relevance is not None and morph is not None,
                        "morphology_weight": (weight if weight is not None else RELEVANCE_WEIGHT) if morph is not None
                        and relevance is not None else None,
                        "check": checked if check else None}
    if names is not None and len(rows):
        fractions, used_classes = class_fractions(names.iloc[rows].tolist(),
                                                  names if keep is None else names[keep], [len(rows)])
        ranking.fractions, ranking.used = fractions, used_classes
        ranking.base_rate = {str(c): float(v) for c, v in fractions["base_rate"].items()}
        ranking.precision = {str(c): float(v) for c, v in fractions[len(rows)].items()}
    return ranking


def next_unmarked(index, shown: int = 20, **options) -> AnomalyRanking:
    """The next ``shown`` objects to look at: :func:`discover` with the stored marks (the Anomalies page's "next 20")."""
    options.setdefault("use_marks", True)
    return discover(index, top=shown, **options)
