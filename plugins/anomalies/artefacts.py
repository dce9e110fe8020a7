"""Artefact flags: simple image statistics that tell instrument and sky artefacts from objects.

Anomaly scores find what looks unlike the rest, and satellite trails, saturated
stars and cutouts at a chip's edge look unlike the rest. These checks look at each
object's cutout (its ``source`` file, read as the encoder reads it: ``H x W x 3``
uint8 RGB) and flag it. They run on the brightest channel ``V`` (so a trail seen in
one band only counts), measured against the sky: ``bg`` is the median of ``V`` and
``sigma`` its robust scatter (1.4826 x MAD, at least 1 grey level).

``edge``
    At least :data:`EDGE_ROWS` whole rows or columns along one side hold one value
    (no data: zero or NaN before the RGB, black in a JPEG or PNG).
``bad_column``
    A whole row or column inside the cutout holds one value (a dead or hot column),
    or a :data:`DEAD_BLOCK` x ``DEAD_BLOCK`` block is black in every channel (sky noise
    leaves about half of the sky's pixels at zero, never a block of 36).
``bleed``
    A connected group of saturated pixels (``V`` = 255) with at least :data:`BLEED_LENGTH`
    rows :data:`BLEED_ELONGATION` times narrower than its widest row (or at most 1 px wide
    where the group is thin throughout): a column bleeding out of a saturated core.
``spikes``
    Rays from the brightest point, medians of ``V`` from :data:`SPIKE_RADII` px out:
    the dimmest of four rays 90 deg apart exceeds the median ray by
    :data:`SPIKE_SIGMA` sigma (an elongated galaxy brightens two opposite rays, not four).
    Or, for the short spikes inside an unsaturated star's halo (:func:`halo_spike_score`): four
    rays 90 deg apart, each brighter than the halo (the median over all rays at the same radius)
    all along, out to where the halo meets the sky: the lower quartile of the ray's excess reaches
    :data:`HALO_SPIKE_LEVEL` times its noise (a knot or a companion galaxy brightens a ray at a few
    radii only). On the tutorial's 240 Hubble Deep Field cutouts this flags the five stars with
    diffraction spikes (0.96-1.95; no other object above 0.0); on the 12,000 simulated cutouts of
    benchmarks/anomalies.md no galaxy, arc, ring or merger reaches 0.05.
``trail``
    A straight line crossing at least :data:`TRAIL_CHORD` px of the cutout whose median
    ``V`` lies :data:`TRAIL_SIGMA` sigma above the sky and above the brighter of its parallel
    lines :data:`TRAIL_SIDE` px away (a trail is thin; a chord through a large galaxy has
    bright neighbours), is at least :data:`TRAIL_FLATNESS` of the line's 90th percentile (a
    trail is as bright at both ends as in the middle), and whose every :data:`TRAIL_BLOCK` px
    piece keeps :data:`TRAIL_FLOOR` of that median (a chain of aligned galaxies has gaps).
    On the 300 real Hubble Deep Field cutouts of the tutorial index no object is flagged
    (benchmarks/anomalies.md).
    Lines every 2 deg and 1 px (a Radon transform with medians instead of sums).
``saturated``
    At least :data:`SATURATED_AREA` saturated pixels (a saturated star without a bleed).

The first that holds names the kind (in the order above). Derived columns
``artefact`` (bool) and ``artefact_kind`` (``''`` when clean) in the set ``artefacts``:
``ulisse query DIR ID --where "artefact == false"``, ``--where "artefact_kind == 'trail'"``.
Their precision and recall on simulated cutouts are in benchmarks/anomalies.md.

Example:
    >>> import numpy as np
    >>> from ulisse.plugins.anomalies.artefacts import artefact_kind
    >>> sky = np.random.default_rng(0).integers(0, 40, (64, 64, 3)).astype(np.uint8)
    >>> artefact_kind(sky)
    ''
    >>> sky[:, :10] = 0                       # ten columns with no data on the left
    >>> artefact_kind(sky)
    'edge'
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

LOG = logging.getLogger(__name__)

SET = "artefacts"
KINDS = ("edge", "bad_column", "bleed", "spikes", "trail", "saturated")
EDGE_ROWS = 3
DEAD_BLOCK = 6
BLEED_LENGTH, BLEED_ELONGATION = 10, 3.0
SPIKE_RADII, SPIKE_SIGMA = (6, 30), 6.0
HALO_SPIKE_RADII, HALO_SPIKE_LEVEL = (4, 30), 0.5
TRAIL_CHORD, TRAIL_SIGMA, TRAIL_FLATNESS = 40, 2.1, 0.75
TRAIL_SIDE = 6  # px from a line to the parallel lines it must outshine
TRAIL_BLOCK, TRAIL_FLOOR = 6, 0.5  # every 6 px piece of a trail keeps half its median above the sky
SATURATED_AREA = 40
ANGLES = np.arange(0, 180, 2)


def _value(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    return (a.max(axis=2) if a.ndim == 3 else a).astype(np.float32)


def _sky(v: np.ndarray) -> tuple[float, float]:
    bg = float(np.median(v))
    return bg, max(1.0, 1.4826 * float(np.median(np.abs(v - bg))))


def _constant_lines(image: np.ndarray, axis: int) -> np.ndarray:
    """Per row (axis=1) or column (axis=0): whether every pixel of it holds one value, in every channel."""
    a = np.asarray(image)
    a = a if a.ndim == 3 else a[..., None]
    first = a.take([0], axis=1 - axis)
    return (a == first).all(axis=(1 - axis, 2))


def _edge_or_column(image: np.ndarray) -> str:
    for axis in (0, 1):
        const = _constant_lines(image, axis)
        n = const.size
        lead = int(np.argmin(const)) if not const.all() else n
        trail = int(np.argmin(const[::-1])) if not const.all() else n
        if lead >= EDGE_ROWS or trail >= EDGE_ROWS:
            return "edge"
        if const[lead:n - trail].any():
            return "bad_column"
    a = np.asarray(image)
    black = (a.max(axis=2) if a.ndim == 3 else a) == 0
    from scipy.ndimage import binary_erosion

    if binary_erosion(black, np.ones((DEAD_BLOCK, DEAD_BLOCK), bool)).any():
        return "bad_column"
    return ""


def _saturated_groups(v: np.ndarray) -> tuple[int, float, int]:
    """(saturated pixels, the largest height / width of a group, the tallest group's height)."""
    from scipy.ndimage import find_objects, label

    sat = v >= 255
    total = int(sat.sum())
    if total == 0:
        return 0, 0.0, 0
    labels, _ = label(sat)
    best_ratio, best_height = 0.0, 0
    for sl in find_objects(labels):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if h > best_height:
            best_height = h
        best_ratio = max(best_ratio, h / w)
    return total, best_ratio, best_height


def _bleed(v: np.ndarray) -> bool:
    """A saturated group with at least BLEED_LENGTH rows much narrower than its widest row (a column out of a core)."""
    from scipy.ndimage import find_objects, label

    labels, _ = label(v >= 255)
    for i, sl in enumerate(find_objects(labels), start=1):
        widths = (labels[sl] == i).sum(axis=1)
        narrow = (widths > 0) & (widths * BLEED_ELONGATION <= max(widths.max(), BLEED_ELONGATION))
        if narrow.sum() >= BLEED_LENGTH:
            return True
    return False


def _rays(v: np.ndarray, radii: np.ndarray, step_deg: int) -> np.ndarray:
    """``V`` along rays every ``step_deg`` deg from the brightest point (smoothed), at ``radii`` px: rays x radii,
    NaN outside the cutout."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    cy, cx = np.unravel_index(int(np.argmax(gaussian_filter(v, 2.0))), v.shape)
    phis = np.radians(np.arange(0, 360, step_deg))
    ys, xs = cy + np.outer(np.sin(phis), radii), cx + np.outer(np.cos(phis), radii)
    inside = (ys >= 0) & (ys <= v.shape[0] - 1) & (xs >= 0) & (xs <= v.shape[1] - 1)
    return np.where(inside, map_coordinates(v, [ys.ravel(), xs.ravel()], order=1).reshape(ys.shape), np.nan)


def _dimmest_of_four(rays: np.ndarray) -> float | None:
    """Over the directions phi: the dimmest of the rays phi, phi+90, phi+180, phi+270 (at least 3 of them in the
    cutout); its largest value, or None when no direction has 3."""
    quarter = len(rays) // 4
    four = np.stack([np.roll(rays, -q * quarter)[:quarter] for q in range(4)])
    valid = np.isfinite(four).sum(axis=0) >= 3
    if not valid.any():
        return None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmin(four, axis=0)[valid].max())


def spike_score(v: np.ndarray, bg: float, sigma: float) -> float:
    """How far (in sigma) the dimmest of the best four rays 90 deg apart lies above the median ray."""
    samples = _rays(v, np.arange(*SPIKE_RADII, dtype=np.float32), 3)
    enough = np.isfinite(samples).sum(axis=1) >= 6
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rays wholly outside the cutout
        rays = np.where(enough, np.nanmedian(samples, axis=1), np.nan)
    if np.isfinite(rays).sum() < len(rays) // 2:
        return 0.0
    dimmest = _dimmest_of_four(rays)
    return 0.0 if dimmest is None else float((dimmest - np.nanmedian(rays)) / sigma)


def halo_spike_score(v: np.ndarray, bg: float, sigma: float) -> float:
    """How bright (in units of its noise) the dimmest of the best four rays 90 deg apart is against the halo.

    Rays every 2 deg from the brightest point, sampled every px from :data:`HALO_SPIKE_RADII`; at each radius the
    median over the rays is the halo (a star's, a galaxy's: round) and a ray's excess is its value less that.
    A ray's score is the lower quartile of its excess out to 3 px beyond where the halo falls to 2 sigma above
    the sky (a spike is bright all along), over its noise (1.25 sigma / sqrt(samples)).
    """
    samples = _rays(v, np.arange(HALO_SPIKE_RADII[0], HALO_SPIKE_RADII[1] + 1, dtype=np.float32), 2)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # radii or rays wholly outside the cutout
        halo = np.nanmedian(samples, axis=0)
        reach = np.flatnonzero(halo > bg + 2 * sigma)
        last = max(6, int(reach.max()) + 3 if reach.size else 6)
        excess = (samples - halo[None])[:, :last + 1]
        n = np.isfinite(excess).sum(axis=1)
        rays = np.where(n >= 4, np.nanpercentile(excess, 25, axis=1), np.nan) \
            / (1.25 * sigma / np.sqrt(np.maximum(n, 1)))
    dimmest = _dimmest_of_four(rays)
    return 0.0 if dimmest is None else dimmest


_LINES: dict = {}


def _lines(shape: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Per px of offset from the centre: the (angles x chord) pixel coordinates of the lines at every angle of
    :data:`ANGLES` inside the inscribed circle, and whether the chord is long enough (:data:`TRAIL_CHORD`) to
    be judged; the shorter ones beyond are only the judged lines' sides (cached by shape)."""
    if shape not in _LINES:
        h, w = shape
        radius = min(h, w) / 2 - 0.5
        theta = np.radians(ANGLES)[:, None]
        lines = []
        for s in np.arange(-np.floor(radius), np.floor(radius) + 1):
            half = np.sqrt(max(radius**2 - s**2, 0.0))
            if 2 * half < TRAIL_CHORD / 4:
                continue
            t = np.arange(-np.floor(half), np.floor(half) + 1)[None, :]
            ys = np.rint((h - 1) / 2 + s * np.cos(theta) + t * np.sin(theta)).astype(int)
            xs = np.rint((w - 1) / 2 - s * np.sin(theta) + t * np.cos(theta)).astype(int)
            lines.append((np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1), bool(2 * half >= TRAIL_CHORD)))
        _LINES[shape] = lines
    return _LINES[shape]


