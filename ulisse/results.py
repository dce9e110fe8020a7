"""Typed query results and their export.

The export formats are registered (``register_export_formats``): the core's
(text table, CSV, JSON, VOTable, FITS, ECSV) in :mod:`ulisse._builtins` with the
writers below, a plugin's beside them; :func:`render` and
:func:`format_for_path` look them up by name and by file extension.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class TableResult:
    """What every typed result with a ``table`` of objects offers: its length and its ids."""

    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        return list(self.table["id"])


@dataclass
class Neighbours(TableResult):
    """The answer to a one-shot query.

    Attributes:
        prototype: what was asked (``id=...``, ``image=...``, ``ra,dec=...``).
        prototype_id: the index object used as prototype, if any.
        table: one row per neighbour: ``rank`` (1 = nearest), ``id``, ``distance``, then metadata.
        info: extra values (plugins add summaries such as class fractions here).
    """

    prototype: str
    prototype_id: str | None
    table: pd.DataFrame
    info: dict = field(default_factory=dict)

    def to_astropy(self):
        return to_astropy(self.table, meta={"prototype": self.prototype})

    def to_records(self) -> list[dict]:
        return records(self.table)


def records(table: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts (NaN -> null)."""
    out = []
    for row in table.to_dict(orient="records"):
        out.append({k: _plain(v) for k, v in row.items()})
    return out


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if v is pd.NA or v is None:
        return None
    return v


def to_astropy(table: pd.DataFrame, meta: dict | None = None):
    from astropy.table import Table

    df = table.copy()
    for c in df.columns:
        if df[c].dtype == object or str(df[c].dtype).startswith("string"):
            df[c] = df[c].astype(str)
    t = Table.from_pandas(df)
    if meta:
        t.meta.update(meta)
    return t


def render(table: pd.DataFrame, fmt: str, meta: dict | None = None, extra: dict | None = None) -> str | bytes:
    """The table in the registered export format ``fmt`` (``table``, ``csv``, ``json``, ``votable``, ``fits``...).

    Raises:
        InputError: no plugin registers ``fmt``.
    """
    from .registry import export_format

    return export_format(fmt).write(table, meta, extra)


def write_csv(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """Comma-separated values with a header line (``meta`` is not written)."""
    return table.to_csv(index=False)


def write_json(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """The rows as a JSON list, or ``{**extra, "rows": [...]}`` when the verb gives ``extra``."""
    rows = records(table)
    return json.dumps(rows if extra is None else {**extra, "rows": rows}, indent=2) + "\n"


def write_votable(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """An IVOA VOTable (BINARY2 serialisation), ``meta`` in its INFO elements."""
    from astropy.io.votable import from_table

    buf = io.BytesIO()
    # BINARY2, not TABLEDATA: astropy's C TABLEDATA writer (astropy <= 8.0.2 at least) writes its
    # end-of-row NUL one byte past its buffer when a row's text is exactly the buffer's size
    # (256, 512, ... bytes) and corrupts the heap (benchmarks/ui-soak.md has the reproduction).
    from_table(to_astropy(table, meta)).to_xml(buf, tabledata_format="binary2")
    return buf.getvalue().decode()


def write_fits(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> bytes:
    """A FITS binary table, ``meta`` as header cards (keys cut to 8 characters, values to 60)."""
    buf = io.BytesIO()
    t = to_astropy(table, {k.upper()[:8]: str(v)[:60] for k, v in (meta or {}).items()})
    t.write(buf, format="fits")
    return buf.getvalue()


def write_ecsv(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """Astropy's Enhanced CSV: CSV with a YAML header of column types and ``meta``."""
    buf = io.StringIO()
    to_astropy(table, meta).write(buf, format="ascii.ecsv")
    return buf.getvalue()


def write_text(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """The aligned text table of :func:`text_table` (``meta`` is not written)."""
    return text_table(table)


POSITION_COLUMNS = ("ra", "dec")
POSITION_DECIMALS = 6  # 1e-6 deg = 0.0036 arcsec: objects 0.01 arcsec apart are told apart


def format_number(value, column: str = "") -> str:
    """The one number format of every text table: positions to 6 decimals (degrees), other floats to
    6 significant digits (never cutting leading digits: 183321.3333 -> 183321), integers as they are."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if column in POSITION_COLUMNS:
            return f"{float(value):.{POSITION_DECIMALS}f}"
        v = float(value)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-4):
            return f"{v:.6g}"
        return f"{v:.6g}" if abs(v) < 1 else f"{v:.{max(0, 6 - len(str(int(abs(v)))))}f}".rstrip("0").rstrip(".")
    return str(value)


def text_table(table: pd.DataFrame) -> str:
    """A result table as aligned text: every column, ids and values never truncated, one number format."""
    table = table.drop(columns=[c for c in ("source", "row") if c in table.columns])  # long paths: not for the eye
    cells = {c: [format_number(v, str(c)) for v in table[c].tolist()] for c in table.columns}
    widths = {c: max([len(str(c))] + [len(x) for x in cells[c]]) for c in table.columns}
    numeric = {c: pd.api.types.is_numeric_dtype(table[c]) for c in table.columns}
    head = "  ".join(str(c).rjust(widths[c]) if numeric[c] else str(c).ljust(widths[c]) for c in table.columns)
    lines = [head.rstrip()]
    for i in range(len(table)):
        lines.append("  ".join(cells[c][i].rjust(widths[c]) if numeric[c] else cells[c][i].ljust(widths[c])
                               for c in table.columns).rstrip())
    return "\n".join(lines) + "\n"


def format_for_path(path: str | os.PathLike) -> str:
    """The name of the registered export format for ``path``'s extension (``r.xml`` -> ``votable``).

    Raises:
        InputError: no registered format has that extension.
    """
    from .registry import export_format_for_path

    return export_format_for_path(path).name
