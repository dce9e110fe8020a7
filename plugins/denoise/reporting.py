"""How well a denoiser does against classical denoisers on noisy/clean pairs: PSNR, SSIM, a before/after grid.

Methods compared on every pair (each image denoised on its own):

* ``input``: the noisy image itself;
* ``gaussian``: a Gaussian filter at the sigma (px) that gives the best mean PSNR
  over these very pairs (an oracle choice, to the baseline's advantage);
* ``nl-means``: scikit-image's non-local means, h = 0.8 sigma with sigma
  estimated per channel (``estimate_sigma``), 5 x 5 patches within 6 px;
* ``wavelet``: scikit-image's BayesShrink wavelet denoiser (soft thresholds,
  per channel, PyWavelets);
* ``model``: the denoiser.

Pairs whose noisy image the model was trained on (its config names them by
content, :func:`.model.image_key`) are left out, unless asked for: a model judged on
its own training images looks better than it is. The report says what it left out,
and says so when the model does not record its training images.

PSNR and SSIM use each clean image's own data range (max - min) for FITS
fluxes, and 0..1 (i.e. 0..255) for 8-bit images; channels are pooled.
Aperture photometry checks that a denoiser keeps the flux where it matters:
the sum over the bands of the pixels within ``APERTURE_RADIUS`` px of the
cutout's centre (a 12 px wide aperture around the target), output over clean,
pooled over the images (sum of outputs over sum of cleans) and per image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ulisse._io import atomic_write
from ulisse.errors import InputError

from .applying import _as_denoiser, check_fits
from .images import EIGHT_BIT, Image, make_folder
from .model import image_key
from .training import load_training_set

LOG = logging.getLogger(__name__)

GAUSSIAN_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
METHODS = ("input", "gaussian", "nl-means", "wavelet", "model")
GRID_ROWS = 6
APERTURE_RADIUS = 6.0  # px: a 12 px wide central aperture


@dataclass
class DenoiseReport:
    """The outcome of :func:`report`.

    Attributes:
        per_image: one row per image and method: id, method, psnr, ssim, aperture_flux, clean_aperture_flux.
        summary: one row per method: mean and median PSNR and SSIM, PSNR gain over the input, central
            aperture flux ratio (pooled, and the median per image).
        gaussian_sigma: the best Gaussian sigma (px).
        markdown: the summary as a Markdown table with a note on the set.
        trained_on: ids of the pairs whose noisy image the model trained on (left out, unless included).
        note: what the pairs are, against the model's training images (also in ``markdown``).
    """

    per_image: pd.DataFrame
    summary: pd.DataFrame
    gaussian_sigma: float
    markdown: str
    trained_on: list[str] = field(default_factory=list)
    note: str = ""


def data_range(clean: np.ndarray, domain: str) -> float:
    if domain == EIGHT_BIT:
        return 1.0
    r = float(np.nanmax(clean) - np.nanmin(clean))
    return r if r > 0 else 1.0


def psnr(clean: np.ndarray, test: np.ndarray, domain: str) -> float:
    """Peak signal-to-noise ratio (dB) of ``test`` against ``clean`` (``C x H x W``), NaNs ignored."""
    ok = np.isfinite(clean) & np.isfinite(test)
    mse = float(np.mean((clean[ok].astype(np.float64) - test[ok]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range(clean, domain) ** 2 / mse))


def ssim(clean: np.ndarray, test: np.ndarray, domain: str) -> float:
    """Mean structural similarity over the channels (scikit-image, 7 x 7 windows)."""
    from skimage.metrics import structural_similarity

    c, t = np.nan_to_num(clean.astype(np.float64)), np.nan_to_num(test.astype(np.float64))
    return float(structural_similarity(c, t, channel_axis=0, data_range=data_range(clean, domain)))


def gaussian(data: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.nan_to_num(data), sigma=(0, sigma, sigma), mode="reflect").astype(np.float32)


def nl_means(data: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_nl_means, estimate_sigma

    x = np.nan_to_num(data.astype(np.float64))
    out = np.empty_like(x)
    for k, band in enumerate(x):  # each band with its own noise level
        s = float(estimate_sigma(band))
        out[k] = denoise_nl_means(band, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True)
    return out.astype(np.float32)


def wavelet(data: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    x = np.nan_to_num(data.astype(np.float64))
    return denoise_wavelet(x, channel_axis=0, method="BayesShrink", mode="soft", rescale_sigma=True).astype(np.float32)


def aperture_flux(data: np.ndarray, radius: float = APERTURE_RADIUS) -> float:
    """The sum over the bands of the pixels within ``radius`` px of the centre of a ``C x H x W`` image (NaNs as 0)."""
    _, h, w = data.shape
    y, x = np.mgrid[0:h, 0:w]
    inside = (y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2 <= radius**2
    return float(np.nansum(data[:, inside], dtype=np.float64))


def _metrics(method: str, images: Sequence[Image], clean: Sequence[Image], outputs: Sequence[np.ndarray]) -> list[dict]:
    return [{"id": n.id, "method": method, "psnr": psnr(c.data, o, c.domain), "ssim": ssim(c.data, o, c.domain),
             "aperture_flux": aperture_flux(o), "clean_aperture_flux": aperture_flux(c.data)}
            for n, c, o in zip(images, clean, outputs)]


def best_gaussian(noisy: Sequence[Image], clean: Sequence[Image],
                  sigmas: Sequence[float] = GAUSSIAN_SIGMAS) -> tuple[float, list[np.ndarray]]:
    """The sigma with the best mean PSNR over the pairs, and the images filtered with it."""
    best = (-np.inf, None, None)
    for s in sigmas:
        out = [gaussian(n.data, s) for n in noisy]
        score = float(np.mean([psnr(c.data, o, c.domain) for c, o in zip(clean, out)]))
        if score > best[0]:
            best = (score, s, out)
    return float(best[1]), best[2]


def compare(denoisers: dict, noisy: Sequence[Image], clean: Sequence[Image],
            classical: bool = True) -> tuple[pd.DataFrame, float, dict[str, list[np.ndarray]]]:
    """PSNR and SSIM per image of the input, the classical denoisers and each of ``denoisers`` (name -> model).

    Returns:
        (per-image table, best Gaussian sigma, outputs by method).
    """
    outputs: dict[str, list[np.ndarray]] = {"input": [n.data for n in noisy]}
    sigma = float("nan")
    if classical:
        sigma, outputs["gaussian"] = best_gaussian(noisy, clean)
        methods: dict[str, Callable] = {"nl-means": nl_means, "wavelet": wavelet}
        for name, fn in methods.items():
            outputs[name] = [fn(n.data) for n in noisy]
    for name, model in denoisers.items():
        den = _as_denoiser(model)
        for n in noisy:
            check_fits(den, n)
        outputs[name] = den.denoise_arrays([n.data for n in noisy])
    rows = []
    for method, outs in outputs.items():
        rows += _metrics(method, noisy, clean, outs)
    return pd.DataFrame(rows), sigma, outputs


def summarise(per_image: pd.DataFrame) -> pd.DataFrame:
    g = per_image.groupby("method", sort=False)
    summary = pd.DataFrame({"psnr_mean": g["psnr"].mean(), "psnr_median": g["psnr"].median(),
                            "ssim_mean": g["ssim"].mean(), "ssim_median": g["ssim"].median()})
    summary["psnr_gain"] = summary["psnr_mean"] - summary.loc["input", "psnr_mean"]
    summary["flux_ratio"] = g["aperture_flux"].sum() / g["clean_aperture_flux"].sum()
    ratio = per_image["aperture_flux"] / per_image["clean_aperture_flux"].where(per_image["clean_aperture_flux"] > 0)
    summary["flux_ratio_median"] = ratio.groupby(per_image["method"], sort=False).median()
    return summary


def summary_markdown(summary: pd.DataFrame, sigma: float, names: dict[str, str] | None = None) -> str:
    names = names or {}
    lines = [f"| method | PSNR (dB), mean | median | gain over input | SSIM, mean | median | "
             f"aperture flux ratio (r {APERTURE_RADIUS:g} px), all | per image, median |",
             "|---|---|---|---|---|---|---|---|"]
    for method, r in summary.iterrows():
        label = names.get(method, method)
        if method == "gaussian" and np.isfinite(sigma):
            label = f"Gaussian filter, best sigma {sigma:g} px"
        lines.append(f"| {label} | {r.psnr_mean:.2f} | {r.psnr_median:.2f} | {r.psnr_gain:+.2f} | "
                     f"{r.ssim_mean:.4f} | {r.ssim_median:.4f} | {r.flux_ratio:.3f} | {r.flux_ratio_median:.3f} |")
    return "\n".join(lines) + "\n"


def display_rgb(data: np.ndarray, domain: str, lo: float, hi: float, fits_rows: str = "bottom-up") -> np.ndarray:
    """uint8 RGB for the grid: 8-bit images as they are; fluxes (FITS data) with an asinh stretch between ``lo`` and
    ``hi``, rows in the order ``fits_rows`` (:attr:`ulisse.RGBConfig.fits_rows`: first row at the bottom, as ds9
    shows FITS and as ulisse embeds them)."""
    from ulisse.cutouts import fits_image

    from .images import to_uint8

    if domain == EIGHT_BIT:
        a = to_uint8(data)
    else:
        span = max(hi - lo, 1e-30)
        x = np.clip((np.nan_to_num(data) - lo) / span, 0, None)
        a = to_uint8(np.arcsinh(10 * x) / np.arcsinh(10))
        a = fits_image(a, fits_rows)  # an Image's data is always (bands, H, W)
    if a.shape[0] == 3 and domain != EIGHT_BIT:
        a = a[::-1]  # g, r, i -> i, r, g as R, G, B
    return np.repeat(a, 3, axis=0).transpose(1, 2, 0) if a.shape[0] == 1 else a.transpose(1, 2, 0)


def before_after_grid(noisy: Sequence[Image], clean: Sequence[Image], outputs: dict[str, list[np.ndarray]],
                      path: str | Path, rows: int = GRID_ROWS, title: str | None = None) -> Path:
    """A PNG grid: one object per row; its noisy image, each method's output, the clean image."""
    from ulisse.plot import thumbnail_grid

    methods = list(outputs)
    panels = []
    for i in range(min(rows, len(noisy))):
        c = clean[i]
        lo, hi = (0.0, 1.0) if c.domain == EIGHT_BIT else (float(np.nanpercentile(c.data, 1)), float(np.nanmax(c.data)))
        for m in methods:
            p = psnr(c.data, outputs[m][i], c.domain)
            panels.append((display_rgb(outputs[m][i], c.domain, lo, hi), f"{m}\n{noisy[i].id} {p:.1f} dB", m == "model"))
        panels.append((display_rgb(c.data, c.domain, lo, hi), f"clean\n{c.id}", False))
    return thumbnail_grid(panels, path, columns=len(methods) + 1, title=title)


