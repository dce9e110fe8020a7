"""Anomaly discovery: per-object anomaly scores computed from the index itself.

No prototype is needed: an object is anomalous when little else in the survey
looks like it, i.e. when its feature vector lies far from the others. Three
scores, higher meaning more anomalous:

``kth``
    Euclidean distance from an object's vector to its ``k``-th nearest
    neighbour in the index (the object itself left out). A classic, robust
    outlier score (Ramaswamy et al. 2000).
``mean``
    Mean distance to the ``k`` nearest neighbours: smoother than ``kth``,
    less sensitive to a small clump of look-alikes.
``iforest``
    scikit-learn's Isolation Forest on the vectors (``-score_samples``): how
    few random cuts isolate the object. Needs ``pip install scikit-learn``;
    ``k`` plays no part.

Search results are distances whatever the index's metric (smaller = closer), so
the kNN scores mean the same on L2, IP and cosine indexes. They are measured on the
raw vectors (exactly) up to ``RAW_SPACE_MAX`` objects, also for a discovery index that
searches a whitened space (:func:`knn_space`).

Scores are derived columns (the ``register_derived_columns`` hook): the core
stores them with the index (``DIR/derived/anomaly.parquet``: ``anomaly_kth`` and
``anomaly_mean``; ``anomaly_iforest.parquet``), tied to the vectors' fingerprint,
brings them up to date after an add (the kNN scores: :func:`update_knn_scores` searches the
new objects and the old ones they come near; Isolation Forest: again), joins them into every result table and lets
``--where "anomaly_kth > 20"`` filter on them.

Example:
    >>> import ulisse
    >>> from ulisse.plugins.anomalies import rank_anomalies
    >>> index = ulisse.open_index("indexes/hdf-demo")                     # doctest: +SKIP
    >>> ranking = rank_anomalies(index, top=10, method="kth", k=10)        # doctest: +SKIP
    >>> ranking.table[["rank", "id", "score"]]                             # doctest: +SKIP

On the command line::

    ulisse anomalies indexes/hdf-demo --top 20 --png anomalies.png

With the astronomer's marks (:mod:`.feedback`): ``--positives FILE --negatives FILE`` or
the marks stored with the index re-rank the list by anomaly and relevance, and show only
unmarked objects; artefacts (:mod:`.artefacts`: satellite trails, bleed columns, diffraction
spikes, chip edges, bad columns) are hidden unless ``--artefacts show``::

    ulisse anomalies indexes/hdf-demo --positives liked.txt --negatives disliked.txt

In Python:
    >>> from ulisse.plugins.anomalies.feedback import discover
    >>> discover(index, top=20, positives=["obj7"], negatives=["obj2"]).table      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import ulisse
from ulisse.derived import join_objects
from ulisse.labels import class_fractions, labels_of
from ulisse.registry import DerivedColumns
from ulisse.results import TableResult

LOG = logging.getLogger(__name__)

METHODS = ("kth", "mean", "iforest")
# The default method: the first of these that is registered. kth, not kth+morphology (the morphology plugin's):
# over the four rare-object sets of benchmarks/anomalies.md kth put 258 interesting objects in the label-free
# top 50 and first 60, kth+morphology 254 (ahead on the smooth sets by 3-9, behind where ordinary galaxies have
# spiral arms and field stars by 3-12).
PREFERRED = ("kth",)
DEFAULT_K = 10
CHUNK = 2048  # objects per kNN batch
UPDATE_MAX_ADDED = 10_000  # an add of more objects (or of more than a quarter of the index): the kNN scores computed again
RAW_SPACE_MAX = 50_000  # kNN scores on the raw vectors, exactly, up to this many objects (about a minute on 2 cores)
IFOREST = {"n_estimators": 200, "random_state": 0}
META_KEY = b"ulisse.anomaly"


@dataclass
class AnomalyRanking(TableResult):
    """The most anomalous objects of an index.

    Attributes
    ----------
    table : pandas.DataFrame
        The top objects, most anomalous first: ``rank`` (1 = most anomalous),
        ``id``, ``score``, then the metadata columns.
    method : str
        ``kth``, ``mean`` or ``iforest``.
    k : int or None
        Neighbours used by the score (None for ``iforest``).
    label : str or None
        The metadata column compared, if any.
    precision : dict or None
        With ``label``: the fraction of each class among the top objects.
    base_rate : dict or None
        With ``label``: the fraction of each class in the whole index.
    feedback : dict or None
        From :func:`ulisse.plugins.anomalies.feedback.discover`: the marks used (``marks``,
        ``positives``, ``negatives``), ``combine``, the ``artefacts`` filter and how many
        objects it ``left_out``.
    """

    table: pd.DataFrame
    method: str
    k: int | None
    label: str | None = None
    precision: dict | None = None
    base_rate: dict | None = None
    fractions: pd.DataFrame | None = None
    used: dict | None = None
    feedback: dict | None = None
    verb = "anomalies"

    def record_params(self) -> dict:
        f = self.feedback or {}
        return {"method": self.method, "k": self.k, "top": len(self.table), "label": self.label,
                "positives": f.get("positives"), "negatives": f.get("negatives"), "combine": f.get("combine"),
                "artefacts": f.get("artefacts")}

    @property
    def ids(self) -> list[str]:
        return list(self.table["id"])


# -- scores ------------------------------------------------------------------

KNN_SET = "anomaly"
IFOREST_SET = "anomaly_iforest"
ARTEFACT_SET = "artefacts"  # artefacts.SET


def _method(name: str):
    """The registered anomaly method ``name`` (``register_anomaly_methods``: this plugin's and others')."""
    from ulisse.registry import anomaly_methods

    methods = anomaly_methods()
    if name not in methods:
        raise ulisse.InputError(f"method {name!r}: expected one of {', '.join(methods)}")
    return methods[name]


def default_method() -> str:
    """The method used when none is named: the first of :data:`PREFERRED` that is registered."""
    from ulisse.registry import anomaly_methods

    methods = anomaly_methods()
    return next((m for m in PREFERRED if m in methods), next(iter(methods), "kth"))


def _check(index, method: str, k) -> int | None:
    return _check_k(index, k) if _method(method).uses_k else None


def _check_k(index, k) -> int:
    from ulisse.checks import whole

    k = whole(k, "k")
    if k >= len(index):
        raise ulisse.QueryError(f"k={k}: must be smaller than the number of objects in the index ({len(index)})")
    return int(k)


def knn_space(index) -> str:
    """Where the kNN scores are measured: the raw vectors (exactly) up to :data:`RAW_SPACE_MAX` objects, else the
    index's own search space. A discovery index searches a whitened space, which serves similarity but hides
    rare objects: on the rare-object benchmark the raw space puts 28 interesting objects in the top 50 against
    19 for the whitened one (benchmarks/anomalies.md)."""
    return "raw" if len(index) <= RAW_SPACE_MAX else "index"


def _knn_scores(index, k: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(kth, mean) distance of every object to its k nearest neighbours (itself left out), in :func:`knn_space`."""
    from ulisse.progress import progress_bar

    space = knn_space(index)
    if space != "raw":
        LOG.info("anomaly scores of %d objects: in the index's search space (raw vectors up to %d)", len(index),
                 RAW_SPACE_MAX)
    n = len(index)
    kth, mean = np.empty(n, np.float64), np.empty(n, np.float64)
    with progress_bar(total=n, desc=f"anomaly scores (k={k})", unit="object", enabled=progress) as bar:
        for start in range(0, n, CHUNK):
            rows = range(start, min(start + CHUNK, n))
            D, _ = index.search(index.vectors_of_rows(rows), k, exclude=[[r] for r in rows], space=space)
            D = D.astype(np.float64)
            # an approximate index may return fewer than k neighbours (NaN): use those there are
            kth[rows.start:rows.stop] = np.nanmax(D, axis=1)
            mean[rows.start:rows.stop] = np.nanmean(D, axis=1)
            bar.update(len(rows))
    return kth, mean


