"""A local stand-in for SDSS's web services, for offline tests of ``ulisse sdss``.

One ``http.server.ThreadingHTTPServer`` on 127.0.0.1 (a free port) serves, under
its base URL:

``/sas/{release}/eboss/photoObj/301/{run}/{camcol}/photoObj-{run:06d}-{camcol}-{field:04d}.fits``
    a field's photoObj catalogue as the SDSS data model has it (HDU1: OBJID as
    a string, RA, DEC, OBJC_TYPE, OBJC_FLAGS, CLEAN, RESOLVE_STATUS, MODELFLUX[5]
    in nanomaggies...), primary and secondary detections alike;
``/skyserver/SkyServerWS/SearchTools/SqlSearch?cmd=SQL&format=csv``
    SkyServer's SqlSearch: ``dbo.fGetNearbyObjEq(RA, DEC, ARCMIN)`` joined to
    PhotoPrimary, with ``p.type = N``, ``p.modelMag_r <= X``, ``p.clean = 1``;
    the answer is SkyServer's CSV (a ``#Table1`` line, a header, rows);
``/tap/sync``
    a TAP sync endpoint (GET or POST with REQUEST=doQuery, LANG=ADQL,
    QUERY=...) answering VOTables built with astropy. The ADQL is parsed
    minimally: ``run = N AND camcol = N AND field = N`` or
    ``CIRCLE('ICRS', RA, DEC, R)``; rows come from an in-memory catalogue.
    ``/tap/availability`` and ``/tap/capabilities`` answer minimal documents.
``/sas/{release}/eboss/photoObj/frames/301/{run}/{camcol}/frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2``
    simulated calibrated frames (nanomaggies, TAN WCS at 0.396"/px, SDSS-like
    header), one per field and band, turned as drift-scan frames are: about 90
    degrees from north up, plus the stripe's inclination (``FieldSpec.angle``);
    the g, r, i frames of a field are offset from one another by a few pixels,
    as SDSS's are.
``/skyserver/SkyServerWS/ImgCutout/getjpeg?ra=&dec=&scale=&width=&height=``
    a JPEG cutout (grey noise whose seed depends on ra, dec).

Faults are injected per request: :meth:`SDSSServer.fault` takes a substring
matched against ``path`` (and, for TAP, the ADQL text) and makes the first
``times`` matching requests answer HTTP ``status``, wait ``delay`` seconds,
or send truncated or corrupt bytes (or a whole bzip2 stream of a truncated FITS file). Every request is logged in ``requests``.
"""

from __future__ import annotations

import bz2
import io
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

PIXEL_ARCSEC = 0.396
BANDS = "gri"
BAND_OFFSET_PX = {"g": (0.0, 0.0), "r": (3.2, -4.1), "i": (-2.7, 5.3)}  # frames of one field are not aligned
MAG_COLUMNS = ("modelMag_g", "modelMag_r", "modelMag_i")
SURVEY_PRIMARY, SURVEY_SECONDARY, RUN_PRIMARY = 0x100, 0x400, 0x1  # RESOLVE_STATUS bits
SOFTENING = {"u": 1.4e-10, "g": 0.9e-10, "r": 1.2e-10, "i": 1.8e-10, "z": 7.4e-10}  # SDSS asinh magnitudes


@dataclass
class FieldSpec:
    """A simulated SDSS field: its frame centre and size."""

    run: int
    camcol: int
    field: int
    ra: float
    dec: float
    nx: int = 400  # NAXIS1 (SDSS: 2048), across the scan
    ny: int = 300  # NAXIS2 (SDSS: 1489), along the scan
    angle: float = 0.0  # the stripe's inclination on the sky (deg); 0: an equatorial stripe

    @property
    def key(self):
        return (self.run, self.camcol, self.field)

    def next_in_run(self, overlap_px: int = 100) -> "FieldSpec":
        """The run's next field: shifted along the scan by ``ny - overlap_px`` rows (SDSS: 1489 - 128)."""
        w = frame_wcs(self, "r")
        ra, dec = w.pixel_to_world_values((self.nx - 1) / 2, (self.ny - 1) / 2 + self.ny - overlap_px)
        return FieldSpec(self.run, self.camcol, self.field + 1, float(ra), float(dec), self.nx, self.ny, self.angle)


