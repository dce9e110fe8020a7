"""Simulated SDSS-like gri cutouts of disc galaxies: smooth, with spiral arms, or with a tidal stream.

The extended-morphology task of the discovery benchmark (:mod:`ulisse_bench.discovery`):
the AGN task rewards features that look at the nucleus; this one checks that a
setting good for nuclei does not lose structure away from the centre. Same
survey model as :mod:`ulisse_bench.sim.agn` (64 x 64 px at 0.396 arcsec/px,
Kolmogorov PSF, SDSS-like noise, Lupton RGB), brighter and larger discs so that
arms and streams are visible.

Model (per object, all draws from one ``numpy.random.Generator``; every draw happens
whatever the class, so the host does not tell the class)
-----------------------------------------------------------------------------------
* Host: de Vaucouleurs bulge (B/T uniform 0-0.4, half-light radius log-uniform
  0.3-1.5") and exponential disc (half-light radius log-uniform 2-5", cos i
  uniform 0.35-1, thickness q0 = 0.2), total r magnitude uniform 14.5-17, bulge
  and disc colours as in the AGN set, centre offset within +-0.5 px.
* ``spiral``: the disc's face-on surface brightness times
  ``1 + A w(r) (8/3 cos^4(psi/2) - 1)``, ``psi = m (phi - phi0) - m ln(r / h) / tan(pitch)``
  (a logarithmic spiral, m = 2 or 3, pitch 12-30 deg, amplitude A uniform 0.4-0.9,
  ``w = 1 - exp(-(r / h)^2)`` so the arms start outside the bulge); disc flux unchanged.
* ``tidal``: a stream, an arc of radius 1.6-2.8 disc half-light radii (4-10"),
  70-200 deg long, Gaussian cross-section of 0.4-1.0", holding 5-15 % of the
  host's flux in the disc's colours.
* ``smooth``: the host alone.
* Classes: ``spiral`` with probability ``spiral_fraction`` (0.12), ``tidal`` with
  ``tidal_fraction`` (0.12), else ``smooth``.

The disc (with arms) and the stream are drawn on a 3x finer grid and convolved
with the PSF by GalSim (``InterpolatedImage``); the bulge is drawn analytically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import galsim
import numpy as np
import pandas as pd

from .agn import HostGalaxy, BULGE_COLOURS, DISK_COLOURS, DISK_Q0, PSF_FWHM_RANGE, _log_uniform, add_sky_noise, colour_ratios, \
    write_labelled_set

CLASSES = ("smooth", "spiral", "tidal")
R_MAG_RANGE = (14.5, 17.0)
BULGE_FRACTION_RANGE = (0.0, 0.4)
BULGE_HLR_RANGE, DISK_HLR_RANGE = (0.3, 1.5), (2.0, 5.0)
COS_I_RANGE = (0.35, 1.0)
ARM_AMPLITUDE_RANGE, ARM_PITCH_RANGE = (0.4, 0.9), (12.0, 30.0)
STREAM_RADIUS_RANGE, STREAM_RADIUS_ARCSEC = (1.6, 2.8), (4.0, 10.0)
STREAM_ARC_RANGE, STREAM_WIDTH_RANGE, STREAM_FLUX_RANGE = (70.0, 200.0), (0.4, 1.0), (0.05, 0.15)
OVERSAMPLE = 3
LABEL_COLUMNS = ["id", "label", "r_mag", "bulge_fraction", "bulge_hlr", "disk_hlr", "inclination_deg", "psf_fwhm",
                 "arm_count", "arm_pitch_deg", "arm_amplitude", "stream_radius", "stream_arc_deg", "stream_flux"]


@dataclass
class DiscGalaxy(HostGalaxy):
    """Parameters of one simulated disc galaxy: a host galaxy and its spiral arms or tidal stream."""

    label: str
    arm_count: int  # 0 unless spiral
    arm_pitch_deg: float
    arm_amplitude: float
    arm_phase_deg: float
    stream_radius: float  # 0 unless tidal
    stream_arc_deg: float
    stream_start_deg: float
    stream_width: float
    stream_flux: float  # fraction of the host's flux
    noise_seed: int


def draw_galaxy(rng: np.random.Generator, *, label: str | None = None, spiral_fraction: float = 0.12,
                tidal_fraction: float = 0.12, pixel_scale: float = 0.396) -> DiscGalaxy:
    """Draw one galaxy's parameters; ``label`` forces a class (same host whatever it is)."""
    r_mag = rng.uniform(*R_MAG_RANGE)
    bt = rng.uniform(*BULGE_FRACTION_RANGE)
    bulge_hlr, disk_hlr = _log_uniform(rng, *BULGE_HLR_RANGE), _log_uniform(rng, *DISK_HLR_RANGE)
    cos_i, pa = rng.uniform(*COS_I_RANGE), rng.uniform(0.0, 180.0)
    dx, dy = rng.uniform(-0.5, 0.5, size=2) * pixel_scale
    bgr, bri = rng.uniform(*BULGE_COLOURS[0]), rng.uniform(*BULGE_COLOURS[1])
    dgr, dri = rng.uniform(*DISK_COLOURS[0]), rng.uniform(*DISK_COLOURS[1])
    psf_fwhm = rng.uniform(*PSF_FWHM_RANGE)
    u_label = rng.uniform()
    arms = 2 if rng.uniform() < 0.7 else 3
    pitch, amp, phase = rng.uniform(*ARM_PITCH_RANGE), rng.uniform(*ARM_AMPLITUDE_RANGE), rng.uniform(0.0, 360.0)
    s_radius = float(np.clip(rng.uniform(*STREAM_RADIUS_RANGE) * disk_hlr, *STREAM_RADIUS_ARCSEC))
    s_arc, s_start = rng.uniform(*STREAM_ARC_RANGE), rng.uniform(0.0, 360.0)
    s_width, s_flux = rng.uniform(*STREAM_WIDTH_RANGE), rng.uniform(*STREAM_FLUX_RANGE)
    noise_seed = int(rng.integers(1, 2**31 - 1))
    if label is None:
        label = "spiral" if u_label < spiral_fraction else "tidal" if u_label < spiral_fraction + tidal_fraction else "smooth"
    if label not in CLASSES:
        raise ValueError(f"label {label!r}: expected one of {', '.join(CLASSES)}")
    spiral, tidal = label == "spiral", label == "tidal"
    return DiscGalaxy(
        label=label, r_mag=r_mag, bulge_fraction=bt, bulge_hlr=bulge_hlr, disk_hlr=disk_hlr,
        inclination_deg=float(np.degrees(np.arccos(cos_i))), position_angle_deg=pa, dx=float(dx), dy=float(dy),
        bulge_g_r=bgr, bulge_r_i=bri, disk_g_r=dgr, disk_r_i=dri, psf_fwhm=psf_fwhm,
        arm_count=arms if spiral else 0, arm_pitch_deg=pitch if spiral else 0.0, arm_amplitude=amp if spiral else 0.0,
        arm_phase_deg=phase, stream_radius=s_radius if tidal else 0.0, stream_arc_deg=s_arc if tidal else 0.0,
        stream_start_deg=s_start, stream_width=s_width, stream_flux=s_flux if tidal else 0.0, noise_seed=noise_seed)


