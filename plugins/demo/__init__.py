"""``ulisse demo``: the whole method, offline, on the Hubble Deep Field.

Takes the Hubble Deep Field image bundled with scikit-image, detects its
sources with photutils, cuts 64 x 64 px cutouts around them, builds an index
with the embedded default encoder, queries it from one prototype, prints the
neighbour table and writes a PNG grid of the prototype and its neighbours.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd

import ulisse
from ulisse.options import device_option

LOG = logging.getLogger(__name__)

CUTOUT_SIZE = 64
DEFAULT_OUT = "ulisse-demo"
# skimage's image is the Hubble eXtreme Deep Field (HubbleSite release 2012-37a): centred near
# RA 03h32m38.5s, Dec -27d47m00s (J2000), 2.3' x 2.0' over 1000 x 872 px, i.e. about 0.138"/px.
# The image's exact orientation and centre are not published with it: positions are approximate.
XDF_CENTRE = ("03h32m38.5s", "-27d47m00s")
XDF_SCALE_ARCSEC = 0.138
POSITIONS_NOTE = ("approximate: the XDF centre (RA 03h32m38.5s, Dec -27d47m00s) and 0.138 arcsec/px, "
                  "north up and east left assumed")


def approximate_positions(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Approximate (ra, dec) in degrees of pixel positions in the XDF image (a TAN projection, north up)."""
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS

    centre = SkyCoord(*XDF_CENTRE)
    h, w = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [centre.ra.deg, centre.dec.deg]
    wcs.wcs.crpix = [(w + 1) / 2, (h + 1) / 2]
    # image rows run downwards (north up means dec decreases with y), east left means ra decreases with x
    wcs.wcs.cdelt = [-XDF_SCALE_ARCSEC / 3600, -XDF_SCALE_ARCSEC / 3600]
    ra, dec = wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
    return np.round(ra, 7), np.round(dec, 7)


@dataclass
class HDFSources:
    """Sources detected in the Hubble Deep Field image."""

    image: np.ndarray  # H x W x 3 uint8
    catalog: pd.DataFrame  # id, x, y, area, flux, ...
    detected: int = 0  # sources detected, numbered hdf-0001 up: the catalogue keeps some of them, under these ids


def detect_hdf_sources(max_sources: int = 300, size: int = CUTOUT_SIZE, nsigma: float = 3.0,
                       n_pixels: int = 12) -> HDFSources:
    """Detect sources in ``skimage.data.hubble_deep_field()`` whose full cutout fits in the image."""
    from astropy.stats import sigma_clipped_stats
    from photutils.segmentation import SourceCatalog, detect_sources
    from skimage import data

    rgb = data.hubble_deep_field()
    grey = rgb.astype(np.float64).mean(axis=2)
    _, median, std = sigma_clipped_stats(grey, sigma=3.0)
    sub = grey - median
    segm = detect_sources(sub, nsigma * std, n_pixels=n_pixels)
    if segm is None:
        raise ulisse.InputError("no sources detected in the Hubble Deep Field image")
    cat = SourceCatalog(sub, segm).to_table(columns=["label", "x_centroid", "y_centroid", "area", "segment_flux",
                                                     "semimajor_axis", "semiminor_axis", "ellipticity"]).to_pandas()
    cat["area"] = cat["area"].astype(float)
    half = size // 2
    h, w = grey.shape
    x0 = np.round(cat["x_centroid"]).astype(int) - half
    y0 = np.round(cat["y_centroid"]).astype(int) - half
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + size <= w) & (y0 + size <= h)
    cat = cat[inside].copy()
    cat["x0"], cat["y0"] = x0[inside], y0[inside]
    cat = cat.sort_values("segment_flux", ascending=False).head(max_sources).sort_values("label")
    cat.insert(0, "id", [f"hdf-{int(lab):04d}" for lab in cat["label"]])
    cat = cat.rename(columns={"x_centroid": "x", "y_centroid": "y", "segment_flux": "flux"}).drop(columns=["label"])
    ra, dec = approximate_positions(cat["x"].to_numpy(), cat["y"].to_numpy(), grey.shape)
    cat.insert(1, "ra", ra)
    cat.insert(2, "dec", dec)
    return HDFSources(rgb, cat.reset_index(drop=True), detected=int(segm.max_label))  # labels run 1..max_label


def detection_note(sources: HDFSources, size: int = CUTOUT_SIZE) -> str:
    """How many sources were detected and which of them the demo indexes (their ids keep the detection numbers)."""
    n = len(sources.catalog)
    kept = (f"all {n}" if n == sources.detected else
            f"the {n} brightest of those whose {size} x {size} px cutout fits in the image")
    return (f"detected {sources.detected} sources in the Hubble Deep Field (skimage.data.hubble_deep_field), "
            f"numbered hdf-0001 to hdf-{sources.detected:04d}; indexing {kept}")


