"""SDSS frames -> north-up, east-left object cutouts on one tangent-plane grid per object.

SDSS frames are drift-scan strips: their pixel grid is turned about 90 degrees
from north up (and by the stripe's inclination on inclined stripes), and the
g, r, i frames of a field are not pixel-aligned. Each object's cutout is made
the way SkyServer's ImgCutout makes its JPEGs: a TAN grid centred on the
object, north up and east left, at :attr:`CutoutGeometry.scale` arcsec/px
(default that of ``ulisse fetch cutouts``, 0.4), onto which every band is
resampled with :func:`reproject.reproject_interp` from its own frame's WCS. The
bands then agree to a small fraction of a pixel, and an index built from SAS
frames holds images oriented as ImgCutout's.

The three planes form a ``(3, H, W)`` g, r, i cube, row 0 north and column 0
east (as an image is shown), that :func:`ulisse.cutouts.image_to_rgb` turns
into RGB with ``make_lupton_rgb(i, r, g)`` under the index's
:class:`~ulisse.cutouts.RGBConfig`.

Objects whose grid runs off a frame are skipped with their reason
(``edge="skip"``, the default), or kept with the missing pixels set to zero and
the fraction of the cutout so padded recorded (``edge="pad"``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ulisse.cutouts import RGBConfig, image_to_rgb

from .config import BANDS, CUTOUT_SCALE, CUTOUT_SIZE
from .frames import Frame

LOG = logging.getLogger(__name__)

EDGE_MODES = ("skip", "pad")
from ulisse.geometry import (MANIFEST_KEY, PNG_KEY, SIDECAR, check_prototype,  # noqa: F401 (re-exported)
                             geometry_warning, prototype_geometry)


@dataclass(frozen=True)
class CutoutGeometry:
    """How a cutout is laid on the sky; recorded in the index manifest under ``cutout_geometry``.

    Attributes:
        size: side in pixels.
        scale: arcsec per pixel.
        orientation: ``north-up-east-left`` (the only one made here, as ImgCutout's).
        projection: ``TAN``, centred on the object (at pixel ``(size - 1) / 2`` from the first, both axes).
        resampling: how the frames are resampled onto the grid.
        bands: the frames' bands, as the cube's planes.
        colour: how the planes become RGB.
    """

    size: int = CUTOUT_SIZE
    scale: float = CUTOUT_SCALE
    orientation: str = "north-up-east-left"
    projection: str = "TAN"
    resampling: str = "reproject_interp bilinear"
    bands: str = ",".join(BANDS)
    colour: str = "make_lupton_rgb(i, r, g)"

    def __post_init__(self):
        from ulisse.errors import InputError

        if not 8 <= int(self.size) <= 1024:
            raise InputError(f"--size {self.size}: expected 8 to 1024 px")
        if not (math.isfinite(self.scale) and 0.01 <= self.scale <= 60):
            raise InputError(f"--scale {self.scale}: expected 0.01 to 60 arcsec per pixel")

    def wcs(self, ra: float, dec: float):
        """The cutout's TAN WCS (FITS order: y up = north, x left = east)."""
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [float(ra), float(dec)]
        w.wcs.crpix = [(self.size + 1) / 2.0, (self.size + 1) / 2.0]
        w.wcs.cdelt = [-self.scale / 3600.0, self.scale / 3600.0]
        w.wcs.radesys = "ICRS"
        return w

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.size}x{self.size} px at {self.scale:g} arcsec/px, {self.orientation}"


