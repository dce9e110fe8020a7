"""Public test helpers for ulisse and its plugins: synthetic cutouts, a tiny encoder, a tiny index.

Installed as a pytest plugin (entry point ``pytest11``), so a plugin author's
tests get the fixtures with nothing to import::

    def test_my_derived_columns(tiny_index):
        table = tiny_index.derived("my-columns")
        assert len(table) == len(tiny_index)

Fixtures: ``survey`` (a folder of 24 labelled cutouts, PNG and FITS with WCS,
and its ``catalog.csv``), ``tiny_encoder`` (timm's ``test_efficientnet`` with
seeded random weights: fast, offline, not meaningful), ``tiny_index`` (the
survey indexed with the tiny encoder, fresh for each test). Helpers:
:func:`make_survey`, :func:`blob`, :func:`write_fits_cutout`,
:func:`cube_to_png`, :func:`tree_digest`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def blob(size, rng, kind, ra=None):
    """A 3-band image of one of three shapes: round blob, elongated streak, double."""
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    if kind == "round":
        s = rng.uniform(3, 6)
        img = np.exp(-(x**2 + y**2) / (2 * s**2))
    elif kind == "streak":
        a = rng.uniform(0, np.pi)
        u, v = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
        img = np.exp(-(u**2 / (2 * 14**2) + v**2 / (2 * 1.5**2)))
    else:
        d = rng.uniform(8, 14)
        img = np.exp(-((x - d) ** 2 + y**2) / 8) + np.exp(-((x + d) ** 2 + y**2) / 8)
    colours = {"round": (1.0, 0.7, 0.4), "streak": (0.4, 0.7, 1.0), "double": (0.8, 0.8, 0.8)}[kind]
    cube = np.stack([img * c for c in colours]) * 5.0 + rng.normal(0, 0.02, (3, size, size))
    return cube.astype(np.float32)  # g, r, i


def write_fits_cutout(path, cube, ra, dec, scale_arcsec=0.396):
    from astropy.io import fits
    from astropy.wcs import WCS

    n = cube.shape[-1]
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cdelt = [-scale_arcsec / 3600, scale_arcsec / 3600]
    hdr = w.to_header()
    hdr["BUNIT"] = "nanomaggy"
    fits.PrimaryHDU(cube, header=hdr).writeto(path, overwrite=True)


def cube_to_png(path, cube):
    """A PNG of a g, r, i cube as ulisse shows the cube written as FITS (first row at the bottom)."""
    from astropy.visualization import make_lupton_rgb
    from PIL import Image

    g, r, i = cube
    Image.fromarray(np.ascontiguousarray(make_lupton_rgb(i, r, g, Q=8, stretch=0.5)[::-1])).save(path)


KINDS = ("round", "streak", "double")


def make_survey(folder: Path, n_per_kind=8, size=64, seed=0, fits_every=4, prefix="obj"):
    """PNG cutouts (every ``fits_every``-th a FITS cube with WCS) and a catalogue with labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for kind in KINDS:
        for _ in range(n_per_kind):
            oid = f"{prefix}{k:03d}"
            ra, dec = 150.0 + 0.01 * k, 2.0 + 0.005 * k
            cube = blob(size, rng, kind)
            if fits_every and k % fits_every == 0:
                write_fits_cutout(folder / f"{oid}.fits", cube, ra, dec)
            else:
                cube_to_png(folder / f"{oid}.png", cube)
            rows.append({"id": oid, "ra": ra, "dec": dec, "label": kind, "r_mag": 17 + rng.normal()})
            k += 1
    cat = pd.DataFrame(rows)
    return cat


@pytest.fixture(scope="session")
def survey(tmp_path_factory):
    """A folder of 24 cutouts (PNG + FITS) and its catalogue CSV (id, ra, dec, label, r_mag)."""
    root = tmp_path_factory.mktemp("survey")
    cat = make_survey(root / "cutouts")
    cat.to_csv(root / "catalog.csv", index=False)
    return root


@pytest.fixture(scope="session")
def tiny_encoder():
    from ulisse import Encoder

    return Encoder.load("test_efficientnet", weights="random", device="cpu", preset="ulisse")


@pytest.fixture()
def tiny_index(tmp_path, survey, tiny_encoder):
    """A fresh index of the survey with the tiny encoder (per test: tests may change it)."""
    from ulisse import build_index

    idx, _ = build_index([survey / "cutouts"], tmp_path / "idx", survey / "catalog.csv", encoder=tiny_encoder,
                         device="cpu", progress=False)
    return idx


def tree_digest(path: Path) -> dict:
    """sha256 of every file under ``path`` (to show an index is byte-identical)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(path).rglob("*")) if p.is_file()}


def install_plugin_distribution(folder: Path, name: str, version: str, package: str, files: dict[str, str]) -> Path:
    """Make a distribution ``name`` whose package ``package`` (``files``: name -> text) is registered in the
    ``ulisse`` entry-point group, install it with pip into ``folder/site`` and return that folder
    (put it on ``PYTHONPATH`` to use the plugin), as a plugin author's users would install it.
    """
    import subprocess
    import sys
    import textwrap

    src = Path(folder) / "src"
    (src / package).mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "{version}"
        [project.entry-points.ulisse]
        {package.removeprefix("ulisse_")} = "{package}"
        [tool.setuptools.package-data]
        {package} = ["*.py"]
    """))
    for filename, text in files.items():
        (src / package / filename).write_text(textwrap.dedent(text))
    target = Path(folder) / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    return target


@pytest.fixture(scope="session")
def survey_index(tmp_path_factory, survey, tiny_encoder):
    """The survey indexed with the tiny encoder once per session, shared: tests must not change it."""
    from ulisse import build_index

    idx, _ = build_index([survey / "cutouts"], tmp_path_factory.mktemp("survey-index") / "idx", survey / "catalog.csv",
                         encoder=tiny_encoder, device="cpu", progress=False)
    return idx


def page_script(title: str) -> Path:
    """The script of the web UI page registered under ``title`` (as ``ulisse ui`` finds it: through the hook)."""
    from ulisse.registry import ui_pages

    pages = {p.title: Path(p.script) for p in ui_pages()}
    if title not in pages:
        raise KeyError(f"no web UI page {title!r} is registered (there are: {', '.join(pages)})")
    return pages[title]
