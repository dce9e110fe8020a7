"""FAISS indexes: built from factory strings, trained when needed, searched on GPU or CPU."""

from __future__ import annotations

import logging

import faiss
import numpy as np

from ulisse.errors import IndexError_, InputError

from . import _gpu

LOG = logging.getLogger(__name__)

METRICS = {"L2": faiss.METRIC_L2, "IP": faiss.METRIC_INNER_PRODUCT}


def gpu_available() -> bool:
    return _gpu.num_gpus() > 0


def new_faiss_index(factory: str, dim: int, metric: str = "L2") -> "faiss.Index":
    """An empty index from a FAISS factory string (``"Flat"``, ``"IVF256,Flat"``, ``"HNSW32"``, ``"PQ16"``...)."""
    if metric not in METRICS:
        raise InputError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    try:
        return faiss.index_factory(int(dim), factory, METRICS[metric])
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        raise InputError(f"factory {factory!r}: not a FAISS index factory string ({msg[-1] if msg else exc})") from None


def clone(index: "faiss.Index") -> "faiss.Index":
    """A deep copy (writes build on a copy, so the loaded index stays as it is on disk until the commit)."""
    return faiss.clone_index(index)


def add_vectors(index: "faiss.Index", vectors: np.ndarray) -> None:
    """Add ``vectors`` (float32, N x dim), training the index first when it needs it."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != index.d:
        raise IndexError_(f"vectors of shape {x.shape} do not fit an index of dimension {index.d}")
    if not index.is_trained:
        need = _min_training(index)
        if len(x) < need:
            raise InputError(f"factory needs at least {need} vectors to train, got {len(x)}; use a smaller index (e.g. Flat)")
        LOG.info("training the FAISS index on %d vectors", len(x))
        index.train(x)
    index.add(x)


def _min_training(index) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return int(ivf.nlist)
    return 1


def prepare_for_reconstruct(index: "faiss.Index") -> None:
    """Let IVF indexes reconstruct vectors by id (needed for queries by id)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()


def search(index: "faiss.Index", queries: np.ndarray, k: int, nprobe: int | None = None):
    """k nearest neighbours: (distances, rows), each ``len(queries) x k``; rows of -1 are missing.

    Distances are Euclidean for L2 indexes (FAISS's squared distances, square-rooted)
    and inner products for IP indexes.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(int(k), index.ntotal)
    if k < 1:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and nprobe:
        ivf.nprobe = int(nprobe)
    D, I = index.search(q, k)
    if index.metric_type == faiss.METRIC_L2:
        D = np.sqrt(np.maximum(D, 0.0))
    return D, I
