"""Cutouts for the page: enlarged thumbnails with crisp pixels, and FITS cutouts under a chosen stretch."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ulisse.cutouts import FITS_SUFFIXES

THUMB_PX = 192  # thumbnails are enlarged (nearest neighbour, crisp pixels) to at least this side
FRAME = (230, 160, 0)  # the prototype's frame: amber, a colour no mark uses (green, red, blue)
STRETCHES = ("asinh", "linear", "log")


def display_png(rgb: np.ndarray, framed: bool = False, size: int = THUMB_PX) -> bytes:
    """An RGB cutout as PNG for the page: small cutouts enlarged with crisp pixels, the prototype framed."""
    from PIL import Image, ImageOps

    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    side = max(im.size)
    if side < size:
        factor = math.ceil(size / side)
        im = im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
    elif side > 2 * size:
        im.thumbnail((2 * size, 2 * size), Image.Resampling.LANCZOS)
    if framed:
        im = ImageOps.expand(im, border=max(4, max(im.size) // 24), fill=FRAME)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def source_path(index, object_id: str) -> Path | None:
    """The cutout file of an index object (relative ``source`` paths are under the index), or None."""
    src = (index.metadata_rows([index.row_of(object_id)])["source"].iloc[0]
           if "source" in index.metadata_columns else None)
    if not isinstance(src, str) or not src:
        return None
    path = Path(src)
    return path if path.is_absolute() else Path(index.path) / path


def is_fits(path: Path | None) -> bool:
    return path is not None and path.name.lower().endswith(FITS_SUFFIXES)


def stretched_fits(path: Path, stretch: str = "asinh", percentile: float = 99.5,
                   fits_rows: str = "bottom-up") -> np.ndarray | None:
    """A FITS cutout as uint8 RGB under ``stretch`` (asinh, linear, log), each band scaled to its percentile interval.

    A g,r,i cube shows as i, r, g -> R, G, B (as SDSS makes its colour images); one band as grey.
    Rows in the order the index reads them (``fits_rows``, :attr:`ulisse.RGBConfig.fits_rows`), so the
    stretched picture and the thumbnail agree. None when the file has no usable image.
    """
    from astropy.io import fits
    from astropy.visualization import AsinhStretch, LinearStretch, LogStretch, PercentileInterval

    from ulisse.cutouts import fits_image

    if stretch not in STRETCHES:
        raise ValueError(f"stretch {stretch!r}: expected one of {', '.join(STRETCHES)}")
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if getattr(h, "is_image", False) and h.data is not None and h.data.ndim >= 2), None)
            data = None if hdu is None else np.array(hdu.data, dtype=np.float64)
    except Exception:  # a damaged file: no picture, not a traceback
        return None
    if data is None or data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[0] != 3):
        return None
    data = fits_image(data, fits_rows)
    planes = [data] * 3 if data.ndim == 2 else [data[2], data[1], data[0]]
    fn = {"asinh": AsinhStretch(0.1), "linear": LinearStretch(), "log": LogStretch(1000)}[stretch]
    out = []
    for plane in planes:
        plane = np.where(np.isfinite(plane), plane, np.nan)
        if not np.isfinite(plane).any():
            return None
        lo, hi = PercentileInterval(percentile).get_limits(plane[np.isfinite(plane)])
        scaled = np.clip((np.nan_to_num(plane, nan=lo) - lo) / ((hi - lo) or 1.0), 0, 1)
        out.append(np.clip(fn(scaled), 0, 1))
    return (np.stack(out, axis=-1) * 255).round().astype(np.uint8)
