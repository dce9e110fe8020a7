"""SDSS catalogues: a field's primary objects from its SAS photoObj file, a region's from SkyServer's SqlSearch,
or either from a TAP service.

* :func:`read_photoobj` reads ``photoObj-{run:06d}-{camcol}-{field:04d}.fits``
  (SDSS data model ``BOSS_PHOTOOBJ/RERUN/RUN/CAMCOL/photoObj``: HDU1 a table
  with ``OBJID``, ``RA``, ``DEC``, ``OBJC_TYPE``, ``OBJC_FLAGS``, ``CLEAN``,
  ``RESOLVE_STATUS``, ``MODELFLUX[5]`` in nanomaggies...) and keeps the
  survey-primary detections (``RESOLVE_STATUS`` bit ``SURVEY_PRIMARY`` = 0x100),
  with model magnitudes as SDSS's asinh magnitudes. A ``--field`` batch then needs
  only the SAS, the server that serves the frames.
* :class:`SqlSearchCatalog` asks SkyServer's ``SkyServerWS/SearchTools/SqlSearch``
  (``cmd=SQL``, ``format=csv``: a ``#Table1`` line, a header, rows) with SkyServer
  SQL: ``dbo.fGetNearbyObjEq(ra, dec, arcmin)`` joined to ``PhotoPrimary``.
* :class:`TapCatalog` runs ADQL on a TAP service (pyvo), table and column names configurable.

Filters are :class:`~ulisse.plugins.sdss.config.ObjectFilter` values rendered into SQL;
no text from a user reaches a query.

Example:
    >>> from ulisse.plugins.sdss.config import ObjectFilter, SDSSConfig
    >>> from ulisse.plugins.sdss.catalog import SqlSearchCatalog
    >>> print(SqlSearchCatalog(SDSSConfig()).region_sql(185.0, 15.8, 0.05, ObjectFilter(kind="galaxy")))
    ... # doctest: +NORMALIZE_WHITESPACE
    SELECT p.objID, p.ra, p.dec, p.type, p.run, p.rerun, p.camcol, p.field, p.modelMag_g, p.modelMag_r,
    p.modelMag_i, p.flags, p.clean FROM dbo.fGetNearbyObjEq(185.0, 15.8, 3.0) AS n
    JOIN PhotoPrimary AS p ON p.objID = n.objID WHERE p.type = 3
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import pandas as pd
import requests

from ulisse._io import safe_name
from ulisse.catalog import table_to_pandas
from ulisse.errors import InputError

from .config import PHOTO_COLUMNS, Field, ObjectFilter, SDSSConfig, check_region
from .errors import EmptyFieldError, FrameError, ServiceError
from .services import TimeoutSession, http_get, new_session, service_error, short

LOG = logging.getLogger(__name__)

SURVEY_PRIMARY = 0x100  # RESOLVE_STATUS bit: the primary detection of the object in the whole survey
BAND_INDEX = {"u": 0, "g": 1, "r": 2, "i": 3, "z": 4}  # order of MODELFLUX's 5 values
ASINH_SOFTENING = {"u": 1.4e-10, "g": 0.9e-10, "r": 1.2e-10, "i": 1.8e-10, "z": 7.4e-10}  # b, SDSS's asinh mags


def asinh_mag(nanomaggies, band: str) -> np.ndarray:
    """SDSS asinh magnitude of a flux in nanomaggies: ``-2.5/ln10 * (asinh(f / 2b) + ln b)``, f in maggies."""
    b = ASINH_SOFTENING[band]
    f = np.asarray(nanomaggies, dtype=float) * 1e-9
    return -2.5 / np.log(10) * (np.arcsinh(f / (2 * b)) + np.log(b))


def read_photoobj(raw: bytes, name: str, field: Field) -> pd.DataFrame:
    """The survey-primary objects of a photoObj file, as ulisse's objects (sorted by objid).

    Raises:
        FrameError: not a readable photoObj table (missing columns, damaged file).
        InputError: an OBJID that cannot be a file name.
    """
    from astropy.io import fits

    try:
        # astropy's warnings about a damaged file ("non-ASCII characters", "null bytes") are left out: when the
        # file cannot be read, the FrameError below says so on one line; when it can, they do not matter
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = _photoobj_table(fits, raw, name)
    except (FrameError, InputError):
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise FrameError(name, f"unreadable photoObj file ({exc.__class__.__name__}: {short(exc, 120)})") from None
    wrong = df[(df["run"] != field.run) | (df["camcol"] != field.camcol) | (df["field"] != field.field)]
    if len(wrong):
        raise FrameError(name, f"holds objects of another field (first id {wrong['objid'].iloc[0]})")
    return normalise_objects(df, name)


def _photoobj_table(fits, raw: bytes, name: str) -> pd.DataFrame:
    """The survey-primary rows of a photoObj file as a table (ulisse's column names)."""
    with fits.open(io.BytesIO(raw), memmap=False) as hdul:
        data = hdul[1].data
        names = {n.upper() for n in data.columns.names}
        need = {"OBJID", "RA", "DEC", "OBJC_TYPE", "RESOLVE_STATUS", "MODELFLUX", "RUN", "CAMCOL", "FIELD"}
        if not need <= names:
            raise FrameError(name, f"not a photoObj table (no {', '.join(sorted(need - names))} column)")
        status = np.asarray(data["RESOLVE_STATUS"]).astype(np.int64)
        primary = (status & SURVEY_PRIMARY) != 0
        t = data[primary]
        flux = np.asarray(t["MODELFLUX"], dtype=float).reshape(len(t), len(BAND_INDEX))
        flags = np.zeros(len(t), np.int64)
        if "OBJC_FLAGS" in names:  # 32-bit words: PhotoPrimary.flags = objc_flags + objc_flags2 << 32
            flags = np.asarray(t["OBJC_FLAGS"]).astype(np.int64) & 0xFFFFFFFF
        if "OBJC_FLAGS2" in names:
            flags = flags | ((np.asarray(t["OBJC_FLAGS2"]).astype(np.int64) & 0xFFFFFFFF) << 32)
        df = pd.DataFrame({
            "objid": [str(v).strip() for v in t["OBJID"]],
            "ra": np.asarray(t["RA"], dtype=float), "dec": np.asarray(t["DEC"], dtype=float),
            "type": np.asarray(t["OBJC_TYPE"]).astype(np.int64),
            "run": np.asarray(t["RUN"]).astype(np.int64),
            "rerun": [int(str(v).strip()) for v in t["RERUN"]] if "RERUN" in names else 0,
            "camcol": np.asarray(t["CAMCOL"]).astype(np.int64), "field": np.asarray(t["FIELD"]).astype(np.int64),
            **{f"modelMag_{b}": asinh_mag(flux[:, BAND_INDEX[b]], b) for b in ("g", "r", "i")},
            "flags": flags,
            "clean": np.asarray(t["CLEAN"]).astype(np.int64) if "CLEAN" in names else 1,
        })
    return df


class SqlSearchCatalog:
    """SkyServer's SqlSearch web service: SkyServer SQL in, CSV out.

    Args:
        config: SkyServer's URL, the table (``PhotoPrimary``), time-out.
        session: a :class:`requests.Session` (a new one by default).
    """

    def __init__(self, config: SDSSConfig = SDSSConfig(), session: requests.Session | None = None):
        self.config = config
        self.session = session or new_session()

    def region_sql(self, ra: float, dec: float, radius_deg: float, filt: ObjectFilter = ObjectFilter()) -> str:
        """SkyServer SQL for the primary objects within ``radius_deg`` of (ra, dec); numbers only, rendered here."""
        check_region(ra, dec, radius_deg)
        select = ", ".join(f"p.{c if c != 'objid' else 'objID'}" for c in PHOTO_COLUMNS)
        where = filt.sql("p")
        return (f"SELECT {select} FROM dbo.fGetNearbyObjEq({float(ra)!r}, {float(dec)!r}, {float(radius_deg) * 60!r}) "
                f"AS n JOIN {self.config.table} AS p ON p.objID = n.objID"
                + (f" WHERE {' AND '.join(where)}" if where else ""))

    def run(self, sql: str) -> pd.DataFrame:
        """Run one query; its CSV answer as objects (see :func:`normalise_objects`).

        Raises:
            ServiceError: HTTP error, time-out, an error message or an unreadable answer.
        """
        url = self.config.sql_search
        response = http_get(self.session, url, "SqlSearch query", self.config.timeout,
                            params={"cmd": sql, "format": "csv"})
        return normalise_objects(parse_sqlsearch_csv(response.text, url), url)

    def objects_in_region(self, ra: float, dec: float, radius_deg: float,
                          filt: ObjectFilter = ObjectFilter()) -> pd.DataFrame:
        """The primary objects within ``radius_deg`` degrees of (ra, dec), sorted by objid.

        Raises:
            InputError: not a sky position, or a radius that is not positive.
            ServiceError: the query failed.
            EmptyFieldError: no object in the region.
        """
        return _found(self.run(self.region_sql(ra, dec, radius_deg, filt)), self.config.table,
                      f"within {radius_deg:g} deg of ra={ra:g} dec={dec:g}", filt)


def parse_sqlsearch_csv(text: str, url: str) -> pd.DataFrame:
    """SqlSearch's ``format=csv`` answer (``#Table1``, then a header line and rows) -> DataFrame.

    Raises:
        ServiceError: the answer is an error message or not such a table.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("#Table") or "error" in lines[0].lower():
        first = lines[0] if lines else "(empty answer)"
        raise ServiceError(f"SqlSearch query: not a result table from {url} ({short(first, 120)})", url, None,
                           retryable=False)
    try:
        return pd.read_csv(io.StringIO("\n".join(lines[1:])), dtype={"objID": str, "objid": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise ServiceError(f"SqlSearch query: unreadable CSV from {url} ({short(exc, 120)})", url, None,
                           retryable=True) from None


class TapCatalog:
    """Photometric objects from a TAP service holding SDSS's catalogue (``--tap-url``).

    The table (``config.table``) and its column names (``config.tap_columns``) are
    configurable; both are checked to be identifiers.

    Args:
        config: the TAP URL, table, column names and time-out.
        session: a :class:`requests.Session` (a new one by default).
    """

    def __init__(self, config: SDSSConfig, session: requests.Session | None = None):
        if not config.tap:
            raise InputError("no TAP service configured (--tap-url or ULISSE_SDSS_TAP_URL)")
        self.config = config
        self.session = session or new_session()
        self.columns = config.columns

    def _select(self) -> str:
        return ", ".join(f"p.{self.columns[c]}" for c in PHOTO_COLUMNS) + f" FROM {self.config.table} AS p"

    def _where(self, conditions: list[str], filt: ObjectFilter) -> str:
        return " AND ".join(conditions + filt.sql("p", self.columns))

    def field_query(self, field: Field, filt: ObjectFilter = ObjectFilter()) -> str:
        """The ADQL for the objects of one field."""
        c = self.columns
        return (f"SELECT {self._select()} WHERE "
                + self._where([f"p.{c['run']} = {field.run:d}", f"p.{c['camcol']} = {field.camcol:d}",
                               f"p.{c['field']} = {field.field:d}"], filt))

    def region_query(self, ra: float, dec: float, radius_deg: float, filt: ObjectFilter = ObjectFilter()) -> str:
        """The ADQL for the objects within ``radius_deg`` of (ra, dec)."""
        check_region(ra, dec, radius_deg)
        c = self.columns
        cone = (f"CONTAINS(POINT('ICRS', p.{c['ra']}, p.{c['dec']}), "
                f"CIRCLE('ICRS', {float(ra)!r}, {float(dec)!r}, {float(radius_deg)!r})) = 1")
        return f"SELECT {self._select()} WHERE " + self._where([cone], filt)

    def run(self, adql: str) -> pd.DataFrame:
        """Run one ADQL query (TAP sync) and return its rows as objects.

        Raises:
            ServiceError: HTTP error, time-out, rejected query, unreadable or truncated answer.
        """
        import pyvo
        from pyvo.dal.exceptions import DALOverflowWarning

        url = self.config.tap
        session = TimeoutSession(self.session, self.config.timeout)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", DALOverflowWarning)
                table = pyvo.dal.TAPService(url, session=session).run_sync(adql).to_table()
        except DALOverflowWarning:
            raise ServiceError(f"TAP query: the service truncated the answer ({url}); ask for a smaller region "
                               "or fewer fields at a time", url, None, retryable=False) from None
        except Exception as exc:
            raise service_error(exc, url, "TAP query", self.config.timeout) from None
        return normalise_objects(table_to_pandas(table), url, self.columns)

    def objects_in_field(self, field: Field, filt: ObjectFilter = ObjectFilter()) -> pd.DataFrame:
        """The objects of a field, sorted by objid.

        Raises:
            ServiceError: the query failed.
            EmptyFieldError: the catalogue has no object in the field.
        """
        return _found(self.run(self.field_query(field, filt)), self.config.table,
                      f"for run {field.run} camcol {field.camcol} field {field.field}", filt)

    def objects_in_region(self, ra: float, dec: float, radius_deg: float,
                          filt: ObjectFilter = ObjectFilter()) -> pd.DataFrame:
        """The objects within ``radius_deg`` degrees of (ra, dec), sorted by objid."""
        return _found(self.run(self.region_query(ra, dec, radius_deg, filt)), self.config.table,
                      f"within {radius_deg:g} deg of ra={ra:g} dec={dec:g}", filt)


def _found(objects: pd.DataFrame, table: str, where: str, filt: ObjectFilter) -> pd.DataFrame:
    """``objects``, or :class:`EmptyFieldError` when the catalogue has none ``where``."""
    if len(objects) == 0:
        raise EmptyFieldError(f"no objects in {table} {where} ({filt.describe()})")
    return objects


def normalise_objects(df: pd.DataFrame, what: str, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Catalogue rows -> objects: SkyServer's column names whatever their case, ``id`` = str(objid), sorted by objid.

    Every id must be usable as a file name (:func:`ulisse._io.safe_name`): ids
    name the cutout files, and an id from a file or a service answer must never
    point outside the index directory.

    Raises:
        InputError: no objid, ra, dec, run, camcol or field column; an id that cannot be a file name.
    """
    canonical = {c.lower(): c for c in PHOTO_COLUMNS}
    if columns:  # a TAP table's own names -> ulisse's
        df = df.rename(columns={v: k for k, v in columns.items() if v in df.columns and v != k})
    df = df.rename(columns={c: canonical[c.lower()] for c in df.columns if c.lower() in canonical})
    if "id" not in df.columns and "objid" not in df.columns:
        raise InputError(f"{what}: no objid column")
    missing = [c for c in ("ra", "dec", "run", "camcol", "field") if c not in df.columns]
    if missing:
        raise InputError(f"{what}: no {', '.join(missing)} column(s)")
    if "objid" in df.columns:
        ids = df.pop("objid")
        df.insert(0, "id", [str(int(v)) if isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
                            else str(v).strip() for v in ids])
    df["id"] = df["id"].astype(str)
    for oid in df["id"]:
        safe_name(oid, f"{what}: object id")
    for c in ("run", "camcol", "field"):
        values = pd.to_numeric(df[c], errors="coerce")
        if values.isna().any() or not (values % 1 == 0).all():
            raise InputError(f"{what}: column {c} must hold whole numbers in every row")
        df[c] = values.astype("int64")
    for c in ("ra", "dec"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return sort_objects(df)


def sort_objects(df: pd.DataFrame) -> pd.DataFrame:
    """Objects in objid order (numeric ids numerically, others after them as text)."""
    ids = df["id"].astype(str)
    numeric = ids.str.fullmatch(r"\d+")
    key = pd.DataFrame({"n": ~numeric, "v": [int(v) if n else 0 for v, n in zip(ids, numeric)], "s": ids})
    order = key.sort_values(["n", "v", "s"], kind="stable").index
    return df.loc[order].reset_index(drop=True)


