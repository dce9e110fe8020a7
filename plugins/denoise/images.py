"""The images a denoiser reads and writes, in their own units.

FITS cutouts stay float: a 2-D image is one band, a ``(3, H, W)`` cube is g, r, i;
the values are fluxes (the noise is learnt in flux units, not in an 8-bit
stretch), NaNs are kept where they were. PNG and JPEG cutouts are 8-bit: grey
(one channel) or RGB (three), scaled to 0..1 while the model works on them.
Writing an image back keeps its format: PNG -> PNG, JPEG -> JPEG, FITS -> FITS
with every HDU and header card of the input (the image HDU gets the new data
and a HISTORY card).

Example:
    >>> img = read_image("cutouts/obj001.fits")     # doctest: +SKIP
    >>> img.data.shape, img.domain                  # doctest: +SKIP
    ((3, 64, 64), 'flux')
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ulisse._io import atomic_write, os_error_reason
from ulisse.cutouts import CUTOUT_SUFFIXES, FITS_SUFFIXES, IMAGE_SUFFIXES, MIN_SIDE, cutout_id, is_cutout_file
from ulisse.errors import CutoutError, InputError

FLUX, EIGHT_BIT = "flux", "8bit"
DOMAINS = (FLUX, EIGHT_BIT)


@dataclass
class Image:
    """One image as a denoiser sees it.

    Attributes:
        id: the file stem (pairs noisy and clean files).
        data: float32 ``C x H x W`` (C = 1 or 3): fluxes for FITS, 0..1 for 8-bit images.
        domain: ``"flux"`` (FITS) or ``"8bit"`` (PNG, JPEG).
        path: the file it came from (None for an array).
        dtype: the FITS data's float type, kept on output (float32 for integer data).
        hdu: the FITS HDU that holds the image.
        flat: a FITS 2-D image (written back 2-D), or an 8-bit grey image.
    """

    id: str
    data: np.ndarray
    domain: str
    path: Path | None = None
    dtype: str = "float32"
    hdu: int = 0
    flat: bool = False

    @property
    def channels(self) -> int:
        return int(self.data.shape[0])

    def with_data(self, data: np.ndarray) -> "Image":
        return replace(self, data=np.asarray(data, dtype=np.float32))

    def to_uint8_rgb(self) -> np.ndarray:
        """``H x W x 3`` uint8 (8-bit images only): the pixels as they would be written."""
        if self.domain != EIGHT_BIT:
            raise InputError(f"{self.path or self.id}: a FITS image has no 8-bit pixels")
        a = to_uint8(self.data)
        return np.repeat(a, 3, axis=0).transpose(1, 2, 0) if a.shape[0] == 1 else a.transpose(1, 2, 0)


def to_uint8(data: np.ndarray) -> np.ndarray:
    """0..1 floats -> uint8 (clipped, rounded)."""
    return np.clip(np.rint(np.nan_to_num(data) * 255.0), 0, 255).astype(np.uint8)


def from_uint8_rgb(rgb: np.ndarray, image_id: str = "array") -> Image:
    """An ``H x W x 3`` (or ``H x W``) uint8 array as an 8-bit :class:`Image`."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise InputError(f"{image_id}: expected a uint8 H x W x 3 or H x W array, got {a.dtype} {tuple(a.shape)}")
    data = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return Image(image_id, data.astype(np.float32) / 255.0, EIGHT_BIT, flat=a.ndim == 2)


def read_image(path: str | Path) -> Image:
    """Read one cutout file as an :class:`Image`.

    Raises:
        CutoutError: missing, empty, unreadable, of an unknown type or of a wrong shape.
    """
    path = Path(path)
    size = path.stat().st_size if path.is_file() else None
    if not size:
        raise CutoutError(path, "no such file" if size is None else "empty file")
    name = path.name.lower()
    reader = _read_fits if name.endswith(FITS_SUFFIXES) else _read_8bit if name.endswith(IMAGE_SUFFIXES) else None
    if reader is None:
        raise CutoutError(path, f"unknown cutout type (expected one of {', '.join(CUTOUT_SUFFIXES)})")
    image = reader(path)
    if min(image.data.shape[1:]) < MIN_SIDE:
        raise CutoutError(path, f"image is {image.data.shape[1]}x{image.data.shape[2]} px, smaller than {MIN_SIDE}x{MIN_SIDE}")
    return image


def _8bit_of(im, path: Path) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise CutoutError(path, f"{im.mode} image: only 8-bit PNG/JPEG (or FITS for float data) can be denoised")
    return np.asarray(im.convert("L" if im.mode in ("L", "LA", "1") else "RGB"))


def _read_8bit(path: Path) -> Image:
    from ulisse.cutouts import read_pil_image

    a = read_pil_image(path, lambda im: _8bit_of(im, path))
    image = from_uint8_rgb(a, cutout_id(path))
    image.path = path
    return image


def _image_hdu(hdul, path) -> int:
    for k, h in enumerate(hdul):
        if getattr(h, "is_image", False) and h.data is not None and h.data.ndim >= 2:
            return k
    raise CutoutError(path, "FITS file has no image data")


