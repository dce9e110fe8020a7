"""Where SDSS's services are, what a field is, and which objects to take: :class:`SDSSConfig`, :class:`Field`,
:class:`ObjectFilter`.

Base URLs, release, time-out and retries live in one small frozen dataclass
with defaults pointing at SDSS's own services; ``ULISSE_SDSS_*`` environment
variables and command-line options override them (:meth:`SDSSConfig.from_env`).
Nothing a user types reaches a query as text: table and column names must be
identifiers, filters are typed values rendered by :meth:`ObjectFilter.sql`.

Example:
    >>> from ulisse.plugins.sdss.config import Field, ObjectFilter, SDSSConfig
    >>> SDSSConfig(release="dr16").sql_search
    'https://skyserver.sdss.org/dr16/SkyServerWS/SearchTools/SqlSearch'
    >>> str(Field.parse("756 1 206"))
    '756-1-206'
    >>> ObjectFilter(kind="galaxy", mag_r_max=19.5).sql("p")
    ['p.type = 3', 'p.modelMag_r <= 19.5']
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ulisse.errors import InputError

BANDS = ("g", "r", "i")
CUTOUT_SIZE = 64  # px: ULISSE's cutouts, and what ``ulisse fetch cutouts`` asks ImgCutout for
CUTOUT_SCALE = 0.4  # arcsec/px: likewise
ENV_PREFIX = "ULISSE_SDSS_"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OBJECT_TYPES = {"galaxy": 3, "star": 6}  # SDSS PhotoType
# the catalogue columns ulisse keeps, by their SkyServer (PhotoPrimary) names
PHOTO_COLUMNS = ("objid", "ra", "dec", "type", "run", "rerun", "camcol", "field",
                 "modelMag_g", "modelMag_r", "modelMag_i", "flags", "clean")


def check_identifier(name: str, what: str, dotted: bool = False) -> str:
    """``name`` if it is an SQL identifier (``schema.table`` with ``dotted``), else :class:`InputError`."""
    parts = str(name).split(".") if dotted else [str(name)]
    if not 1 <= len(parts) <= 3 or not all(IDENTIFIER.fullmatch(p) for p in parts):
        raise InputError(f"{what} {name!r}: not an identifier (letters, digits and _, "
                         + ("dot-separated, " if dotted else "") + "not starting with a digit)")
    return str(name)


def parse_column_map(text: str, what: str = "--tap-columns") -> dict[str, str]:
    """``"objid=objID,modelMag_r=r"`` -> ``{"objid": "objID", "modelMag_r": "r"}`` (ulisse name = service column)."""
    out = {}
    for item in (s.strip() for s in str(text or "").split(",")):
        if not item:
            continue
        name, sep, column = item.partition("=")
        if not sep or name.strip() not in PHOTO_COLUMNS:
            raise InputError(f"{what} {item!r}: expected NAME=COLUMN with NAME one of {', '.join(PHOTO_COLUMNS)}")
        out[name.strip()] = check_identifier(column.strip(), what)
    return out


@dataclass(frozen=True)
class SDSSConfig:
    """Where SDSS's services are and how patiently to ask them.

    URLs may hold ``{release}``, filled in from :attr:`release`. Every field can
    be set from the environment: ``ULISSE_SDSS_SAS_URL``, ``ULISSE_SDSS_SKYSERVER_URL``,
    ``ULISSE_SDSS_TAP_URL``, ``ULISSE_SDSS_TABLE``, ``ULISSE_SDSS_TIMEOUT``... (see :meth:`from_env`).

    Attributes:
        release: data release (``dr17``); decides the SAS paths and the default URLs.
        sas_url: base URL of the Science Archive Server (frames and photoObj catalogues).
        skyserver_url: base URL of SkyServer (SqlSearch and ImgCutout live under it).
        tap_url: a TAP service holding SDSS's catalogue, for users who prefer one to SqlSearch;
            empty (the default): SkyServer's SqlSearch answers ``--region``.
        table: the catalogue table of SqlSearch and TAP queries (an identifier; ``PhotoPrimary``).
        tap_columns: the TAP table's column names where they differ from SkyServer's
            (``"objid=objID,modelMag_r=r"``; see :func:`parse_column_map`).
        rerun: the photometric reduction of the frames and catalogues (301 for DR8 and later).
        timeout: seconds to wait for a connection or for data before giving up a request.
        retries: how many times a failed request or field is tried again.
        backoff: seconds before the first retry; doubled for each further one.
        max_backoff: the longest wait between retries.
    """

    release: str = "dr17"
    sas_url: str = "https://data.sdss.org/sas"
    skyserver_url: str = "https://skyserver.sdss.org/{release}"
    tap_url: str = ""
    table: str = "PhotoPrimary"
    tap_columns: str = ""
    rerun: int = 301
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 2.0
    max_backoff: float = 60.0

    def __post_init__(self):
        if not re.fullmatch(r"dr\d+", self.release) or int(self.release[2:]) < 9:
            raise InputError(f"--release {self.release}: expected an SDSS data release dr9 ... dr17 (e.g. dr17)")
        if not self.timeout > 0:
            raise InputError(f"timeout {self.timeout}: must be positive")
        if self.retries < 0 or self.backoff < 0:
            raise InputError("retries and backoff must not be negative")
        check_identifier(self.table, f"--table/{ENV_PREFIX}TABLE", dotted=True)
        parse_column_map(self.tap_columns, f"--tap-columns/{ENV_PREFIX}TAP_COLUMNS")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "SDSSConfig":
        """Defaults, then ``ULISSE_SDSS_*`` environment variables, then ``overrides`` that are not None."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw:
                try:
                    values[f.name] = type(f.default)(raw)
                except ValueError:
                    raise InputError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: not a valid {type(f.default).__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def _url(self, template: str) -> str:
        return template.format(release=self.release).rstrip("/")

    @property
    def tap(self) -> str:
        """The TAP service's URL, or ``""`` when none is configured."""
        return self._url(self.tap_url) if self.tap_url else ""

    @property
    def sas(self) -> str:
        return self._url(self.sas_url)

    @property
    def skyserver(self) -> str:
        return self._url(self.skyserver_url)

    @property
    def sql_search(self) -> str:
        """SkyServer's SqlSearch web service (``cmd=SQL&format=csv``)."""
        return f"{self.skyserver}/SkyServerWS/SearchTools/SqlSearch"

    @property
    def columns(self) -> dict[str, str]:
        """ulisse's column name -> the queried table's, for every kept column."""
        mapping = {c: c for c in PHOTO_COLUMNS}
        mapping["objid"] = "objID"
        mapping.update(parse_column_map(self.tap_columns))
        return mapping

    @property
    def survey(self) -> str:
        """The SAS folder of the imaging of this release: ``boss`` (DR9-DR12) or ``eboss`` (DR13 on)."""
        return "eboss" if int(self.release[2:]) >= 13 else "boss"

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...)."""
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1))


@dataclass(frozen=True)
class ObjectFilter:
    """Which objects of a field or region to index: typed values, never SQL text.

    Attributes:
        kind: ``galaxy`` (PhotoType 3), ``star`` (6) or None (all).
        mag_r_max: keep objects with model magnitude r at most this (None: all).
        clean: keep only objects with clean photometry (``clean = 1``).
    """

    kind: str | None = None
    mag_r_max: float | None = None
    clean: bool = False

    def __post_init__(self):
        if self.kind is not None and self.kind not in OBJECT_TYPES:
            raise InputError(f"--type {self.kind}: expected one of {', '.join(OBJECT_TYPES)}")
        if self.mag_r_max is not None and not (isinstance(self.mag_r_max, (int, float))
                                               and math.isfinite(self.mag_r_max)):
            raise InputError(f"--mag-r-max {self.mag_r_max}: expected a finite number")

    def sql(self, alias: str = "p", columns: dict[str, str] | None = None) -> list[str]:
        """The conditions, rendered from the typed values (``p.type = 3``...)."""
        col = {c: c for c in ("type", "modelMag_r", "clean")} | (columns or {})
        check_identifier(alias, "table alias")
        out = []
        if self.kind is not None:
            out.append(f"{alias}.{col['type']} = {OBJECT_TYPES[self.kind]:d}")
        if self.mag_r_max is not None:
            out.append(f"{alias}.{col['modelMag_r']} <= {float(self.mag_r_max)!r}")
        if self.clean:
            out.append(f"{alias}.{col['clean']} = 1")
        return out

    def mask(self, objects) -> np.ndarray:
        """The rows of ``objects`` (``type``, ``modelMag_r``, ``clean`` columns as needed) that pass."""
        keep = np.ones(len(objects), bool)
        if self.kind is not None:
            keep &= objects["type"].to_numpy() == OBJECT_TYPES[self.kind]
        if self.mag_r_max is not None:
            keep &= objects["modelMag_r"].to_numpy(float) <= float(self.mag_r_max)
        if self.clean:
            keep &= objects["clean"].to_numpy() == 1
        return keep

    def describe(self) -> str:
        return " and ".join(self.sql()) or "all objects"

    def to_dict(self) -> dict:
        return {"type": self.kind, "mag_r_max": self.mag_r_max, "clean": self.clean}


# --------------------------------------------------------------------------- fields

MAX_RUN, MAX_FIELD = 999_999, 9_999  # SDSS's file names hold 6 digits of run, 4 of field


@dataclass(frozen=True, order=True)
class Field:
    """One SDSS imaging field: the unit of work of ``ulisse sdss index``."""

    run: int
    camcol: int
    field: int

    def __post_init__(self):
        if not 1 <= self.run <= MAX_RUN or not 1 <= self.camcol <= 6 or not 0 <= self.field <= MAX_FIELD:
            raise InputError(f"field {self.run} {self.camcol} {self.field}: expected RUN 1-{MAX_RUN}, CAMCOL 1-6, "
                             f"FIELD 0-{MAX_FIELD}")

    def __str__(self) -> str:
        return f"{self.run}-{self.camcol}-{self.field}"

    @classmethod
    def parse(cls, text: str, where: str = "field") -> "Field":
        """``"756 1 206"``, ``"756,1,206"`` or ``"756-1-206"`` -> Field."""
        text = text.strip()
        parts = text.split("-") if re.fullmatch(r"\d+-\d+-\d+", text) else [p for p in re.split(r"[\s,;]+", text) if p]
        try:
            if len(parts) != 3:
                raise ValueError
            run, camcol, fieldnum = (int(p) for p in parts)
        except ValueError:
            raise InputError(f"{where}: expected RUN CAMCOL FIELD (three whole numbers), got {text!r}") from None
        try:
            return cls(run, camcol, fieldnum)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None


def read_field_list(path: str | os.PathLike) -> list[Field]:
    """Fields from a text file: one ``RUN CAMCOL FIELD`` a line (spaces or commas; ``#`` comments; a header allowed).

    Raises:
        InputError: no such file, a malformed line, or no field at all.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--fields {path}: no such file")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text or (not out and re.fullmatch(r"run\W+camcol\W+field\W*", text, re.I)):
            continue
        out.append(Field.parse(text, f"{path}:{number}"))
    if not out:
        raise InputError(f"--fields {path}: no field in the file")
    return sorted(set(out))


def check_region(ra: float, dec: float, radius_deg: float) -> None:
    if not np.isfinite(radius_deg) or radius_deg <= 0:
        raise InputError(f"--region: RADIUS_DEG is {radius_deg:g}; it must be greater than 0")
    if radius_deg > 10:
        raise InputError(f"--region: RADIUS_DEG is {radius_deg:g}; at most 10 degrees in one query")
    if not np.isfinite(ra) or not -90 <= dec <= 90:
        raise InputError(f"--region: ra={ra:g} dec={dec:g} is not a sky position")