def compute_knn_scores(index, k: int = DEFAULT_K, progress: bool = True) -> pd.DataFrame:
    """Derived columns ``anomaly_kth`` and ``anomaly_mean`` (higher = more anomalous)."""
    k = _check_k(index, k)
    kth, mean = _knn_scores(index, k, progress)
    return pd.DataFrame({"anomaly_kth": kth, "anomaly_mean": mean})


def update_knn_scores(index, kept: pd.DataFrame, rows: range, k: int = DEFAULT_K, progress: bool = True) -> pd.DataFrame:
    """``anomaly_kth`` and ``anomaly_mean`` after an add, from the stored scores of the objects there were (``kept``)
    and the ``rows`` added: the new objects are searched; an old object's k nearest change only when a new object
    is nearer than its k-th (:meth:`ulisse.Index.distances`, every old object against the new ones), so only those
    old objects are searched again; the others keep their scores. The same scores as computing them again (in the
    raw space and on indexes that store the vectors exactly; a compressed index's rounding of its distances may
    differ), for about ``k`` searches per object added and one pass over the vectors."""
    from ulisse.progress import progress_bar

    k = _check_k(index, k)
    n, old = len(index), rows.start
    if (list(kept.columns[:2]) != ["anomaly_kth", "anomaly_mean"] or len(kept) != old or rows.stop != n
            or len(rows) > UPDATE_MAX_ADDED or 4 * len(rows) > n):  # a large add: a new pass costs about the same
        return compute_knn_scores(index, k=k, progress=progress)
    if not len(rows):
        return kept
    space = knn_space(index)
    kth = np.concatenate([kept["anomaly_kth"].to_numpy(np.float64), np.full(len(rows), np.nan)])
    mean = np.concatenate([kept["anomaly_mean"].to_numpy(np.float64), np.full(len(rows), np.nan)])
    added = np.zeros(n, bool)
    added[rows.start:rows.stop] = True
    nearer = np.zeros(n, bool)
    new_vectors = index.vectors_of_rows(rows)
    with progress_bar(total=old, desc=f"anomaly scores after an add of {len(rows)}", unit="object",
                      enabled=progress) as bar:
        for start in range(0, old, CHUNK):
            chunk = range(start, min(start + CHUNK, old))
            D = index.distances(chunk, new_vectors, space=space).min(axis=1)
            # a new object at the k-th distance or nearer (a margin for rounding: searching again costs little)
            k_th = kth[chunk.start:chunk.stop]
            nearer[chunk.start:chunk.stop] = D <= k_th + 1e-3 * np.abs(k_th) + 1e-6
            bar.update(len(chunk))
    todo = np.flatnonzero(nearer | added)
    LOG.info("anomaly scores after an add of %d objects: %d objects searched again, %d kept", len(rows), len(todo),
             n - len(todo))
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        D, _ = index.search(index.vectors_of_rows(chunk), k, exclude=[[int(r)] for r in chunk], space=space)
        D = D.astype(np.float64)
        kth[chunk], mean[chunk] = np.nanmax(D, axis=1), np.nanmean(D, axis=1)
    return pd.DataFrame({"anomaly_kth": kth, "anomaly_mean": mean})


