"""The space an index searches in: the encoder's raw vectors, or the same vectors PCA-whitened.

An index built with the ``discovery`` preset searches its vectors after a PCA whitening fitted
on the index's own vectors (FAISS ``PCAW64``: the first 64 principal components, each divided
by the square root of its eigenvalue) and an L2 normalisation (``L2norm``). Label-free, fitted
once when the index is created, and shared by every later segment, so distances compare across
segments and adds. On the simulated benchmarks it lifts AGN@16 from 1.34x to 1.64x ULISSE's and
morphology class@16 from 1.21x to 1.30x (benchmarks/discovery.md). The raw 1280-d vectors are
still what the index stores: feature browsing, heads and exports read them unchanged.

The transform is part of the FAISS factory string (``PCAW64,L2norm,Flat``), so the store's
trained index carries it: queries and adds go through it, re-ranking applies it
(:func:`transform_of`), and the manifest's ``space`` entry records what was fitted on how many
objects, with a fingerprint that sharded search compares across shards.

Example:
    >>> resolve_whiten("auto", "discovery", n=5000, dim=1280)
    64
    >>> resolve_whiten("auto", "ulisse", n=5000, dim=1280)
    0
    >>> factory_with_space("Flat", 64)
    'PCAW64,L2norm,Flat'
"""

from __future__ import annotations

import hashlib
import logging
import re

import numpy as np

from ulisse.errors import InputError

LOG = logging.getLogger(__name__)

PRESET_WHITEN = {"discovery": 64, "ulisse": 0}  # the space each encoder preset searches in (0: raw vectors)
MIN_OBJECTS_PER_DIM = 2  # a whitening is fitted only on at least 2 x its dimensions objects (128 for 64)
_PREFIX = re.compile(r"^PCAW(\d+),L2norm,")


def resolve_whiten(whiten, preset: str | None, n: int, dim: int) -> int:
    """The whitening dimension an index of ``n`` vectors gets (0: none).

    ``whiten``: ``auto`` (the preset's: :data:`PRESET_WHITEN`), ``none``/0, or a number of dimensions.
    With ``auto``, an index of too few objects to fit the whitening (fewer than
    :data:`MIN_OBJECTS_PER_DIM` per dimension) searches raw vectors, and the log says so.

    Raises:
        InputError: not ``auto``/``none``/a whole number in 1..dim; an explicit whitening with too few objects.
    """
    text = str(whiten).strip().lower() if whiten is not None else "none"
    if text == "auto":
        want = PRESET_WHITEN.get(str(preset or "ulisse"), 0)
        want = min(want, dim)
        if want and n < MIN_OBJECTS_PER_DIM * want:
            LOG.info("whitening: %d objects are too few to fit %d dimensions (%d needed); raw vectors searched",
                     n, want, MIN_OBJECTS_PER_DIM * want)
            return 0
        return want
    if text in ("none", "0", "false", "off"):
        return 0
    if not text.isdigit() or not 1 <= int(text) <= dim:
        raise InputError(f"--whiten {whiten}: expected auto, none or a number of dimensions from 1 to {dim}")
    want = int(text)
    if n < MIN_OBJECTS_PER_DIM * want:
        raise InputError(f"--whiten {want}: needs at least {MIN_OBJECTS_PER_DIM * want} objects to fit, got {n}")
    return want


def factory_with_space(factory: str, whiten: int) -> str:
    """``factory`` searched in the whitened space (unchanged when ``whiten`` is 0 or it has a space already)."""
    if not whiten or _PREFIX.match(factory):
        return factory
    if factory.split(",")[0].startswith(("PCA", "OPQ", "RR", "L2norm")):
        raise InputError(f"factory {factory!r} has a transform of its own: give --whiten none with it")
    return f"PCAW{int(whiten)},L2norm,{factory}"


def whiten_of(factory: str) -> int:
    """The whitening dimension of a factory string made by :func:`factory_with_space` (0: none)."""
    m = _PREFIX.match(factory or "")
    return int(m.group(1)) if m else 0


def transform_of(index):
    """The vector transforms in front of a FAISS index, as one function on N x d arrays (None: no transform)."""
    import faiss

    if index is None:
        return None
    pt = faiss.downcast_index(index)
    if not isinstance(pt, faiss.IndexPreTransform):
        return None
    chain = [pt.chain.at(i) for i in range(pt.chain.size())]

    def apply(x: np.ndarray) -> np.ndarray:
        y = np.ascontiguousarray(x, dtype=np.float32)
        for t in chain:
            y = t.apply(y)
        return y

    apply.keep = pt  # the transforms live as long as the index
    return apply


def fingerprint(index) -> str | None:
    """sha256 of the transforms' parameters (None: no transform): equal only for the same fitted space."""
    import faiss

    pt = faiss.downcast_index(index) if index is not None else None
    if not isinstance(pt, faiss.IndexPreTransform):
        return None
    h = hashlib.sha256()
    for i in range(pt.chain.size()):
        t = faiss.downcast_VectorTransform(pt.chain.at(i))
        h.update(type(t).__name__.encode())
        for name in ("A", "b", "mean", "eigenvalues"):
            if hasattr(t, name):
                h.update(faiss.vector_to_array(getattr(t, name)).tobytes())
    return h.hexdigest()


def describe(factory: str, index, fitted_on: int) -> dict | None:
    """The manifest's ``space`` entry for a new index (None when it searches raw vectors)."""
    w = whiten_of(factory)
    if not w:
        return None
    return {"whiten": w, "normalise": True, "fitted_on": int(fitted_on), "sha256": fingerprint(index)}


def space_text(space: dict | None) -> str:
    """One line for ``ulisse index info``."""
    if not space:
        return "raw vectors (no whitening)"
    return (f"PCA-whitened to {space['whiten']} dimensions and L2-normalised "
            f"(fitted on {space['fitted_on']} objects of this index)")
