"""SDSS frames and per-field catalogues from the Science Archive Server, decompressed, checked and cached.

A calibrated frame (``frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2``)
holds in its primary HDU a 2048 x 1489 float image in nanomaggies with a TAN
WCS at 0.396 arcsec/px, turned on the sky as the drift scan goes (about 90
degrees from north up, plus the stripe's inclination). A field's photoObj
catalogue (``photoObj-{run:06d}-{camcol}-{field:04d}.fits``) lies under
``{sas}/{release}/{boss|eboss}/photoObj/{rerun}/{run}/{camcol}/`` (SDSS data
model ``BOSS_PHOTOOBJ/RERUN/RUN/CAMCOL/photoObj``); see
:mod:`ulisse.plugins.sdss.catalog` for reading it.

Example:
    >>> from ulisse.plugins.sdss.config import Field, SDSSConfig
    >>> from ulisse.plugins.sdss.frames import ScienceArchive
    >>> ScienceArchive(SDSSConfig()).frame_url("r", Field(756, 1, 206))
    'https://data.sdss.org/sas/dr17/eboss/photoObj/frames/301/756/1/frame-r-000756-1-0206.fits.bz2'
    >>> ScienceArchive(SDSSConfig()).photoobj_path(Field(756, 1, 206))
    'dr17/eboss/photoObj/301/756/1/photoObj-000756-1-0206.fits'
"""

from __future__ import annotations

import bz2
import io
import logging
import os
import warnings
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
import requests

from ulisse._io import atomic_write

from .config import BANDS, Field, SDSSConfig
from .errors import FrameError
from .services import http_get, new_session, short

LOG = logging.getLogger(__name__)


@dataclass
class Frame:
    """One calibrated frame: image (nanomaggies), its WCS and header."""

    band: str
    name: str
    data: np.ndarray
    wcs: object
    header: object = dc_field(repr=False, default=None)


def read_frame(raw: bytes, name: str, band: str) -> Frame:
    """Read a decompressed frame file.

    Raises:
        FrameError: truncated or damaged FITS, no 2-D image in the primary HDU, or no celestial WCS.
    """
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyWarning
    from astropy.utils.exceptions import AstropyUserWarning
    from astropy.wcs import WCS, FITSFixedWarning

    if len(raw) < 2880 or not raw.startswith(b"SIMPLE"):
        raise FrameError(name, "not a FITS file" if len(raw) >= 2880 else f"truncated FITS file ({len(raw)} bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the ones below become errors; the rest would only be noise on stderr
            warnings.simplefilter("error", AstropyUserWarning)
            warnings.simplefilter("error", VerifyWarning)
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                hdu = hdul[0]
                data = None if hdu.data is None else np.array(hdu.data, dtype=np.float32)
                header = hdu.header.copy()
    except (AstropyUserWarning, VerifyWarning) as exc:
        reason = "truncated FITS file" if "truncated" in str(exc) else "damaged FITS file"
        raise FrameError(name, f"{reason} ({' '.join(str(exc).split())[:120]})") from None
    except Exception as exc:  # astropy raises many types for damaged files
        raise FrameError(name, f"unreadable FITS file ({exc.__class__.__name__}: {' '.join(str(exc).split())[:120]})") from None
    if data is None or data.ndim != 2:
        raise FrameError(name, "the primary HDU holds no 2-D image")
    if not np.isfinite(data).any():
        raise FrameError(name, "the image has no finite pixel")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header).celestial
    except Exception as exc:
        raise FrameError(name, f"unusable WCS ({exc.__class__.__name__}: {exc})") from None
    if not wcs.has_celestial:
        raise FrameError(name, "no celestial WCS in the header")
    return Frame(band, name, data, wcs, header)