def trail_score(v: np.ndarray, bg: float, sigma: float) -> float:
    """The best straight, thin line's median above the sky and above its parallel lines :data:`TRAIL_SIDE` px to
    either side, in sigma, among lines flat enough to be a trail (else 0).

    The sides keep a large galaxy out: a chord through it is bright and flat, but so are its neighbours."""
    meds, flats = [], []
    for ys, xs, judged in _lines(v.shape):
        samples = v[ys, xs]  # angles x chord
        med = np.median(samples, axis=1) - bg
        p90 = np.percentile(samples, 90, axis=1) - bg
        n = samples.shape[1] // TRAIL_BLOCK * TRAIL_BLOCK  # medians of 6 px pieces: the line never dips to the sky
        low = np.median(samples[:, :n].reshape(len(samples), -1, TRAIL_BLOCK), axis=2).min(axis=1) - bg
        meds.append(med)  # flat: as bright at its ends as in its middle, with no gap (a chain of galaxies has gaps)
        flats.append((med >= TRAIL_FLATNESS * p90) & (low >= TRAIL_FLOOR * med) & judged)
    if not meds:
        return 0.0
    M, F = np.array(meds), np.array(flats)  # offsets (1 px apart) x angles
    side = np.full_like(M, np.inf)  # the brighter parallel line (judged lines always have both)
    side[TRAIL_SIDE:-TRAIL_SIDE] = np.maximum(M[:-2 * TRAIL_SIDE], M[2 * TRAIL_SIDE:])
    contrast = np.minimum(M, M - side)
    return float(max(contrast[F].max(), 0.0)) / sigma if F.any() else 0.0


