"""Reading survey cutouts (PNG, JPEG, FITS) into RGB arrays.

A cutout becomes an ``H x W x 3`` uint8 RGB array, the form the encoder takes.
PNG and JPEG are read as they are (grey is replicated, alpha dropped). FITS
images are 2-D single-band images or 3-plane g, r, i cubes (numpy shape
``(3, H, W)``); bands become RGB with astropy's :func:`make_lupton_rgb`
(i, r, g -> R, G, B, as SDSS makes its JPEGs). A single band is replicated.
A FITS file's first row is the image's bottom row (:attr:`RGBConfig.fits_rows`), as
astronomers' viewers show FITS: a cutout with north along +y comes out north up.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import CutoutError, InputError

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.bz2", ".fz")
CUTOUT_SUFFIXES = IMAGE_SUFFIXES + FITS_SUFFIXES
MIN_SIDE = 8


FITS_ROWS = ("bottom-up", "top-down")


@dataclass(frozen=True)
class RGBConfig:
    """How FITS bands become an RGB image (recorded in every index manifest).

    Attributes:
        q: Lupton asinh softening parameter.
        stretch: linear stretch of the image.
        minimum: black level, in the data's units.
        scales: multipliers for the (i, r, g) bands before the stretch.
        fits_rows: ``bottom-up`` (the default): a FITS file's first row is the image's bottom row, as
            ds9, Aladin and ``imshow(origin="lower")`` show FITS, so a cutout whose WCS has north along
            +y is shown and embedded north up, as SkyServer's JPEGs and the sky viewers show it.
            ``top-down``: the first row on top, as ulisse read FITS before; an index whose manifest
            records no ``fits_rows`` was built that way and keeps it (its vectors stay comparable).
    """

    q: float = 8.0
    stretch: float = 0.5
    minimum: float = 0.0
    scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fits_rows: str = "bottom-up"

    def __post_init__(self):
        if self.fits_rows not in FITS_ROWS:
            raise InputError(f"fits_rows={self.fits_rows!r}: expected one of {', '.join(FITS_ROWS)}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "RGBConfig":
        """The settings a manifest records; one written before ``fits_rows`` existed reads FITS ``top-down``."""
        d = dict(d)
        d["scales"] = tuple(d.get("scales", (1.0, 1.0, 1.0)))
        if d and "fits_rows" not in d:
            d["fits_rows"] = "top-down"
        return cls(**d)


def fits_image(data: np.ndarray, fits_rows: str = "bottom-up") -> np.ndarray:
    """FITS image data (``H x W`` or ``(bands, H, W)``) in image row order, row 0 on top: flipped along its rows
    for ``bottom-up`` (:attr:`RGBConfig.fits_rows`), as it is for ``top-down``."""
    return data[..., ::-1, :] if fits_rows == "bottom-up" else data


@dataclass
class Cutout:
    """One cutout, ready for the encoder.

    Attributes:
        id: object id (the file stem for a file).
        image: ``H x W x 3`` uint8 RGB array.
        path: the file it came from, if any.
        ra, dec: sky position of the cutout's centre from a FITS WCS (degrees), else NaN.
    """

    id: str
    image: np.ndarray
    path: str | None = None
    ra: float = math.nan
    dec: float = math.nan


def cutout_id(path: str | Path) -> str:
    """The object id of a cutout file: its name without the cutout suffix."""
    name = Path(path).name
    for suffix in sorted(CUTOUT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_cutout_file(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(CUTOUT_SUFFIXES)


def source_path(index_dir: str | Path, source) -> Path | None:
    """The file an index object's ``source`` names (relative to the index directory ``index_dir`` unless
    absolute), or None when it names none (an object added as a vector)."""
    if not isinstance(source, str) or not source:
        return None
    path = Path(source)
    return path if path.is_absolute() else Path(index_dir) / path


def read_cutout(path: str | Path, rgb: RGBConfig = RGBConfig()) -> Cutout:
    """Read one cutout file.

    Raises:
        CutoutError: the file is missing, empty, unreadable, all-NaN or of a wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise CutoutError(path, "no such file")
    if path.stat().st_size == 0:
        raise CutoutError(path, "empty file")
    name = path.name.lower()
    if name.endswith(FITS_SUFFIXES):
        image, ra, dec = _read_fits(path, rgb)
    elif name.endswith(IMAGE_SUFFIXES):
        image, ra, dec = _read_image(path), math.nan, math.nan
    else:
        raise CutoutError(path, f"unknown cutout type (expected one of {', '.join(CUTOUT_SUFFIXES)})")
    return Cutout(id=cutout_id(path), image=image, path=str(path), ra=ra, dec=dec)


