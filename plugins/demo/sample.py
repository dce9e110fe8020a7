"""``ulisse sample DIR``: a small labelled sample made from the Hubble Deep Field, offline, in seconds.

The sources of ``skimage.data.hubble_deep_field()`` (detected with photutils, as ``ulisse demo`` does) with
columns MEASURED on the image, so that every verb that needs labels, targets, id lists or noisy/clean pairs can
be tried on data the project makes itself. The labels are measurements, not astrophysical classes:

- ``r_half``: half-light radius (px) of the source's segment (photutils ``flux_radius(0.5)``);
- ``morph``: ``extended`` for the third of the sources with the largest ``r_half``, ``compact`` otherwise;
- ``colour_index``: -2.5 log10(blue / red channel flux) in the segment (the image's RGB channels, not a
  calibrated colour); ``colour``: ``blue``, ``mid`` or ``red`` by tertiles of it;
- ``log_flux``: log10 of the background-subtracted segment flux (grey image, arbitrary units).

Written to DIR: ``cutouts/`` and ``catalog.csv`` (the first sources), ``more/`` and ``more.csv`` (the rest, to
try ``ulisse index add``), ``extended.txt``/``compact.txt`` (a dozen examples of each: id lists for
``ulisse rank`` and ``ulisse marks``), ``confirmed.txt`` (every extended source of ``catalog.csv``: the objects
an astronomer would have confirmed, for ``ulisse expand --follow``), ``noisy/`` (the cutouts of ``cutouts/`` plus simulated noise, the same file names: pairs for
``ulisse denoise train --noisy DIR/noisy --clean DIR/cutouts``) and ``README.txt`` describing all this.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import CUTOUT_SIZE, detect_hdf_sources

DESCRIPTION = __doc__.split("\n\n", 1)[1]
NOISE_SIGMA = 20.0  # grey levels (of 255) of the Gaussian noise added to make noisy/
EXAMPLES = 12  # ids per example list (extended.txt, compact.txt)


def measure(sources) -> pd.DataFrame:
    """The catalogue of ``sources`` with r_half, colour_index, log_flux and the classes morph and colour."""
    from astropy.stats import sigma_clipped_stats
    from photutils.segmentation import SourceCatalog, detect_sources

    rgb = sources.image.astype(np.float64)
    grey = rgb.mean(axis=2)
    _, median, std = sigma_clipped_stats(grey, sigma=3.0)
    segm = detect_sources(grey - median, 3.0 * std, n_pixels=12)
    cat = sources.catalog.copy()
    labels = np.array([int(i.split("-")[1]) for i in cat["id"]])
    grey_cat = SourceCatalog(grey - median, segm)[np.asarray(segm.get_indices(labels))]
    cat["r_half"] = np.round(np.asarray(grey_cat.flux_radius(0.5).value, float), 3)
    fluxes = []
    for channel in (0, 2):  # red, blue
        band = rgb[..., channel]
        _, med, _ = sigma_clipped_stats(band, sigma=3.0)
        chan = SourceCatalog(band - med, segm)[np.asarray(segm.get_indices(labels))]
        fluxes.append(np.clip(np.asarray(chan.segment_flux, float), 1e-3, None))
    cat["colour_index"] = np.round(-2.5 * np.log10(fluxes[1] / fluxes[0]), 3)
    cat["log_flux"] = np.round(np.log10(np.clip(cat["flux"].to_numpy(float), 1e-3, None)), 3)
    cut = np.quantile(cat["r_half"], 2 / 3)
    cat["morph"] = np.where(cat["r_half"] > cut, "extended", "compact")
    lo, hi = np.quantile(cat["colour_index"], [1 / 3, 2 / 3])
    cat["colour"] = np.select([cat["colour_index"] <= lo, cat["colour_index"] > hi], ["blue", "red"], "mid")
    return cat


def write_sample(folder: Path, n: int = 300, more: int = 60, seed: int = 0) -> dict:
    """Write the labelled sample to ``folder``; returns a summary (counts, class fractions, paths)."""
    from PIL import Image

    sources = detect_hdf_sources(max_sources=n)
    cat = measure(sources)
    rng = np.random.default_rng(seed)
    more = min(more, len(cat) - 1)
    order = rng.permutation(len(cat))
    part = {"cutouts": cat.iloc[np.sort(order[more:])], "more": cat.iloc[np.sort(order[:more])]}
    for name in ("cutouts", "more", "noisy"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    size = CUTOUT_SIZE
    for name, rows in part.items():
        for row in rows.itertuples(index=False):
            cut = sources.image[row.y0:row.y0 + size, row.x0:row.x0 + size]
            Image.fromarray(cut).save(folder / name / f"{row.id}.png")
            if name == "cutouts":
                noisy = cut.astype(np.float64) + rng.normal(0.0, NOISE_SIGMA, cut.shape)
                Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8)).save(folder / "noisy" / f"{row.id}.png")
        rows.drop(columns=["x", "y", "x0", "y0", "semimajor_axis", "semiminor_axis", "ellipticity"]).to_csv(folder / ("catalog.csv" if name == "cutouts" else "more.csv"),
                                               index=False)
    main = part["cutouts"]
    for label in ("extended", "compact"):
        ids = main.loc[main["morph"] == label, "id"].head(EXAMPLES)
        (folder / f"{label}.txt").write_text("".join(f"{i}\n" for i in ids))
    confirmed = main.loc[main["morph"] == "extended", "id"]
    (folder / "confirmed.txt").write_text("".join(f"{i}\n" for i in confirmed))
    (folder / "README.txt").write_text(DESCRIPTION)
    return {"objects": len(main), "more": len(part["more"]),
            "morph": main["morph"].value_counts(normalize=True).round(2).to_dict(),
            "colour": main["colour"].value_counts(normalize=True).round(2).to_dict()}