def split_by_training(den, noisy: Sequence[Image], clean: Sequence[Image], include_training: bool = False,
                      limit: int | None = None):
    """``(noisy, clean, trained_on ids, note)``: the pairs to judge (the first ``limit`` of them, if given), without
    those the model trained on; the note counts among the pairs judged.

    Raises:
        InputError: every pair is a training pair (and ``include_training`` is False).
    """
    training = den.config.training
    if "train_keys" not in training:
        return list(noisy)[:limit], list(clean)[:limit], [], ("the model does not record the images it was trained "
                                                              "on (saved by an older ulisse): these pairs may include "
                                                              "training pairs")
    seen, held = set(training["train_keys"]), set(training.get("held_out_keys") or ())
    keys = [image_key(n.data) for n in noisy]
    trained = [n.id for n, k in zip(noisy, keys) if k in seen]
    if trained and len(trained) == len(noisy) and not include_training:
        raise InputError(f"all {len(noisy)} pairs are pairs the model was trained on; judge it on others "
                         "(or --include-training to score them anyway)")
    judged = [i for i, k in enumerate(keys) if include_training or k not in seen][:limit]
    if include_training:
        among = sum(keys[i] in seen for i in judged)
        said = (f"{among} of them are pairs the model was trained on (--include-training): the scores "
                "flatter it") if among else "none of them is a pair the model was trained on"
    else:
        said = (f"{len(trained)} pair(s) the model was trained on left out" if trained
                else "none of them is a pair the model was trained on")
    held_out = sum(keys[i] in held for i in judged)
    if held_out:
        said += f"; {held_out} of them were held out of its training (they chose its best weights)"
    return [noisy[i] for i in judged], [clean[i] for i in judged], trained, said