def image_to_rgb(array: np.ndarray, source: str = "array", rgb: RGBConfig = RGBConfig()) -> np.ndarray:
    """Turn an image array into uint8 RGB.

    ``H x W x 3`` uint8 arrays pass through; ``H x W`` or ``(3, H, W)`` float
    arrays are treated as bands (single band, or g, r, i planes) in image row order, row 0 on top
    (FITS data read by hand: :func:`fits_image` first).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
        _check_side(a.shape[:2], source)
        return np.ascontiguousarray(a)
    if a.ndim == 3 and a.shape[2] == 3 and a.shape[0] != 3:
        raise CutoutError(source, f"an H x W x 3 image must be 8-bit RGB (uint8), not {a.dtype}; bands of "
                                  "fluxes go as a (3, H, W) g,r,i cube or one 2-D band")
    return _bands_to_rgb(a.astype(np.float64, copy=False), source, rgb)


def _check_side(shape, source):
    if min(shape) < MIN_SIDE:
        raise CutoutError(source, f"image is {shape[0]}x{shape[1]} px, smaller than {MIN_SIDE}x{MIN_SIDE}")


def read_pil_image(path: Path, convert):
    """Open an image file with PIL behind the decompression-bomb guard and return ``convert(image)``.

    Every failure becomes a :class:`CutoutError` naming the file (``convert`` may raise its own).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return convert(im)
    except CutoutError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CutoutError(path, f"not a readable image ({exc.__class__.__name__}: {exc})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise CutoutError(path, "image is too large (decompression-bomb guard)") from None


def _rgb_of(im) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = np.nanmin(a), np.nanmax(a)
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        return np.repeat(a.round().astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def _read_image(path: Path) -> np.ndarray:
    a = read_pil_image(path, _rgb_of)
    _check_side(a.shape[:2], path)
    return np.ascontiguousarray(a)


def _read_fits(path: Path, rgb: RGBConfig):
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if getattr(h, "is_image", False) and h.data is not None and h.data.ndim >= 2), None)
            if hdu is None:
                raise CutoutError(path, "FITS file has no image data")
            data = np.array(hdu.data, dtype=np.float64)
            header = hdu.header
    except CutoutError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise CutoutError(path, f"not a readable FITS file ({exc.__class__.__name__}: {exc})") from None
    image = _bands_to_rgb(fits_image(data, rgb.fits_rows), path, rgb)
    ra, dec = _centre_radec(header, data.shape[-2:])
    return image, ra, dec


def _bands_to_rgb(data: np.ndarray, source, rgb: RGBConfig) -> np.ndarray:
    from astropy.visualization import make_lupton_rgb

    if data.ndim == 2:
        bands = [data, data, data]  # i, r, g all the same band
    elif data.ndim == 3 and data.shape[0] == 3:
        g, r, i = data
        bands = [i, r, g]
    else:
        raise CutoutError(source, f"wrong shape {tuple(data.shape)}: expected a 2-D image or a 3-plane g,r,i cube (3, H, W)")
    _check_side(data.shape[-2:], source)
    finite = np.isfinite(data)
    if not finite.any():
        raise CutoutError(source, "all pixels are NaN or infinite")
    bands = [np.where(np.isfinite(b), b, 0.0) * s for b, s in zip(bands, rgb.scales)]
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 on empty sky is handled by astropy
        return make_lupton_rgb(*bands, minimum=rgb.minimum, stretch=rgb.stretch, Q=rgb.q)


