"""A small index of two kinds of object for the marks tests: a rare kind set apart along 4 dimensions."""

from __future__ import annotations

import numpy as np
import pandas as pd

import ulisse


def two_kinds_index(path, n: int = 200, dim: int = 64, rare: int = 30, shift: float = 3.0, seed: int = 0,
                    column: str = "label", kinds: tuple[str, str] = ("AGN", "galaxy")):
    """Objects ``o000``.. with Gaussian vectors; the first ``rare`` are ``kinds[0]`` and shifted by ``shift`` along
    4 of the ``dim`` dimensions (in 64 dimensions kNN mixes the kinds, a classifier does not), the rest ``kinds[1]``."""
    rng = np.random.default_rng(seed)
    kind = np.array([kinds[0]] * rare + [kinds[1]] * (n - rare))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:rare, :4] += shift
    meta = pd.DataFrame({"id": [f"o{i:03d}" for i in range(n)], column: kind})
    spec = ulisse.EncoderSpec("synthetic", "random", None, 32, dim=dim)
    return ulisse.create_index(path, x, meta, spec, device="cpu")
