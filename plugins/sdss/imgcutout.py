"""SkyServer's ImgCutout JPEG service, and bulk download of cutouts for a coordinate list.

:class:`ImgCutoutService` asks ``{skyserver}/SkyServerWS/ImgCutout/getjpeg`` for
one cutout (ULISSE's: 64 x 64 px at 0.4 arcsec/px, north up).
:func:`fetch_cutouts` makes ``{out}/{id}.jpg`` for every object of a catalogue
(``id``, ``ra``, ``dec``), written atomically; an id that is not a safe file name
(:func:`ulisse._io.safe_name`) is refused, never written. The folder also gets
``cutout_geometry.json``, the geometry of these cutouts (for the warning when a
prototype of one geometry queries an index of another). Files already there are kept (a
stopped run, run again, fetches only what is missing). Requests start at most
``rate`` per second, over a few threads; failed ones are retried with
exponential backoff, and what still fails is reported, never silently dropped.

Example:
    >>> from ulisse.plugins.sdss.imgcutout import fetch_cutouts
    >>> report = fetch_cutouts("targets.csv", "cutouts/", rate=5)        # doctest: +SKIP
    >>> report.fetched, report.failed                                    # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import requests

from ulisse._io import atomic_write, path_inside, safe_name
from ulisse.errors import InputError

from .config import CUTOUT_SCALE, CUTOUT_SIZE, SDSSConfig
from .errors import SDSSError, ServiceError
from .services import http_get, new_session, short, with_retries

LOG = logging.getLogger(__name__)

GEOMETRY_FILE = "cutout_geometry.json"  # the name :func:`ulisse.plugins.sdss.cutting.prototype_geometry` reads


def imgcutout_geometry(scale: float = CUTOUT_SCALE, size: int = CUTOUT_SIZE) -> dict:
    """The geometry of ImgCutout JPEGs, in the terms of :class:`~ulisse.plugins.sdss.cutting.CutoutGeometry`."""
    return {"size": int(size), "scale": float(scale), "orientation": "north-up-east-left", "projection": "TAN",
            "resampling": "SkyServer ImgCutout", "bands": "g,r,i", "colour": "SkyServer ImgCutout JPEG"}


class ImgCutoutService:
    """SkyServer's ImgCutout JPEG service (``{skyserver}/SkyServerWS/ImgCutout/getjpeg``).

    ULISSE's cutouts: 64 x 64 px at 0.4 arcsec/px, north up, g, r, i as blue, green, red.
    """

    PATH = "SkyServerWS/ImgCutout/getjpeg"

    def __init__(self, config: SDSSConfig = SDSSConfig(), session: requests.Session | None = None):
        self.config = config
        self.session = session or new_session()

    @property
    def url(self) -> str:
        return f"{self.config.skyserver}/{self.PATH}"

    def params(self, ra: float, dec: float, scale: float = CUTOUT_SCALE, width: int = CUTOUT_SIZE,
               height: int = CUTOUT_SIZE) -> dict:
        return {"ra": repr(float(ra)), "dec": repr(float(dec)), "scale": repr(float(scale)),
                "width": int(width), "height": int(height)}

    def jpeg(self, ra: float, dec: float, scale: float = CUTOUT_SCALE, width: int = CUTOUT_SIZE,
             height: int = CUTOUT_SIZE) -> bytes:
        """The JPEG cutout centred on (ra, dec), checked to be a ``width x height`` image.

        Raises:
            ServiceError: HTTP error, time-out, or an answer that is not such a JPEG (retryable).
        """
        from PIL import Image

        response = http_get(self.session, self.url, f"cutout at ra={ra} dec={dec}", self.config.timeout,
                            params=self.params(ra, dec, scale, width, height))
        data = response.content
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                size, fmt = im.size, im.format
        except Exception as exc:
            raise ServiceError(f"cutout at ra={ra} dec={dec}: the answer is not an image ({short(exc, 80)})",
                               response.url, response.status_code, retryable=True) from None
        if fmt != "JPEG" or size != (width, height):
            raise ServiceError(f"cutout at ra={ra} dec={dec}: got a {fmt} of {size[0]}x{size[1]} px, "
                               f"expected a {width}x{height} JPEG", response.url, response.status_code, retryable=True)
        return data


class RateLimiter:
    """Spaces the start of calls at least ``1 / rate`` seconds apart (thread-safe)."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep):
        if not rate > 0:
            raise InputError(f"--rate {rate}: must be greater than 0 requests per second")
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


