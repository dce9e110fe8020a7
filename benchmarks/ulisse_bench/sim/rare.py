"""Simulated SDSS-like gri cutouts of ordinary galaxies with a few rare interesting objects and artefacts.

The rare-object set of ``ulisse benchmark anomalies`` (:mod:`ulisse_bench.anomalies`):
anomaly discovery must find the few interesting objects among thousands of ordinary
galaxies, while artefacts, which are anomalous too, crowd the top of the list. Same
survey model as :mod:`ulisse_bench.sim.agn` (64 x 64 px at 0.396 arcsec/px, SDSS-like
noise and gains, Lupton RGB as SkyServer JPEGs), so the PNGs look like the AGN set's.

Classes and kinds (each object ``k`` draws from ``numpy.random.default_rng([seed, k])``;
which objects are rare is a seeded permutation, ``default_rng([seed, 0])``)
------------------------------------------------------------------------------------
* ``ordinary`` / ``galaxy``: a bulge + disc host exactly as in the AGN set
  (:func:`ulisse_bench.sim.agn.draw_object`, no AGN); 30 % of them have an unrelated
  companion galaxy 5-12" away, 1-3 mag fainter (no tidal feature), as real fields do.
  With ``population="structured"`` (the benchmark's default; ``"smooth"`` is its first
  set) ordinary galaxies look more like those of a real field: every disc that is seen
  (bulge fraction below 0.7, cos i above 0.35) has 2 or 3 clumpy blue logarithmic spiral
  arms (pitch 10-30 deg, from 0.5 to 2.5 disc half-light radii, 0.25-0.5" thick, 25-50 %
  of the disc's flux added, star-forming clumps along them; at SDSS resolution most are
  hints, as in SDSS images of galaxies this faint), and 30 % of the cutouts hold an
  unsaturated foreground star (r 15.5-20.5, Moffat beta 3, 6-28 px from the centre). The
  label column ``structure`` says which (``arms``, ``star``, ``companion``, joined by
  ``+``). Artefact hosts are drawn the same way; the interesting kinds are unchanged.
  Set by eye, before any ranking ran on it: on the smooth set any structure at all (a
  ring's clumps, an arc) stood out, and the plain anomaly list found 28 of the 60
  interesting objects in its top 50, against 11 on the set the issue was measured on.
* ``interesting`` / ``arc``: a red early-type lens galaxy (bulge only, r 16.5-18.5,
  half-light radius 0.6-1.6") and a blue tangential arc (g-r 0.1-0.4) at the Einstein
  radius 2-5", 60-300 deg long, 0.15-0.4" thick, holding 20-60 % of the lens's r flux
  (SDSS-found arcs around luminous red galaxies, as in CASSOWARY, are of this size).
* ``interesting`` / ``merger``: two hosts 2.5-7" apart (flux ratio 0.3-1) and a
  curved tidal tail from each (radius of curvature 4-12", 4-12" long, 0.5-1.2" thick,
  8-25 % of its galaxy's flux, in disc colours), tapering outwards.
* ``interesting`` / ``ring``: a compact core (de Vaucouleurs, 0.3-0.8", 20-50 % of the
  flux) inside a clumpy blue ring of radius 2.5-6", 0.4-1" thick, seen at cos i 0.5-1,
  its centre up to 0.3 radii from the core (collisional rings).
* ``artefact`` / ``trail``: an ordinary galaxy crossed by a satellite trail: a straight
  line at a random angle through a random point of the cutout, peak 0.15-2 nmgy/px,
  as thick as the PSF, present in each band with probability 0.7 (at least one) and
  shifted 0-6 px across between bands (the filters are exposed one after the other).
* ``artefact`` / ``bleed``: an ordinary galaxy beside a saturated star (r 9.5-12.5,
  Moffat beta 3 PSF) within 4-22 px of the centre: pixels clip at the full well
  (1.5e5 e-, 150 nmgy in r) and the excess charge bleeds up and down the column.
* ``artefact`` / ``spikes``: as ``bleed`` (r 10.5-13) with four diffraction spikes
  (0/90 deg +- 3, 1.5-4 % of the star's flux, profile ~ r^-1.5).
* ``artefact`` / ``edge``: an ordinary galaxy at a chip edge: a strip 6-24 px wide along
  one side holds no data (zero after sky subtraction, black in the PNG).
* ``artefact`` / ``bad_column``: an ordinary galaxy with 1-3 adjacent dead (zero) or hot
  (saturated) columns crossing the cutout.

Streams, arcs, rings and trails are sums of Gaussians along their curves, each as wide as
the curve's thickness and the PSF (a Gaussian of the same FWHM) in quadrature; hosts and
stars are drawn by GalSim. Noise (Poisson + sky) is GalSim's ``CCDNoise``, as in the AGN set,
applied before saturation.

Example:
    >>> from ulisse_bench.sim.rare import simulate_rare_set
    >>> table = simulate_rare_set("rare", n=3000)            # doctest: +SKIP
    >>> table.groupby(["class", "kind"]).size()              # doctest: +SKIP
"""

