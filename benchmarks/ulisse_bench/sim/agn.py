"""Simulated SDSS-like gri cutouts of galaxies with and without an AGN.

A labelled benchmark for one-shot AGN retrieval in the manner of ULISSE
(Doorenbos et al. 2022, A&A 666, A171), which retrieved AGN from SDSS gri
cutouts. The real sample cannot be downloaded here, so GalSim draws look-alikes:
64 x 64 px at 0.396 arcsec/px, in nanomaggies (mag = 22.5 - 2.5 log10 f).

Model (per object, all draws from one ``numpy.random.Generator``)
-----------------------------------------------------------------
* Host: de Vaucouleurs bulge (n = 4) plus exponential disk sharing a position
  angle. Bulge half-light radius log-uniform 0.3-2", axis ratio 0.6-1; disk
  half-light radius log-uniform 1-5", inclination with cos i uniform and axis
  ratio q = sqrt(cos^2 i (1 - q0^2) + q0^2), q0 = 0.2. Bulge-to-total fraction
  B/T uniform 0-1, total r magnitude uniform 15.5-18.5, centre offset uniform
  within +-0.5 px.
* Colours (rest-frame-ish, low-z SDSS galaxies): bulge g-r 0.70-0.90,
  r-i 0.35-0.45; disk g-r 0.30-0.55, r-i 0.15-0.30. Each component has its own
  g, r, i flux ratios, so bulge-dominated hosts are redder.
* AGN: P(AGN | B/T) = agn_fraction * (0.25 + 1.5 B/T); since B/T is uniform the
  mean is exactly agn_fraction (0.12 by default) and bulge-dominated hosts are
  7x likelier than pure disks to host one. An AGN is a point source (a
  ``galsim.DeltaFunction`` convolved with the PSF) whose r flux is
  ``agn_contrast`` x host r flux, contrast log-uniform 0.05-1.0, with a power law
  f_nu ~ nu^alpha, alpha uniform in [-1.2, -0.2] (g-r 0.06-0.35, r-i 0.04-0.21:
  bluer than any host).
* PSF: Kolmogorov, FWHM uniform 1.1-1.7", the same in g, r and i.
* Noise: GalSim ``CCDNoise`` per band (Poisson on source + sky, sky subtracted)
  with effective gains g, r, i = 750, 1000, 800 e-/nmgy and sky levels chosen so
  the background sigma is g, r, i = 0.025, 0.030, 0.045 nmgy/px, close to
  typical SDSS frames (sky + read noise folded into one effective sky level).
* RGB: like SkyServer JPEGs, ``make_lupton_rgb(i, r, g)`` on bands scaled by
  i, r, g = 1.0, 1.4, 2.0 (tuned by eye so bulges look yellow-orange and disks
  blue-white, as in SDSS JPEGs), Q = 8, stretch = 0.5 nmgy, minimum 0; the
  array is flipped so +y (north) is up. An r = 17 galaxy's core stays below
  white, the sky is dark grey noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import galsim
import numpy as np
import pandas as pd

from ulisse._io import atomic_write

BANDS = ("g", "r", "i")
SKY_SIGMA = np.array([0.025, 0.030, 0.045])  # background sigma, nmgy/px, g r i
GAIN = np.array([750.0, 1000.0, 800.0])  # effective electrons per nanomaggy, g r i
RGB_SCALES = {"g": 2.0, "r": 1.4, "i": 1.0}  # multiplied into each band before Lupton
LUPTON_Q, LUPTON_STRETCH = 8.0, 0.5
R_MAG_RANGE = (15.5, 18.5)
BULGE_HLR_RANGE, DISK_HLR_RANGE = (0.3, 2.0), (1.0, 5.0)  # arcsec
BULGE_COLOURS = ((0.70, 0.90), (0.35, 0.45))  # (g-r range), (r-i range)
DISK_COLOURS = ((0.30, 0.55), (0.15, 0.30))
AGN_CONTRAST_RANGE = (0.05, 1.0)
AGN_ALPHA_RANGE = (-1.2, -0.2)
PSF_FWHM_RANGE = (1.1, 1.7)  # arcsec
DISK_Q0 = 0.2
EFF_WAVELENGTH = np.array([4770.0, 6231.0, 7625.0])  # SDSS g r i, Angstrom
LABEL_COLUMNS = ["id", "label", "is_agn", "r_mag", "bulge_fraction", "bulge_hlr", "disk_hlr",
                 "inclination_deg", "psf_fwhm", "agn_contrast", "g_r", "r_i"]


@dataclass
class HostGalaxy:
    """A bulge + disc host galaxy's parameters, shared by the simulators (sizes in arcsec, angles in degrees)."""

    r_mag: float
    bulge_fraction: float
    bulge_hlr: float
    disk_hlr: float
    inclination_deg: float
    position_angle_deg: float
    dx: float
    dy: float
    bulge_g_r: float
    bulge_r_i: float
    disk_g_r: float
    disk_r_i: float
    psf_fwhm: float


