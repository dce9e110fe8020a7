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

from collections.abc import Iterable

import numpy as np

from .errors import QueryError


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
