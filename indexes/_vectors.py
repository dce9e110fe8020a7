"""Vectors as FAISS takes them: the metrics and the preparation (float32, contiguous, normalised for cosine).

Shared by :mod:`ulisse.indexes.faiss_backend` (which re-exports both) and :mod:`ulisse.indexes._gpu`.
"""

from __future__ import annotations

import faiss
import numpy as np

METRICS = {"L2": faiss.METRIC_L2, "IP": faiss.METRIC_INNER_PRODUCT, "cosine": faiss.METRIC_INNER_PRODUCT}


def prepared(vectors: np.ndarray, metric: str = "L2") -> np.ndarray:
    """Vectors as FAISS takes them: contiguous float32, L2-normalised for ``cosine``."""
    if metric == "cosine":  # normalised in a copy: the input may be a read-only memory map
        x = np.array(vectors, dtype=np.float32, order="C", copy=True)
        faiss.normalize_L2(x)
        return x
    return np.ascontiguousarray(vectors, dtype=np.float32)
