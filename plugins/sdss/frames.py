"""The Science Archive Server: a field's calibrated frames in their SAS layout, decompressed and cached.

Example:
    >>> from ulisse.plugins.sdss_config import Field, SDSSConfig
    >>> from ulisse.plugins.sdss_sas import ScienceArchive
    >>> ScienceArchive(SDSSConfig()).frame_url("r", Field(756, 1, 206))
    'https://data.sdss.org/sas/dr17/eboss/photoObj/frames/301/756/1/frame-r-000756-1-0206.fits.bz2'
"""

from __future__ import annotations

import bz2
import logging
import os
from pathlib import Path

import requests

from .sdss_config import BANDS, Field, SDSSConfig
from .sdss_errors import FrameError
from .sdss_http import http_get, new_session, short, write_atomic

LOG = logging.getLogger(__name__)


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

    def cached_path(self, band: str, field: Field) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / self.frame_path(band, field).removesuffix(".bz2")

    def frame(self, band: str, field: Field):
        """The frame of ``field`` in ``band``, from the cache or the SAS.

        Returns:
            :class:`~ulisse.plugins.sdss_frames.Frame`.

        Raises:
            ServiceError: the download failed (``retryable`` for 5xx, time-outs, broken connections).
            FrameError: the file is truncated, corrupt or not an image with a WCS.
        """
        from .sdss_frames import read_frame

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
            write_atomic(cached, raw)
        return frame

    def forget(self, field: Field) -> None:
        """Remove a field's frames from the cache."""
        for band in BANDS:
            path = self.cached_path(band, field)
            if path is not None:
                path.unlink(missing_ok=True)


def decompress_bz2(data: bytes, what: str) -> bytes:
    """bzip2 bytes -> bytes; a truncated or corrupt stream is a :class:`FrameError`."""
    try:
        return bz2.decompress(data)
    except (OSError, ValueError, EOFError) as exc:
        reason = "truncated download (the bzip2 stream ends early)" if "ended before" in str(exc) \
            else f"corrupt bzip2 data ({short(exc)})"
        raise FrameError(what, reason) from None
