"""Simulated galaxy-scale strong lenses (lenstronomy): g, r, i cutouts with a known Einstein radius.

A labelled set for regression heads (:mod:`ulisse.plugins.heads`): the quantity
to learn is the Einstein radius ``theta_E``. Ground-based imaging in the manner
of HSC/DES-like surveys: 64 x 64 px at 0.2 arcsec/px (12.8 arcsec across), in
nanomaggies (mag = 22.5 - 2.5 log10 f).

Model (per object, all draws from ``numpy.random.default_rng([seed, k])``)
--------------------------------------------------------------------------
* Lens mass: singular isothermal ellipsoid (``SIE``) with Einstein radius
  ``theta_E`` uniform in 0.5-3 arcsec, axis ratio uniform 0.5-1, random position
  angle, centre within +-0.1 arcsec; external shear ``gamma`` uniform 0-0.05.
* Lens light: elliptical Sersic (n uniform 3-5) sharing the mass's centre and,
  within +-10 deg, its position angle (axis ratio uniform 0.6-1). Brighter and
  larger for larger ``theta_E``, as Faber-Jackson makes them (L ~ sigma^4 and
  theta_E ~ sigma^2, so L ~ theta_E^2): r = 19.3 - 5 log10(theta_E / 1") + N(0, 0.6),
  clipped to 16-21.5; half-light radius 0.9 (theta_E / 1")^0.5 arcsec times a
  log-normal scatter of 0.25 dex. Red: g-r 1.3-1.7, r-i 0.4-0.6.
* Source: elliptical Sersic (n uniform 0.7-2.5, half-light radius log-uniform
  0.1-0.5 arcsec, axis ratio 0.5-1), unlensed r uniform 21-23.5, placed uniformly
  in a disk of radius 0.5 theta_E around the lens centre (arcs and rings). Blue:
  g-r 0.1-0.5, r-i 0.0-0.3.
* PSF: Gaussian, FWHM uniform 0.6-1.0 arcsec, the same in g, r and i.
* Noise: Poisson on the sources with an effective gain of 300 e-/nmgy, plus
  Gaussian sky of sigma g, r, i = 0.006, 0.008, 0.012 nmgy/px.
* RGB: ``make_lupton_rgb(i, r, g)`` on bands scaled by i, r, g = 1.0, 1.3, 1.8,
  Q = 8, stretch = 0.15 nmgy (lens galaxies yellow-orange, arcs blue).

Example:
    >>> from ulisse_bench.sim.lenses import simulate_lens_set
    >>> table = simulate_lens_set("sim-lenses", n=100)       # doctest: +SKIP
    >>> table[["id", "theta_E"]].head()                       # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ulisse._io import atomic_write

BANDS = ("g", "r", "i")
PIXEL_SCALE = 0.2  # arcsec / px
SIZE = 64
THETA_E_RANGE = (0.5, 3.0)  # arcsec
SKY_SIGMA = np.array([0.006, 0.008, 0.012])  # nmgy / px, g r i
GAIN = 300.0  # effective electrons per nanomaggy
PSF_FWHM_RANGE = (0.6, 1.0)  # arcsec
RGB_SCALES = np.array([1.8, 1.3, 1.0])  # g r i, multiplied in before Lupton
LUPTON_Q, LUPTON_STRETCH = 8.0, 0.15
LENS_COLOURS = ((1.3, 1.7), (0.4, 0.6))  # (g-r range), (r-i range)
SOURCE_COLOURS = ((0.1, 0.5), (0.0, 0.3))


@dataclass
class SimulatedLens:
    """The parameters of one simulated lens (angles in arcsec or radians, magnitudes AB)."""

    theta_E: float
    lens_q: float
    lens_phi: float
    lens_x: float
    lens_y: float
    shear_gamma: float
    shear_phi: float
    lens_mag_r: float
    lens_R_sersic: float
    lens_n_sersic: float
    lens_light_q: float
    lens_g_r: float
    lens_r_i: float
    source_mag_r: float
    source_R_sersic: float
    source_n_sersic: float
    source_q: float
    source_phi: float
    source_x: float
    source_y: float
    source_g_r: float
    source_r_i: float
    psf_fwhm: float


LABEL_COLUMNS = ["id"] + list(SimulatedLens.__dataclass_fields__)


def draw_lens(rng: np.random.Generator) -> SimulatedLens:
    """Draw one lens system's parameters (see the module docstring for the distributions)."""
    theta_e = rng.uniform(*THETA_E_RANGE)
    phi = rng.uniform(0, np.pi)
    lens_mag = float(np.clip(19.3 - 5.0 * np.log10(theta_e) + rng.normal(0, 0.6), 16.0, 21.5))
    r_src, a_src = 0.5 * theta_e * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    lens_x, lens_y = rng.uniform(-0.1, 0.1, 2)
    return SimulatedLens(
        theta_E=theta_e, lens_q=rng.uniform(0.5, 1.0), lens_phi=phi, lens_x=lens_x, lens_y=lens_y,
        shear_gamma=rng.uniform(0, 0.05), shear_phi=rng.uniform(0, np.pi),
        lens_mag_r=lens_mag, lens_R_sersic=0.9 * np.sqrt(theta_e) * 10 ** rng.normal(0, 0.25),
        lens_n_sersic=rng.uniform(3, 5), lens_light_q=rng.uniform(0.6, 1.0),
        lens_g_r=rng.uniform(*LENS_COLOURS[0]), lens_r_i=rng.uniform(*LENS_COLOURS[1]),
        source_mag_r=rng.uniform(21.0, 23.5), source_R_sersic=float(np.exp(rng.uniform(np.log(0.1), np.log(0.5)))),
        source_n_sersic=rng.uniform(0.7, 2.5), source_q=rng.uniform(0.5, 1.0), source_phi=rng.uniform(0, np.pi),
        source_x=lens_x + r_src * np.cos(a_src), source_y=lens_y + r_src * np.sin(a_src),
        source_g_r=rng.uniform(*SOURCE_COLOURS[0]), source_r_i=rng.uniform(*SOURCE_COLOURS[1]),
        psf_fwhm=rng.uniform(*PSF_FWHM_RANGE),
    )