@dataclass
class Fault:
    """What to do to the first ``times`` requests that match ``match``."""

    match: str
    status: int | None = None
    delay: float = 0.0
    truncate: bool = False  # send the first third of the body
    corrupt: bool = False  # flip 4 KiB of bytes in the middle of the body
    truncate_fits: bool = False  # a valid bzip2 stream of a FITS file cut short
    times: int = 1_000_000
    hits: int = 0


def frame_wcs(spec: FieldSpec, band: str):
    from astropy.wcs import WCS

    dx, dy = BAND_OFFSET_PX[band]
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [spec.ra, spec.dec]
    w.wcs.crpix = [(spec.nx + 1) / 2 + dx, (spec.ny + 1) / 2 + dy]
    # drift scan: x across the scan (~dec), y along it (~ra): ~90 deg from north up, turned by the stripe's angle
    theta = np.deg2rad(spec.angle + 0.3)
    s = PIXEL_ARCSEC / 3600.0
    w.wcs.cd = [[s * np.sin(theta), s * np.cos(theta)], [s * np.cos(theta), -s * np.sin(theta)]]
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    return w


def make_frame(spec: FieldSpec, band: str, objects: pd.DataFrame, seed: int = 0) -> bytes:
    """A compressed (bz2) SDSS-like frame: nanomaggy image with Gaussian / exponential sources plus noise."""
    from astropy.io import fits

    rng = np.random.default_rng([seed, spec.run, spec.camcol, spec.field, ord(band)])
    w = frame_wcs(spec, band)
    image = rng.normal(0.0, 0.03, (spec.ny, spec.nx))
    half = 30  # each source is drawn on a stamp of 61 x 61 px around it (the profiles are ~0 beyond)
    xs, ys = w.world_to_pixel_values(objects["ra"].to_numpy(float), objects["dec"].to_numpy(float))
    for row, x, y in zip(objects.itertuples(index=False), np.atleast_1d(xs), np.atleast_1d(ys)):
        x0, x1 = max(0, int(x) - half), min(spec.nx, int(x) + half + 1)
        y0, y1 = max(0, int(y) - half), min(spec.ny, int(y) + half + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        flux = 10 ** (-0.4 * (getattr(row, f"modelMag_{band}") - 22.5))
        r2 = (xx - x) ** 2 + (yy - y) ** 2
        if int(row.type) == 6:  # star: PSF
            sigma = 1.4
            image[y0:y1, x0:x1] += flux * np.exp(-r2 / (2 * sigma**2)) / (2 * np.pi * sigma**2)
        else:  # galaxy: exponential disc (Sersic n=1)
            rd = 2.5
            image[y0:y1, x0:x1] += flux * np.exp(-np.sqrt(r2) / rd) / (2 * np.pi * rd**2)
    hdr = w.to_header()
    for key, value in (("BUNIT", "nanomaggy"), ("FILTER", band), ("CAMCOL", spec.camcol), ("RUN", spec.run),
                       ("FIELD", spec.field), ("RERUN", "301"), ("SYSTEM", "FK5"), ("EXPTIME", 53.907456)):
        hdr[key] = value
    # SDSS's FLOATCOMPRESS keeps 10 significant binary digits, so that bzip2 packs a frame into ~3 MB
    image = (image.astype(np.float32).view(np.uint32) & np.uint32(0xFFFFFFFF ^ ((1 << 13) - 1))).view(np.float32)
    primary = fits.PrimaryHDU(image, header=hdr)
    calib = fits.ImageHDU(np.ones(spec.nx, np.float32), name="CALIB")  # HDU1 of a real frame: the calibration vector
    buf = io.BytesIO()
    fits.HDUList([primary, calib]).writeto(buf)
    return bz2.compress(buf.getvalue(), compresslevel=1)


def make_sky(specs: list[FieldSpec], per_field: int = 8, seed: int = 0, edge: dict | None = None,
             secondaries: int = 2, overlap: dict | None = None) -> pd.DataFrame:
    """A SkyServer-like PhotoObj catalogue: ``per_field`` primary objects in each field, and more.

    ``edge`` maps a field key to a number of extra primary objects placed 10 px from the frame's edge.
    ``secondaries`` non-primary detections per field (RESOLVE_STATUS without SURVEY_PRIMARY).
    ``overlap`` maps ``(key_a, key_b)`` of two overlapping fields to a number of objects in the overlap,
    each detected twice: primary in field a, secondary in field b (with different objids, as SDSS's).
    """
    rng = np.random.default_rng(seed)
    rows = []
    objid = [1237648720693755000]
    by_key = {s.key: s for s in specs}

    def add(spec, ra, dec, status, mags=None, kind=None, near_edge=False):
        r = rng.uniform(16.0, 19.0) if mags is None else mags[1]
        g = r + rng.uniform(0.3, 1.2) if mags is None else mags[0]
        i = r - rng.uniform(0.1, 0.5) if mags is None else mags[2]
        kind = int(rng.choice([3, 6])) if kind is None else kind
        rows.append({"objID": str(objid[0]), "ra": float(ra), "dec": float(dec), "type": kind,
                     "run": spec.run, "rerun": 301, "camcol": spec.camcol, "field": spec.field,
                     "modelMag_g": g, "modelMag_r": r, "modelMag_i": i,
                     "flags": int(rng.integers(0, 2**31)) | int(rng.integers(0, 2**31)) << 32,
                     "clean": int(rng.random() < 0.8), "resolve_status": status, "near_edge": near_edge})
        objid[0] += int(rng.integers(1, 50))
        return rows[-1]

    for spec in specs:
        w = frame_wcs(spec, "r")
        n_edge = (edge or {}).get(spec.key, 0)
        xs = list(rng.uniform(45, spec.nx - 45, per_field + secondaries)) + [10.0] * n_edge
        ys = list(rng.uniform(60, spec.ny - 60, per_field + secondaries)) + list(np.linspace(60, spec.ny - 60, n_edge))
        for k, (x, y) in enumerate(zip(xs, ys)):
            ra, dec = w.pixel_to_world_values(x, y)
            secondary = per_field <= k < per_field + secondaries
            add(spec, ra, dec, (SURVEY_SECONDARY | RUN_PRIMARY) if secondary else (SURVEY_PRIMARY | RUN_PRIMARY),
                near_edge=k >= per_field + secondaries)
    for (ka, kb), n in (overlap or {}).items():
        a, b = by_key[ka], by_key[kb]
        wa = frame_wcs(a, "r")
        for x in np.linspace(60, a.nx - 60, n):
            ra, dec = wa.pixel_to_world_values(x, a.ny - 65)  # 65 rows from the end of a: inside b as well
            first = add(a, ra, dec, SURVEY_PRIMARY | RUN_PRIMARY)
            add(b, ra, dec, SURVEY_SECONDARY, (first["modelMag_g"], first["modelMag_r"], first["modelMag_i"]),
                first["type"])
    return pd.DataFrame(rows)


def primary(cat: pd.DataFrame) -> pd.DataFrame:
    """The survey-primary rows of a catalogue (PhotoPrimary)."""
    return cat[(cat["resolve_status"].to_numpy() & SURVEY_PRIMARY) != 0]


def photoobj_bytes(cat: pd.DataFrame, run: int, camcol: int, fieldnum: int) -> bytes:
    """A photoObj file as the SDSS data model describes it: HDU0 keywords only, HDU1 the table."""
    from astropy.io import fits

    rows = cat[(cat["run"] == run) & (cat["camcol"] == camcol) & (cat["field"] == fieldnum)]
    n = len(rows)

    def flux(band):  # asinh magnitude -> nanomaggies
        b = SOFTENING[band]
        m = rows[f"modelMag_{band}"].to_numpy(float) if band in "gri" else np.full(n, 22.0)
        return 2 * b * np.sinh(m / (-2.5 / np.log(10)) - np.log(b)) * 1e9

    modelflux = np.stack([flux(b) for b in "ugriz"], axis=1).astype(np.float32) if n else np.zeros((0, 5), np.float32)
    flags = rows["flags"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
    width = max([19] + [len(str(v)) for v in rows["objID"]])  # 19 characters in SDSS's files
    cols = [
        fits.Column("OBJID", f"{width}A", array=np.array(rows["objID"].astype(str).to_list() or [], dtype=f"U{width}")),
        fits.Column("RUN", "J", array=rows["run"].to_numpy(np.int32)),
        fits.Column("RERUN", "3A", array=np.array([str(v) for v in rows["rerun"]], dtype="U3")),
        fits.Column("CAMCOL", "J", array=rows["camcol"].to_numpy(np.int32)),
        fits.Column("FIELD", "J", array=rows["field"].to_numpy(np.int32)),
        fits.Column("ID", "J", array=np.arange(1, n + 1, dtype=np.int32)),
        fits.Column("OBJC_TYPE", "J", array=rows["type"].to_numpy(np.int32)),
        fits.Column("OBJC_FLAGS", "J", array=(flags & 0x7FFFFFFF).astype(np.int32)),
        fits.Column("OBJC_FLAGS2", "J", array=((flags >> 32) & 0x7FFFFFFF).astype(np.int32)),
        fits.Column("RA", "D", array=rows["ra"].to_numpy(float)),
        fits.Column("DEC", "D", array=rows["dec"].to_numpy(float)),
        fits.Column("CLEAN", "J", array=rows["clean"].to_numpy(np.int32)),
        fits.Column("RESOLVE_STATUS", "J", array=rows["resolve_status"].to_numpy(np.int32)),
        fits.Column("MODELFLUX", "5E", array=modelflux),
    ]
    primary_hdu = fits.PrimaryHDU()
    for key, value in (("RUN", run), ("CAMCOL", camcol), ("FIELD", fieldnum), ("RERUN", "301"), ("FILTERS", "ugriz")):
        primary_hdu.header[key] = value
    buf = io.BytesIO()
    fits.HDUList([primary_hdu, fits.BinTableHDU.from_columns(cols)]).writeto(buf)
    return buf.getvalue()


SQL_NEARBY = re.compile(r"fGetNearbyObjEq\s*\(\s*([-+\d.eE]+)\s*,\s*([-+\d.eE]+)\s*,\s*([-+\d.eE]+)\s*\)", re.I)
SQL_COLUMNS = ("objID", "ra", "dec", "type", "run", "rerun", "camcol", "field", "modelMag_g", "modelMag_r",
               "modelMag_i", "flags", "clean")


def sqlsearch_csv(cat: pd.DataFrame, sql: str) -> bytes:
    """SqlSearch's CSV answer to the region queries ulisse sends (ValueError for anything else)."""
    m = SQL_NEARBY.search(sql)
    if not m or not re.search(r"JOIN\s+PhotoPrimary\s+AS\s+p\s+ON\s+p\.objID\s*=\s*n\.objID", sql, re.I):
        raise ValueError("only fGetNearbyObjEq(...) joined to PhotoPrimary is understood here")
    rows = cone(primary(cat), float(m[1]), float(m[2]), float(m[3]) / 60.0)
    rows = apply_conditions(rows, sql, strict=True)
    return ("#Table1\n" + rows[list(SQL_COLUMNS)].to_csv(index=False)).encode()


def apply_conditions(rows: pd.DataFrame, query: str, strict: bool = False) -> pd.DataFrame:
    """Apply the filters ulisse renders (``p.type = N``, ``p.clean = 1``, ``p.modelMag_r <= X``) found in a query."""
    where = query.split(" WHERE ", 1)[1] if " WHERE " in query else ""
    for cond in filter(None, (c.strip() for c in where.split(" AND "))):
        c = re.fullmatch(r"p\.(type|clean) = (\d+)|p\.modelMag_r <= ([-+\d.eE]+)", cond)
        if not c:
            if strict:
                raise ValueError(f"condition not understood: {cond}")
            continue
        if c[1]:
            rows = rows[rows[c[1]] == int(c[2])]
        else:
            rows = rows[rows["modelMag_r"] <= float(c[3])]
    return rows


def cone(cat: pd.DataFrame, ra: float, dec: float, radius_deg: float) -> pd.DataFrame:
    ra0, dec0, rad = np.deg2rad(ra), np.deg2rad(dec), np.deg2rad(radius_deg)
    r, d = np.deg2rad(cat["ra"].to_numpy(float)), np.deg2rad(cat["dec"].to_numpy(float))
    cos_sep = np.sin(d) * np.sin(dec0) + np.cos(d) * np.cos(dec0) * np.cos(r - ra0)
    return cat[cos_sep >= np.cos(rad)]


class SDSSServer:
    """The fake SDSS services; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, catalogue: pd.DataFrame, fields: list[FieldSpec], release: str = "dr17"):
        self.catalogue = catalogue
        self.fields = {f.key: f for f in fields}
        self.release = release
        self.faults: list[Fault] = []
        self.requests: list[tuple[float, str, str]] = []  # (time, method, path + query)
        self.bytes_sent = 0  # bodies of all answers
        self._frames: dict[tuple, bytes] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> "SDSSServer":
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="sdss-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def tap_url(self) -> str:
        return f"{self.url}/tap"

    @property
    def sas_url(self) -> str:
        return f"{self.url}/sas"

    @property
    def skyserver_url(self) -> str:
        return f"{self.url}/skyserver"

    # -- faults and logs ------------------------------------------------------

    def fault(self, match: str, **kwargs) -> Fault:
        """Inject a fault into requests whose path (or ADQL) contains ``match``."""
        f = Fault(match, **kwargs)
        with self._lock:
            self.faults.append(f)
        return f

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def hits(self, match: str) -> int:
        """How many requests so far contained ``match``."""
        with self._lock:
            return sum(match in line for _, _, line in self.requests)

    def _take_fault(self, text: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.match in text and f.hits < f.times:
                    f.hits += 1
                    return f
        return None

    def _log(self, method: str, line: str) -> None:
        with self._lock:
            self.requests.append((time.monotonic(), method, line))

    # -- content --------------------------------------------------------------

    def frame_bytes(self, band: str, run: int, camcol: int, fieldnum: int) -> bytes | None:
        key = (band, run, camcol, fieldnum)
        spec = self.fields.get((run, camcol, fieldnum))
        if spec is None:
            return None
        with self._lock:
            cached = self._frames.get(key)
        if cached is None:
            cat = self.catalogue
            objs = cat[(cat["run"] == run) & (cat["camcol"] == camcol) & (cat["field"] == fieldnum)]
            cached = make_frame(spec, band, objs)
            with self._lock:
                self._frames[key] = cached
        return cached

    def prepare(self) -> "SDSSServer":
        """Make every frame now, so that no request waits for one to be drawn."""
        for band in BANDS:
            for key in self.fields:
                self.frame_bytes(band, *key)
        return self

    def answer_adql(self, adql: str) -> pd.DataFrame:
        cat = primary(self.catalogue)
        circle = re.search(r"CIRCLE\s*\(\s*'ICRS'\s*,\s*([-+\d.eE]+)\s*,\s*([-+\d.eE]+)\s*,\s*([-+\d.eE]+)\s*\)", adql, re.I)
        if circle:
            return cone(cat, *(float(v) for v in circle.groups()))
        wanted = {}
        for col in ("run", "camcol", "field"):
            m = re.search(rf"\b{col}\s*=\s*(\d+)", adql, re.I)
            if m:
                wanted[col] = int(m.group(1))
        if len(wanted) != 3:
            raise ValueError(f"cannot answer this ADQL: {adql}")
        mask = np.ones(len(cat), bool)
        for col, value in wanted.items():
            mask &= cat[col].to_numpy() == value
        return apply_conditions(cat[mask], adql)


def votable_bytes(df: pd.DataFrame, template: pd.DataFrame) -> bytes:
    """A TAP result VOTable (RESOURCE type="results", QUERY_STATUS OK) with ``template``'s columns."""
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info
    from astropy.table import Table

    table = Table.from_pandas(df.reset_index(drop=True) if len(df) else template.iloc[:0])
    vot = from_table(table)
    resource = vot.resources[0]
    resource.type = "results"
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def error_votable(message: str) -> bytes:
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
            b'<RESOURCE type="results"><INFO name="QUERY_STATUS" value="ERROR">' + message.encode()
            + b"</INFO></RESOURCE></VOTABLE>")


def jpeg_bytes(ra: float, dec: float, width: int, height: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng([int(abs(ra) * 1e6), int(abs(dec) * 1e6)])
    a = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


FRAME_RE = re.compile(r"^/sas/(?P<release>dr\d+)/(?P<survey>e?boss)/photoObj/frames/(?P<rerun>\d+)/(?P<run>\d+)/(?P<camcol>\d)/"
                      r"frame-(?P<band>[ugriz])-(?P<run6>\d{6})-(?P<camcol2>\d)-(?P<field>\d{4})\.fits\.bz2$")


PHOTOOBJ_RE = re.compile(r"^/sas/(?P<release>dr\d+)/(?P<survey>e?boss)/photoObj/(?P<rerun>\d+)/(?P<run>\d+)/(?P<camcol>\d)/"
                         r"photoObj-(?P<run6>\d{6})-(?P<camcol2>\d)-(?P<field>\d{4})\.fits$")


class _Handler(BaseHTTPRequestHandler):
    server_state: SDSSServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        url = urlparse(self.path)
        self._dispatch("GET", url.path, parse_qs(url.query))

    def do_POST(self):
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        params = parse_qs(url.query)
        params.update(parse_qs(body))
        self._dispatch("POST", url.path, params)

    # -- answers --------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with self.server_state._lock:
            self.server_state.bytes_sent += len(body)
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out)
            pass

    def _dispatch(self, method: str, path: str, params: dict) -> None:
        state = self.server_state
        query = (params.get("QUERY") or [""])[0]
        line = f"{path} {query}".strip() if query else (f"{path}?{self._qs(params)}" if params else path)
        state._log(method, line)
        fault = state._take_fault(line)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status:
            return self._send(fault.status, f"injected HTTP {fault.status}\n".encode(), "text/plain")
        try:
            status, body, ctype = self._answer(path, params, query)
        except Exception as exc:  # a bug in the fake server shows as a 500 with its message
            status, body, ctype = 500, f"test server: {exc}\n".encode(), "text/plain"
        if fault is not None and fault.truncate_fits and status == 200:
            raw = bz2.decompress(body)
            body = bz2.compress(raw[: len(raw) // 2], compresslevel=1)
        if fault is not None and fault.truncate:
            body = body[: max(1, len(body) // 3)]
        if fault is not None and fault.corrupt:
            mid = len(body) // 2
            body = body[:mid] + bytes(b ^ 0x5A for b in body[mid:mid + 4096]) + body[mid + 4096:]
        self._send(status, body, ctype)

    @staticmethod
    def _qs(params: dict) -> str:
        return "&".join(f"{k}={v[0]}" for k, v in sorted(params.items()))

    def _answer(self, path: str, params: dict, query: str):
        state = self.server_state
        if path == "/tap/sync":
            if (params.get("REQUEST") or [""])[0] != "doQuery" or (params.get("LANG") or [""])[0].upper() != "ADQL":
                return 400, error_votable("expected REQUEST=doQuery and LANG=ADQL"), "text/xml"
            try:
                rows = state.answer_adql(query)
            except ValueError as exc:
                return 400, error_votable(str(exc)), "text/xml"
            return 200, votable_bytes(rows, state.catalogue), "application/x-votable+xml"
        if path == "/tap/availability":
            return 200, (b'<?xml version="1.0"?><vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
                         b"<vosi:available>true</vosi:available></vosi:availability>"), "text/xml"
        if path == "/tap/capabilities":
            return 200, (b'<?xml version="1.0"?><vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0">'
                         b"</vosi:capabilities>"), "text/xml"
        m = PHOTOOBJ_RE.match(path)
        if m:
            key = (int(m["run"]), int(m["camcol"]), int(m["field"]))
            if m["release"] != state.release or int(m["run"]) != int(m["run6"]) or m["camcol"] != m["camcol2"] \
                    or key not in state.fields:
                return 404, b"no such file\n", "text/plain"
            return 200, photoobj_bytes(state.catalogue, *key), "application/fits"
        if path == "/skyserver/SkyServerWS/SearchTools/SqlSearch":
            sql = (params.get("cmd") or [""])[0]
            if (params.get("format") or [""])[0] != "csv":
                return 400, b"expected format=csv\n", "text/plain"
            try:
                return 200, sqlsearch_csv(state.catalogue, sql), "text/plain"
            except ValueError as exc:
                return 500, f"SQL error: {exc}\n".encode(), "text/plain"
        m = FRAME_RE.match(path)
        if m:
            if m["release"] != state.release or int(m["run"]) != int(m["run6"]) or m["camcol"] != m["camcol2"]:
                return 404, b"no such file\n", "text/plain"
            data = state.frame_bytes(m["band"], int(m["run"]), int(m["camcol"]), int(m["field"]))
            if data is None:
                return 404, b"no such file\n", "text/plain"
            return 200, data, "application/x-bzip2"
        if path == "/skyserver/SkyServerWS/ImgCutout/getjpeg":
            try:
                ra, dec = float(params["ra"][0]), float(params["dec"][0])
                width, height = int(params.get("width", ["64"])[0]), int(params.get("height", ["64"])[0])
            except (KeyError, ValueError):
                return 400, b"bad parameters\n", "text/plain"
            return 200, jpeg_bytes(ra, dec, width, height), "image/jpeg"
        return 404, b"not found\n", "text/plain"
