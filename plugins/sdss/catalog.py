"""SkyServer's catalogue through TAP (pyvo): the photometric objects of a field or a cone.

Example:
    >>> from ulisse.plugins.sdss_config import Field, SDSSConfig
    >>> from ulisse.plugins.sdss_tap import SkyServerCatalog
    >>> objects = SkyServerCatalog(SDSSConfig()).objects_in_field(Field(756, 1, 206))   # doctest: +SKIP
    >>> objects[["id", "ra", "dec", "type", "modelMag_r"]].head()                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import requests

from ulisse.errors import InputError

from .sdss_config import Field, SDSSConfig, check_region
from .sdss_errors import EmptyFieldError, ServiceError
from .sdss_http import TimeoutSession, new_session, service_error

LOG = logging.getLogger(__name__)

PHOTO_COLUMNS = ("objid", "ra", "dec", "type", "run", "rerun", "camcol", "field",
                 "modelMag_g", "modelMag_r", "modelMag_i")


class SkyServerCatalog:
    """Photometric objects from SkyServer's TAP service.

    Args:
        config: service URLs and time-out.
        session: a :class:`requests.Session` (a new one by default).
        table: the table to query (default ``config.table``, ``PhotoPrimary``).
    """

    def __init__(self, config: SDSSConfig = SDSSConfig(), session: requests.Session | None = None,
                 table: str | None = None):
        self.config = config
        self.session = session or new_session()
        self.table = table or config.table

    def _select(self) -> str:
        return ", ".join(f"p.{c}" for c in PHOTO_COLUMNS) + f" FROM {self.table} AS p"

    def field_query(self, field: Field, where: str | None = None) -> str:
        """The ADQL for the objects of one field."""
        extra = f" AND ({where})" if where else ""
        return (f"SELECT {self._select()} WHERE p.run = {field.run} AND p.camcol = {field.camcol} "
                f"AND p.field = {field.field}{extra}")

    def region_query(self, ra: float, dec: float, radius_deg: float, where: str | None = None) -> str:
        """The ADQL for the objects within ``radius_deg`` of (ra, dec)."""
        extra = f" AND ({where})" if where else ""
        return (f"SELECT {self._select()} WHERE CONTAINS(POINT('ICRS', p.ra, p.dec), "
                f"CIRCLE('ICRS', {ra!r}, {dec!r}, {radius_deg!r})) = 1{extra}")

    def run(self, adql: str) -> pd.DataFrame:
        """Run one ADQL query (TAP sync) and return its rows as objects (see :func:`normalise_objects`).

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
                result = pyvo.dal.TAPService(url, session=session).run_sync(adql)
                table = result.to_table()
        except DALOverflowWarning:
            raise ServiceError(f"TAP query: the service truncated the answer ({url}); ask for a smaller region "
                               "or fewer fields at a time", url, None, retryable=False) from None
        except Exception as exc:
            raise service_error(exc, url, "TAP query", self.config.timeout) from None
        return normalise_objects(_table_to_pandas(table), url)

    def objects_in_field(self, field: Field, where: str | None = None) -> pd.DataFrame:
        """The objects of a field, sorted by objid.

        Raises:
            ServiceError: the query failed.
            EmptyFieldError: the catalogue has no object in the field.
        """
        objects = self.run(self.field_query(field, where))
        if len(objects) == 0:
            raise EmptyFieldError(f"no objects in {self.table} for run {field.run} camcol {field.camcol} "
                                  f"field {field.field}" + (f" with {where}" if where else ""))
        return objects

    def objects_in_region(self, ra: float, dec: float, radius_deg: float, where: str | None = None) -> pd.DataFrame:
        """The objects within ``radius_deg`` degrees of (ra, dec), sorted by objid.

        Raises:
            InputError: not a sky position, or a radius that is not positive.
            ServiceError: the query failed.
            EmptyFieldError: no object in the region.
        """
        check_region(ra, dec, radius_deg)
        objects = self.run(self.region_query(ra, dec, radius_deg, where))
        if len(objects) == 0:
            raise EmptyFieldError(f"no objects in {self.table} within {radius_deg:g} deg of ra={ra:g} dec={dec:g}")
        return objects


def _table_to_pandas(table) -> pd.DataFrame:
    df = table.to_pandas()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    return df


def normalise_objects(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Catalogue rows -> objects: SkyServer's column names whatever their case, ``id`` = str(objid), sorted by objid.

    Raises:
        InputError: no objid, ra, dec, run, camcol or field column.
    """
    canonical = {c.lower(): c for c in PHOTO_COLUMNS}
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