@dataclass
class FetchReport:
    """What :func:`fetch_cutouts` did: files fetched, found already, and failures ``(id, reason)``."""

    fetched: int = 0
    existing: int = 0
    failed: list[tuple[str, str]] = dc_field(default_factory=list)
    seconds: float = 0.0


def fetch_cutouts(catalog, out: str | os.PathLike, *, config: SDSSConfig = SDSSConfig(), session=None,
                  rate: float = 5.0, scale: float = CUTOUT_SCALE, size: int = CUTOUT_SIZE, workers: int = 4,
                  progress: bool = True) -> FetchReport:
    """Fetch a JPEG cutout for every object of ``catalog`` into ``out``.

    Args:
        catalog: a catalogue file (CSV, FITS, VOTable: ``id``, ``ra``, ``dec``) or a DataFrame.
        out: output folder (created).
        config: SkyServer URL, time-out, retries and backoff.
        session: a :class:`requests.Session`.
        rate: requests per second, at most.
        scale: arcsec per pixel (ULISSE: 0.4).
        size: width and height in pixels (ULISSE: 64).
        workers: parallel requests (still at most ``rate`` per second).
        progress: a progress bar.

    Raises:
        InputError: unreadable catalogue, rows without ra/dec, bad rate or size, or an id that cannot
            be a file name (refused before anything is fetched).
    """
    import pandas as pd
    from ulisse.progress import progress_bar

    from ulisse.catalog import read_catalog

    t0 = time.perf_counter()
    table = catalog if isinstance(catalog, pd.DataFrame) else read_catalog(catalog)
    bad = table[["ra", "dec"]].isna().any(axis=1)
    if bad.any():
        raise InputError(f"{catalog}: {int(bad.sum())} row(s) without ra/dec (first id {table['id'][bad].iloc[0]})")
    if not 8 <= size <= 2048 or not scale > 0:
        raise InputError(f"--size {size} --scale {scale}: expected 8-2048 px and a positive scale")
    for oid in table["id"].astype(str):
        safe_name(oid, f"{catalog}: object id")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / GEOMETRY_FILE, json.dumps(imgcutout_geometry(scale, size), indent=1), fsync=False)
    service = ImgCutoutService(config, session=session)
    limiter = RateLimiter(rate)
    report = FetchReport()
    todo = []
    for row in table.itertuples(index=False):
        oid = str(row.id)
        if path_inside(out, f"{oid}.jpg", "cutout file").is_file():
            report.existing += 1
        else:
            todo.append((oid, float(row.ra), float(row.dec)))
    if report.existing:
        LOG.info("%d cutout(s) already in %s", report.existing, out)
    lock = threading.Lock()
    bar = progress_bar(total=len(todo), desc="cutouts", unit="cutout", enabled=progress)

    def one(item):
        oid, ra, dec = item

        def request():
            limiter.wait()
            return service.jpeg(ra, dec, scale=scale, width=size, height=size)

        try:
            data = with_retries(request, config, f"cutout {oid}")
            atomic_write(path_inside(out, f"{oid}.jpg", "cutout file"), data, fsync=False)
            with lock:
                report.fetched += 1
        except SDSSError as exc:
            with lock:
                report.failed.append((oid, str(exc)))
        finally:
            bar.update(1)

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(one, todo))
    finally:
        bar.close()
    report.failed.sort()
    report.seconds = time.perf_counter() - t0
    return report