from __future__ import annotations

import galsim
import numpy as np
import pandas as pd

from .agn import BULGE_COLOURS, DISK_COLOURS, DISK_Q0, GAIN, add_sky_noise, colour_ratios, \
    draw_object, write_labelled_set

INTERESTING = {"arc": 20, "merger": 20, "ring": 20}
ARTEFACTS = {"trail": 12, "bleed": 12, "spikes": 6, "edge": 6, "bad_column": 4}
FULL_WELL = 1.5e5  # electrons: 150 nmgy/px in r
COMPANION_FRACTION = 0.3
LABEL_COLUMNS = ["id", "class", "kind", "r_mag", "psf_fwhm", "feature_flux", "feature_size", "structure"]
POPULATIONS = ("structured", "smooth")  # ordinary galaxies with arms and field stars, or smooth ones
STAR_FRACTION = 0.3
SIZE, PIXEL_SCALE = 64, 0.396


def kinds_of(n: int, seed: int = 0) -> list[str]:
    """The kind of every object 1..n: the rare kinds at seeded random positions, ``galaxy`` elsewhere."""
    rare = [k for table in (INTERESTING, ARTEFACTS) for k, c in table.items() for _ in range(c)]
    if len(rare) > n:
        raise ValueError(f"n={n}: smaller than the {len(rare)} rare objects")
    kinds = np.array(["galaxy"] * n, dtype=object)
    kinds[np.random.default_rng([seed, 0]).permutation(n)[:len(rare)]] = rare
    return kinds.tolist()


def class_of(kind: str) -> str:
    return "interesting" if kind in INTERESTING else "artefact" if kind in ARTEFACTS else "ordinary"


# -- drawing --------------------------------------------------------------------------------------

def _grid(size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) - (size - 1) / 2) * scale
    return np.meshgrid(c, c)


def curve_image(points: np.ndarray, weights: np.ndarray, sigma: float, size: int = SIZE,
                scale: float = PIXEL_SCALE) -> np.ndarray:
    """Gaussians of width ``sigma`` (arcsec) at ``points`` (N x 2, arcsec from the centre), weighted; sums to 1."""
    x, y = _grid(size, scale)
    img = np.zeros((size, size))
    for (px, py), w in zip(points, weights):
        img += w * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma**2))
    return img / max(img.sum(), 1e-30)


def _psf_sigma(fwhm: float) -> float:
    return fwhm / 2.3548