@dataclass
class SimulatedObject(HostGalaxy):
    """Parameters of one simulated object: a host galaxy and, for AGN, its nucleus."""

    bulge_q: float
    is_agn: bool
    agn_contrast: float  # AGN / host flux in r; 0 for galaxies
    agn_alpha: float  # power-law index f_nu ~ nu^alpha (drawn for all, used for AGN)
    g_r: float  # host colours
    r_i: float
    noise_seed: int


def colour_ratios(g_r: float, r_i: float) -> np.ndarray:
    """Return the (g, r, i) fluxes relative to r for the given colours."""
    return np.array([10 ** (-0.4 * g_r), 1.0, 10 ** (0.4 * r_i)])


def agn_probability(bulge_fraction, agn_fraction: float = 0.12):
    """P(AGN | B/T) = agn_fraction (0.25 + 1.5 B/T), clipped to [0, 1]; averages agn_fraction for uniform B/T."""
    return np.clip(agn_fraction * (0.25 + 1.5 * np.asarray(bulge_fraction)), 0.0, 1.0)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw_object(rng: np.random.Generator, *, is_agn: bool | None = None, agn_fraction: float = 0.12,
                pixel_scale: float = 0.396) -> SimulatedObject:
    """Draw the parameters of one object.

    The host is drawn first and every draw happens whatever ``is_agn`` is, so two
    generators with the same state give the same host with and without an AGN.
    """
    r_mag = rng.uniform(*R_MAG_RANGE)
    bt = rng.uniform(0.0, 1.0)
    bulge_hlr, disk_hlr = _log_uniform(rng, *BULGE_HLR_RANGE), _log_uniform(rng, *DISK_HLR_RANGE)
    bulge_q, cos_i = rng.uniform(0.6, 1.0), rng.uniform(0.0, 1.0)
    pa = rng.uniform(0.0, 180.0)
    dx, dy = rng.uniform(-0.5, 0.5, size=2) * pixel_scale
    bgr, bri = rng.uniform(*BULGE_COLOURS[0]), rng.uniform(*BULGE_COLOURS[1])
    dgr, dri = rng.uniform(*DISK_COLOURS[0]), rng.uniform(*DISK_COLOURS[1])
    psf_fwhm = rng.uniform(*PSF_FWHM_RANGE)
    u_label = rng.uniform()
    contrast = _log_uniform(rng, *AGN_CONTRAST_RANGE)
    alpha = rng.uniform(*AGN_ALPHA_RANGE)
    noise_seed = int(rng.integers(1, 2**31 - 1))
    if is_agn is None:
        is_agn = bool(u_label < agn_probability(bt, agn_fraction))
    host = bt * colour_ratios(bgr, bri) + (1 - bt) * colour_ratios(dgr, dri)
    return SimulatedObject(
        r_mag=r_mag, bulge_fraction=bt, bulge_hlr=bulge_hlr, bulge_q=bulge_q, disk_hlr=disk_hlr,
        inclination_deg=float(np.degrees(np.arccos(cos_i))), position_angle_deg=pa, dx=float(dx), dy=float(dy),
        bulge_g_r=bgr, bulge_r_i=bri, disk_g_r=dgr, disk_r_i=dri, psf_fwhm=psf_fwhm, is_agn=bool(is_agn),
        agn_contrast=contrast if is_agn else 0.0, agn_alpha=alpha,
        g_r=float(-2.5 * np.log10(host[0] / host[1])), r_i=float(2.5 * np.log10(host[2] / host[1])),
        noise_seed=noise_seed)


