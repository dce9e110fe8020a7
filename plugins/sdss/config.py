"""Where SDSS's services are, and what a field is: :class:`SDSSConfig`, :class:`Field`.

Base URLs, release, time-out and retries live in one small frozen dataclass
with defaults pointing at SDSS's own services; ``ULISSE_SDSS_*`` environment
variables and command-line options override them (:meth:`SDSSConfig.from_env`).

Example:
    >>> from ulisse.plugins.sdss_config import Field, SDSSConfig
    >>> SDSSConfig(release="dr16").tap
    'https://skyserver.sdss.org/dr16/SkyServerWS/TAP'
    >>> str(Field.parse("756 1 206"))
    '756-1-206'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ulisse.errors import InputError

BANDS = ("g", "r", "i")
ENV_PREFIX = "ULISSE_SDSS_"


@dataclass(frozen=True)
class SDSSConfig:
    """Where SDSS's services are and how patiently to ask them.

    URLs may hold ``{release}``, filled in from :attr:`release`. Every field can
    be set from the environment: ``ULISSE_SDSS_TAP_URL``, ``ULISSE_SDSS_SAS_URL``,
    ``ULISSE_SDSS_SKYSERVER_URL``, ``ULISSE_SDSS_TIMEOUT``, ``ULISSE_SDSS_RETRIES``...
    (see :meth:`from_env`).

    Attributes:
        release: data release (``dr17``); decides the SAS path and the default URLs.
        tap_url: SkyServer's TAP service (pyvo adds ``/sync``).
        sas_url: base URL of the Science Archive Server.
        skyserver_url: base URL of SkyServer (ImgCutout lives under it).
        rerun: the photometric reduction of the frames (301 for DR8 and later).
        table: the catalogue table queried (``PhotoPrimary``: one detection per object).
        timeout: seconds to wait for a connection or for data before giving up a request.
        retries: how many times a failed request or field is tried again.
        backoff: seconds before the first retry; doubled for each further one.
        max_backoff: the longest wait between retries.
    """

    release: str = "dr17"
    tap_url: str = "https://skyserver.sdss.org/{release}/SkyServerWS/TAP"
    sas_url: str = "https://data.sdss.org/sas"
    skyserver_url: str = "https://skyserver.sdss.org/{release}"
    rerun: int = 301
    table: str = "PhotoPrimary"
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 2.0
    max_backoff: float = 60.0

    def __post_init__(self):
        if not re.fullmatch(r"dr\d+", self.release) or int(self.release[2:]) < 9:
            raise InputError(f"--release {self.release}: expected an SDSS data release dr9 ... dr17 (e.g. dr17)")
        if self.timeout <= 0:
            raise InputError(f"timeout {self.timeout}: must be positive")
        if self.retries < 0 or self.backoff < 0:
            raise InputError("retries and backoff must not be negative")

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
        return self._url(self.tap_url)

    @property
    def sas(self) -> str:
        return self._url(self.sas_url)

    @property
    def skyserver(self) -> str:
        return self._url(self.skyserver_url)

    @property
    def survey(self) -> str:
        """The SAS folder of the imaging of this release: ``boss`` (DR9-DR12) or ``eboss`` (DR13 on)."""
        return "eboss" if int(self.release[2:]) >= 13 else "boss"

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...)."""
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1))


# --------------------------------------------------------------------------- fields

@dataclass(frozen=True, order=True)
class Field:
    """One SDSS imaging field: the unit of work of ``ulisse sdss index``."""

    run: int
    camcol: int
    field: int

    def __post_init__(self):
        if self.run <= 0 or not 1 <= self.camcol <= 6 or self.field < 0:
            raise InputError(f"field {self.run} {self.camcol} {self.field}: expected RUN > 0, CAMCOL 1-6, FIELD >= 0")

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
