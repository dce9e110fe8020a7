"""Reading object catalogues (CSV, FITS table, VOTable, ECSV) into a metadata table."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

LOG = logging.getLogger(__name__)

ID_COLUMNS = ("id", "objid", "object_id", "objectid", "name", "specobjid")
RA_COLUMNS = ("ra", "raj2000", "ra_deg")
DEC_COLUMNS = ("dec", "dej2000", "decj2000", "dec_deg")
FORMATS = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits", ".fits.gz": "fits",
           ".xml": "votable", ".vot": "votable", ".votable": "votable"}


def _format_for(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise InputError(f"{path}: unknown catalogue format (expected {', '.join(sorted(set(FORMATS)))})")


def read_catalog(path: str | Path) -> pd.DataFrame:
    """Read a catalogue: one row per object, with an ``id`` column (strings) and ``ra``, ``dec`` (degrees).

    The id column may be called id, objid, object_id, name...; ra/dec columns
    are optional (NaN when absent). Every other scalar column is kept.

    Raises:
        InputError: missing, unreadable or empty file, no id column, duplicate ids.
    """
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: catalogue not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: catalogue is an empty file")
    fmt = _format_for(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table.read(path, format=fmt)
    except Exception as exc:
        raise InputError(f"{path}: unreadable catalogue ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})") from None
    if len(table) == 0:
        raise InputError(f"{path}: catalogue has no rows")
    dropped = [c for c in table.colnames if table[c].ndim > 1]
    if dropped:
        LOG.info("%s: dropping multidimensional columns %s", path, ", ".join(dropped))
        table.remove_columns(dropped)
    df = table.to_pandas()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    return normalise_columns(df, str(path))


def normalise_columns(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Rename id/ra/dec columns to ``id``, ``ra``, ``dec``; ids become strings."""
    lower = {c.lower(): c for c in df.columns}
    id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None)
    if id_col is None:
        raise InputError(f"{what}: catalogue has no id column (expected one of {', '.join(ID_COLUMNS)})")
    rename = {id_col: "id"}
    for names, target in ((RA_COLUMNS, "ra"), (DEC_COLUMNS, "dec")):
        col = next((lower[c] for c in names if c in lower), None)
        if col is not None:
            rename[col] = target
    df = df.rename(columns=rename)
    if df["id"].isna().any():
        raise InputError(f"{what}: catalogue has rows without an id")
    df["id"] = df["id"].map(_id_string)
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise InputError(f"{what}: duplicate id {dup.iloc[0]!r} in catalogue")
    for c in ("ra", "dec"):
        if c not in df.columns:
            df[c] = np.nan
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df.reset_index(drop=True)


def _id_string(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()
