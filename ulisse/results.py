"""Typed query results and their export (CSV, JSON, VOTable, FITS, text table)."""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

FORMATS = ("table", "csv", "json", "votable", "fits")
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".xml": "votable", ".vot": "votable", ".votable": "votable",
                  ".fits": "fits", ".fit": "fits", ".txt": "table"}


@dataclass
class Neighbours:
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

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        return list(self.table["id"])

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
    """The table in ``fmt``: ``table`` (text), ``csv``, ``json``, ``votable`` (str) or ``fits`` (bytes)."""
    if fmt == "table":
        table = table.drop(columns=[c for c in ("source", "row") if c in table.columns])  # long paths: not for the eye
        with pd.option_context("display.max_rows", None, "display.max_columns", 12, "display.width", 160,
                               "display.float_format", "{:.4g}".format):
            return table.to_string(index=False) + "\n"
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        rows = records(table)
        return json.dumps(rows if extra is None else {**extra, "rows": rows}, indent=2) + "\n"
    if fmt == "votable":
        from astropy.io.votable import from_table

        buf = io.BytesIO()
        # BINARY2, not TABLEDATA: astropy's C TABLEDATA writer (astropy <= 8.0.2 at least) writes its
        # end-of-row NUL one byte past its buffer when a row's text is exactly the buffer's size
        # (256, 512, ... bytes) and corrupts the heap (benchmarks/ui-soak.md has the reproduction).
        from_table(to_astropy(table, meta)).to_xml(buf, tabledata_format="binary2")
        return buf.getvalue().decode()
    if fmt == "fits":
        buf = io.BytesIO()
        t = to_astropy(table, {k.upper()[:8]: str(v)[:60] for k, v in (meta or {}).items()})
        t.write(buf, format="fits")
        return buf.getvalue()
    raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")


def format_for_path(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise InputError(f"{path}: unknown output format (use .csv, .json, .xml/.vot, .fits or .txt)")
    return SUFFIX_FORMATS[suffix]


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write a file through a temporary name and ``os.replace``: never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