def _e1e2(q: float, phi: float) -> tuple[float, float]:
    from lenstronomy.Util.param_util import phi_q2_ellipticity

    return phi_q2_ellipticity(phi, q)


def _band_fluxes(mag_r: float, g_r: float, r_i: float) -> np.ndarray:
    """g, r, i fluxes in nanomaggies."""
    return 10 ** (-0.4 * (np.array([mag_r + g_r, mag_r, mag_r - r_i]) - 22.5))


def render(lens: SimulatedLens, rng: np.random.Generator, size: int = SIZE,
           pixel_scale: float = PIXEL_SCALE) -> np.ndarray:
    """The noisy ``(3, size, size)`` g, r, i cube of a lens, in nanomaggies per pixel."""
    import lenstronomy.Util.simulation_util as sim_util
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    data = ImageData(**sim_util.data_configure_simple(size, pixel_scale, 1.0, 1.0))
    psf = PSF(psf_type="GAUSSIAN", fwhm=lens.psf_fwhm, pixel_size=pixel_scale, truncation=4)
    e1, e2 = _e1e2(lens.lens_q, lens.lens_phi)
    g1, g2 = lens.shear_gamma * np.cos(2 * lens.shear_phi), lens.shear_gamma * np.sin(2 * lens.shear_phi)
    kwargs_lens = [{"theta_E": lens.theta_E, "e1": e1, "e2": e2, "center_x": lens.lens_x, "center_y": lens.lens_y},
                   {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0}]
    le1, le2 = _e1e2(lens.lens_light_q, lens.lens_phi + np.deg2rad(rng.uniform(-10, 10)))
    se1, se2 = _e1e2(lens.source_q, lens.source_phi)
    light = LightModel(["SERSIC_ELLIPSE"])
    kw_lens_light = [{"amp": 1.0, "R_sersic": lens.lens_R_sersic, "n_sersic": lens.lens_n_sersic, "e1": le1,
                      "e2": le2, "center_x": lens.lens_x, "center_y": lens.lens_y}]
    kw_source = [{"amp": 1.0, "R_sersic": lens.source_R_sersic, "n_sersic": lens.source_n_sersic, "e1": se1,
                  "e2": se2, "center_x": lens.source_x, "center_y": lens.source_y}]
    # amp = 1 images; each band is a linear combination with its fluxes (total flux / flux at amp = 1)
    for kw in (kw_lens_light, kw_source):
        kw[0]["amp"] = 1.0 / light.total_flux(kw)[0]
    model = ImageModel(data, psf, LensModel(["SIE", "SHEAR"]), light, light,
                       kwargs_numerics={"supersampling_factor": 3})
    lens_img = model.image(kwargs_lens, kw_source, kw_lens_light, source_add=False)
    source_img = model.image(kwargs_lens, kw_source, kw_lens_light, lens_light_add=False)
    lens_f = _band_fluxes(lens.lens_mag_r, lens.lens_g_r, lens.lens_r_i)
    src_f = _band_fluxes(lens.source_mag_r, lens.source_g_r, lens.source_r_i)
    cube = lens_f[:, None, None] * lens_img[None] + src_f[:, None, None] * source_img[None]
    cube = np.clip(cube, 0, None)
    noisy = rng.poisson(cube * GAIN) / GAIN + rng.normal(0, 1, cube.shape) * SKY_SIGMA[:, None, None]
    return noisy.astype(np.float32)