def _centre_radec(header, shape) -> tuple[float, float]:
    try:
        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header).celestial
        if not wcs.has_celestial:
            return math.nan, math.nan
        ny, nx = shape
        sky = wcs.pixel_to_world((nx - 1) / 2.0, (ny - 1) / 2.0)
        return float(sky.icrs.ra.deg), float(sky.icrs.dec.deg)
    except Exception:  # no usable WCS is normal for a cutout
        return math.nan, math.nan


SKY_SIGMAS_PER_STRETCH = 10  # the stretch that shows the sky dark: about 10 sky sigmas (SDSS: 0.05 nmgy -> 0.5)


def stretch_advice(paths, rgb: RGBConfig = RGBConfig(), sample: int = 16) -> str | None:
    """A warning when the Lupton stretch does not suit the FITS cutouts' flux scale, else None.

    The stretch (default 0.5, with Q = 8) is made for SDSS frames in nanomaggies, where the sky's
    noise is about 0.05: about a tenth of the stretch, so the sky is dark. Data in counts, MJy/sr or
    any other unit can put the noise at the stretch or above (the sky then fills the image with bright
    noise, and the vectors describe the noise) or far below it (the objects stay black). The sky's noise
    is measured (1.4826 x MAD of the band mean) on up to ``sample`` of the FITS files in ``paths``.
    """
    from astropy.io import fits

    fits_paths = [Path(p) for p in paths if str(p).lower().endswith(FITS_SUFFIXES)]
    sigmas, peaks = [], []
    for path in fits_paths[:: max(1, len(fits_paths) // sample)][:sample]:
        try:
            with fits.open(path, memmap=False) as hdul:
                hdu = next(h for h in hdul if getattr(h, "is_image", False) and h.data is not None and h.data.ndim >= 2)
                data = np.asarray(hdu.data, dtype=np.float64)
        except Exception:
            continue  # unreadable files are reported by the embedding itself
        planes = data.reshape(-1, *data.shape[-2:])
        if planes.shape[0] == 3:  # g, r, i as the stretch takes them: i, r, g, each with its scale
            level = np.nanmean(planes[::-1] * np.asarray(rgb.scales)[:, None, None], axis=0) - rgb.minimum
        else:
            level = planes[0] * float(np.mean(rgb.scales)) - rgb.minimum
        level = level[np.isfinite(level)]
        if level.size < 16:
            continue
        centred = level - np.median(level)
        sigmas.append(1.4826 * float(np.median(np.abs(centred))))
        peaks.append(float(np.percentile(centred, 99.5)))
    if not sigmas:
        return None
    sigma, peak = float(np.median(sigmas)), float(np.median(peaks))
    suggest = f"{rgb.q:g},{SKY_SIGMAS_PER_STRETCH * sigma:.3g}"
    if sigma > rgb.stretch / 3:
        return (f"the FITS cutouts' sky noise ({sigma:.3g} in their units, on {len(sigmas)} of them) is "
                f"{sigma / rgb.stretch:.2g}x the Lupton stretch ({rgb.stretch:g}, made for SDSS nanomaggies): the sky "
                f"shows as bright noise and the vectors describe it; for these data --lupton {suggest}")
    if sigma > 0 and peak < rgb.stretch / 20:
        return (f"the FITS cutouts' brightest pixels ({peak:.3g} above the sky, on {len(sigmas)} of them) are far below "
                f"the Lupton stretch ({rgb.stretch:g}, made for SDSS nanomaggies): the objects stay nearly black; for "
                f"these data --lupton {suggest}")
    return None