def compute_iforest_scores(index, progress: bool = True) -> pd.DataFrame:
    """Derived column ``anomaly_iforest``: Isolation Forest's ``-score_samples`` (higher = more anomalous)."""
    return pd.DataFrame({"anomaly_iforest": _iforest_scores(index, progress)})


def _iforest_scores(index, progress: bool = True) -> np.ndarray:
    try:
        from sklearn.ensemble import IsolationForest
    except ImportError:
        raise ulisse.InputError("the iforest method needs scikit-learn: pip install scikit-learn") from None
    LOG.info("Isolation Forest on %d vectors", len(index))
    vectors = np.asarray(index.all_vectors(), dtype=np.float32)
    forest = IsolationForest(**IFOREST).fit(vectors)
    return -forest.score_samples(vectors).astype(np.float64)


def anomaly_scores(index, method: str | None = None, k: int = DEFAULT_K, progress: bool = True,
                   recompute: bool = False) -> pd.DataFrame:
    """Anomaly score of every object of the index, stored with it for next time.

    Parameters
    ----------
    index : ulisse.Index
        An open index.
    method : {"kth", "mean", "iforest"}
        Distance to the k-th neighbour, mean distance to the k nearest, or Isolation Forest.
    k : int
        Neighbours (``1 <= k < len(index)``); not used by ``iforest``.
    progress : bool
        Show a progress bar while computing.
    recompute : bool
        Compute even when fresh scores are stored.

    Returns
    -------
    pandas.DataFrame
        One row per object in row order: ``row``, ``id``, ``score`` (higher = more anomalous).

    Raises
    ------
    QueryError
        ``k`` out of range.
    InputError
        Unknown method, or ``iforest`` without scikit-learn.
    """
    method = method or default_method()
    k = _check(index, method, k)
    values = np.asarray(_method(method).score(index, k=k, progress=progress, recompute=recompute), np.float64)
    if values.shape != (len(index),):
        raise ulisse.InputError(f"method {method!r} gave {values.shape[0] if values.ndim else 0} scores "
                                f"for {len(index)} objects")
    return pd.DataFrame({"row": index.metadata["row"].to_numpy(np.int64), "id": index.metadata["id"].to_numpy(),
                         "score": values})


