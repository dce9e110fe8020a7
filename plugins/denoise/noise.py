"""The noise model a flux denoiser normalises by: sky level and sky sigma of each image, per band.

Survey cutouts in flux units (sky-subtracted or not) carry Poisson noise on the
source and the sky. In faint cutouts the sky dominates, so the noise is well
approximated by a Gaussian whose variance is the sky's plus a source term
(``flux / gain``) that only the brightest cores feel. What differs most from
image to image, and from band to band, is the sky sigma: every image is
therefore measured on its own, from the pixels that look like sky
(iterative 3-sigma clipping around the median, sigma from the median absolute
deviation, 1.4826 x MAD), and the network sees ``(x - sky) / sigma``: sky noise
of unit size in every band and every image. The same two numbers, computed
from the input alone, map the output back to fluxes, so the step is exact and
needs no clean data.

Example:
    >>> sky, sigma = sky_stats(cube)       # doctest: +SKIP
    >>> x = (cube - sky[:, None, None]) / sigma[:, None, None]     # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826
CLIP = 3.0
ITERATIONS = 5


def sky_stats(data: np.ndarray, clip: float = CLIP, iterations: int = ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (sky level, sky sigma) of a ``C x H x W`` image: sigma-clipped median and 1.4826 x MAD.

    NaNs are ignored. A band with no usable pixels, or whose MAD is 0 (a flat or
    saturated band), gets NaN: callers fall back to a global scale there.
    """
    c = data.shape[0]
    sky, sigma = np.full(c, np.nan), np.full(c, np.nan)
    for k in range(c):
        x = data[k][np.isfinite(data[k])].astype(np.float64)
        if x.size < 8:
            continue
        keep = x
        for _ in range(iterations):
            med = np.median(keep)
            mad = np.median(np.abs(keep - med))
            if mad <= 0:
                break
            nxt = x[np.abs(x - med) < clip * MAD_TO_SIGMA * mad]
            if nxt.size == keep.size or nxt.size < 8:
                keep = nxt if nxt.size >= 8 else keep
                break
            keep = nxt
        med = float(np.median(keep))
        mad = float(np.median(np.abs(keep - med)))
        sky[k] = med
        sigma[k] = MAD_TO_SIGMA * mad if mad > 0 else np.nan
    return sky, sigma


def normalisers(arrays, fallback) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, divisors), each ``N x C``, for ``arrays`` (``C x H x W`` each): sky level and sky sigma per image.

    A band whose sigma cannot be measured uses ``fallback`` (the model's global
    scale) as divisor and 0 as offset.
    """
    fallback = np.asarray(fallback, dtype=np.float64)
    offsets, divisors = [], []
    for a in arrays:
        sky, sigma = sky_stats(np.asarray(a))
        bad = ~(np.isfinite(sigma) & (sigma > 0) & np.isfinite(sky))
        offsets.append(np.where(bad, 0.0, sky))
        divisors.append(np.where(bad, fallback, sigma))
    return np.array(offsets, dtype=np.float32).reshape(len(offsets), -1), \
        np.array(divisors, dtype=np.float32).reshape(len(divisors), -1)