def disc_image(g: DiscGalaxy, size: int, scale: float) -> np.ndarray:
    """The disc's surface brightness (with arms for spirals) on a ``size`` x ``size`` grid, summing to 1."""
    c = (np.arange(size) - (size - 1) / 2) * scale
    x, y = np.meshgrid(c - g.dx, c - g.dy)
    beta, cos_i = np.radians(g.position_angle_deg), np.cos(np.radians(g.inclination_deg))
    q = np.sqrt(cos_i**2 * (1 - DISK_Q0**2) + DISK_Q0**2)
    u = x * np.cos(beta) + y * np.sin(beta)  # along the major axis
    v = (-x * np.sin(beta) + y * np.cos(beta)) / q  # deprojected minor axis
    h = g.disk_hlr / 1.678
    r = np.hypot(u, v)
    img = np.exp(-r / h)
    if g.arm_count:
        phi = np.arctan2(v, u)
        psi = g.arm_count * (phi - np.radians(g.arm_phase_deg)) - g.arm_count * np.log(np.maximum(r, 1e-3 * h) / h) \
            / np.tan(np.radians(g.arm_pitch_deg))
        w = 1 - np.exp(-((r / h) ** 2))
        img = img * (1 + g.arm_amplitude * w * (8 / 3 * np.cos(psi / 2) ** 4 - 1))
    return img / img.sum()


