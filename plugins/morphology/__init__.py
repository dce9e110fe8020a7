"""Galaxy morphology of every object: statmorph's non-parametric statistics as derived columns.

Measured on each object's cutout (:mod:`.stats`: detection, deblending so that an
unrelated neighbour is masked, then statmorph): Gini, M20, the Gini-M20 merger
statistic, concentration, asymmetry, smoothness, shape and outer asymmetry, multimode,
intensity and deviation, with statmorph's flag (``morph_flag``). They are the set
``morphology`` (``DIR/derived/morphology.parquet``), computed once, one process per core,
with progress and an estimate of the time (0.2-0.4 s per cutout and core, by CPU):

    ulisse query indexes/hdf-demo hdf-0042 --where "shape_asymmetry > 0.3"

The deep vectors of an ImageNet network tell arcs and rings from galaxies, but not a
merger with tidal tails from a galaxy with an unrelated neighbour; asymmetry, M20 and
deviation do. So the statistics serve discovery in two ways, measured on ``ulisse
benchmark anomalies`` (benchmarks/anomalies.md):

- the anomaly methods ``morphology`` (distance to the k-th nearest neighbour among the
  statistics' robust z-scores) and ``kth+morphology`` (the mean of its percentile and
  the vectors' ``kth`` percentile; not the default: where a foreground star overlaps a
  galaxy, deblending cuts the galaxy in two and the half measured looks disturbed, and on
  the benchmark's fields with stars it found fewer than ``kth``);
- the relevance model of anomalies with marks (:func:`ulisse.plugins.anomalies.feedback.discover`)
  mixes a model on the vectors with one on the statistics, so that marking a few
  disturbed galaxies brings up the others (:func:`shape_relevance`). The statistics' share is
  chosen per call from the marks themselves: each relevant mark held out in turn, the share
  (0, 0.25 or 0.5) under which the others bring it back highest (marked arcs, which the
  vectors know, get none; marked mergers get some).

Without the stored set, discovery measures it by itself only for an index of at most
:data:`AUTO_MAX` objects (5-9 minutes on 2 cores); a larger one uses it once computed
(``ulisse morphology DIR``). The statistics of an object depend on its cutout alone, so
after an add only the new objects are measured.

Python:
    >>> from ulisse.plugins import morphology
    >>> table = morphology.morphology_table(index)                 # doctest: +SKIP
    >>> table.nlargest(10, "shape_asymmetry")                      # doctest: +SKIP
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

import ulisse
from ulisse.registry import DerivedColumns

from .stats import (COLUMNS, DEBLEND_CONTRAST, DEBLEND_LEVELS, DETECT, NPIXELS, PEAK, SECONDS_PER_CUTOUT, SET, SMOOTH,
                    STATISTICS, compute_morphology, measure, names_a_cutout, standardised)

__all__ = ["AUTO_MAX", "COLUMNS", "SET", "STATISTICS", "compute_morphology", "cutouts_to_measure", "has_cutouts",
           "is_measured",
           "measure", "morphology_features",
           "morphology_scores", "morphology_table", "shape_relevance", "use_morphology"]

LOG = logging.getLogger(__name__)

AUTO_MAX = 3000  # objects: discovery measures the morphology by itself up to this many (5-9 min on 2 cores)
RELEVANCE_C = 1.0  # the statistics' logistic regression: 11 features, so less regularised than the vectors'
RELEVANCE_WEIGHT = 0.5  # relevance = (1 - w) * vectors' + w * statistics', where no choice from held-out marks is made


def checks_state(index=None) -> str:
    """The measurement's settings: a set stored with other settings is measured again."""
    import statmorph

    return (f"v1 statmorph {statmorph.__version__} smooth{SMOOTH} detect{DETECT} npix{NPIXELS} "
            f"deblend{DEBLEND_LEVELS}/{DEBLEND_CONTRAST} peak{PEAK}")


def morphology_table(index, recompute: bool = False) -> pd.DataFrame:
    """The stored statistics of every object (row order), measured on first use."""
    return index.derived(SET, recompute=recompute)


def morphology_features(index) -> np.ndarray:
    """The statistics as robust z-scores, one row per object (:func:`.stats.standardised`)."""
    return standardised(morphology_table(index))


def has_cutouts(index) -> bool:
    """Whether any object of ``index`` names a cutout (its ``source``): an index made from vectors alone has none."""
    if "source" not in index.metadata_columns:
        return False
    return bool(names_a_cutout(index.metadata_column("source").tolist()).any())


def cutouts_to_measure(index) -> int:
    """How many cutouts a read of the statistics would measure now: the objects still to measure
    (:meth:`ulisse.Index.derived_pending`) that name a cutout (the others cost nothing)."""
    pending = index.derived_pending(SET)
    if not len(pending) or "source" not in index.metadata_columns:
        return 0
    return int(names_a_cutout(index.metadata_column("source").iloc[pending.start:pending.stop].tolist()).sum())


def is_measured(index) -> bool:
    """Whether the statistics are stored with ``index`` and fresh (nothing to measure before they are used)."""
    return SET in index.derived_names() and index.derived_is_fresh(SET)


def use_morphology(index, morphology: bool | None = None) -> bool:
    """Whether discovery uses the statistics: ``morphology`` True or False, or None: when they are stored and
    fresh, or the index keeps cutouts and at most :data:`AUTO_MAX` of them are still to measure (all of them
    the first time; after an add, the new ones)."""
    if morphology is not None and not morphology:
        return False
    if not has_cutouts(index):
        if morphology:
            raise ulisse.InputError(f"{index.path}: the index keeps no cutouts (no source column) to measure "
                                    "the morphology of")
        return False
    if morphology or is_measured(index):
        return True
    pending = cutouts_to_measure(index)
    if pending > AUTO_MAX:
        LOG.info("morphology not measured for %d objects (more than %d; about %.0f core-minutes): "
                 "`ulisse morphology %s` measures it once for every later search", pending, AUTO_MAX,
                 SECONDS_PER_CUTOUT * pending / 60, index.path)
        return False
    return True


