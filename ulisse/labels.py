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
MAX_CLASSES = 50  # a column of floats with more values than this is a measurement, not classes


def labels_of(index, column: str, option: str = "--label") -> pd.Series:
    """The ``column`` of the index metadata as class names (strings; missing values are ``(none)``).

    ``option``: the option named by the error (the one the user gave the column with).

    Raises:
        QueryError: no such column (the message lists the columns there are); for ``--label``, a column of
            measured numbers with more than :data:`MAX_CLASSES` values (a fraction per value says nothing).
    """
    if column not in index.metadata_columns or column in NOT_LABELS:
        cols = [c for c in index.metadata_columns if c not in NOT_LABELS]
        raise QueryError(f"{option} {column}: no such column of classes in the index (columns: {', '.join(cols)})")
    values = index.metadata_column(column)
    if option == "--label" and pd.api.types.is_float_dtype(values) and values.nunique() > MAX_CLASSES:
        raise QueryError(f"{option} {column}: {values.nunique()} different numbers, not classes (a measured "
                         f"quantity? --where \"{column} > ...\" selects on it)")
    return values.map(lambda v: MISSING if pd.isna(v) else str(v))


def class_fractions(found: Sequence[str], all_labels: pd.Series, ns: Iterable[int],
                    exclude_rows: Iterable[int] = ()) -> tuple[pd.DataFrame, dict]:
    """Fraction of each class among the first n found objects, for each n, beside the base rate.

    Only labelled objects count: objects without a label (``(none)``) are left out
    of both the fractions and the base rate, so a partly labelled catalogue does not
    dilute them. ``exclude_rows`` (the prototypes) are left out of the base rate.

    Returns the table (rows = classes, commonest first; columns = the n values and
    ``base_rate``) and, for each n, how many found objects were looked at and how
    many of them had a label (``{"16": {"objects": 16, "labelled": 12}}``).
    """
    rows = set(int(r) for r in exclude_rows)
    base_labels = all_labels[[i not in rows for i in range(len(all_labels))]] if rows else all_labels
    base = base_labels[base_labels != MISSING].value_counts(normalize=True)
    found = pd.Series(list(found), dtype=object)
    out, used = {}, {}
    for n in ns:
        head = found.iloc[:n]
        labelled = head[head != MISSING]
        used[str(n)] = {"objects": len(head), "labelled": len(labelled)}
        counts = labelled.value_counts()
        out[n] = {c: (counts.get(c, 0) / len(labelled) if len(labelled) else float("nan")) for c in base.index}
    table = pd.DataFrame(out, index=base.index)
    table["base_rate"] = base
    table.index.name = "class"
    return table, used


def _lift(ratio: float) -> str:
    """A fraction's lift over its base rate: one decimal from 1 on, two significant digits below (x0.041, not x0.0)."""
    return f"{ratio:.1f}" if ratio >= 1 or ratio == 0 else f"{ratio:.2g}"


def fractions_text(fractions: pd.DataFrame | None, label: str | None, used: dict | None = None,
                   heading: str = "class fractions", excluded: str | None = "the prototypes") -> str:
    """Class fractions as a few readable lines, the same in every verb: percentages and the lift over the base rate.

    ``excluded`` names what the base rate leaves out (a query's prototypes), or None (an anomaly ranking's
    base rate is the whole index)."""
    if fractions is None:
        return ""
    ns = [c for c in fractions.columns if c != "base_rate"]
    used = used or {}

    def col_name(n):
        u = used.get(str(n))
        if isinstance(u, dict) and u.get("labelled", n) != u.get("objects", n):
            return f"first {u['objects']} ({u['labelled']} lab.)"
        if isinstance(u, dict) and u.get("objects", n) != n:
            return f"first {u['objects']}"
        return f"first {n}"

    width = max([len(str(label or "class"))] + [len(str(c)) for c in fractions.index]) + 2
    names = [col_name(n) for n in ns]
    cw = max([12] + [len(x) + 2 for x in names])
    head = f"{str(label or 'class'):<{width}}" + "".join(f"{x:>{cw}}" for x in names) + f"{'base rate':>{cw}}"
    left_out = f", {excluded} left out of the base rate" if excluded else ""
    lines = ["", f"{heading} ({label}; labelled objects only{left_out}):", head]
    for c in fractions.index:
        base = fractions.loc[c, "base_rate"]
        cells = []
        for n in ns:
            f = fractions.loc[c, n]
            lift = f" x{_lift(f / base)}" if base and f == f else ""
            cells.append(f"{f:.1%}{lift}" if f == f else "-")
        lines.append(f"{str(c):<{width}}" + "".join(f"{x:>{cw}}" for x in cells) + f"{base:>{cw}.1%}")
    return "\n".join(lines) + "\n"
