"""Noisy and clean versions of the same simulated objects, for training and benchmarks.

The objects are those of the AGN simulator (:mod:`ulisse_bench.sim.agn`),
made ``dimmer`` magnitudes fainter: the noisy cutout is rendered with the
simulator's own SDSS-like noise (Poisson on source and sky, g, r, i sky sigma
0.025, 0.030, 0.045 nmgy), so its S/N is lower by 10^(0.4 dimmer). The clean
cutout of the same object is rendered ``CLEAN_BOOST_MAG`` magnitudes brighter
and scaled back: its noise shrinks by 10^(0.4 x 10) = 10^4, far below
anything a denoiser can recover.

Each set is a folder with ``noisy_fits/``, ``clean_fits/`` (g, r, i cubes in
nanomaggies), ``noisy_png/``, ``clean_png/`` (Lupton RGB as the simulator
makes it) and ``labels.csv``; object ``k`` is drawn from
``numpy.random.default_rng([seed, k])``, as in the AGN benchmark, so the set of
seed 0 holds the AGN benchmark's objects.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ulisse._io import atomic_write
from ulisse.plugins.denoise import Image, write_image

from . import agn

CLEAN_BOOST_MAG = 10.0
FOLDERS = ("noisy_fits", "clean_fits", "noisy_png", "clean_png")


def render_pair(obj, dimmer: float, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 (3, size, size) g, r, i cubes in nanomaggies of ``obj`` made ``dimmer`` mag fainter."""
    noisy = agn.render(replace(obj, r_mag=obj.r_mag + dimmer), size)
    bright = agn.render(replace(obj, r_mag=obj.r_mag + dimmer - CLEAN_BOOST_MAG), size)
    clean = bright.astype(np.float64) / 10 ** (0.4 * CLEAN_BOOST_MAG)
    return noisy, clean.astype(np.float32)


def _write_cube(path: Path, cube: np.ndarray) -> None:
    write_image(Image(path.stem, cube, "flux"), path)


def simulate_pairs(out_dir, n: int, seed: int, dimmer: float = 2.5, size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Write ``n`` noisy/clean pairs (FITS and PNG) and ``labels.csv`` to ``out_dir``; reused when present.

    Returns:
        The label table (id, label, is_agn, r_mag, agn_contrast...).
    """
    from PIL import Image as PILImage
    from ulisse.progress import progress_iter

    out = Path(out_dir)
    params = {"n": n, "seed": seed, "dimmer": dimmer, "size": size, "clean_boost_mag": CLEAN_BOOST_MAG}
    marker = out / "params.json"
    if marker.is_file() and json.loads(marker.read_text()) == params and (out / "labels.csv").is_file():
        return pd.read_csv(out / "labels.csv")
    for folder in FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for k in progress_iter(range(1, n + 1), desc=f"simulating {out.name}", enabled=progress):
        oid = f"sim-{k:06d}"
        obj = agn.draw_object(np.random.default_rng([seed, k]))
        noisy, clean = render_pair(obj, dimmer, size)
        for kind, cube in (("noisy", noisy), ("clean", clean)):
            _write_cube(out / f"{kind}_fits" / f"{oid}.fits", cube)
            rgb = PILImage.fromarray(agn.to_rgb(cube))
            atomic_write(out / f"{kind}_png" / f"{oid}.png", lambda p, im=rgb: im.save(p, format="PNG"), fsync=False)
        p = asdict(obj)
        rows.append({**p, "r_mag": obj.r_mag + dimmer, "id": oid, "label": "AGN" if obj.is_agn else "galaxy",
                     "is_agn": int(obj.is_agn)})
    table = pd.DataFrame(rows)
    atomic_write(out / "labels.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(marker, json.dumps(params))
    return table