def stream_image(g: DiscGalaxy, size: int, scale: float) -> np.ndarray:
    """A tidal stream: an arc with a Gaussian cross-section and tapered ends, summing to 1."""
    c = (np.arange(size) - (size - 1) / 2) * scale
    x, y = np.meshgrid(c - g.dx, c - g.dy)
    r, phi = np.hypot(x, y), np.degrees(np.arctan2(y, x))
    along = (phi - g.stream_start_deg) % 360.0  # degrees from the start of the arc
    t = along / g.stream_arc_deg
    taper = np.where(t <= 1.0, np.sin(np.pi * np.clip(t, 0, 1)) ** 0.5, 0.0)
    img = np.exp(-0.5 * ((r - g.stream_radius) / g.stream_width) ** 2) * taper
    return img / img.sum()


def render_galaxy(g: DiscGalaxy, size: int = 64, pixel_scale: float = 0.396) -> np.ndarray:
    """Draw ``g`` as a noisy (3, size, size) float32 g, r, i cube in nanomaggies per pixel."""
    psf = galsim.Kolmogorov(fwhm=g.psf_fwhm)
    host_r = 10 ** ((22.5 - g.r_mag) / 2.5)
    fine, fine_scale = size * OVERSAMPLE, pixel_scale / OVERSAMPLE

    def draw(profile: galsim.GSObject) -> np.ndarray:
        return galsim.Convolve(profile, psf).drawImage(nx=size, ny=size, scale=pixel_scale).array

    def draw_fine(image: np.ndarray) -> np.ndarray:
        return draw(galsim.InterpolatedImage(galsim.Image(image, scale=fine_scale), flux=1.0))

    cos_i = np.cos(np.radians(g.inclination_deg))
    bulge = galsim.DeVaucouleurs(half_light_radius=g.bulge_hlr).shear(q=max(0.6, cos_i), beta=g.position_angle_deg * galsim.degrees)
    disc_colour = colour_ratios(g.disk_g_r, g.disk_r_i)
    host_flux = host_r * (1 - g.stream_flux)
    cube = (g.bulge_fraction * host_flux * colour_ratios(g.bulge_g_r, g.bulge_r_i))[:, None, None] \
        * draw(bulge.shift(g.dx, g.dy))[None]
    cube = cube + ((1 - g.bulge_fraction) * host_flux * disc_colour)[:, None, None] \
        * draw_fine(disc_image(g, fine, fine_scale))[None]
    if g.stream_flux > 0:
        cube = cube + (g.stream_flux * host_r * disc_colour)[:, None, None] * draw_fine(stream_image(g, fine, fine_scale))[None]
    return add_sky_noise(cube, g.noise_seed, pixel_scale)


def simulate_morphology_set(out_dir, n: int = 2000, seed: int = 0, spiral_fraction: float = 0.12,
                            tidal_fraction: float = 0.12, size: int = 64, pixel_scale: float = 0.396,
                            write_fits: bool = False, progress: bool = True) -> pd.DataFrame:
    """Write a labelled morphology set: ``cutouts/morph-000001.png`` ... and ``labels.csv`` (column ``label``).

    Object ``k`` uses ``numpy.random.default_rng([seed, k])``, as in :func:`ulisse_bench.sim.agn.simulate_agn_set`.
    """
    def one(rng):
        g = draw_galaxy(rng, spiral_fraction=spiral_fraction, tidal_fraction=tidal_fraction, pixel_scale=pixel_scale)
        return render_galaxy(g, size, pixel_scale), asdict(g)

    return write_labelled_set(out_dir, one, n, seed, LABEL_COLUMNS, prefix="morph", pixel_scale=pixel_scale,
                              write_fits=write_fits, progress=progress)
