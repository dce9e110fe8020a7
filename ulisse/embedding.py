"""The one embedding pipeline: cutouts -> preprocessing steps -> the encoder -> observers -> vectors.

Every way into an index goes through it: ``ulisse embed``, ``index build``,
``index add``, the Python API (:func:`embed_files`, cutout files) and ``ulisse
sdss index`` in one process or on Dask workers (:func:`embed_arrays`, cutouts
already in memory). Decoding (files only), the preprocessing steps
(``--preprocess``, ``--denoise``) and the resize run in loader threads, batches
ahead of the network, so that the runtime (which releases the GIL, as do PIL's
decoders and resize) is never left waiting: see benchmarks/speed-cpu.md for the
rate from files against the model alone. On CUDA the runtime moves each batch
through pinned memory and runs it in bf16 autocast, channels_last
(:mod:`ulisse.runtime`). Embedding observers (``register_embedding_observers``)
see each batch's ids, final feature maps and vectors (:func:`embed_batch`).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .cutouts import RGBConfig, read_cutout, stretch_advice
from .encoder import Encoder
from .errors import CutoutError, InputError
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


def loaded_ahead(load: Callable[[int], object], starts: Sequence[int], workers: int) -> Iterator:
    """``load(start)`` for each of ``starts``, in order, computed ``2 * workers + 1`` batches ahead in loader threads."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ulisse-loader")
    pending: deque = deque()
    ahead = 2 * workers + 1
    try:
        for k in range(len(starts)):
            while len(pending) < ahead and len(pending) + k < len(starts):
                pending.append(pool.submit(load, starts[k + len(pending)]))
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def embed_batch(encoder: Encoder, ids: Sequence[str], prepared: np.ndarray, observers: Sequence = ()) -> np.ndarray:
    """One prepared batch (uint8 ``N x S x S x 3``) through the encoder; each observer sees
    ``EmbeddingBatch(ids, maps, vectors)`` (the maps are computed only when there are observers)."""
    if not observers:
        return encoder.embed_prepared(prepared)
    from .registry import EmbeddingBatch

    vectors, maps = encoder.embed_prepared(prepared, return_maps=True)
    batch = EmbeddingBatch(list(ids), maps, vectors)
    for obs in observers:
        obs.observe(batch)
    return vectors


def _stack(vecs: list, encoder: Encoder) -> np.ndarray:
    return np.concatenate(vecs).astype(np.float32, copy=False) if vecs else np.zeros((0, encoder.spec.dim), np.float32)


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
    observers = list(observers)
    paths = [Path(p) for p in paths]
    advice = stretch_advice(paths, rgb)
    if advice:
        LOG.warning("%s", advice)
    batch_size = batch_size or encoder.default_batch_size
    workers = workers or default_workers(encoder)
    starts = list(range(0, len(paths), batch_size))
    ids, vecs, positions, ras, decs, skipped = [], [], [], [], [], []
    bar = progress_bar(total=len(paths), desc=desc, unit="cutout", enabled=progress)
    batches = loaded_ahead(lambda s: _load_batch(encoder, paths[s:s + batch_size], s, rgb), starts, workers)
    try:
        for good, prepared, bad in batches:
            for i, reason in bad:
                if not skip_bad:
                    raise CutoutError(paths[i], reason)
                skipped.append((str(paths[i]), reason))
                LOG.warning("skipped %s: %s", paths[i], reason)
            if good:
                batch_ids = [_stem(paths[i]) for i, _, _ in good]
                vecs.append(embed_batch(encoder, batch_ids, prepared, observers))
                ids.extend(batch_ids)
                for i, ra, dec in good:
                    positions.append(i)
                    ras.append(ra)
                    decs.append(dec)
            bar.update(len(good) + len(bad))
    finally:
        batches.close()  # the loader threads stop at once, also when a bad file stops the run
        bar.close()
    return Embedded(ids, _stack(vecs, encoder), positions, np.asarray(ras, float), np.asarray(decs, float), skipped)


def embed_arrays(encoder: Encoder, images: Sequence[np.ndarray], ids: Sequence[str], *, observers: Sequence = (),
                 batch_size: int | None = None, workers: int | None = None, progress: bool = False,
                 desc: str = "embedding") -> np.ndarray:
    """Embed uint8 RGB cutouts already in memory (an SDSS field's, say) through the same pipeline as
    :func:`embed_files`: the encoder's preprocessing steps and resize in loader threads, then the
    network, then the observers. Returns float32 ``N x dim`` in input order.

    Raises:
        InputError: ``ids`` and ``images`` differ in length.
    """
    ids = [str(i) for i in ids]
    if len(ids) != len(images):
        raise InputError(f"{len(images)} cutouts with {len(ids)} ids")
    observers = list(observers)
    batch_size = batch_size or encoder.default_batch_size
    starts = list(range(0, len(images), batch_size))
    vecs = []
    prepared = loaded_ahead(lambda s: encoder.prepare(images[s:s + batch_size]), starts,
                            workers or default_workers(encoder))
    with closing(prepared), progress_bar(total=len(images), desc=desc, unit="cutout", enabled=progress) as bar:
        for start, batch in zip(starts, prepared):
            vecs.append(embed_batch(encoder, ids[start:start + batch_size], batch, observers))
            bar.update(len(batch))
    return _stack(vecs, encoder)


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


def embed_gathered(encoder, gathered, rgb, skip_bad: bool, progress: bool, observers, none: str):
    """The cutouts of :func:`ulisse.inputs.gather` embedded, and their metadata rows (positions from FITS WCS where
    the catalogue has none); InputError, ending with ``none``, when no cutout could be read."""
    emb = embed_files(encoder, gathered.paths, rgb=rgb, skip_bad=skip_bad, progress=progress, observers=observers)
    if len(emb.ids) == 0:
        raise InputError(f"no cutout could be read; {none}")
    rows = gathered.metadata.iloc[emb.positions].reset_index(drop=True).copy()
    # positions from FITS WCS fill in where the catalogue has none
    for col, values in (("ra", emb.ra), ("dec", emb.dec)):
        have = rows[col].notna().to_numpy()
        rows.loc[~have, col] = values[~have]
    return emb, rows


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