def _frame_window(frame: Frame, x: float, y: float, half: int):
    """The part of ``frame`` around pixel (x, y), with its WCS; None when it is off the frame."""
    ny, nx = frame.data.shape
    x0, x1 = max(0, int(math.floor(x)) - half), min(nx, int(math.ceil(x)) + half + 1)
    y0, y1 = max(0, int(math.floor(y)) - half), min(ny, int(math.ceil(y)) + half + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    wcs = frame.wcs.deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix - [x0, y0]
    return frame.data[y0:y1, x0:x1], wcs


def cut_object(frames: dict[str, Frame], ra: float, dec: float, geometry: CutoutGeometry = CutoutGeometry()):
    """One object's g, r, i planes on its north-up grid.

    Returns:
        ``(planes, padded)``: float32 ``(3, size, size)`` (row 0 north, column 0 east; NaN where no
        frame pixel lies) and the fraction of the cutout's pixels missing from at least one band;
        ``(None, 1.0)`` when the object is off a frame.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales
    from reproject import reproject_interp

    target = geometry.wcs(ra, dec)
    n = geometry.size
    planes = np.full((3, n, n), np.nan, np.float32)
    covered = np.ones((n, n), bool)
    for k, band in enumerate(BANDS):
        frame = frames[band]
        pixel_arcsec = float(np.mean(proj_plane_pixel_scales(frame.wcs))) * 3600
        half = int(math.ceil(n * geometry.scale / pixel_arcsec * math.sqrt(2) / 2)) + 3
        x, y = frame.wcs.world_to_pixel_values(ra, dec)
        window = _frame_window(frame, float(x), float(y), half) if np.isfinite([x, y]).all() else None
        if window is None:
            return None, 1.0
        # a 64 px tangent-plane grid lies well inside the projection's domain: no round-trip check needed
        data, footprint = reproject_interp(window, target, shape_out=(n, n), order="bilinear",
                                           return_footprint=True, roundtrip_coords=False)
        ok = (footprint > 0) & np.isfinite(data)
        if not ok.any():
            return None, 1.0
        planes[k] = np.where(ok, data, np.nan)
        covered &= ok
    return planes[:, ::-1, :].copy(), float(1.0 - covered.mean())


@dataclass
class FieldCutouts:
    """The cutouts of one field's objects.

    Attributes:
        rows: positions (in the objects table) of the objects cut.
        images: one ``H x W x 3`` uint8 RGB image per object cut (north up, east left).
        padded: for each, the fraction of its pixels padded because its grid ran off a frame.
        skipped: ``(id, reason)`` of the objects not cut.
    """

    rows: list[int]
    images: list[np.ndarray]
    padded: list[float]
    skipped: list[tuple[str, str]]


def cut_field(frames: dict[str, Frame], objects: pd.DataFrame, geometry: CutoutGeometry = CutoutGeometry(),
              edge: str = "skip", rgb: RGBConfig = RGBConfig(), progress=None) -> FieldCutouts:
    """Cut every object of ``objects`` (``id``, ``ra``, ``dec``) out of the g, r, i ``frames``.

    Args:
        frames: ``{"g": Frame, "r": Frame, "i": Frame}``.
        objects: one row per object.
        geometry: the cutouts' grid.
        edge: ``skip`` objects whose grid runs off a frame, or ``pad`` them (zeros, fraction recorded).
        rgb: how the bands become RGB.
        progress: an optional callable, called once per object.
    """
    if edge not in EDGE_MODES:
        raise ValueError(f"edge={edge!r}: expected one of {EDGE_MODES}")
    out = FieldCutouts([], [], [], [])
    ras, decs = objects["ra"].to_numpy(float), objects["dec"].to_numpy(float)
    for k, oid in enumerate(objects["id"].astype(str)):
        if progress is not None:
            progress()
        if not (np.isfinite(ras[k]) and np.isfinite(decs[k])):
            out.skipped.append((oid, "no ra/dec"))
            continue
        planes, padded = cut_object(frames, ras[k], decs[k], geometry)
        if planes is None:
            out.skipped.append((oid, "outside the frames"))
            continue
        if padded > 0 and edge == "skip":
            out.skipped.append((oid, f"at the frame edge: {padded:.0%} of its cutout is off the frames (--edge skip)"))
            continue
        try:
            image = image_to_rgb(planes, f"object {oid}", rgb)
        except Exception as exc:  # all-NaN and the like
            out.skipped.append((oid, f"no usable cutout ({exc})"))
            continue
        out.rows.append(k)
        out.images.append(image)
        out.padded.append(round(padded, 4))
    return out
