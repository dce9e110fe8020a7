"""The checks of the Python API's common arguments, one definition each, so that every function says the same.

A notebook user passes what a command line never could: a string where a list belongs (read one character at
a time), ``k=1.5``, ``True`` for a count, ``"no"`` for a mark. Each check returns the value in its plain form
or raises a one-line :class:`~ulisse.errors.QueryError` naming the argument and the reason.

Example:
    >>> whole(5, "k")
    5
    >>> id_list(("hdf-0055", 42), "follow_ids")
    ['hdf-0055', '42']
    >>> id_list("hdf-0055", "follow_ids")
    Traceback (most recent call last):
    ...
    ulisse.errors.QueryError: follow_ids: a list of ids, not one string ('hdf-0055')
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from .errors import InputError, QueryError


def whole(value, name: str, low: int = 1) -> int:
    """``value`` as an int: a whole number (not a bool, a float or a string) of at least ``low``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise QueryError(f"{name}={value!r}: must be a whole number (at least {low})")
    if value < low:
        raise QueryError(f"{name}={value}: must be at least {low}")
    return int(value)


def id_list(value, name: str) -> list[str]:
    """Object ids given as a list (any iterable of ids) as strings; one string is refused, not split into
    characters (a file of ids: :func:`ulisse.inputs.read_id_list`)."""
    if isinstance(value, (str, bytes, np.str_)):
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        raise QueryError(f"{name}: a list of ids, not one string ({text[:40]!r})")
    if not isinstance(value, Iterable):
        raise QueryError(f"{name}: a list of ids, not {type(value).__name__}")
    return [str(v) for v in value]


def mark_value(relevant) -> bool | None:
    """A mark: True (relevant), False (not relevant) or None (no mark); "no", 0 or 1 are refused, never guessed."""
    if relevant is None or isinstance(relevant, (bool, np.bool_)):
        return None if relevant is None else bool(relevant)
    raise QueryError(f"relevant={relevant!r}: must be True, False or None (no mark)")


def rgb_images(images, name: str = "images") -> list[np.ndarray]:
    """Cutouts given to the encoder: a list of uint8 arrays, ``H x W x 3`` RGB (``H x W`` grey is repeated
    into three channels, an alpha channel dropped), or one ``N x H x W x 3`` array. Anything else is a
    one-line :class:`~ulisse.errors.InputError` that says what was given and what to do: a file name is read
    with :func:`ulisse.read_cutout`, and floats or other integers are never cast silently (a float image in
    [0, 1] would become a black frame)."""
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            images = list(images)
        else:
            raise InputError(f"{name}: one {' x '.join(map(str, images.shape))} array; give a list of images "
                             "([image]) or one N x H x W x 3 array")
    if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Iterable):
        raise InputError(f"{name}: a list of uint8 RGB arrays, not {type(images).__name__}")
    out = []
    for i, image in enumerate(images):
        if isinstance(image, (str, bytes, os.PathLike)):
            raise InputError(f"{name}[{i}]: {str(image)[:60]!r} is a file name; read it with "
                             "ulisse.read_cutout(path).image (or use Index.embed_image(path))")
        a = np.asarray(image)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        elif a.ndim == 3 and a.shape[2] == 4:
            a = a[..., :3]
        if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
            hint = "; channels first? np.moveaxis(image, 0, -1)" if a.ndim == 3 and a.shape[0] in (1, 3, 4) else ""
            raise InputError(f"{name}[{i}]: shape {' x '.join(map(str, a.shape))}; an image is H x W x 3 "
                             f"(RGB) or H x W (grey){hint}")
        if a.dtype != np.uint8:
            span = (f" in [{float(np.nanmin(a)):.3g}, {float(np.nanmax(a)):.3g}]"
                    if a.size and np.issubdtype(a.dtype, np.number) else "")
            raise InputError(f"{name}[{i}]: {a.dtype}{span}; the encoder takes uint8 RGB (0-255): scale it, e.g. "
                             "(image * 255).round().astype('uint8') for [0, 1], or ulisse.cutouts.image_to_rgb "
                             "for flux (the survey stretch)")
        out.append(a)
    return out
