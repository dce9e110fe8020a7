"""Prototypes: what a query starts from, resolved to a vector (and, where it is one, an object of the index).

This is the one prototype pipeline: :meth:`ulisse.Index.query` (one prototype) and the
prototype plugin's ``query`` (several, combined) both resolve through :func:`resolve`.

Example:
    >>> resolve(index, Prototype("sky", (150.01, 2.005)))        # doctest: +SKIP
    Resolved(prototype=..., row=1, id='obj001', separation_arcsec=0.36)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .catalog import check_position
from .errors import QueryError

LOG = logging.getLogger(__name__)

DEFAULT_RADIUS_ARCSEC = 3.0


@dataclass(frozen=True)
class Prototype:
    """One prototype: ``kind`` is ``id``, ``sky``, ``image`` or ``vector``."""

    kind: str
    value: object
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC

    @classmethod
    def of(cls, x) -> "Prototype":
        """Read a prototype from a plain value: an id (str), a path, an (ra, dec) pair, an image or a vector."""
        if isinstance(x, Prototype):
            return x
        if isinstance(x, (str, np.str_)):
            return cls("id", str(x))
        if isinstance(x, os.PathLike):
            return cls("image", Path(x))
        if isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, (int, float)) for v in x):
            return cls("sky", (float(x[0]), float(x[1])))
        a = np.asarray(x)
        if a.ndim == 1:
            return cls("vector", a.astype(np.float32))
        if a.ndim in (2, 3):
            return cls("image", a)
        raise QueryError(f"cannot use {type(x).__name__} as a prototype")

    def describe(self) -> str:
        if self.kind == "image":
            return f"image={self.value}" if isinstance(self.value, Path) else "image"
        if self.kind == "sky":
            return f"ra={self.value[0]} dec={self.value[1]}"
        return f"{self.kind}={self.value}" if self.kind == "id" else "vector"


@dataclass
class Resolved:
    prototype: Prototype
    vector: np.ndarray
    row: int | None  # the index object it is, if any
    id: str | None
    separation_arcsec: float | None = None  # for sky positions: how far the matched object is


def resolve(index, prototype) -> Resolved:
    """A prototype's vector, and the index object it is (for ids and sky positions).

    Ids use their stored raw vector; sky positions the nearest object within the
    prototype's radius (range-checked first); images are embedded with the index's
    own encoder (and its preprocessing steps); vectors are checked for dimension.

    Raises:
        QueryError: unknown id, nothing near the position, a vector of the wrong shape.
    """
    p = Prototype.of(prototype)
    if p.kind == "id":
        row = index.row_of(p.value)
    elif p.kind == "sky":
        ra, dec = check_position(*p.value)
        row = index.nearest_object(ra, dec, p.radius_arcsec)
        sep = _separation_arcsec(index, row, ra, dec)
        return Resolved(p, index.vectors_of_rows([row])[0], row, index.id_of(row), sep)
    elif p.kind == "image":
        if isinstance(p.value, (str, os.PathLike)):
            from .geometry import check_prototype

            warning = check_prototype(index.manifest, p.value)
            if warning:
                LOG.warning("%s: %s", p.value, warning)
        return Resolved(p, index.embed_image(p.value), None, None)
    else:
        if p.value.shape != (index.encoder_spec.dim,):
            raise QueryError(f"prototype vector has shape {p.value.shape}, the index dimension {index.encoder_spec.dim}")
        return Resolved(p, p.value, None, None)
    return Resolved(p, index.vectors_of_rows([row])[0], row, index.id_of(row))


def _separation_arcsec(index, row: int, ra: float, dec: float) -> float:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    pos = index.metadata_rows([row]).iloc[0]
    obj = SkyCoord(float(pos["ra"]) * u.deg, float(pos["dec"]) * u.deg)
    return float(obj.separation(SkyCoord(ra * u.deg, dec * u.deg)).arcsec)