def _draw(profile: galsim.GSObject, psf: galsim.GSObject, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    return galsim.Convolve(profile.shift(dx, dy), psf).drawImage(nx=SIZE, ny=SIZE, scale=PIXEL_SCALE).array


def host_cube(obj, psf, dx: float = 0.0, dy: float = 0.0, flux_scale: float = 1.0) -> np.ndarray:
    """The noiseless (3, H, W) cube of an AGN-set host (:func:`~ulisse_bench.sim.agn.draw_object`), shifted."""
    beta = obj.position_angle_deg * galsim.degrees
    cos_i = np.cos(np.radians(obj.inclination_deg))
    flux = flux_scale * 10 ** ((22.5 - obj.r_mag) / 2.5)
    bulge = galsim.DeVaucouleurs(half_light_radius=obj.bulge_hlr).shear(q=obj.bulge_q, beta=beta)
    disc = galsim.Exponential(half_light_radius=obj.disk_hlr).shear(
        q=float(np.sqrt(cos_i**2 * (1 - DISK_Q0**2) + DISK_Q0**2)), beta=beta)
    cube = np.zeros((3, SIZE, SIZE))
    for frac, prof, ratios in ((obj.bulge_fraction, bulge, colour_ratios(obj.bulge_g_r, obj.bulge_r_i)),
                               (1 - obj.bulge_fraction, disc, colour_ratios(obj.disk_g_r, obj.disk_r_i))):
        if frac > 0:
            cube += (frac * flux * ratios)[:, None, None] * _draw(prof, psf, obj.dx + dx, obj.dy + dy)[None]
    return cube


def _colour(rng, colours=((0.1, 0.4), (0.0, 0.2))) -> np.ndarray:
    return colour_ratios(rng.uniform(*colours[0]), rng.uniform(*colours[1]))


def _arms(rng, obj, psf_fwhm: float) -> np.ndarray:
    """2 or 3 clumpy logarithmic spiral arms in the disc's plane, projected like it; (H, W), sums to 1."""
    n_arms = 2 if rng.uniform() < 0.7 else 3
    pitch = np.radians(rng.uniform(10.0, 30.0))
    r0, r1 = 0.5 * obj.disk_hlr, 2.5 * obj.disk_hlr
    span = np.log(r1 / r0) / np.tan(pitch)  # the angle an arm turns from r0 to r1
    thick = rng.uniform(0.25, 0.5)
    cos_i, pa = np.cos(np.radians(obj.inclination_deg)), np.radians(obj.position_angle_deg)
    sense, start = rng.choice([-1.0, 1.0]), rng.uniform(0, 2 * np.pi)
    t = np.linspace(0, 1, 90)
    pts, weights = [], []
    for a in range(n_arms):
        theta = start + 2 * np.pi * a / n_arms + sense * span * t
        r = r0 * np.exp(span * t * np.tan(pitch))
        u, v = r * np.cos(theta), r * cos_i * np.sin(theta)
        pts.append(np.c_[u * np.cos(pa) - v * np.sin(pa), u * np.sin(pa) + v * np.cos(pa)] + [obj.dx, obj.dy])
        clumps = 1 + sum(rng.uniform(0.5, 2.0) * np.exp(-0.5 * ((t - rng.uniform()) / 0.04) ** 2)
                         for _ in range(int(rng.integers(2, 6))))
        weights.append(np.exp(-t / 0.6) * clumps)
    return curve_image(np.concatenate(pts), np.concatenate(weights), np.hypot(thick, _psf_sigma(psf_fwhm)))


def _field_star(rng, psf_fwhm: float) -> np.ndarray:
    """An unsaturated foreground star somewhere in the cutout: (3, H, W) nanomaggies."""
    flux = 10 ** ((22.5 - rng.uniform(15.5, 20.5)) / 2.5)
    r, phi = rng.uniform(6, 28) * PIXEL_SCALE, rng.uniform(0, 2 * np.pi)
    img = galsim.Moffat(beta=3.0, fwhm=psf_fwhm).shift(r * np.cos(phi), r * np.sin(phi)) \
        .drawImage(nx=SIZE, ny=SIZE, scale=PIXEL_SCALE).array
    return (flux * colour_ratios(rng.uniform(0.3, 1.2), rng.uniform(0.1, 0.4)))[:, None, None] * img[None]


def _ordinary(rng, obj, psf, population: str = "smooth") -> tuple[np.ndarray, dict]:
    cube = host_cube(obj, psf)
    structure = []
    if rng.uniform() < COMPANION_FRACTION:
        other = draw_object(rng, is_agn=False)
        r, phi = rng.uniform(5.0, 12.0), rng.uniform(0, 2 * np.pi)
        cube += host_cube(other, psf, r * np.cos(phi), r * np.sin(phi), 10 ** (-0.4 * rng.uniform(1.0, 3.0)))
        structure.append("companion")
    if population == "structured":
        if obj.bulge_fraction < 0.7 and np.cos(np.radians(obj.inclination_deg)) > 0.35:
            disc_flux = (1 - obj.bulge_fraction) * 10 ** ((22.5 - obj.r_mag) / 2.5)
            cube += (rng.uniform(0.25, 0.5) * disc_flux * _colour(rng))[:, None, None] \
                * _arms(rng, obj, obj.psf_fwhm)[None]
            structure.append("arms")
        if rng.uniform() < STAR_FRACTION:
            cube += _field_star(rng, obj.psf_fwhm)
            structure.append("star")
    elif population != "smooth":
        raise ValueError(f"population {population!r}: not one of {', '.join(POPULATIONS)}")
    return cube, {"structure": "+".join(structure)}


def _arc(rng, obj, psf) -> tuple[np.ndarray, dict]:
    lens_r = rng.uniform(16.5, 18.5)
    hlr = rng.uniform(0.6, 1.6)
    lens = galsim.DeVaucouleurs(half_light_radius=hlr).shear(q=rng.uniform(0.6, 1.0),
                                                             beta=rng.uniform(0, 180) * galsim.degrees)
    lens_flux = 10 ** ((22.5 - lens_r) / 2.5)
    cube = (lens_flux * colour_ratios(rng.uniform(*BULGE_COLOURS[0]), rng.uniform(*BULGE_COLOURS[1])))[:, None, None] \
        * _draw(lens, psf, obj.dx, obj.dy)[None]
    theta_e, length, start = rng.uniform(2.0, 5.0), np.radians(rng.uniform(60, 300)), rng.uniform(0, 2 * np.pi)
    thick, frac = rng.uniform(0.15, 0.4), rng.uniform(0.2, 0.6)
    t = np.linspace(0, 1, 80)
    phi = start + length * t
    pts = np.c_[obj.dx + theta_e * np.cos(phi), obj.dy + theta_e * np.sin(phi)]
    arc = curve_image(pts, np.sin(np.pi * t) ** 0.5 + 0.05, np.hypot(thick, _psf_sigma(obj.psf_fwhm)))
    cube += (frac * lens_flux * _colour(rng))[:, None, None] * arc[None]
    return cube, {"r_mag": lens_r, "feature_flux": frac, "feature_size": theta_e}


def _tail(rng, start: np.ndarray, away: float, sigma: float) -> np.ndarray:
    """A curved tail from ``start`` heading roughly in direction ``away`` (radians), summing to 1."""
    radius, length = rng.uniform(4.0, 12.0), rng.uniform(4.0, 12.0)
    heading = away + rng.uniform(-1.0, 1.0)
    turn = rng.choice([-1.0, 1.0])
    s = np.linspace(0, length, 60)
    ang = heading + turn * s / radius
    dxy = np.c_[np.cumsum(np.cos(ang)), np.cumsum(np.sin(ang))] * (s[1] - s[0])
    return curve_image(start + dxy, np.exp(-s / (0.6 * length)), sigma)


def _merger(rng, obj, psf) -> tuple[np.ndarray, dict]:
    other = draw_object(rng, is_agn=False)
    sep, phi, ratio = rng.uniform(2.5, 7.0), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0)
    d = np.array([np.cos(phi), np.sin(phi)]) * sep
    p1 = np.array([obj.dx, obj.dy]) - d / 2
    p2 = p1 + d
    cube = host_cube(obj, psf, *(p1 - [obj.dx, obj.dy])) + host_cube(other, psf, *(p2 - [other.dx, other.dy]), ratio)
    flux1 = 10 ** ((22.5 - obj.r_mag) / 2.5)
    fracs = []
    for p, away, flux in ((p1, phi + np.pi, flux1), (p2, phi, flux1 * ratio * 10 ** (-0.4 * (other.r_mag - obj.r_mag)))):
        frac = rng.uniform(0.08, 0.25)
        sigma = np.hypot(rng.uniform(0.5, 1.2), _psf_sigma(obj.psf_fwhm))
        cube += (frac * flux * colour_ratios(rng.uniform(*DISK_COLOURS[0]), rng.uniform(*DISK_COLOURS[1])))[:, None, None] \
            * _tail(rng, p, away, sigma)[None]
        fracs.append(frac)
    return cube, {"feature_flux": float(np.mean(fracs)), "feature_size": sep}