def artefact_stats(image: np.ndarray) -> dict:
    """Every statistic the checks use, for one cutout (``H x W x 3`` uint8 RGB, or a 2-D image)."""
    v = _value(image)
    bg, sigma = _sky(v)
    total, ratio, height = _saturated_groups(v)
    return {"edge_or_column": _edge_or_column(image), "bleed": _bleed(v), "saturated_pixels": total,
            "saturated_elongation": ratio, "saturated_height": height,
            "spike_sigma": spike_score(v, bg, sigma), "halo_spike_sigma": halo_spike_score(v, bg, sigma),
            "trail_sigma": trail_score(v, bg, sigma)}


def artefact_kind(image: np.ndarray) -> str:
    """The kind of artefact a cutout shows (one of :data:`KINDS`), or ``''`` when none."""
    v = _value(image)
    dead = _edge_or_column(image)
    if dead:
        return dead
    if _bleed(v):
        return "bleed"
    bg, sigma = _sky(v)
    if spike_score(v, bg, sigma) >= SPIKE_SIGMA or halo_spike_score(v, bg, sigma) >= HALO_SPIKE_LEVEL:
        return "spikes"
    # a trail before saturation: a bright trail saturates its band along the line (v4: 36 of the 48 simulated
    # trails named trail, against 16 when saturation came first; no other kind is named trail either way)
    if trail_score(v, bg, sigma) >= TRAIL_SIGMA:
        return "trail"
    if int((v >= 255).sum()) >= SATURATED_AREA:
        return "saturated"
    return ""


