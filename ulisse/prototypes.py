"""Prototypes and the one query API: what a query starts from, resolved to a vector, and its neighbours.

:func:`query` is the one place query arguments are checked and neighbours are searched:
:meth:`ulisse.Index.query` (one prototype given by keyword) calls it, the prototype plugin's
``query`` verb and strategies are it, and other plugins (recursive expansion) use it. A
prototype is an object of the index (its id, or the object nearest to a sky position:
:func:`match_position`) or an outside cutout (an image or FITS file, or an RGB array), or a
vector. Several prototypes combine by their mean vector (``combine="mean"``) or as the union
of their neighbour lists (``combine="union"``, ranked by the smallest distance to any prototype).

Where the index has a label column, the result carries ULISSE's *retrieval efficiency*:
the fraction of each class among the first ``n`` neighbours, for each ``n`` asked for,
beside the class's base rate over the whole index.

Example:
    >>> resolve(index, Prototype("sky", (150.01, 2.005)))        # doctest: +SKIP
    Resolved(prototype=..., row=1, id='obj001', separation_arcsec=0.36)
    >>> r = query(index, ["1237648720693755918"], k=89, n=[16, 89], label="bpt_class")   # doctest: +SKIP
    >>> r.fractions                                                                      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import Sequence

import numpy as np
import pandas as pd

from .catalog import sky_match
from .checks import whole
from .errors import QueryError
from .labels import class_fractions, labels_of
from .positions import DECIMAL, check_position, format_separation
from .results import Neighbours

LOG = logging.getLogger(__name__)

DEFAULT_RADIUS_ARCSEC = 3.0
COMBINE = ("mean", "union")


@dataclass(frozen=True)
class Prototype:
    """One prototype: ``kind`` is ``id``, ``sky``, ``image`` or ``vector``.

    A ``sky`` prototype's value is ``(ra, dec)`` in degrees; ``text`` keeps the position as the user
    wrote it (``12h36m49.4s +62d12m58s``), for messages. Make one with :meth:`sky`.
    """

    kind: str
    value: object
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC
    text: str | None = None

    @classmethod
    def sky(cls, ra, dec, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC, text: str | None = None) -> "Prototype":
        """A sky position from numbers (degrees) or strings in any notation of :mod:`ulisse.positions`.

        Raises:
            InputError: a value that is not a coordinate or is out of range (one line).
        """
        ra_deg, dec_deg = check_position(ra, dec)
        if text is None and not all(isinstance(v, (int, float, np.number)) or DECIMAL.match(v) for v in (ra, dec)):
            text = f"{str(ra).strip()} {str(dec).strip()}"  # sexagesimal or with units: kept as typed
        return cls("sky", (ra_deg, dec_deg), float(radius_arcsec), text)

    @classmethod
    def of(cls, x) -> "Prototype":
        """Read a prototype from a plain value: an id (str), a path, an (ra, dec) pair (numbers in degrees, or
        strings such as ``("12h36m49.4s", "+62d12m58s")``), an image or a vector."""
        if isinstance(x, Prototype):
            return x
        if isinstance(x, (str, np.str_)):
            return cls("id", str(x))
        if isinstance(x, os.PathLike):
            return cls("image", Path(x))
        if isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, (int, float, str, np.number)) for v in x):
            return cls.sky(x[0], x[1])
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
            return f"position {self.text}" if self.text else f"ra={self.value[0]} dec={self.value[1]}"
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
        row, sep = match_position(index, ra, dec, p.radius_arcsec, text=p.text)
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
        if not np.isfinite(p.value).all():
            raise QueryError(f"prototype vector: {int((~np.isfinite(p.value)).sum())} values are not finite (NaN or inf)")
        return Resolved(p, p.value, None, None)
    return Resolved(p, index.vectors_of_rows([row])[0], row, index.id_of(row))


def match_position(index, ra, dec, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
                   text: str | None = None) -> tuple[int, float]:
    """The row of the index object nearest to (ra, dec) within ``radius_arcsec``, and its separation (arcsec).

    ``ra`` and ``dec`` are degrees or strings in any notation of :mod:`ulisse.positions`; ``text`` is the
    position as the user wrote it, for the message when nothing is near.

    Raises:
        QueryError: not a sky position, no positions in the index, or nothing within the radius.
        InputError: ``ra``/``dec`` not coordinates.
    """
    if text is None:
        text = Prototype.sky(ra, dec).text
    ra, dec = check_position(ra, dec)
    if not math.isfinite(radius_arcsec) or radius_arcsec <= 0:
        raise QueryError(f"radius {radius_arcsec:g}: must be a positive number of arcsec")
    if not {"ra", "dec"} <= set(index.metadata_columns):
        raise QueryError(f"{index.path}: the index has no ra/dec for its objects")
    ras = pd.to_numeric(index.metadata_column("ra"), errors="coerce").to_numpy(np.float64)
    decs = pd.to_numeric(index.metadata_column("dec"), errors="coerce").to_numpy(np.float64)
    row, sep = sky_match(ra, dec, ras, decs)
    if row < 0:
        raise QueryError(f"{index.path}: the index has no ra/dec for its objects")
    if sep > radius_arcsec:
        where = text or f"ra={ra:.6f} dec={dec:+.6f}"
        raise QueryError(f"no object within {radius_arcsec:g} arcsec of {where} (the nearest, {index.id_of(row)}, "
                         f"is {format_separation(sep, beside=radius_arcsec)} away; a larger radius widens the match)")
    return row, sep


def one_prototype(id: str | None = None, *, image=None, ra: float | str | None = None, dec: float | str | None = None,
                  vector: np.ndarray | None = None, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> Prototype:
    """The prototype given by exactly one keyword (as :meth:`ulisse.Index.query` takes it).

    ``ra`` and ``dec`` are degrees or strings in any notation of :mod:`ulisse.positions`.

    Raises:
        QueryError: not exactly one prototype, or ra without dec. InputError: ra/dec not coordinates.
    """
    given = [x is not None for x in (id, image, vector)] + [ra is not None or dec is not None]
    if sum(given) != 1:
        raise QueryError("give exactly one prototype: id, image, ra/dec or vector")
    if id is not None:
        if not isinstance(id, (str, int, np.integer, np.str_)) or isinstance(id, bool):
            raise QueryError(f"id: one object id, not {type(id).__name__} (several prototypes: "
                             "ulisse.plugins.prototype.query(index, [...], combine=...))")
        return Prototype("id", str(id))
    if ra is not None or dec is not None:
        if ra is None or dec is None:
            raise QueryError("give both ra and dec")
        return Prototype.sky(ra, dec, radius_arcsec)
    if image is not None:
        return Prototype("image", Path(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image))
    return Prototype("vector", np.asarray(vector, dtype=np.float32))


@dataclass
class PrototypeResult(Neighbours):
    """Neighbours of one or more prototypes, with class fractions where labels exist.

    Attributes:
        prototypes: the resolved prototypes' descriptions.
        label: the label column used for fractions, or None.
        fractions: rows = classes, columns = ``n`` values and ``base_rate``.
    """

    prototypes: list[str] = field(default_factory=list)
    label: str | None = None
    fractions: pd.DataFrame | None = None

    def record_params(self) -> dict:
        return {"prototype": self.prototype, "prototypes": ", ".join(self.prototypes) or None, "k": self.info.get("k"),
                "combine": self.info.get("combine"), "where": self.info.get("where"), "label": self.label}

    def summary(self) -> dict:
        """Fractions and base rates as JSON-ready dicts: ``{"fractions": {n: {class: f}}, "base_rate": {...}}``."""
        if self.fractions is None:
            return {}
        f = self.fractions
        return {
            "label": self.label,
            "fractions": {str(n): {str(c): float(f.loc[c, n]) for c in f.index} for n in f.columns if n != "base_rate"},
            "base_rate": {str(c): float(f.loc[c, "base_rate"]) for c in f.index},
            "n_used": self.info.get("n_used", {}),
        }


def query(index, prototypes, k: int = 16, *, combine: str = "mean", n: Sequence[int] | None = None,
          label: str | None = None, where: str | None = None, allowed: np.ndarray | None = None) -> PrototypeResult:
    """The neighbours of one or several prototypes: the one query API (every argument is checked here).

    Args:
        index: an open index.
        prototypes: one prototype or a list (ids, paths, (ra, dec) pairs in degrees or as text such as
            ``("12h36m49.4s", "+62d12m58s")``, images, vectors, or :class:`Prototype`).
        k: neighbours per query (for ``union``, per prototype).
        combine: ``mean`` (query once with the mean vector) or ``union`` (merge each prototype's list).
        n: the list lengths at which to report class fractions (default: k).
        label: a metadata column holding classes; fractions are computed when given
            (labelled objects only; the prototypes are left out of the base rate).
        where: keep only objects matching a filter on metadata and derived columns
            (``"z_pred < 0.1 and type == 'galaxy'"``, see :mod:`ulisse.filters`).
        allowed: the same as a boolean mask over rows (combined with ``where``).

    Index objects used as prototypes are left out of the results. ``info`` carries
    ``matched`` (the objects matched to sky positions, with their separations and, for positions
    given as text, ``asked``: the text) and a
    ``note`` when fewer than k neighbours exist.

    Raises:
        QueryError: no prototype, k < 1, bad ``combine`` or ``n``, unknown id or label column.
    """
    if isinstance(prototypes, (str, os.PathLike, tuple, Prototype)) or (isinstance(prototypes, np.ndarray) and prototypes.ndim == 1):
        prototypes = [prototypes]
    k = whole(k, "k")
    if combine not in COMBINE:
        raise QueryError(f"combine={combine!r}: expected one of {', '.join(COMBINE)}")
    if isinstance(n, (str, bytes)) or (n is not None and not isinstance(n, Iterable)):
        raise QueryError(f"n={n!r}: a list of whole numbers, such as [16, 89]")
    ns = sorted(set(whole(x, "n") for x in (n or [k])))
    if ns[0] < 1:
        raise QueryError(f"n={ns[0]}: must be at least 1")
    if ns[-1] > k:
        raise QueryError(f"n={ns[-1]} is larger than k={k}: ask for at least as many neighbours as the longest list")
    mask = index.where_mask(where) if where is not None else None  # parsed, never evaluated
    if allowed is not None:
        mask = np.asarray(allowed, bool) if mask is None else (np.asarray(allowed, bool) & mask)
    search_opts = {} if mask is None else {"allowed": mask}
    resolved = [resolve(index, p) for p in prototypes]
    if not resolved:
        raise QueryError("give at least one prototype")
    all_labels = labels_of(index, label) if label else None
    own_rows = [r.row for r in resolved if r.row is not None]
    if combine == "mean" or len(resolved) == 1:
        q = np.mean([r.vector for r in resolved], axis=0, dtype=np.float64).astype(np.float32)
        D, I = index.search(q[None], int(k), exclude=[own_rows], **search_opts)
        table = index.neighbour_table(I[0], D[0])
    else:
        vectors = np.stack([r.vector for r in resolved])
        D, I = index.search(vectors, int(k), exclude=[own_rows] * len(resolved), **search_opts)
        best: dict[int, tuple[float, int]] = {}
        for p, (drow, irow) in enumerate(zip(D, I)):
            for d, i in zip(drow, irow):
                if i >= 0 and (i not in best or d < best[i][0]):
                    best[int(i)] = (float(d), p)
        order = sorted(best, key=lambda i: best[i][0])
        table = index.neighbour_table(np.array(order, dtype=np.int64), np.array([best[i][0] for i in order]))
        table.insert(3, "found_by", [resolved[best[i][1]].id or resolved[best[i][1]].prototype.describe() for i in order])
    descs = [r.id or r.prototype.describe() for r in resolved]
    result = PrototypeResult(prototype=", ".join(descs) if len(descs) < 6 else f"{len(descs)} prototypes ({combine})",
                             prototype_id=resolved[0].id if len(resolved) == 1 else None, table=table,
                             prototypes=descs, label=label)
    result.info.update(k=k, combine=combine if len(resolved) > 1 else None, where=where)
    if label:
        result.fractions, used = class_fractions(all_labels.iloc[table["row"]].tolist(), all_labels, ns,
                                                 exclude_rows=own_rows)
        result.info.update(n_used=used)
    if len(table) < (k if combine == "mean" or len(resolved) == 1 else 1):
        result.info["note"] = (f"only {len(table)} neighbour(s) found for k={k}: the index holds {len(index)} objects"
                               + (" and --where keeps fewer" if where else ""))
    matched = [r for r in resolved if r.separation_arcsec is not None]
    if matched:  # with the position as the user wrote it ("asked"), when it was text
        result.info["matched"] = [{"id": r.id, "separation_arcsec": r.separation_arcsec,
                                   **({"asked": r.prototype.text} if r.prototype.text else {})} for r in matched]
    return result