def _ring(rng, obj, psf) -> tuple[np.ndarray, dict]:
    flux = 10 ** ((22.5 - obj.r_mag) / 2.5)
    core_frac, radius, thick = rng.uniform(0.2, 0.5), rng.uniform(2.5, 6.0), rng.uniform(0.4, 1.0)
    cos_i, pa = rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
    off = rng.uniform(0, 0.3) * radius * np.array([np.cos(pa * 3), np.sin(pa * 3)])
    core = galsim.DeVaucouleurs(half_light_radius=rng.uniform(0.3, 0.8))
    cube = (core_frac * flux * colour_ratios(obj.bulge_g_r, obj.bulge_r_i))[:, None, None] * _draw(core, psf, obj.dx, obj.dy)[None]
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    u, v = radius * np.cos(t), radius * cos_i * np.sin(t)
    pts = np.c_[u * np.cos(pa) - v * np.sin(pa), u * np.sin(pa) + v * np.cos(pa)] + off + [obj.dx, obj.dy]
    knots = 1 + sum(rng.uniform(0.5, 2.0) * np.exp(-0.5 * (np.angle(np.exp(1j * (t - rng.uniform(0, 2 * np.pi)))) / 0.25) ** 2)
                    for _ in range(int(rng.integers(2, 6))))
    ring = curve_image(pts, knots, np.hypot(thick, _psf_sigma(obj.psf_fwhm)))
    cube += ((1 - core_frac) * flux * _colour(rng, DISK_COLOURS))[:, None, None] * ring[None]
    return cube, {"feature_flux": 1 - core_frac, "feature_size": radius}