def checks_state(index=None) -> str:
    """The checks' settings as a short string: stored flags made with other settings are recomputed."""
    return (f"v4 edge{EDGE_ROWS} block{DEAD_BLOCK} bleed{BLEED_LENGTH}/{BLEED_ELONGATION} spikes{SPIKE_RADII}/"
            f"{SPIKE_SIGMA} halo{HALO_SPIKE_RADII}/{HALO_SPIKE_LEVEL} trail{TRAIL_CHORD}/{TRAIL_SIGMA}/{TRAIL_FLATNESS}/{TRAIL_SIDE}/{TRAIL_BLOCK}/{TRAIL_FLOOR} saturated{SATURATED_AREA}")


def compute_artefacts(index, rows=None, progress: bool = True, checkpoint=None) -> pd.DataFrame:
    """Derived columns ``artefact`` (bool) and ``artefact_kind`` (str, ``''`` when clean) for every object, or
    for the objects at ``rows`` (in that order). ``checkpoint``: called after every cutout with a function that
    makes the table so far (the core stores it now and then).

    An object whose cutout cannot be read is not flagged (its kind is ``''``).
    """
    from ulisse.cutouts import read_cutout, source_path
    from ulisse.errors import CutoutError
    from ulisse.progress import progress_iter

    rows = range(len(index)) if rows is None else rows
    sources = (index.metadata_rows(rows)["source"].tolist() if "source" in index.metadata_columns
               else [None] * len(rows))
    kinds, unread = [], 0
    for source in progress_iter(sources, desc="artefact checks", enabled=progress):
        path = source_path(index.path, source)
        try:
            kinds.append(artefact_kind(read_cutout(path, index.rgb).image) if path is not None else "")
        except CutoutError:
            kinds.append("")
            unread += 1
        if checkpoint is not None:
            checkpoint(lambda: _flags(kinds))
    if unread:
        LOG.warning("artefact checks: %d of %d cutouts could not be read (not flagged)", unread, len(sources))
    return _flags(kinds)


def _flags(kinds: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"artefact": [k != "" for k in kinds], "artefact_kind": list(kinds)})


def artefact_table(index, recompute: bool = False) -> pd.DataFrame:
    """The stored artefact columns of ``index`` (computed on first use), one row per object in row order."""
    return index.derived(SET, recompute=recompute)
