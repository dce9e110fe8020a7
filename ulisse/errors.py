"""The exceptions ulisse raises.

Every error a user can cause is a :class:`UlisseError`; the CLI prints its
message on one line and exits non-zero. This module imports nothing from the
rest of ulisse, so the index backends (``ulisse.indexes``) can use it too.

Hierarchy::

    UlisseError
    ├── InputError          a cutout, catalogue or argument is unusable
    │   └── CutoutError     one cutout file (unreadable, empty, all-NaN, wrong shape)
    ├── WeightsError        encoder weights cannot be found or do not fit the model
    ├── IndexError_         an index directory is missing, damaged or incompatible
    │   ├── IndexNotFound
    │   └── EncoderMismatch the index was built with another encoder
    └── QueryError          a query cannot be answered (unknown id, k < 1, nothing at ra/dec)
"""

from __future__ import annotations


class UlisseError(Exception):
    """Base class of every error a user can cause."""


class InputError(UlisseError):
    """An input (file, catalogue, argument) cannot be used."""


class CutoutError(InputError):
    """One cutout file cannot be used; ``path`` names it."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsError(UlisseError):
    """Encoder weights are missing or do not fit the model."""


class IndexError_(UlisseError):
    """An index directory is missing, damaged or incompatible."""


class IndexNotFound(IndexError_):
    """No index at the given path."""


class EncoderMismatch(IndexError_):
    """The index was built with a different encoder than the one offered."""


class QueryError(UlisseError):
    """A query cannot be answered."""