def morphology_scores(index, k: int = 10, progress: bool = True, recompute: bool = False, **options) -> np.ndarray:
    """Anomaly method ``morphology``: the distance of each object to its ``k``-th nearest neighbour among the
    statistics' robust z-scores (higher = more unusual in shape)."""
    import faiss

    if not has_cutouts(index):
        raise ulisse.InputError(f"{index.path}: the index keeps no cutouts (no source column): the morphology "
                                "anomaly methods need them")
    Z = standardised(morphology_table(index, recompute=recompute))
    k = min(int(k), len(Z) - 1)
    flat = faiss.IndexFlatL2(Z.shape[1])
    flat.add(Z)
    D, _ = flat.search(Z, k + 1)  # the first is the object itself (or a twin at distance 0)
    return np.sqrt(np.maximum(D[:, k], 0.0)).astype(np.float64)


def _percentile(x: np.ndarray) -> np.ndarray:
    return pd.Series(np.asarray(x, np.float64)).rank(method="average", pct=True).to_numpy()


def combined_scores(index, k: int = 10, progress: bool = True, recompute: bool = False, **options) -> np.ndarray:
    """Anomaly method ``kth+morphology``: the mean of the percentiles of ``kth`` (the vectors) and ``morphology``;
    the ``kth`` percentile alone where no morphology was measured (``morph_flag`` -1: no source found, say),
    so that an object the statistics know nothing of is not made to look ordinary."""
    from ulisse.registry import anomaly_methods

    kth = _percentile(anomaly_methods()["kth"].score(index, k=k, progress=progress, recompute=recompute))
    shape = _percentile(morphology_scores(index, k=k, progress=progress))
    measured = morphology_table(index)["morph_flag"].to_numpy() >= 0
    return np.where(measured, (kth + shape) / 2, kth)


def shape_relevance(features: np.ndarray, positives, negatives, seed: int = 0) -> np.ndarray:
    """The statistics' relevance of every object: the logistic regression of
    :func:`ulisse.relevance.relevance_scores` on the z-scores ``features`` (:func:`morphology_features`), trained on
    the marked rows. Anomalies with marks mix it with the vectors' relevance, the statistics' share chosen per call
    from held-out marks (:func:`ulisse.plugins.anomalies.feedback.mix`, ``choose_weight``; :data:`RELEVANCE_WEIGHT`
    where no choice is made)."""
    from ulisse.relevance import relevance_scores

    return relevance_scores(features, np.asarray(positives, np.int64), np.asarray(negatives, np.int64), seed=seed,
                            C=RELEVANCE_C, root=False)


def _compute(index, rows=None, progress: bool = True, checkpoint=None):
    return compute_morphology(index, rows=rows, progress=progress, checkpoint=checkpoint)


@ulisse.hookimpl
def register_derived_columns(config):
    """The set ``morphology``: statmorph's statistics of every cutout."""
    return [DerivedColumns(SET, "statmorph's non-parametric morphology of each cutout: " + ", ".join(STATISTICS)
                           + ", morph_flag", _compute, {}, state=checks_state, columns=COLUMNS,
                           per_object=True, describe=_describe)]


_WHAT = {"gini": "Gini coefficient of the pixel fluxes (Lotz et al. 2004)",
         "m20": "M20: moment of the brightest 20 % of the flux (Lotz et al. 2004)",
         "gini_m20_merger": "Gini-M20 merger statistic (Lotz et al. 2008; > 0 merger-like)",
         "concentration": "Concentration C (Conselice 2003)", "asymmetry": "Rotational asymmetry A (Conselice 2003)",
         "smoothness": "Smoothness (clumpiness) S (Conselice 2003)",
         "shape_asymmetry": "Shape asymmetry (Pawlik et al. 2016)", "outer_asymmetry": "Outer asymmetry (Wen et al. 2014)",
         "multimode": "Multimode M (Freeman et al. 2013)", "intensity": "Intensity I (Freeman et al. 2013)",
         "deviation": "Deviation D (Freeman et al. 2013)",
         "morph_flag": "statmorph flag: 0 good, 1 suspect, 2 bad, 4 catastrophic, -1 none"}


def _describe(index) -> dict:
    """The statistics' descriptions for the exports (dimensionless, measured on the stretched RGB cutout;
    short enough for a FITS ``TCOMM`` card)."""
    return {c: {"ucd": "meta.code" if c == "morph_flag" else "src.morph.param", "description": text}
            for c, text in _WHAT.items()}


@ulisse.hookimpl
def register_anomaly_methods(config):
    """``morphology`` (unusual shapes) and ``kth+morphology`` (unusual vectors or shapes)."""
    from ulisse.registry import AnomalyMethod

    return [
        AnomalyMethod("morphology", "distance to the k-th nearest neighbour among statmorph's statistics",
                      morphology_scores),
        AnomalyMethod("kth+morphology", "mean percentile of kth (vectors) and morphology (statmorph)",
                      combined_scores),
    ]


@ulisse.hookimpl
def register_commands(cli):
    """``ulisse morphology DIR``: measure (or re-measure) the statistics of every object."""
    from .command import add_morphology_command

    add_morphology_command(cli)