def report(model, noisy, clean, out: str | Path | None = None, *, limit: int | None = None,
           device: str = "cpu", include_training: bool = False) -> DenoiseReport:
    """Compare a denoiser with the classical ones on noisy/clean pairs (folders or file lists, paired by stem).

    Pairs whose noisy image the model was trained on are left out unless ``include_training``
    (:func:`split_by_training`); ``limit`` then keeps the first N. With ``out``: writes ``metrics.csv``
    (per image), ``summary.csv``, ``report.md`` and ``before_after.png`` there.

    Raises:
        InputError: no pairs, only training pairs, or an ``out`` folder that cannot be made.

    Example:
        >>> r = report("models/png", "test/noisy_png", "test/clean_png", out="reports/png")   # doctest: +SKIP
        >>> r.summary.loc["model", "psnr_gain"]                                              # doctest: +SKIP
    """
    den = _as_denoiser(model, device)
    noisy_images, clean_images = load_training_set(noisy, clean)
    noisy_images, clean_images, trained_on, note = split_by_training(den, noisy_images, clean_images,
                                                                     include_training, limit)
    if not noisy_images:
        raise InputError("no noisy/clean pairs to compare")
    if out is not None:
        make_folder(out)
    per_image, sigma, outputs = compare({"model": den}, noisy_images, clean_images)
    summary = summarise(per_image)
    c = den.config
    markdown = (f"{len(noisy_images)} noisy/clean pairs ({noisy_images[0].domain}, {noisy_images[0].channels} "
                f"channel(s)); {note}; model: {c.objective}, fingerprint {den.fingerprint[:12]}.\n\n"
                + summary_markdown(summary, sigma))
    if out is not None:
        out_dir = Path(out)
        atomic_write(out_dir / "metrics.csv", lambda p: per_image.to_csv(p, index=False))
        atomic_write(out_dir / "summary.csv", lambda p: summary.to_csv(p, index_label="method"))
        atomic_write(out_dir / "report.md", "# Denoiser report\n\n" + markdown)
        before_after_grid(noisy_images, clean_images, outputs, out_dir / "before_after.png")
    return DenoiseReport(per_image, summary, sigma, markdown, trained_on, note)
