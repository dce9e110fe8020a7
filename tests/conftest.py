"""Shared fixtures: small synthetic cutouts (PNG and FITS with WCS), catalogues, a tiny encoder.

Everything runs on the CPU and offline. The tiny encoder is timm's
``test_efficientnet`` with seeded random weights (asked for explicitly); tests
that need real ImageNet features use the embedded Lite0 weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait for the hub in tests


def pytest_collection_modifyitems(config, items):
    import torch

    has_gpu = torch.cuda.is_available()
    remote = os.environ.get("ULISSE_REMOTE_TESTS") == "1"
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "remote_data" in item.keywords and not remote:
            item.add_marker(pytest.mark.skip(reason="needs the internet (set ULISSE_REMOTE_TESTS=1)"))


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
    from astropy.visualization import make_lupton_rgb
    from PIL import Image

    g, r, i = cube
    Image.fromarray(make_lupton_rgb(i, r, g, Q=8, stretch=0.5)).save(path)


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

    return Encoder.load("test_efficientnet", weights="random", device="cpu")


@pytest.fixture(scope="session")
def lite0_encoder():
    from ulisse import Encoder

    return Encoder.load(weights="lite0", device="cpu")


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory):
    """The HDF demo index with 60 sources (Lite0 weights), built once per test session."""
    from ulisse.plugins.demo import run_demo

    out = tmp_path_factory.getbasetemp() / "demo-index"
    if not (out / "manifest.json").is_file():
        run_demo(out, max_sources=60, weights="lite0", device="cpu", progress=False)
    return out


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


@pytest.fixture()
def cli(capsys):
    """Run the ``ulisse`` CLI in-process: returns (exit code, stdout, stderr)."""
    from ulisse.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
