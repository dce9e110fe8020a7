"""Uploaded cutouts: size and pixel checks before decoding, then read exactly as ``ulisse query --image`` reads one."""

from __future__ import annotations

import bz2
import gzip
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np

import ulisse
from ulisse.cutouts import CUTOUT_SUFFIXES, FITS_SUFFIXES, RGBConfig
from ulisse.errors import CutoutError, InputError
from ulisse.ui import MAX_UPLOAD_MB

MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
MAX_UPLOAD_PIXELS = 25_000_000  # 5000 x 5000: a cutout, not a survey tile (and no decompression bomb)


class UploadError(InputError):
    """An uploaded cutout cannot be used; the message says why (for the page to show)."""


def upload_suffix(name: str) -> str | None:
    """The cutout suffix of a file name (``.png``, ``.fits.gz``...), or None."""
    lower = name.lower()
    return next((s for s in sorted(CUTOUT_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), None)


def decode_upload(name: str, data: bytes, rgb: RGBConfig = RGBConfig(), *, max_bytes: int = MAX_UPLOAD_BYTES,
                  max_pixels: int = MAX_UPLOAD_PIXELS) -> np.ndarray:
    """An uploaded cutout (PNG, JPEG or FITS) as an ``H x W x 3`` uint8 RGB array.

    The size of the file and of the image are checked before anything is
    decoded (a small compressed file can hold a huge image); the file is then
    read exactly as ``ulisse query --image`` reads one.

    Raises:
        UploadError: empty or too large, not a cutout type, not readable, too many
            pixels, or a FITS file without image data.

    Example:
        >>> decode_upload("notes.txt", b"hello")
        Traceback (most recent call last):
        ...
        ulisse.ui.kit._uploads.UploadError: notes.txt: not a cutout ulisse reads (PNG, JPEG or FITS: ...)
    """
    label = Path(name).name or "upload"
    if not data:
        raise UploadError(f"{label}: the file is empty")
    if len(data) > max_bytes:
        raise UploadError(f"{label}: {len(data) / 2**20:.1f} MB, more than the {max_bytes / 2**20:.0f} MB allowed")
    suffix = upload_suffix(label)
    if suffix is None:
        raise UploadError(f"{label}: not a cutout ulisse reads (PNG, JPEG or FITS: {', '.join(CUTOUT_SUFFIXES)})")
    if suffix in FITS_SUFFIXES:
        _check_fits(label, data, max_pixels)
    else:
        _check_image(label, data, max_pixels)
    with tempfile.TemporaryDirectory(prefix="ulisse-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return ulisse.read_cutout(path, rgb).image
        except CutoutError as exc:
            raise UploadError(f"{label}: {exc.reason}") from None
        except Exception as exc:  # whatever a damaged file makes a reader raise: a message, not a traceback
            raise UploadError(f"{label}: could not be read ({type(exc).__name__})") from None


def _too_many(label: str, pixels: int, max_pixels: int, shape: str) -> UploadError:
    side = int(max_pixels ** 0.5)
    size = f"over {pixels / 1e6:.0f} million pixels" if shape == "at least" else f"{shape}, {pixels / 1e6:.1f} million pixels"
    return UploadError(f"{label}: the image is too large for a cutout ({size}; at most {max_pixels / 1e6:.0f} million, "
                       f"{side} x {side} px): crop a cutout around the object")


def _check_image(label: str, data: bytes, max_pixels: int) -> None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the header's size is checked below
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                width, height = im.size
    except Image.DecompressionBombError:  # PIL's own limit, far above ours
        raise _too_many(label, 2 * (Image.MAX_IMAGE_PIXELS or 0), max_pixels, "at least") from None
    except Exception:
        raise UploadError(f"{label}: not a readable PNG or JPEG image") from None
    if width * height > max_pixels:
        raise _too_many(label, width * height, max_pixels, f"{width} x {height} px")


def _check_fits(label: str, data: bytes, max_pixels: int) -> None:
    from astropy.io import fits

    raw = io.BytesIO(data)
    fileobj = gzip.GzipFile(fileobj=raw) if data[:2] == b"\x1f\x8b" else bz2.BZ2File(raw) if data[:3] == b"BZh" else raw
    shape = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(fileobj, memmap=False) as hdul:  # headers only, up to the first image
                for hdu in hdul:
                    if getattr(hdu, "is_image", False) and len(hdu.shape) >= 2:
                        shape = tuple(int(n) for n in hdu.shape)
                        break
    except Exception:
        raise UploadError(f"{label}: not a readable FITS file") from None
    if shape is None:
        raise UploadError(f"{label}: the FITS file holds no image data")
    if len(shape) > 3:
        raise UploadError(f"{label}: a {len(shape)}-D image ({' x '.join(map(str, shape))}): give a 2-D image or a "
                          "cube of 3 planes (g, r, i)")
    planes = shape[0] if len(shape) == 3 else 1
    if int(np.prod(shape, dtype=np.int64)) > max_pixels * max(planes, 1):
        raise _too_many(label, int(np.prod(shape, dtype=np.int64)), max_pixels, " x ".join(map(str, shape)))


def safe_stem(text: str) -> str:
    """A file-name stem from any text (for downloads)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_.")[:80] or "results"