def _knn_score(column: str):
    def score(index, k: int = DEFAULT_K, progress: bool = True, recompute: bool = False, **options):
        return index.derived(KNN_SET, recompute=recompute, k=k)[column].to_numpy(np.float64)
    return score


def _iforest_score(index, progress: bool = True, recompute: bool = False, **options):
    return index.derived(IFOREST_SET, recompute=recompute)["anomaly_iforest"].to_numpy(np.float64)


# -- ranking -----------------------------------------------------------------

def rank_anomalies(index, top: int = 20, method: str | None = None, k: int = DEFAULT_K, label: str | None = None,
                   progress: bool = True, recompute: bool = False) -> AnomalyRanking:
    """The ``top`` most anomalous objects of the index.

    Parameters
    ----------
    index : ulisse.Index
        An open index.
    top : int
        How many objects to return (at most the whole index).
    method, k, progress, recompute
        As in :func:`anomaly_scores`.
    label : str, optional
        A metadata column of classes (``label``, ``is_agn``...). The ranking
        then tells the fraction of each class among the top objects
        (``precision``) beside its fraction in the whole index (``base_rate``):
        a class much richer at the top than overall is what the score finds.

    Returns
    -------
    AnomalyRanking

    Raises
    ------
    QueryError
        ``top`` < 1, ``k`` out of range, or ``label`` is not a metadata column.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)):
        raise ulisse.QueryError(f"top={top!r}: must be a whole number")
    if top < 1:
        raise ulisse.QueryError(f"top={top}: must be at least 1")
    names = labels_of(index, label) if label is not None else None
    method = method or default_method()
    scores = anomaly_scores(index, method=method, k=k, progress=progress, recompute=recompute)
    order = np.argsort(-scores["score"].to_numpy(), kind="stable")[:int(top)]
    objects = index.object_rows(order)  # metadata and derived columns, as every result table
    table = join_objects(pd.DataFrame({"rank": np.arange(1, len(order) + 1), "id": objects["id"],
                                       "score": scores["score"].to_numpy()[order]}), objects)
    ranking = AnomalyRanking(table, method, int(k) if _method(method).uses_k else None, label)
    if names is not None:
        fractions, used = class_fractions(names.iloc[order].tolist(), names, [len(order)])
        ranking.fractions, ranking.used = fractions, used
        ranking.base_rate = {str(c): float(v) for c, v in fractions["base_rate"].items()}
        ranking.precision = {str(c): float(v) for c, v in fractions[len(order)].items()}
    return ranking


# -- thumbnail grid ----------------------------------------------------------

def anomaly_grid(index, ranking: AnomalyRanking, path: str | os.PathLike, columns: int = 5,
                 title: str | None = None) -> Path:
    """Write a PNG of the ranked objects' cutouts, with rank, id and score under each (atomically)."""
    from ulisse.plot import thumbnail, thumbnail_grid

    panels = [(thumbnail(index, row.id), f"#{row.rank} {row.id}\nscore = {row.score:.3g}", False)
              for row in ranking.table.itertuples(index=False)]
    return thumbnail_grid(panels, path, columns, title)


