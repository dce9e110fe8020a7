"""SDSS frames -> object cutouts: read a calibrated frame, cut 64 x 64 px around each object, make RGB.

A frame (``frame-{band}-{run:06d}-{camcol}-{field:04d}.fits``) holds in its
primary HDU a 2048 x 1489 float image in nanomaggies with a TAN WCS at
0.396 arcsec/px. The g, r and i frames of one field are not pixel-aligned, so
each band is cut with its own WCS (:class:`astropy.nddata.Cutout2D`); the
three cutouts form a ``(3, H, W)`` g, r, i cube that
:func:`ulisse.cutouts.image_to_rgb` turns into RGB with ``make_lupton_rgb(i, r, g)``,
as SDSS makes its JPEGs, under the index's :class:`~ulisse.cutouts.RGBConfig`.

Objects whose cutout runs off a frame are padded (with zeros after the RGB
conversion) and flagged ``edge``, or skipped with their reason (``edge="skip"``).
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field as dc_field

import numpy as np
import pandas as pd

from ulisse.cutouts import RGBConfig, image_to_rgb

from .sdss_errors import FrameError

LOG = logging.getLogger(__name__)

CUTOUT_SIZE = 64
EDGE_MODES = ("pad", "skip")


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


@dataclass
class FieldCutouts:
    """The cutouts of one field's objects.

    Attributes:
        rows: positions (in the objects table) of the objects cut.
        images: one ``H x W x 3`` uint8 RGB image per object cut.
        edge: for each, whether its cutout ran off a frame (and was padded).
        skipped: ``(id, reason)`` of the objects not cut.
    """

    rows: list[int]
    images: list[np.ndarray]
    edge: list[bool]
    skipped: list[tuple[str, str]]


def cut_field(frames: dict[str, Frame], objects: pd.DataFrame, size: int = CUTOUT_SIZE, edge: str = "pad",
              rgb: RGBConfig = RGBConfig(), progress=None) -> FieldCutouts:
    """Cut every object of ``objects`` (``id``, ``ra``, ``dec``) out of the g, r, i ``frames``.

    Args:
        frames: ``{"g": Frame, "r": Frame, "i": Frame}``.
        objects: one row per object.
        size: cutout side in pixels.
        edge: ``pad`` (keep and flag objects whose cutout runs off a frame) or ``skip``.
        rgb: how the bands become RGB.
        progress: an optional callable, called once per object.
    """
    from astropy.nddata import Cutout2D
    from astropy.nddata.utils import NoOverlapError

    if edge not in EDGE_MODES:
        raise ValueError(f"edge={edge!r}: expected one of {EDGE_MODES}")
    ra = objects["ra"].to_numpy(float)
    dec = objects["dec"].to_numpy(float)
    pixels = {b: frames[b].wcs.world_to_pixel_values(ra, dec) for b in ("g", "r", "i")}
    out = FieldCutouts([], [], [], [])
    for k, oid in enumerate(objects["id"].astype(str)):
        if progress is not None:
            progress()
        if not (np.isfinite(ra[k]) and np.isfinite(dec[k])):
            out.skipped.append((oid, "no ra/dec"))
            continue
        planes, partial, reason = [], [], None
        for b in ("g", "r", "i"):
            x, y = float(pixels[b][0][k]), float(pixels[b][1][k])
            try:
                cut = Cutout2D(frames[b].data, (x, y), (size, size), mode="partial", fill_value=np.nan, copy=True)
            except (NoOverlapError, ValueError):
                reason = f"outside the {b} frame {frames[b].name}"
                break
            (y0, y1), (x0, x1) = cut.bbox_original
            if (y1 - y0 + 1, x1 - x0 + 1) != (size, size):
                partial.append(b)
            planes.append(cut.data)
        if reason is None and partial and edge == "skip":
            reason = f"at the frame edge: the {size}x{size} px cutout runs off the {','.join(partial)} frame(s) (--edge skip)"
        if reason is not None:
            out.skipped.append((oid, reason))
            continue
        try:
            image = image_to_rgb(np.stack(planes), f"object {oid}", rgb)
        except Exception as exc:  # all-NaN and the like
            out.skipped.append((oid, f"no usable cutout ({exc})"))
            continue
        out.rows.append(k)
        out.images.append(image)
        out.edge.append(bool(partial))
    return out
