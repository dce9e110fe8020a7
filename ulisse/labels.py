"""Class labels of index objects and class fractions (ULISSE's retrieval efficiency).

Used by every feature that reports "how many of the objects found are of class
X, against the base rate of X in the whole index" (queries, expansion, anomaly
ranking, benchmarks).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

from .errors import QueryError

MISSING = "(none)"
NOT_LABELS = ("row", "id", "source")


def labels_of(index, column: str) -> pd.Series:
    """The ``column`` of the index metadata as class names (strings; missing values are ``(none)``).

    Raises:
        QueryError: no such column (the message lists the columns there are).
    """
    if column not in index.metadata.columns or column in NOT_LABELS:
        cols = [c for c in index.metadata.columns if c not in NOT_LABELS]
        raise QueryError(f"--label {column}: no such column of classes in the index (columns: {', '.join(cols)})")
    return index.metadata[column].map(lambda v: MISSING if pd.isna(v) else str(v))


def class_fractions(found: Sequence[str], all_labels: pd.Series, ns: Iterable[int]) -> tuple[pd.DataFrame, dict]:
    """Fraction of each class among the first n found objects, for each n, beside the base rate.

    Returns the table (rows = classes, commonest first; columns = the n values and
    ``base_rate``) and, for each n, how many objects were actually there (n is
    capped at the number found).
    """
    base = all_labels.value_counts(normalize=True)
    found = pd.Series(list(found), dtype=object)
    out, used = {}, {}
    for n in ns:
        head = found.iloc[:n]
        used[str(n)] = len(head)
        counts = head.value_counts()
        out[n] = {c: (counts.get(c, 0) / len(head) if len(head) else float("nan")) for c in base.index}
    table = pd.DataFrame(out, index=base.index)
    table["base_rate"] = base
    table.index.name = "class"
    return table, used