# -- plugin hooks ------------------------------------------------------------

def _compute_artefacts(index, rows=None, progress: bool = True, checkpoint=None):
    from .artefacts import compute_artefacts

    return compute_artefacts(index, rows=rows, progress=progress, checkpoint=checkpoint)


def _artefact_checks(index) -> str:
    from .artefacts import checks_state

    return checks_state(index)


@ulisse.hookimpl
def register_derived_columns(config):
    """Anomaly scores as derived columns: ``anomaly`` (kth, mean) and ``anomaly_iforest``; artefact flags
    (``artefacts``: :mod:`ulisse.plugins.anomalies.artefacts`)."""
    return [
        DerivedColumns(KNN_SET, "distance to the k-th nearest neighbour and mean distance to the k nearest "
                       "(higher = more anomalous)", compute_knn_scores, {"k": DEFAULT_K},
                       state=lambda index: f"space {knn_space(index)}", columns=("anomaly_kth", "anomaly_mean"),
                       update=update_knn_scores, describe=lambda index: _notes(KNN_SET)),
        DerivedColumns(IFOREST_SET, "Isolation Forest on the vectors, -score_samples (higher = more anomalous)",
                       compute_iforest_scores, {}, columns=("anomaly_iforest",), describe=lambda index: _notes(IFOREST_SET)),
        DerivedColumns(ARTEFACT_SET, "artefact (bool) and artefact_kind (trail, bleed, spikes, edge, bad_column, "
                       "saturated; '' when clean) from image statistics of each cutout", _compute_artefacts, {},
                       state=_artefact_checks, columns=("artefact", "artefact_kind"), per_object=True,
                       describe=lambda index: _notes(ARTEFACT_SET)),
    ]


_NOTES = {  # for the exports (FITS TCOMM: at most 68 characters)
    KNN_SET: {"anomaly_kth": ("stat.value", "Feature distance to the k-th neighbour (higher: more unusual)"),
              "anomaly_mean": ("stat.value", "Mean feature distance to the k neighbours (higher: more unusual)")},
    IFOREST_SET: {"anomaly_iforest": ("stat.value", "Isolation Forest score on the vectors (higher: more unusual)")},
    ARTEFACT_SET: {"artefact": ("meta.code.qual", "Cutout flagged as an artefact by its image statistics"),
                   "artefact_kind": ("meta.code.qual", "trail, bleed, spikes, edge, bad_column, saturated or ''")},
}


def _notes(name: str) -> dict:
    return {c: {"ucd": ucd, "description": text} for c, (ucd, text) in _NOTES[name].items()}


@ulisse.hookimpl
def register_anomaly_methods(config):
    """The scores ``kth``, ``mean`` (stored in the ``anomaly`` set) and ``iforest`` (``anomaly_iforest``)."""
    from ulisse.registry import AnomalyMethod

    return [
        AnomalyMethod("kth", "distance to the k-th nearest neighbour", _knn_score("anomaly_kth")),
        AnomalyMethod("mean", "mean distance to the k nearest neighbours", _knn_score("anomaly_mean")),
        AnomalyMethod("iforest", "Isolation Forest on the vectors (the fewer random splits isolate an object, the higher)", _iforest_score, uses_k=False),
    ]


@ulisse.hookimpl
def register_commands(cli):
    """``ulisse anomalies``: rank the objects of an index by anomaly score, and by the marks when there are any."""
    from .command import add_anomalies_command

    add_anomalies_command(cli)


@ulisse.hookimpl
def register_ui_pages(config):
    """The web UI's Anomalies page (``ulisse ui``)."""
    from ulisse.registry import UIPage

    return [UIPage("Anomalies", Path(__file__).with_name("page.py"), order=30,
                   persistent_keys=("anomalies.method", "anomalies.k", "anomalies.top", "anomalies.label",
                                    "anomalies.artefacts", "anomalies.marks", "anomaly.page"))]
