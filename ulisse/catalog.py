"""Reading object catalogues (CSV, FITS table, VOTable, ECSV) into a metadata table."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .positions import angle_degrees, check_coordinate, check_position  # noqa: F401 (check_position: public here too)

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


def read_catalog(path: str | Path, skip_bad: bool = False, skipped: list | None = None) -> pd.DataFrame:
    """Read a catalogue: one row per object, with an ``id`` column (strings) and ``ra``, ``dec`` (degrees).

    The id column may be called id, objid, object_id, name...; ra/dec columns
    are optional (NaN when absent). Positions are read as astronomers write them:
    decimal degrees, sexagesimal strings (``10:00:24.5``, ``10h00m24.5s``,
    ``+02:12:00``, ``2d12m00s``; a sexagesimal RA is in hours) and the units of
    FITS/VOTable/ECSV column metadata (``hourangle``, ``rad``...). Every other
    scalar column is kept.

    Args:
        skip_bad: leave out rows whose position cannot be read or is out of range,
            appending ``(what, reason)`` to ``skipped``, instead of stopping.

    Raises:
        InputError: missing, unreadable or empty file, no id column, duplicate ids,
            or (without ``skip_bad``) a position that is not one, naming column and row.
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
    units = {c: (str(table[c].unit) if getattr(table[c], "unit", None) is not None else None) for c in table.colnames}
    df = normalise_columns(table_to_pandas(table), str(path), units=units, skip_bad=skip_bad, skipped=skipped)
    df.attrs["column_notes"] = column_notes_of(table, df.columns)
    return df


def column_notes_of(table, kept) -> dict:
    """``{column: {"unit", "ucd", "description"}}`` of a catalogue's columns kept under their own names (not
    id, ra, dec: the core knows those), for the exports of every table that shows them."""
    notes = {}
    for c in table.colnames:
        if c not in kept or c in ("id", "ra", "dec"):
            continue
        col = table[c]
        note = {"unit": None if getattr(col, "unit", None) is None else col.unit.to_string(),
                "ucd": (getattr(col, "meta", None) or {}).get("ucd"),
                "description": getattr(col, "description", None) or None}
        note = {k: str(v) for k, v in note.items() if v}
        if note:
            notes[c] = note
    return notes


def table_to_pandas(table) -> pd.DataFrame:
    """An astropy table as a DataFrame, byte strings (FITS, VOTable) decoded to str."""
    df = table.to_pandas()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    return df


RESERVED_COLUMNS = ("row", "source", "rank", "distance", "score")  # the index's own and every result table's


def normalise_columns(df: pd.DataFrame, what: str, units: dict | None = None, skip_bad: bool = False,
                      skipped: list | None = None) -> pd.DataFrame:
    """Rename id/ra/dec columns to ``id``, ``ra``, ``dec``; ids become strings; positions become degrees."""
    units = units or {}
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
    taken = [c for c in df.columns if str(c) in RESERVED_COLUMNS]
    if taken:
        raise InputError(f"{what}: column {taken[0]!r} is a name ulisse's own columns use "
                         f"({', '.join(RESERVED_COLUMNS)}): rename it in the catalogue (e.g. {taken[0]}_cat)")
    if df["id"].isna().any():
        raise InputError(f"{what}: catalogue has rows without an id")
    df["id"] = df["id"].map(_id_string)
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise InputError(f"{what}: duplicate id {dup.iloc[0]!r} in catalogue")
    source_names = {v: k for k, v in rename.items()}
    bad = np.zeros(len(df), bool)
    for c in ("ra", "dec"):
        if c not in df.columns:
            df[c] = np.nan
            continue
        values, problems = coordinate_degrees(df[c], c, units.get(source_names.get(c, c)))
        for row, value, reason in problems:
            name = source_names.get(c, c)
            message = f"{what}: column {name}, row {row + 1} (id {df['id'].iloc[row]}): {value!r} {reason}"
            if not skip_bad:
                raise InputError(message + " (--skip-bad leaves such rows out)")
            bad[row] = True
            if skipped is not None:
                skipped.append((f"{what} row {row + 1}", f"{name} {value!r} {reason}"))
            LOG.warning("skipped %s", message)
        df[c] = values
    return df[~bad].reset_index(drop=True)


def coordinate_degrees(column: pd.Series, which: str, unit: str | None = None) -> tuple[np.ndarray, list]:
    """A catalogue's ra or dec column in degrees, and ``(row, value, reason)`` for each value that is not one.

    Empty cells stay NaN (an object without a position). Every value is read by the one position
    parser, :func:`ulisse.positions.angle_degrees`: numbers are degrees unless the column's ``unit``
    says otherwise; strings may be sexagesimal (RA in hours) or carry a unit.
    """
    from astropy import units as u

    out = np.full(len(column), np.nan)
    problems = []
    try:
        col_unit = u.Unit(unit) if unit not in (None, "", "None") else None
    except ValueError:
        col_unit = None
    for i, v in enumerate(column.tolist()):
        if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            continue
        try:
            out[i] = angle_degrees(v, which, col_unit)
        except (ValueError, TypeError, u.UnitsError):
            problems.append((i, v, "is not a sky coordinate"))
            continue
        problem = check_coordinate(out[i], which)
        if problem:
            problems.append((i, v, problem))
    return out, problems


def separation_arcsec(ra: float, dec: float, ras, decs) -> np.ndarray:
    """Angular separations (arcsec) of (``ra``, ``dec``) from each of (``ras``, ``decs``), all in degrees.

    Vincenty's formula (as astropy's ``SkyCoord.separation``), exact at every distance; NaN where a
    position is NaN. The one sky-distance function: object matching, cone selections and the UI use it.

    Example:
        >>> round(float(separation_arcsec(150.0, 2.0, [150.0], [2.001])[0]), 3)
        3.6
    """
    lon1, lat1 = math.radians(float(ra)), math.radians(float(dec))
    lon2 = np.radians(np.asarray(ras, dtype=np.float64))
    lat2 = np.radians(np.asarray(decs, dtype=np.float64))
    dlon = lon2 - lon1
    s1, c1, s2, c2 = math.sin(lat1), math.cos(lat1), np.sin(lat2), np.cos(lat2)
    num1 = c2 * np.sin(dlon)
    num2 = c1 * s2 - s1 * c2 * np.cos(dlon)
    return np.degrees(np.arctan2(np.hypot(num1, num2), s1 * s2 + c1 * c2 * np.cos(dlon))) * 3600.0


def sky_match(ra: float, dec: float, ras, decs) -> tuple[int, float]:
    """The position among (``ras``, ``decs``) nearest to (``ra``, ``dec``): ``(its place, separation in arcsec)``.

    Positions with a NaN are never matched; ``(-1, inf)`` when no position is known.

    Example:
        >>> sky_match(150.0, 2.0, [10.0, 150.0, np.nan], [0.0, 2.001, 2.0])[0]
        1
    """
    sep = separation_arcsec(ra, dec, ras, decs)
    sep = np.where(np.isfinite(sep), sep, np.inf)
    if len(sep) == 0 or not np.isfinite(sep).any():
        return -1, math.inf
    best = int(np.argmin(sep))
    return best, float(sep[best])


def _id_string(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()
