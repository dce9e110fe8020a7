"""FAISS indexes: built from factory strings, trained when needed, searched on GPU or CPU.

Searches run on the GPU(s) when FAISS has one and the index's device allows it
(:func:`on_device`; the clones are made and kept by :mod:`ulisse.indexes._gpu`);
index files are always written CPU-format.

Every search result leaving this module is a *distance* (smaller is closer),
whatever the metric:

- ``L2``: the Euclidean distance (FAISS's squared distances, square-rooted);
- ``IP``: the negative inner product, ``-<q, x>``;
- ``cosine``: ``1 - cos(q, x)`` (vectors are L2-normalised before FAISS sees them,
  and FAISS searches them by inner product).
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from ulisse.errors import IndexError_, InputError

from . import _gpu
from ._vectors import METRICS, prepared  # noqa: F401 (their public names here)

LOG = logging.getLogger(__name__)

TRAIN_POINTS_PER_LIST = 64  # k-means sample per IVF list (FAISS warns below 39; autofaiss uses 30-256)
TRAIN_SEED = 1234
TRAIN_SAMPLE = 131072  # vectors a PCA whitening or a PQ is trained on, at most


def gpu_available() -> bool:
    return _gpu.num_gpus() > 0


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InputError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    return metric


def new_faiss_index(factory: str, dim: int, metric: str = "L2") -> "faiss.Index":
    """An empty index from a FAISS factory string (``"Flat"``, ``"IVF256,Flat"``, ``"HNSW32"``, ``"PQ16"``...)."""
    check_metric(metric)
    try:
        return faiss.index_factory(int(dim), factory, METRICS[metric])
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        raise InputError(f"factory {factory!r}: not a FAISS index factory string ({msg[-1] if msg else exc})") from None


def clone(index: "faiss.Index") -> "faiss.Index":
    """A deep copy."""
    return faiss.deserialize_index(faiss.serialize_index(index))  # clone_index cannot copy L2norm


def needs_training(index: "faiss.Index") -> bool:
    return not index.is_trained


def train(index: "faiss.Index", vectors: np.ndarray, metric: str = "L2") -> None:
    """Train ``index`` on a sample of ``vectors`` (at most 64 per IVF list, else at most ``TRAIN_SAMPLE``).

    Raises:
        InputError: fewer vectors than the index needs.
    """
    need = _min_training(index)
    if len(vectors) < need:
        raise InputError(f"factory needs at least {need} vectors to train, got {len(vectors)}; use a smaller index (e.g. Flat)")
    ivf = faiss.try_extract_index_ivf(index)
    cap = max(need, TRAIN_POINTS_PER_LIST * int(ivf.nlist)) if ivf is not None else TRAIN_SAMPLE
    if len(vectors) > cap:
        rows = np.sort(np.random.default_rng(TRAIN_SEED).choice(len(vectors), cap, replace=False))
        sample = vectors[rows]
    else:
        sample = vectors
    LOG.info("training the FAISS index on %d vectors", len(sample))
    index.train(prepared(sample, metric))


def add_vectors(index: "faiss.Index", vectors: np.ndarray, metric: str = "L2") -> None:
    """Add ``vectors`` (N x dim), training the index first when it needs it."""
    x = prepared(vectors, metric)
    if x.ndim != 2 or x.shape[1] != index.d:
        raise IndexError_(f"vectors of shape {x.shape} do not fit an index of dimension {index.d}")
    if not index.is_trained:
        train(index, x, metric)
    index.add(x)


def _min_training(index) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return int(ivf.nlist)
    return 1


def prepare_for_reconstruct(index: "faiss.Index") -> None:
    """Let IVF indexes reconstruct vectors by id (v1 indexes, whose only copy of the vectors is the index)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()