class ScienceArchive:
    """Calibrated SDSS frames from the Science Archive Server, cached on disk.

    Frames are found at their SAS path
    ``{sas}/{release}/{boss|eboss}/photoObj/frames/{rerun}/{run}/{camcol}/frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2``,
    decompressed, checked (a FITS image with a celestial WCS) and kept in
    ``cache_dir`` under the same relative path without ``.bz2``. Files appear in
    the cache only whole (temporary name, then ``os.replace``).

    Args:
        config: URLs, release, time-out.
        cache_dir: where frames are kept (None: nowhere, every frame is downloaded).
        session: a :class:`requests.Session`.
    """

    def __init__(self, config: SDSSConfig = SDSSConfig(), cache_dir: str | os.PathLike | None = None,
                 session: requests.Session | None = None):
        self.config = config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.session = session or new_session()

    def frame_path(self, band: str, field: Field) -> str:
        """The frame's path relative to the SAS root (``dr17/eboss/photoObj/frames/301/...fits.bz2``)."""
        c = self.config
        return (f"{c.release}/{c.survey}/photoObj/frames/{c.rerun}/{field.run}/{field.camcol}/"
                f"frame-{band}-{field.run:06d}-{field.camcol}-{field.field:04d}.fits.bz2")

    def frame_url(self, band: str, field: Field) -> str:
        return f"{self.config.sas}/{self.frame_path(band, field)}"

    def photoobj_path(self, field: Field) -> str:
        """The field's photoObj catalogue, relative to the SAS root (``dr17/eboss/photoObj/301/...fits``)."""
        c = self.config
        return (f"{c.release}/{c.survey}/photoObj/{c.rerun}/{field.run}/{field.camcol}/"
                f"photoObj-{field.run:06d}-{field.camcol}-{field.field:04d}.fits")

    def photoobj(self, field: Field) -> bytes:
        """The field's photoObj FITS file, from the cache or the SAS, checked as :meth:`photoobj_objects` does."""
        return self._photoobj(field)[0]

    def photoobj_objects(self, field: Field):
        """The field's survey-primary objects (:func:`~ulisse.plugins.sdss.catalog.read_photoobj`), from its
        photoObj file in the cache or on the SAS.

        A cached file that cannot be read is deleted and downloaded again; a download is cached only once it
        has been read, so a damaged one is never kept (a retry, or the next run, downloads it again).

        Raises:
            ServiceError: the download failed.
            FrameError: the file is not a readable photoObj table.
        """
        return self._photoobj(field)[1]

    def _photoobj(self, field: Field):
        from .catalog import read_photoobj

        name = self.photoobj_path(field)
        cached = self.cache_dir / name if self.cache_dir is not None else None
        if cached is not None and cached.is_file():
            raw = cached.read_bytes()
            try:
                return raw, read_photoobj(raw, name, field)
            except FrameError as exc:
                LOG.warning("cached catalogue %s is damaged (%s); fetching it again", cached, exc.reason)
                cached.unlink(missing_ok=True)
        raw = http_get(self.session, f"{self.config.sas}/{name}", f"catalogue {name}", self.config.timeout).content
        if len(raw) < 2880 or not raw.startswith(b"SIMPLE"):
            raise FrameError(name, "not a FITS file" if len(raw) >= 2880 else f"truncated FITS file ({len(raw)} bytes)")
        objects = read_photoobj(raw, name, field)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cached, raw)
        return raw, objects

    def cached_path(self, band: str, field: Field) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / self.frame_path(band, field).removesuffix(".bz2")

    def frame(self, band: str, field: Field):
        """The frame of ``field`` in ``band``, from the cache or the SAS.

        Returns:
            :class:`Frame`.

        Raises:
            ServiceError: the download failed (``retryable`` for 5xx, time-outs, broken connections).
            FrameError: the file is truncated, corrupt or not an image with a WCS.
        """
        name = self.frame_path(band, field)
        cached = self.cached_path(band, field)
        if cached is not None and cached.is_file():
            try:
                return read_frame(cached.read_bytes(), name, band)
            except FrameError:
                LOG.warning("cached frame %s is damaged; fetching it again", cached)
                cached.unlink(missing_ok=True)
        url = self.frame_url(band, field)
        response = http_get(self.session, url, f"frame {name}", self.config.timeout)
        raw = decompress_bz2(response.content, name)
        frame = read_frame(raw, name, band)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cached, raw)
        return frame

    def forget(self, field: Field) -> None:
        """Remove a field's frames and catalogue from the cache."""
        if self.cache_dir is None:
            return
        for band in BANDS:
            self.cached_path(band, field).unlink(missing_ok=True)
        (self.cache_dir / self.photoobj_path(field)).unlink(missing_ok=True)


def decompress_bz2(data: bytes, what: str) -> bytes:
    """bzip2 bytes -> bytes; a truncated or corrupt stream is a :class:`FrameError`."""
    try:
        return bz2.decompress(data)
    except (OSError, ValueError, EOFError) as exc:
        reason = "truncated download (the bzip2 stream ends early)" if "ended before" in str(exc) \
            else f"corrupt bzip2 data ({short(exc)})"
        raise FrameError(what, reason) from None