def write_cutouts(sources: HDFSources, folder: Path, size: int = CUTOUT_SIZE) -> Path:
    """Write one PNG per source and a catalogue CSV; returns the catalogue path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for row in sources.catalog.itertuples(index=False):
        cut = sources.image[row.y0:row.y0 + size, row.x0:row.x0 + size]
        Image.fromarray(cut).save(folder / f"{row.id}.png")
    catalog = folder.parent / "hdf_sources.csv"
    sources.catalog.drop(columns=["x0", "y0"]).to_csv(catalog, index=False)
    return catalog


def run_demo(out: Path, k: int = 8, prototype: str | None = None, max_sources: int = 300, weights=None,
             device: str = "auto", progress: bool = True):
    """Build the HDF demo index in ``out`` and query it; returns (index, result, png path)."""
    t0 = time.perf_counter()
    sources = detect_hdf_sources(max_sources=max_sources)
    LOG.info("%s", detection_note(sources))
    catalog = write_cutouts(sources, out / "cutouts")
    index, report = ulisse.build_index([out / "cutouts"], out, catalog, weights=weights, device=device,
                                       overwrite=True, progress=progress, manifest_extra={"positions": POSITIONS_NOTE})
    LOG.info("sky positions are %s", POSITIONS_NOTE)
    LOG.info("indexed %d cutouts in %.1f s", report.added, report.seconds)
    if prototype is None:  # the largest extended source makes a telling prototype
        prototype = sources.catalog.sort_values("area", ascending=False)["id"].iloc[0]
    result = index.query(prototype, k=k)
    png = ulisse.plot.neighbour_grid(index, result, out / "demo_query.png",
                                     title=f"Hubble Deep Field: {k} nearest neighbours of {prototype}")
    LOG.info("demo done in %.1f s", time.perf_counter() - t0)
    return index, result, png


@ulisse.hookimpl
def register_commands(cli):
    @cli.command()
    @click.option("--out", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
                  help="data folder to write: the index, its cutouts/ folder, the catalogue and the query grid")
    @click.option("-k", "k", type=click.IntRange(1, 100), default=8, show_default=True)
    @click.option("--prototype", default=None, help="id of the prototype (default: the largest source)")
    @click.option("--max-sources", type=click.IntRange(10, 5000), default=300, show_default=True)
    @click.option("--weights", default=None, help="encoder weights (see 'ulisse index build --help')")
    @device_option
    def demo(out, k, prototype, max_sources, weights, device):
        """Offline demo: index the Hubble Deep Field's sources and query one prototype."""
        from ulisse.cli import progress_enabled
        from ulisse.results import render

        index, result, png = run_demo(Path(out), k=k, prototype=prototype, max_sources=max_sources,
                                      weights=weights, device=device, progress=progress_enabled())
        click.echo(f"index {index.path}: {len(index)} objects; encoder {index.encoder_spec.describe()}")
        click.echo(f"prototype {result.prototype_id}; its {len(result)} nearest neighbours:")
        cols = ["rank", "id", "distance", "ra", "dec", "area", "flux"]
        click.echo(render(result.table[cols], "table"), nl=False)
        click.echo(f"grid of the prototype and its neighbours: {png}")

    @cli.command()
    @click.argument("folder", type=click.Path(file_okay=False))
    @click.option("--max-sources", type=click.IntRange(20, 5000), default=300, show_default=True)
    @click.option("--more", type=click.IntRange(1, 1000), default=60, show_default=True,
                  help="sources kept apart in more/ (with more.csv), to try 'ulisse index add'")
    def sample(folder, max_sources, more):
        """Write a small labelled sample (HDF sources, labels measured on the image), offline, in seconds.

        FOLDER gets cutouts/ + catalog.csv, more/ + more.csv, id lists extended.txt, compact.txt and
        confirmed.txt, noisy/
        (cutouts/ plus simulated noise, for 'ulisse denoise train') and README.txt. The classes morph
        (compact/extended by half-light radius) and colour (blue/mid/red by channel flux ratio) and the
        numbers r_half, colour_index and log_flux are measurements, not astrophysical classes.
        """
        from .sample import write_sample

        summary = write_sample(Path(folder), n=max_sources, more=more)
        click.echo(f"{folder}: {summary['objects']} cutouts in cutouts/ (catalog.csv), {summary['more']} in more/ "
                   f"(more.csv), noisy/, extended.txt, compact.txt, confirmed.txt; morph {summary['morph']}, "
                   f"colour {summary['colour']} (see {Path(folder) / 'README.txt'})")