# -- artefacts --------------------------------------------------------------------------------------

def _trail(rng, psf_fwhm: float) -> tuple[np.ndarray, dict]:
    x, y = _grid(SIZE, PIXEL_SCALE)
    theta = rng.uniform(0, np.pi)
    x0, y0 = rng.uniform(-10, 10, size=2)  # arcsec: somewhere in the cutout
    normal = np.array([-np.sin(theta), np.cos(theta)])
    peak, sigma = rng.uniform(0.15, 2.0), _psf_sigma(psf_fwhm)
    bands = rng.uniform(size=3) < 0.7
    if not bands.any():
        bands[rng.integers(3)] = True
    cube = np.zeros((3, SIZE, SIZE))
    for b in range(3):
        shift = rng.uniform(-6, 6) * PIXEL_SCALE
        dist = (x - x0) * normal[0] + (y - y0) * normal[1] - shift
        if bands[b]:
            cube[b] = peak * np.exp(-dist**2 / (2 * sigma**2))
    return cube, {"feature_flux": peak, "feature_size": float(np.degrees(theta))}


def _star(rng, psf_fwhm: float, mag_range, spikes: bool) -> tuple[np.ndarray, dict]:
    mag = rng.uniform(*mag_range)
    flux = 10 ** ((22.5 - mag) / 2.5)
    r, phi = rng.uniform(4, 22) * PIXEL_SCALE, rng.uniform(0, 2 * np.pi)
    sx, sy = r * np.cos(phi), r * np.sin(phi)
    star = galsim.Moffat(beta=3.0, fwhm=psf_fwhm)
    img = star.shift(sx, sy).drawImage(nx=SIZE, ny=SIZE, scale=PIXEL_SCALE).array
    if spikes:
        x, y = _grid(SIZE, PIXEL_SCALE)
        ang = np.radians(rng.uniform(-3, 3))
        u = (x - sx) * np.cos(ang) + (y - sy) * np.sin(ang)
        v = -(x - sx) * np.sin(ang) + (y - sy) * np.cos(ang)
        s = _psf_sigma(psf_fwhm) * 0.6
        spike = sum(np.exp(-a**2 / (2 * s**2)) * np.maximum(np.abs(b), 0.5) ** -1.5 for a, b in ((u, v), (v, u)))
        img = img + rng.uniform(0.015, 0.04) * spike / spike.sum()
    return (flux * colour_ratios(rng.uniform(0.3, 1.2), rng.uniform(0.1, 0.4)))[:, None, None] * img[None], \
        {"feature_flux": mag, "feature_size": r}