def render(obj: SimulatedObject, size: int = 64, pixel_scale: float = 0.396) -> np.ndarray:
    """Draw ``obj`` as a noisy (3, size, size) float32 g, r, i cube in nanomaggies per pixel."""
    psf = galsim.Kolmogorov(fwhm=obj.psf_fwhm)
    cos_i = np.cos(np.radians(obj.inclination_deg))
    beta = obj.position_angle_deg * galsim.degrees
    disk_q = np.sqrt(cos_i**2 * (1 - DISK_Q0**2) + DISK_Q0**2)
    host_r = 10 ** ((22.5 - obj.r_mag) / 2.5)

    def draw(profile: galsim.GSObject) -> np.ndarray:
        conv = galsim.Convolve(profile.shift(obj.dx, obj.dy), psf)
        return conv.drawImage(nx=size, ny=size, scale=pixel_scale).array

    cube = np.zeros((3, size, size))
    components = [
        (obj.bulge_fraction, lambda: galsim.DeVaucouleurs(half_light_radius=obj.bulge_hlr)
         .shear(q=obj.bulge_q, beta=beta), colour_ratios(obj.bulge_g_r, obj.bulge_r_i)),
        (1 - obj.bulge_fraction, lambda: galsim.Exponential(half_light_radius=obj.disk_hlr)
         .shear(q=disk_q, beta=beta), colour_ratios(obj.disk_g_r, obj.disk_r_i)),
        (obj.agn_contrast, lambda: galsim.DeltaFunction(),
         (EFF_WAVELENGTH[1] / EFF_WAVELENGTH) ** obj.agn_alpha),  # f_nu ratio nu^alpha
    ]
    for frac, make, ratios in components:
        if frac > 0:
            cube += (frac * host_r * ratios)[:, None, None] * draw(make())[None]
    return add_sky_noise(cube, obj.noise_seed, pixel_scale)


def add_sky_noise(cube: np.ndarray, noise_seed: int, pixel_scale: float = 0.396) -> np.ndarray:
    """SDSS-like noise on a noiseless (3, H, W) g, r, i cube in nanomaggies: ``CCDNoise`` per band, sky subtracted."""
    dev = galsim.BaseDeviate(noise_seed)
    out = np.array(cube, dtype=np.float64)
    for k in range(3):
        img = galsim.Image(out[k], scale=pixel_scale)
        img.addNoise(galsim.CCDNoise(dev, sky_level=SKY_SIGMA[k] ** 2 * GAIN[k], gain=GAIN[k]))
        out[k] = img.array
    return out.astype(np.float32)


def simulate_cutout(rng: np.random.Generator, *, is_agn: bool | None = None, size: int = 64,
                    pixel_scale: float = 0.396, agn_fraction: float = 0.12) -> tuple[np.ndarray, dict]:
    """Simulate one cutout.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw (GalSim's noise deviate is seeded from it).
    is_agn : bool or None
        Force an AGN (True) or a plain galaxy (False); None draws the label with
        :func:`agn_probability`.
    size, pixel_scale : int, float
        Cutout side in pixels and arcsec per pixel.
    agn_fraction : float
        Mean AGN fraction used when ``is_agn`` is None.

    Returns
    -------
    cube : numpy.ndarray
        float32 array (3, size, size): g, r, i in nanomaggies per pixel.
    params : dict
        The :class:`SimulatedObject` fields.
    """
    obj = draw_object(rng, is_agn=is_agn, agn_fraction=agn_fraction, pixel_scale=pixel_scale)
    return render(obj, size, pixel_scale), asdict(obj)


