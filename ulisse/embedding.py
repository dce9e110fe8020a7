"""Embedding cutout files in batches, with progress, skipping bad files on request.

Reading, decoding, the preprocessing steps and the resize run in loader
threads, batches ahead of the network, so that the runtime (which releases
the GIL, as do PIL's decoders and resize) is never left waiting for files:
see benchmarks/speed-cpu.md for the rate from files against the model alone.
Embedding observers (``register_embedding_observers``) see each batch's final
feature maps and vectors.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .cutouts import RGBConfig, read_cutout
from .encoder import Encoder
from .errors import CutoutError
from .progress import progress_bar

LOG = logging.getLogger(__name__)


@dataclass
class Embedded:
    """Vectors of the cutouts that could be read, in input order.

    Attributes:
        ids: object ids of the embedded cutouts.
        vectors: float32 ``N x dim``.
        positions: for each vector, its position in the input list.
        ra, dec: cutout centres from FITS WCS (NaN where unknown).
        skipped: ``(path, reason)`` of every cutout left out (only with ``skip_bad``).
    """

    ids: list[str]
    vectors: np.ndarray
    positions: list[int]
    ra: np.ndarray
    dec: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _load_batch(encoder: Encoder, paths: Sequence[Path], start: int, rgb: RGBConfig):
    """Read one batch of files and prepare the readable ones: (good [(i, ra, dec)], prepared array, bad [(i, reason)])."""
    good, images, bad = [], [], []
    for i, path in enumerate(paths, start):
        try:
            c = read_cutout(path, rgb)
        except CutoutError as exc:
            bad.append((i, exc.reason))
            continue
        good.append((i, c.ra, c.dec))
        images.append(c.image)
    return good, encoder.prepare(images), bad


def default_workers(encoder: Encoder) -> int:
    """Loader threads: one on a small CPU (the runtime has the other cores), more on a GPU machine."""
    cores = os.cpu_count() or 1
    return min(8, max(1, cores - 1)) if encoder.cuda else max(1, min(4, cores // 4))


def embed_files(encoder: Encoder, paths: Sequence[str | Path], *, rgb: RGBConfig = RGBConfig(),
                skip_bad: bool = False, progress: bool = True, batch_size: int | None = None,
                workers: int | None = None, desc: str = "embedding", observers: Sequence = ()) -> Embedded:
    """Embed cutout files with ``encoder``.

    Args:
        workers: loader threads (default :func:`default_workers`).
        observers: objects with ``observe(EmbeddingBatch)`` (see :mod:`ulisse.registry`); they get each
            batch's ids, final feature maps and vectors. Maps are computed only when there are observers.

    Raises:
        CutoutError: a file cannot be used (unless ``skip_bad``; then it is reported in ``skipped``).
    """
    from .registry import EmbeddingBatch

    observers = list(observers)
    paths = [Path(p) for p in paths]
    batch_size = batch_size or encoder.default_batch_size
    workers = workers or default_workers(encoder)
    starts = list(range(0, len(paths), batch_size))
    ids, vecs, positions, ras, decs, skipped = [], [], [], [], [], []
    bar = progress_bar(total=len(paths), desc=desc, unit="cutout", enabled=progress)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ulisse-loader")
    pending: deque = deque()
    ahead = 2 * workers + 1  # batches read ahead of the network
    try:
        for k, start in enumerate(starts):
            while len(pending) < ahead and len(pending) + k < len(starts):
                s = starts[k + len(pending)]
                pending.append(pool.submit(_load_batch, encoder, paths[s:s + batch_size], s, rgb))
            good, prepared, bad = pending.popleft().result()
            for i, reason in bad:
                if not skip_bad:
                    raise CutoutError(paths[i], reason)
                skipped.append((str(paths[i]), reason))
                LOG.warning("skipped %s: %s", paths[i], reason)
            if good:
                batch_ids = [_stem(paths[i]) for i, _, _ in good]
                if observers:
                    vectors, maps = encoder.embed_prepared(prepared, return_maps=True)
                    batch = EmbeddingBatch(batch_ids, maps, vectors)
                    for obs in observers:
                        obs.observe(batch)
                else:
                    vectors = encoder.embed_prepared(prepared)
                vecs.append(vectors)
                ids.extend(batch_ids)
                for i, ra, dec in good:
                    positions.append(i)
                    ras.append(ra)
                    decs.append(dec)
            bar.update(len(good) + len(bad))
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    vectors = np.concatenate(vecs).astype(np.float32, copy=False) if vecs else np.zeros((0, encoder.spec.dim), np.float32)
    return Embedded(ids, vectors, positions, np.asarray(ras, float), np.asarray(decs, float), skipped)


class PluginObserver:
    """A registered observer for one run; a plugin failing in ``observe`` or ``finish`` is reported
    and dropped, and the embedding (or the committed index) stays as it is."""

    def __init__(self, name: str, observer):
        self.name, self.observer, self.failed = name, observer, False

    def observe(self, batch) -> None:
        if not self.failed:
            self._guard("disabled for this run", self.observer.observe, batch)

    def finish(self, index) -> None:
        if not self.failed:
            self._guard("failed to store its results", self.observer.finish, index)

    def _guard(self, what: str, fn, arg) -> None:
        try:
            fn(arg)
        except Exception as exc:
            self.failed = True
            text = str(exc).splitlines()[0][:200] if str(exc) else ""
            LOG.warning("embedding observer %s %s: %s%s", self.name, what, exc.__class__.__name__,
                        f": {text}" if text else "")


def create_observers(index) -> list[PluginObserver]:
    """One live observer per registered embedding observer, for a run that extends ``index`` (None: a new build)."""
    from .registry import embedding_observers

    live = []
    for name, entry in embedding_observers().items():
        holder = PluginObserver(name, None)
        holder._guard("disabled", lambda idx: setattr(holder, "observer", entry.create(idx)), index)
        if not holder.failed:
            live.append(holder)
    return live


def finish_observers(observers, index) -> None:
    """``finish(index)`` on each observer, after the commit."""
    for obs in observers:
        obs.finish(index)


def _stem(p: Path) -> str:
    from .cutouts import cutout_id

    return cutout_id(p)
