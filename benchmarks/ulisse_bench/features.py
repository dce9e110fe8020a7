"""``ulisse benchmark features``: the feature browser's display path on a large index (report: benchmarks/features.md).

Builds, once, an index of ``--objects`` 64 x 64 cutouts cropped from the Hubble
Deep Field image bundled with scikit-image (random positions, rotations and
flips), whose vectors and feature lists come from *synthetic* maps fed to the
embedding observer (embedding 10,000 cutouts on two shared CPU cores would take
most of an hour); the encoder recorded with the index is the real offline Lite0
one, so ``recompute=True`` and the object view run the real model. Then, warm
(index open, encoder loaded, lists read once), it times for random features:
the top objects with overlays from the stored maps, the same with the maps
recomputed from the cutouts, one object's strongest features, and, as the
in-process reference, a one-shot query of 9 neighbours plus reading their cutouts.

    ulisse benchmark features --objects 10000 --folder /tmp/features-bench
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd


def make_cutouts(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[Path]:
    """``n`` PNG crops of skimage's Hubble Deep Field (written once)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    field = data.hubble_deep_field()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"hdf{i:05d}.png"
        paths.append(path)
        if path.is_file():
            continue
        y, x = rng.integers(0, field.shape[0] - size), rng.integers(0, field.shape[1] - size)
        crop = np.rot90(field[y:y + size, x:x + size], int(rng.integers(4)))
        Image.fromarray(np.ascontiguousarray(crop[:, ::-1] if rng.integers(2) else crop)).save(path)
    return paths


def build(folder: Path, n: int, batch: int = 256, seed: int = 1):
    """The index with lists from synthetic maps (seconds per 1,000 objects in the observer, returned too)."""
    import ulisse
    from ulisse.plugins.features import DEFAULT_TOP, FeatureObserver, activations, stored_lists
    from ulisse.registry import EmbeddingBatch

    index_dir = folder / "index"
    paths = make_cutouts(folder / "cutouts", n)
    spec = ulisse.Encoder.load(weights="lite0", device="cpu").spec
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"id": [p.stem for p in paths], "source": [str(p) for p in paths],
                         "label": rng.choice(["agn", "galaxy", "star"], size=n, p=[0.12, 0.68, 0.2])})
    if not (index_dir / "manifest.json").is_file():
        vectors = rng.normal(size=(n, spec.dim)).astype(np.float32)
        ulisse.create_index(index_dir, vectors, meta, spec, factory="Flat", device="cpu")
    index = ulisse.open_index(index_dir, device="cpu")
    observer = FeatureObserver(None)
    spent = 0.0
    acts = []
    for start in range(0, n, batch):
        ids = list(meta["id"][start:start + batch])
        maps = rng.gamma(0.5, 1.0, (len(ids), spec.dim, 7, 7)).astype(np.float32)
        acts.append(activations(maps))
        t0 = time.perf_counter()
        observer.observe(EmbeddingBatch(ids, maps, np.zeros((len(ids), spec.dim), np.float32)))
        spent += time.perf_counter() - t0
    t0 = time.perf_counter()
    observer.finish(index)
    spent += time.perf_counter() - t0
    act = np.concatenate(acts).T  # C x N: the exhaustive recomputation
    top = np.lexsort((np.broadcast_to(np.arange(n), act.shape), -act), axis=1)[:, :DEFAULT_TOP]
    lists = stored_lists(index)
    exact = bool(np.array_equal(lists.rows, top) and np.allclose(lists.mean, act.mean(axis=1))
                 and np.allclose(lists.std, act.std(axis=1)))
    return index, spent / n * 1000, exact


def observer_overhead(folder: Path, n: int) -> tuple[float, float]:
    """Seconds to embed ``n`` cutouts with Lite0 through the core's embed_files, without and with the observer."""
    import ulisse
    from ulisse.embedding import embed_files
    from ulisse.plugins.features import FeatureObserver

    encoder = ulisse.Encoder.load(weights="lite0", device="cpu")
    paths = make_cutouts(folder / "cutouts", n)
    embed_files(encoder, paths[:8], progress=False)  # warm
    t0 = time.perf_counter()
    embed_files(encoder, paths, progress=False)
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    embed_files(encoder, paths, progress=False, observers=[FeatureObserver(None)])
    return plain, time.perf_counter() - t0


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def run(folder: Path, n: int, repeats: int, embed: int) -> str:
    import torch

    from ulisse.plot import thumbnail
    from ulisse.plugins.features import feature_view, object_features, stored_lists

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    index, observer_ms, exact = build(folder, n)
    built = time.perf_counter() - t0
    index.encoder  # warm: the model is loaded once, as in a running UI or Python session
    stored_lists(index)
    feature_view(index, 0, recompute=True)  # first forward pass (allocations) out of the timings
    rng = np.random.default_rng(2)
    feats = rng.choice(stored_lists(index).channels, size=repeats, replace=False)
    ids = rng.choice(index.ids, size=repeats, replace=False)
    stored = [timed(feature_view, index, int(f)) for f in feats]
    recomputed = [timed(feature_view, index, int(f), recompute=True) for f in feats]
    objects = [timed(object_features, index, str(i)) for i in ids]

    def reference(oid):
        result = index.query(id=oid, k=9)
        [thumbnail(index, i) for i in result.ids]

    refs = [timed(reference, str(i)) for i in ids]
    med = statistics.median
    ref = med(refs)
    rows = [("top 9 with overlays, stored maps", stored), ("top 9 with overlays, maps recomputed (Lite0)", recomputed),
            ("one object's 10 strongest features (Lite0)", objects), ("reference: query k=9 + read 9 cutouts", refs)]
    lines = [f"objects: {len(index)}; features: {stored_lists(index).channels}; repeats: {repeats}",
             f"machine: {platform.machine()}, {platform.processor() or '?'}, torch threads {torch.get_num_threads()}, "
             f"load average {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}",
             f"setup (cutouts, index, lists from synthetic maps): {built:.1f} s; observer: {observer_ms:.3f} ms per object "
             f"(batches of 256)",
             f"stored top lists and statistics equal an exhaustive recomputation over all {n} objects: {exact}",
             "", "| path | median (s) | max (s) | x reference |", "|---|---|---|---|"]
    for name, times in rows:
        lines.append(f"| {name} | {med(times):.3f} | {max(times):.3f} | {med(times) / ref:.1f} |")
    if embed:
        plain, observed = observer_overhead(folder, embed)
        lines += ["", f"embedding {embed} cutouts with Lite0 (embed_files): {plain:.1f} s without observers, "
                      f"{observed:.1f} s with the features observer ({observed / plain:.2f}x)"]
    return "\n".join(lines) + "\n"