def saturate(cube: np.ndarray, full_well: float = FULL_WELL) -> np.ndarray:
    """Clip each band at the full well and bleed the excess charge up and down its column."""
    out = cube.copy()
    for b in range(3):
        sat = full_well / GAIN[b]
        band = out[b]
        for col in np.flatnonzero((band > sat).any(axis=0)):
            c = band[:, col]
            over = c > sat
            excess = float((c[over] - sat).sum())
            c[over] = sat
            rows = np.flatnonzero(over)
            lo, hi = rows.min() - 1, rows.max() + 1
            while excess > 0 and (lo >= 0 or hi < len(c)):
                for r in (lo, hi):
                    if 0 <= r < len(c) and excess > 0:
                        add = min(sat - c[r], excess) if c[r] < sat else 0.0
                        c[r] += add
                        excess -= add
                lo, hi = lo - 1, hi + 1
            band[:, col] = c
    return out


def _dead_region(rng, cube: np.ndarray, kind: str) -> tuple[np.ndarray, dict]:
    out = cube.copy()
    if kind == "edge":
        width = int(rng.integers(6, 25))
        side = int(rng.integers(4))
        region = [slice(None), slice(None), slice(None)]
        region[1 + side % 2] = slice(0, width) if side < 2 else slice(SIZE - width, SIZE)
        out[tuple(region)] = 0.0
        return out, {"feature_size": width}
    col, width = int(rng.integers(4, SIZE - 6)), int(rng.integers(1, 4))
    hot = rng.uniform() < 0.5
    for b in range(3):
        out[b, :, col:col + width] = FULL_WELL / GAIN[b] if hot else 0.0
    return out, {"feature_size": width, "feature_flux": float(hot)}


# -- one object, the set ---------------------------------------------------------------------------

def simulate_object(rng: np.random.Generator, kind: str, population: str = "smooth") -> tuple[np.ndarray, dict]:
    """One (3, 64, 64) g, r, i cube in nanomaggies of the given kind, and its label row (less ``id``)."""
    obj = draw_object(rng, is_agn=False)
    psf = galsim.Kolmogorov(fwhm=obj.psf_fwhm)
    noise_seed = int(rng.integers(1, 2**31 - 1))
    extra: dict = {}
    if kind == "arc":
        cube, extra = _arc(rng, obj, psf)
    elif kind == "merger":
        cube, extra = _merger(rng, obj, psf)
    elif kind == "ring":
        cube, extra = _ring(rng, obj, psf)
    else:
        cube, structure = _ordinary(rng, obj, psf, population)
        extra.update(structure)
        if kind == "trail":
            add, more = _trail(rng, obj.psf_fwhm)
            extra.update(more)
            cube = cube + add
        elif kind in ("bleed", "spikes"):
            add, more = _star(rng, obj.psf_fwhm, (9.5, 12.5) if kind == "bleed" else (10.5, 13.0), kind == "spikes")
            extra.update(more)
            cube = cube + add
    cube = add_sky_noise(cube, noise_seed, PIXEL_SCALE).astype(np.float64)
    if kind in ("bleed", "spikes"):
        cube = saturate(cube)
    elif kind in ("edge", "bad_column"):
        cube, more = _dead_region(rng, cube, kind)
        extra.update(more)
    row = {"class": class_of(kind), "kind": kind, "r_mag": obj.r_mag, "psf_fwhm": obj.psf_fwhm,
           "feature_flux": np.nan, "feature_size": np.nan}
    row.update({k: v if isinstance(v, str) else float(v) for k, v in extra.items()})
    return cube.astype(np.float32), row


def simulate_rare_set(out_dir, n: int = 3000, seed: int = 0, write_fits: bool = False,
                      progress: bool = True, population: str = "smooth") -> pd.DataFrame:
    """Write ``cutouts/rare-000001.png`` ... and ``labels.csv`` (``class``: interesting / artefact / ordinary; ``kind``).

    The rare objects are :data:`INTERESTING` and :data:`ARTEFACTS` (60 and 40), the rest
    ordinary galaxies (``population``: :data:`POPULATIONS`). Object ``k`` draws from
    ``numpy.random.default_rng([seed, k])``.
    """
    if population not in POPULATIONS:
        raise ValueError(f"population {population!r}: not one of {', '.join(POPULATIONS)}")
    kinds = iter(kinds_of(n, seed))
    return write_labelled_set(out_dir, lambda rng: simulate_object(rng, next(kinds), population), n, seed,
                              LABEL_COLUMNS,
                              prefix="rare", pixel_scale=PIXEL_SCALE, write_fits=write_fits, progress=progress)