def describe_params(index: "faiss.Index") -> dict:
    """The search parameters this kind of index takes: ``{"nprobe": ...}``, ``{"efSearch": ...}`` or ``{}``."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return {"nprobe": int(ivf.nprobe), "nlist": int(ivf.nlist)}
    hnsw = _hnsw_of(index)
    if hnsw is not None:
        return {"efSearch": int(hnsw.hnsw.efSearch)}
    return {}


def _hnsw_of(index):
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def search_parameters(index: "faiss.Index", nprobe: int | None = None, ef: int | None = None, selector=None):
    """FAISS ``SearchParameters`` for ``index``: nprobe (IVF), efSearch (HNSW), an ID selector, or None."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params = faiss.SearchParametersIVF()
        params.nprobe = int(nprobe or ivf.nprobe)
    elif _hnsw_of(index) is not None:
        params = faiss.SearchParametersHNSW()
        params.efSearch = int(ef or _hnsw_of(index).hnsw.efSearch)
    elif selector is None:
        return None
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        outer = faiss.SearchParametersPreTransform()
        outer.index_params = params
        outer._inner = params  # keep the inner parameters alive as long as the outer ones
        return outer
    return params


def to_distances(D: np.ndarray, I: np.ndarray, metric: str) -> np.ndarray:
    """FAISS scores as distances (smaller is closer); missing neighbours (row -1) get +inf."""
    if metric == "L2":
        out = np.sqrt(np.maximum(D, 0.0))
    elif metric == "IP":
        out = -D
    else:
        out = 1.0 - D
    out = out.astype(np.float32, copy=False)
    out[I < 0] = np.inf
    return out


def exact_distances(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Distances between each query and each of its candidates: ``queries`` Q x d, ``vectors`` Q x C x d."""
    q = queries.astype(np.float32)[:, None, :]
    x = vectors.astype(np.float32)
    if metric == "L2":
        return np.sqrt(np.maximum(((x - q) ** 2).sum(-1), 0.0))
    if metric == "IP":
        return -(x * q).sum(-1)
    qn = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-30)
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)
    return 1.0 - (xn * qn).sum(-1)


def pairwise_distances(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Distances between every query and every vector, ``Q x C``, as a search gives them (in float64: an L2
    distance far below the vectors' norms would carry their rounding in float32, 3e-4 for twins of norm 1)."""
    q = np.atleast_2d(np.asarray(queries, np.float64))
    x = np.atleast_2d(np.asarray(vectors, np.float64))
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        return 1.0 - q @ x.T
    if metric == "IP":
        return -(q @ x.T)
    squared = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * (q @ x.T)
    return np.sqrt(np.maximum(squared, 0.0))


def search(index: "faiss.Index", queries: np.ndarray, k: int, nprobe: int | None = None, metric: str | None = None,
           ef: int | None = None, selector=None):
    """k nearest neighbours in one FAISS index: (distances, rows), each ``len(queries) x k``; rows of -1 are missing.

    ``metric`` defaults to the index's own (``L2`` or ``IP``); give ``cosine`` for
    an inner-product index of normalised vectors (the queries are normalised here).
    """
    metric = metric or ("L2" if index.metric_type == faiss.METRIC_L2 else "IP")
    q = prepared(np.atleast_2d(queries), metric)
    k = min(int(k), index.ntotal)
    if k < 1:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if _gpu.is_on_gpu(index):  # a resident GPU clone (indexes._gpu): no SearchParameters, nprobe set on it
        D, I = index.search(q, k, nprobe)
        return to_distances(D, I, metric), I
    params = search_parameters(index, nprobe, ef, selector)
    _parallel_over_lists(index, len(q))
    D, I = index.search(q, k, params=params) if params is not None else index.search(q, k)
    return to_distances(D, I, metric), I


def _parallel_over_lists(index, n_queries: int) -> None:
    """IVF: fewer queries than threads scan their lists in parallel (``parallel_mode`` 1), more queries are
    spread over the threads (0). One query at 10^7 objects (IVF1024,PQ256, nprobe 8) on 2 cores: 33 ms
    instead of 47 (benchmarks/store.md)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        mode = 1 if n_queries < faiss.omp_get_max_threads() else 0
        if ivf.parallel_mode != mode:
            ivf.parallel_mode = mode


def on_device(device: str | None):
    """Context manager: searches inside run on ``device``'s FAISS (GPU clones kept resident; see :mod:`._gpu`)."""
    return _gpu.searching_on(device)