def to_rgb(cube: np.ndarray) -> np.ndarray:
    """Lupton RGB (uint8, H x W x 3, north up) from a g, r, i cube, SDSS-JPEG-like."""
    from astropy.visualization import make_lupton_rgb

    g, r, i = (cube[k].astype(np.float64) * RGB_SCALES[b] for k, b in enumerate(BANDS))
    with np.errstate(invalid="ignore", divide="ignore"):  # astropy divides by zero intensity in np.where
        rgb = make_lupton_rgb(i, r, g, minimum=0.0, stretch=LUPTON_STRETCH, Q=LUPTON_Q)
    return np.ascontiguousarray(rgb[::-1])


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"), fsync=False)


def _write_fits(path: Path, cube: np.ndarray, pixel_scale: float) -> None:
    from astropy.io import fits

    hdu = fits.PrimaryHDU(cube)
    hdu.header["BUNIT"] = ("nanomaggy", "per pixel; mag = 22.5 - 2.5 log10(f)")
    hdu.header["BANDS"] = ("g,r,i", "order of the first axis")
    hdu.header["PIXSCALE"] = (pixel_scale, "arcsec / pixel")
    atomic_write(path, lambda tmp: hdu.writeto(tmp), fsync=False)


def simulate_agn_set(out_dir, n: int = 2000, agn_fraction: float = 0.12, seed: int = 0, size: int = 64,
                     pixel_scale: float = 0.396, write_fits: bool = False, progress: bool = True) -> pd.DataFrame:
    """Write a labelled set of simulated cutouts.

    Object ``k`` (ids ``sim-000001`` ...) uses ``numpy.random.default_rng([seed, k])``,
    so a set is deterministic and its first objects do not depend on ``n``.

    Parameters
    ----------
    out_dir : str or Path
        Receives ``cutouts/{id}.png`` (uint8 RGB), ``cutouts_fits/{id}.fits``
        (if ``write_fits``; (3, H, W) g, r, i cube) and ``labels.csv``.
    n, agn_fraction, seed, size, pixel_scale : see :func:`simulate_cutout`.
    write_fits : bool
        Also write the nanomaggy cubes as FITS.
    progress : bool
        Show progress (a bar on a terminal, log lines otherwise).

    Returns
    -------
    pandas.DataFrame
        The label table (columns ``LABEL_COLUMNS``), as written to ``labels.csv``.
    """
    def one(rng):
        cube, p = simulate_cutout(rng, size=size, pixel_scale=pixel_scale, agn_fraction=agn_fraction)
        return cube, {**p, "label": "AGN" if p["is_agn"] else "galaxy", "is_agn": int(p["is_agn"])}

    return write_labelled_set(out_dir, one, n, seed, LABEL_COLUMNS, pixel_scale=pixel_scale,
                              write_fits=write_fits, progress=progress)


def write_labelled_set(out_dir, simulate_one, n: int, seed: int, columns: list[str], *, prefix: str = "sim",
                       pixel_scale: float = 0.396, write_fits: bool = False, progress: bool = True) -> pd.DataFrame:
    """Write ``n`` simulated cutouts and their ``labels.csv``; object ``k`` is drawn from ``default_rng([seed, k])``.

    ``simulate_one(rng)`` returns a (3, H, W) g, r, i cube in nanomaggies and a dict of
    its labels and parameters (``columns`` other than ``id``).
    """
    from ulisse.progress import progress_iter

    out = Path(out_dir)
    png_dir, fits_dir = out / "cutouts", out / "cutouts_fits"
    png_dir.mkdir(parents=True, exist_ok=True)
    if write_fits:
        fits_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in progress_iter(range(1, n + 1), desc="simulating", enabled=progress):
        oid = f"{prefix}-{k:06d}"
        cube, p = simulate_one(np.random.default_rng([seed, k]))
        _write_png(png_dir / f"{oid}.png", to_rgb(cube))
        if write_fits:
            _write_fits(fits_dir / f"{oid}.fits", cube, pixel_scale)
        rows.append({**p, "id": oid})
    table = pd.DataFrame(rows, columns=columns)
    atomic_write(out / "labels.csv", table.to_csv(index=False))
    return table