def to_rgb(cube: np.ndarray) -> np.ndarray:
    """Lupton RGB (uint8, H x W x 3, north up) of a g, r, i cube."""
    from astropy.visualization import make_lupton_rgb

    g, r, i = (cube[k].astype(np.float64) * RGB_SCALES[k] for k in range(3))
    with np.errstate(invalid="ignore", divide="ignore"):
        rgb = make_lupton_rgb(i, r, g, minimum=0.0, stretch=LUPTON_STRETCH, Q=LUPTON_Q)
    return np.ascontiguousarray(rgb[::-1])


def simulate_lens(rng: np.random.Generator, size: int = SIZE, pixel_scale: float = PIXEL_SCALE):
    """One lens: ``(cube, parameters dict)``."""
    lens = draw_lens(rng)
    return render(lens, rng, size, pixel_scale), asdict(lens)


def simulate_lens_set(out_dir, n: int = 1200, seed: int = 0, size: int = SIZE, pixel_scale: float = PIXEL_SCALE,
                      progress: bool = True) -> pd.DataFrame:
    """Write ``n`` simulated lenses: ``cutouts/{id}.png`` (uint8 RGB) and ``labels.csv`` (``LABEL_COLUMNS``).

    Object ``k`` (ids ``lens-000001`` ...) uses ``numpy.random.default_rng([seed, k])``,
    so a set is deterministic and its first objects do not depend on ``n``.
    """
    from PIL import Image
    from ulisse.progress import progress_iter

    out = Path(out_dir)
    png_dir = out / "cutouts"
    png_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in progress_iter(range(1, n + 1), desc="simulating lenses", enabled=progress):
        oid = f"lens-{k:06d}"
        cube, params = simulate_lens(np.random.default_rng([seed, k]), size, pixel_scale)
        rgb = to_rgb(cube)
        atomic_write(png_dir / f"{oid}.png", lambda tmp, rgb=rgb: Image.fromarray(rgb).save(tmp, format="PNG"),
                     fsync=False)
        rows.append({"id": oid, **params})
    table = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    atomic_write(out / "labels.csv", table.to_csv(index=False))
    return table


def cached_lens_set(out_dir, n: int = 1200, seed: int = 0, progress: bool = True) -> tuple[pd.DataFrame, bool]:
    """The set of :func:`simulate_lens_set` in ``out_dir``, simulated only if the folder does not hold it already.

    A stored set is reused when ``labels.csv`` has ``n`` rows, its first lens is the one ``seed``
    draws, and every cutout is there. Returns the label table and whether it was simulated now.
    """
    out = Path(out_dir)
    try:
        table = pd.read_csv(out / "labels.csv")
        first = draw_lens(np.random.default_rng([seed, 1])).theta_E
        if (len(table) == n and np.isclose(table["theta_E"].iloc[0], first)
                and all((out / "cutouts" / f"{oid}.png").is_file() for oid in table["id"])):
            return table, False
    except (OSError, ValueError, KeyError, IndexError):
        pass
    return simulate_lens_set(out, n=n, seed=seed, progress=progress), True
