"""Non-parametric morphology of each object's cutout, measured with statmorph.

For every cutout: the sky's median and robust scatter ``sigma`` (1.4826 x MAD) of the
image ``I`` (the sum of the cutout's RGB channels, as the encoder reads it); the image
smoothed by a Gaussian of :data:`SMOOTH` px; sources detected at :data:`DETECT` times the
smoothed sky's scatter (at least :data:`NPIXELS` connected pixels) and deblended
(photutils, :data:`DEBLEND_LEVELS` levels, contrast :data:`DEBLEND_CONTRAST`), so that an
unrelated neighbour becomes a segment of its own; the segment at (or nearest to) the
cutout's centre is the object (if its smoothed peak reaches :data:`PEAK` times the scatter;
else there is none), the other segments are masked, and statmorph
(Rodriguez-Gomez et al. 2019) measures it with a constant weight map ``sigma``.

The statistics (:data:`STATISTICS`): Gini and M20 (Lotz et al. 2004) and the Gini-M20
merger statistic (Lotz et al. 2008), concentration, asymmetry and smoothness (Conselice
2003), shape and outer asymmetry (Pawlik et al. 2016, Wen et al. 2014), multimode,
intensity and deviation (Freeman et al. 2013). ``morph_flag`` is statmorph's flag
(0 good, 1 suspect, 2 bad, 4 catastrophic) and -1 where nothing could be measured (no
source, an unreadable cutout): the statistics are NaN there.

They are measured on the cutout as the encoder sees it (a stretched RGB image), not on
calibrated flux: they rank the objects of one index against each other, and are not to
be compared with catalogue values measured on linear images.

Example:
    >>> import numpy as np
    >>> from ulisse.plugins.morphology.stats import measure
    >>> y, x = np.mgrid[:64, :64]
    >>> disc = 200 * np.exp(-((x - 32) ** 2 + (y - 32) ** 2) / 40.0)
    >>> sky = np.random.default_rng(0).normal(20, 3, (64, 64))
    >>> image = np.clip(np.repeat((disc + sky)[..., None], 3, axis=2), 0, 255).astype(np.uint8)
    >>> round(measure(image)["asymmetry"], 1)
    0.0
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import warnings
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd

from ulisse.errors import UlisseError

LOG = logging.getLogger(__name__)

SET = "morphology"
STATISTICS = ("gini", "m20", "gini_m20_merger", "concentration", "asymmetry", "smoothness", "shape_asymmetry",
              "outer_asymmetry", "multimode", "intensity", "deviation")
COLUMNS = STATISTICS + ("morph_flag",)
SMOOTH = 1.0  # px, the Gaussian that smooths the image before detection
DETECT = 1.5  # detection threshold, in the smoothed sky's scatter
NPIXELS = 10  # the smallest source, in connected pixels
PEAK = 5.0  # the central object's smoothed peak must reach this many times the smoothed sky's scatter
DEBLEND_LEVELS, DEBLEND_CONTRAST = 32, 0.01
PARALLEL_FROM = 200  # cutouts: from this many on, measured by one process per core
CHUNK = 64  # cutouts sent to a worker at a time, at most
MIN_CHUNK = 16  # ... and at least (fewer where there are fewer): see compute_morphology
SECONDS_PER_CUTOUT = 0.3  # per core: 0.28-0.30 measured on a 2-core AMD EPYC (benchmarks/anomalies.md)
NO_SOURCE = -1  # morph_flag where nothing was measured


def _empty() -> dict:
    return {**{s: math.nan for s in STATISTICS}, "morph_flag": NO_SOURCE}


def image_of(cutout: np.ndarray) -> np.ndarray:
    """The image the statistics are measured on: the sum of the RGB channels (a grey cutout as it is)."""
    a = np.asarray(cutout, dtype=np.float64)
    return a.sum(axis=2) if a.ndim == 3 else a


def central_segment(image: np.ndarray, sigma: float):
    """(segmentation image, label of the central object) after detection and deblending; (None, 0) if none."""
    from photutils.segmentation import deblend_sources, detect_sources
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(image, SMOOTH)
    noise = sigma / (2.0 * math.sqrt(math.pi) * SMOOTH)  # white noise after the Gaussian
    segm = detect_sources(smooth, DETECT * noise, n_pixels=NPIXELS)
    if segm is None:
        return None, 0
    segm = deblend_sources(smooth, segm, n_pixels=NPIXELS, n_levels=DEBLEND_LEVELS, contrast=DEBLEND_CONTRAST,
                           progress_bar=False)
    data = segm.data
    cy, cx = data.shape[0] // 2, data.shape[1] // 2
    label = int(data[cy, cx])
    if label == 0:  # the centre is sky: the nearest segment
        _, (iy, ix) = ndi.distance_transform_edt(data == 0, return_indices=True)
        label = int(data[iy[cy, cx], ix[cy, cx]])
    if smooth[data == label].max() < PEAK * noise:  # a blob of sky noise, not an object
        return None, 0
    return segm, label


def measure(cutout: np.ndarray) -> dict:
    """The statistics of one cutout (``H x W`` or ``H x W x 3``), as a dict of :data:`COLUMNS`."""
    import statmorph

    image = image_of(cutout)
    if image.ndim != 2 or min(image.shape) < 8 or not np.isfinite(image).all():
        return _empty()
    sky = float(np.median(image))
    sigma = max(1.0, 1.4826 * float(np.median(np.abs(image - sky))))
    image = image - sky
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segm, label = central_segment(image, sigma)
        if segm is None:
            return _empty()
        segmap = (segm.data == label).astype(np.int32)
        mask = (segm.data != 0) & (segm.data != label)
        try:
            m = statmorph.SourceMorphology(image, segmap, 1, mask=mask, weightmap=np.full(image.shape, sigma))
        except Exception as exc:  # statmorph gives up on some shapes (a segment at the edge, say)
            LOG.debug("statmorph: %s", exc)
            return _empty()
        values = {s: float(getattr(m, s)) for s in STATISTICS}
        values["morph_flag"] = int(m.flag)
    return values


def _measure_all(images: list) -> list[dict]:
    return [measure(im) if im is not None else _empty() for im in images]


def workers(n: int) -> int:
    """Processes for ``n`` cutouts: one per core the process may use, one for fewer than :data:`PARALLEL_FROM`."""
    if n < PARALLEL_FROM:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n // 50))


def _images(index, rows) -> tuple[list, int]:
    """The cutouts at ``rows`` as the encoder reads them (None where unreadable), and how many were not."""
    from ulisse.cutouts import read_cutout, source_path
    from ulisse.errors import CutoutError

    sources = index.metadata_rows(rows)["source"].tolist()
    images, unread = [], 0
    for source in sources:
        path = source_path(index.path, source)
        try:
            images.append(read_cutout(path, index.rgb).image if path is not None else None)
        except CutoutError:
            images.append(None)
            unread += 1
    return images, unread


class _Workers:
    """:func:`workers` fresh interpreters running :mod:`._worker`, fed chunks of cutouts round-robin through
    ``.npz`` files in a temporary folder, at most two chunks in flight each (memory stays bounded)."""

    def __init__(self, n: int, folder: Path):
        import subprocess

        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.folder, self.sent = folder, 0
        self.logs = [open(folder / f"worker{i}.log", "w+") for i in range(n)]
        self.procs = [subprocess.Popen([sys.executable, "-m", "ulisse.plugins.morphology._worker"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
                      for log in self.logs]
        self.pending: deque = deque()

    def send(self, images: list) -> None:
        path = self.folder / f"chunk{self.sent}.npz"
        np.savez(path, **{f"a{i}": (np.asarray(im) if im is not None else np.zeros(0, np.uint8))
                          for i, im in enumerate(images)})
        proc = self.procs[self.sent % len(self.procs)]
        self.pending.append((proc, path, len(images)))
        try:
            proc.stdin.write(f"{path}\n")
            proc.stdin.flush()
        except BrokenPipeError:  # the worker is gone: say why
            while self.pending[0][0] is not proc:
                self.pending.popleft()
            self.receive()
        self.sent += 1

    def receive(self) -> list[dict]:
        """The answer to the oldest chunk in flight."""
        proc, path, n = self.pending.popleft()
        line = proc.stdout.readline()
        path.unlink(missing_ok=True)
        if not line:
            i = self.procs.index(proc)
            self.logs[i].seek(0)
            tail = self.logs[i].read().strip().splitlines()[-1:] or ["no output"]
            raise UlisseError(f"morphology worker {i} stopped (exit {proc.wait()}): {tail[0]}")
        rows = json.loads(line)
        if len(rows) != n:
            raise UlisseError(f"morphology worker answered {len(rows)} rows for {n} cutouts")
        return rows

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
        for log in self.logs:
            log.close()


def _table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["morph_flag"] = table["morph_flag"].astype(np.int16)
    return table


def names_a_cutout(sources) -> np.ndarray:
    """Which of ``sources`` (an index's ``source`` values) name a cutout: a non-empty string (an object added as a
    vector names none: :func:`ulisse.cutouts.source_path`)."""
    return np.array([isinstance(s, str) and bool(s) for s in sources], dtype=bool)


def _in_order(named: np.ndarray, measured: list[dict]) -> list[dict]:
    """The rows done so far, in the order asked: the ``measured`` ones with the objects that name no cutout around
    them, up to the next cutout still to measure (the whole set once every cutout is measured)."""
    todo = np.flatnonzero(named)
    stop = len(named) if len(measured) >= len(todo) else int(todo[len(measured)])
    it = iter(measured)
    return [next(it) if n else _empty() for n in named[:stop]]


def compute_morphology(index, rows=None, progress: bool = True, chunk: int | None = None,
                       checkpoint=None) -> pd.DataFrame:
    """The derived columns :data:`COLUMNS` for every object of ``index`` (row order), or for the objects at
    ``rows`` (in that order), one worker per core (:class:`_Workers`) from :data:`PARALLEL_FROM` cutouts on.
    ``checkpoint``: called after every chunk with a function that makes the table of the rows measured so far
    (the core stores it now and then: :meth:`ulisse.derived.DerivedMixin.derived`).

    Objects without a cutout (no ``source`` column, an unreadable file) get NaN and ``morph_flag`` -1; those that
    name none cost nothing, and the progress (and its estimate of the time) counts the cutouts alone.
    """
    from ulisse.progress import progress_bar

    rows_in = list(range(len(index)) if rows is None else rows)
    n = len(rows_in)
    if "source" not in index.metadata_columns:
        LOG.warning("morphology: the index keeps no cutouts (no source column); nothing measured")
        return pd.DataFrame([_empty() for _ in range(n)], columns=list(COLUMNS))
    named = names_a_cutout(index.metadata_rows(rows_in)["source"].tolist()) if n else np.zeros(0, bool)
    todo = [r for r, yes in zip(rows_in, named) if yes]
    if len(todo) < n:
        LOG.info("morphology: %d of %d objects name no cutout (NaN, nothing to measure)", n - len(todo), n)
    rows, unread, n_workers = [], 0, workers(len(todo))
    # about 8 chunks a worker (at least MIN_CHUNK cutouts, at most CHUNK: a chunk's images are held in memory),
    # so that the progress and its time left move every few seconds on a few hundred cutouts too
    chunk = chunk or min(CHUNK, max(MIN_CHUNK, -(-len(todo) // (8 * n_workers))))
    done = (lambda: _table(_in_order(named, rows))) if len(todo) < n else (lambda: _table(rows))
    with progress_bar(total=len(todo), desc="morphology (statmorph)", unit="cutout", enabled=progress) as bar:
        if n_workers == 1:
            for start in range(0, len(todo), chunk):
                images, bad = _images(index, todo[start:start + chunk])
                rows += _measure_all(images)
                unread += bad
                bar.update(len(images))
                if checkpoint is not None:
                    checkpoint(done)
        else:
            with tempfile.TemporaryDirectory(prefix="ulisse-morphology-") as tmp:
                pool = _Workers(n_workers, Path(tmp))
                try:
                    for start in range(0, len(todo), chunk):
                        images, bad = _images(index, todo[start:start + chunk])
                        unread += bad
                        pool.send(images)
                        while len(pool.pending) >= 2 * n_workers:
                            part = pool.receive()
                            rows += part
                            bar.update(len(part))
                            if checkpoint is not None:
                                checkpoint(done)
                    while pool.pending:
                        part = pool.receive()
                        rows += part
                        bar.update(len(part))
                finally:
                    pool.close()
    if unread:
        LOG.warning("morphology: %d of %d cutouts could not be read (NaN)", unread, len(todo))
    return done()


def standardised(table: pd.DataFrame, clip: float = 10.0) -> np.ndarray:
    """The statistics as robust z-scores (median and 1.4826 x MAD over the index; NaN -> 0), clipped at ``clip``.

    The space of the ``morphology`` anomaly score and of the morphology half of the relevance
    model: every statistic counts alike, whatever its units.
    """
    X = table[list(STATISTICS)].to_numpy(np.float64)
    with warnings.catch_warnings():  # a statistic measured on no object: its z-scores are 0
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(X, axis=0)
        med = np.where(np.isfinite(med), med, 0.0)
        mad = 1.4826 * np.nanmedian(np.abs(X - med), axis=0)
    mad = np.where(np.isfinite(mad) & (mad > 0), mad, 1.0)
    Z = np.clip((X - med) / mad, -clip, clip)
    return np.where(np.isfinite(Z), Z, 0.0).astype(np.float32)