def _read_fits(path: Path) -> Image:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            k = _image_hdu(hdul, path)
            raw = hdul[k].data
            data = np.array(raw, dtype=np.float64)
            dtype = "float64" if raw.dtype.kind == "f" and raw.dtype.itemsize == 8 else "float32"
    except CutoutError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise CutoutError(path, f"not a readable FITS file ({exc.__class__.__name__}: {exc})") from None
    if data.ndim == 2:
        data, flat = data[None], True
    elif data.ndim == 3 and data.shape[0] == 3:
        flat = False
    else:
        raise CutoutError(path, f"wrong shape {tuple(data.shape)}: expected a 2-D image or a 3-plane g,r,i cube (3, H, W)")
    if not np.isfinite(data).any():
        raise CutoutError(path, "all pixels are NaN or infinite")
    return Image(cutout_id(path), data.astype(np.float32), FLUX, path, dtype, k, flat)


def write_image(image: Image, path: str | Path, history: str | None = None) -> Path:
    """Write ``image`` to ``path`` in the format of its source (atomically).

    A FITS image is written into a copy of its source file (every HDU and card
    kept) when it has one, else as a new primary HDU.
    """
    path = Path(path)
    if image.domain == EIGHT_BIT:
        return _write_8bit(image, path)
    return _write_fits(image, path, history)


def _write_8bit(image: Image, path: Path) -> Path:
    from PIL import Image as PILImage

    a = to_uint8(image.data)
    pil = PILImage.fromarray(a[0] if image.channels == 1 else a.transpose(1, 2, 0))
    name = path.name.lower()
    fmt = "JPEG" if name.endswith((".jpg", ".jpeg")) else "PNG"
    options = {"quality": 95} if fmt == "JPEG" else {}
    return atomic_write(path, lambda tmp: pil.save(tmp, format=fmt, **options))


def _write_fits(image: Image, path: Path, history: str | None) -> Path:
    from astropy.io import fits

    data = image.data.astype(image.dtype)
    if image.flat:
        data = data[0]

    def write(tmp: Path) -> None:
        if image.path is not None:
            with fits.open(image.path, memmap=False) as hdul:
                hdul = fits.HDUList([h.copy() for h in hdul])
        else:
            hdul = fits.HDUList([fits.PrimaryHDU()])
        hdu = hdul[image.hdu]
        for key in ("BSCALE", "BZERO", "BLANK"):
            hdu.header.remove(key, ignore_missing=True)
        hdu.data = data
        if history:
            hdu.header.add_history(history)
        hdul.writeto(tmp, output_verify="silentfix")

    return atomic_write(path, write)


def make_folder(path: str | Path) -> bool:
    """Make the output folder ``path`` (and its parents) before any work; True if it was not there.

    Raises:
        InputError: ``PATH: cannot make this folder (<reason>)`` (a file there, no permission, ...).
    """
    p = Path(path)
    if p.is_dir():
        return False
    try:
        p.mkdir(parents=True)
    except OSError as exc:
        reason = "a file is there" if p.exists() else os_error_reason(exc)
        raise InputError(f"{p}: cannot make this folder ({reason})") from None
    return True


def cutout_files(inputs: Iterable[str | Path], what: str = "input") -> list[Path]:
    """The cutout files named by ``inputs`` (files, or folders searched at their top level), sorted.

    Raises:
        InputError: a path that does not exist, a folder without cutouts, nothing given.
        CutoutError: a file that is not a cutout.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            kind = "folder" if what in ("noisy", "clean") else "file or folder"  # --noisy and --clean name folders
            raise InputError(f"{p}: no such {kind} ({what} cutouts)")
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and is_cutout_file(f))
            if not found:
                raise InputError(f"{p}: no cutouts ({', '.join(CUTOUT_SUFFIXES)}) in this folder")
            files.extend(found)
        elif p.is_file():
            if not is_cutout_file(p):
                raise CutoutError(p, f"unknown cutout type (expected one of {', '.join(CUTOUT_SUFFIXES)})")
            files.append(p)
        else:
            raise InputError(f"{p}: not a folder or a cutout file ({what})")
    if not files:
        raise InputError(f"no {what} cutouts given")
    return files


def pair_by_stem(noisy: Sequence[Path], clean: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Noisy and clean files with the same stem, in the noisy files' order.

    Raises:
        InputError: no stem is shared, or a stem is used twice on one side.
    """
    def by_stem(files, side):
        out = {}
        for f in files:
            stem = cutout_id(f)
            if stem in out:
                raise InputError(f"{f}: two {side} files have the stem {stem!r} ({out[stem].name} too)")
            out[stem] = f
        return out

    n, c = by_stem(noisy, "noisy"), by_stem(clean, "clean")
    pairs = [(n[s], c[s]) for s in n if s in c]
    if not pairs:
        raise InputError(f"no noisy file has a clean file of the same name ({len(n)} noisy, {len(c)} clean)")
    return pairs


def check_consistent(images: Sequence[Image], what: str) -> tuple[str, int]:
    """The common (domain, channels) of ``images``, else :class:`InputError` naming the odd one."""
    first = images[0]
    for im in images[1:]:
        if im.domain != first.domain:
            raise InputError(f"{im.path}: {what} mixes FITS and 8-bit images ({first.path} is {first.domain})")
        if im.channels != first.channels:
            raise InputError(f"{im.path}: {im.channels} channel(s), but {first.path} has {first.channels}")
    return first.domain, first.channels
