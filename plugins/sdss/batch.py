"""Batch indexing of SDSS fields: fields -> vector shards (one process or Dask workers) -> one index.

Work is split by field (run, camcol, field): each field's objects are cut out
of its g, r, i frames, embedded and written as a *shard*:

``DIR/.sdss-work/shards/{run}-{camcol}-{field}-{key}.parquet``
    the objects' metadata rows (id, ra, dec, source, catalogue columns, padded);
``DIR/.sdss-work/shards/{run}-{camcol}-{field}-{key}.npz``
    their vectors, ids, the objects skipped with their reasons and the settings;
    written last, so a shard is *done* once its ``.npz`` exists.

``DIR/.sdss-work/shards/{run}-{camcol}-{field}-{key}.maps.npy``
    when the run has embedding observers (the feature lists), the objects' final feature
    maps, deleted once the driver has shown them to the observers and committed the objects.

``key`` is a digest of what decides the shard's content (encoder, RGB settings,
cutout geometry, edge policy, release, catalogue source, object filter and, for
objects given by a region or a catalogue, their ids), so a shard is reused only when it is the
one this run would write. Both files are written through a temporary name and
``os.replace``.

:func:`~ulisse.plugins.sdss.worker.process_field` does one field, identically in the driver process and on
Dask workers, embedding through the core pipeline (:func:`ulisse.embedding.embed_arrays`: the
encoder's preprocessing steps, pooling, symmetry, precision and runtime, as ``ulisse index build``);
the encoder is loaded once per process (a module-level cache keyed by its spec).
:func:`~ulisse.plugins.sdss.worker.attempt_field` wraps it with retries and returns a
:class:`~ulisse.plugins.sdss.shards.FieldOutcome` instead of raising. :func:`index_fields` runs the fields that have no shard yet
(in this process, or through any runner with ``run``/``close`` such as
:class:`ulisse.plugins.sdss.dask_runner.DaskRunner`) and, as they finish, adds them to the index in field
order, objects in objid order, leaving out ids the index already holds
(:class:`~ulisse.plugins.sdss.assemble.Assembler`): an interrupted run, run again, does only what is
missing and indexes each object once, and a Dask run gives the same index as a one-process run.
The index's manifest records the same encoder spec as ``ulisse index build`` with the same options,
and the embedding observers store their results (feature lists) as they do after a build.

Example:
    >>> from ulisse.plugins.sdss.batch import FieldTask, index_fields
    >>> from ulisse.plugins.sdss.config import Field, SDSSConfig
    >>> report = index_fields("sdss-index", [FieldTask(Field(756, 1, 206))], SDSSConfig())  # doctest: +SKIP
    >>> report.added, report.failed                                            # doctest: +SKIP

Each object's RGB cutout is kept as ``DIR/cutouts/{run}-{camcol}-{field}/{id}.png``
(ids checked by :func:`ulisse._io.safe_name` and :func:`ulisse._io.path_inside`), and
the metadata's ``source`` holds that path relative to ``DIR``, so a moved index
keeps its thumbnails. With a Dask runner on ``local:N``, worker processes are
started with ``spawn``: a script needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

import ulisse
from ulisse.cutouts import RGBConfig
from ulisse.encoder import Encoder
from ulisse.errors import InputError

from .catalog import normalise_objects
from .config import Field, ObjectFilter, SDSSConfig
from .cutting import MANIFEST_KEY, CutoutGeometry, geometry_warning
# the work units and the per-field worker, re-exported: ``from ulisse.plugins.sdss.batch import FieldTask`` works
from .shards import (CACHE_DIR, SHARD_FORMAT, WORK_DIR, BatchSettings, FieldOutcome, FieldTask, Shard,  # noqa: F401
                     read_shard, write_shard)
from .worker import (LocalRunner, attempt_field, embed_cutouts, field_objects, process_field,  # noqa: F401
                     remember_encoder, save_cutouts, worker_encoder)

LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the whole batch

@dataclass
class BatchReport:
    """What ``ulisse sdss index`` did.

    Attributes:
        outcomes: one per field, in field order.
        added: objects added to the index by this run.
        already: objects left out because the index held them already.
        total: objects in the index now.
        skipped: ``(id, reason)`` of objects not indexed (frame edge, outside a frame...).
        index_path: the index directory.
        seconds: wall-clock time.
        written: whether an index exists in ``index_path`` at the end (False: no object to index yet).
    """

    outcomes: list[FieldOutcome]
    added: int = 0
    already: int = 0
    total: int = 0
    skipped: list[tuple[str, str]] = dc_field(default_factory=list)
    index_path: str = ""
    seconds: float = 0.0
    written: bool = False

    @property
    def failed(self) -> dict[str, str]:
        return {str(o.field): o.error for o in self.outcomes if not o.ok}

    @property
    def empty(self) -> list[FieldOutcome]:
        """The fields done without an object to index (none in the catalogue, or none left by the filter)."""
        return [o for o in self.outcomes if o.ok and o.empty]

    @property
    def done(self) -> list[FieldOutcome]:
        return [o for o in self.outcomes if o.ok]


def prepare(index_dir: str | os.PathLike, *, model: str | None = None, weights=None, device: str = "auto",
            encoder: Encoder | None = None, encoder_options: dict | None = None):
    """The encoder and RGB settings for ``index_dir``: the index's own when it exists, else a new encoder.

    A new encoder is ``Encoder.load(device=device, **encoder_options)`` (the options of ``ulisse index
    build``: model, weights, input size, pool, tta, runtime, precision, preprocessing steps), with
    ``model`` and ``weights`` given apart taking precedence. For an existing index, ``weights`` is the
    weights file it was built with, if that has moved, and only ``encoder_options["runtime"]`` is used.

    Returns ``(index or None, encoder, rgb)``.
    """
    from ulisse.indexes import store

    options = dict(encoder_options or {})
    if model is not None:
        options["model_name"] = model
    if weights is not None:
        options["weights"] = weights
    path = Path(index_dir)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory")
    if (path / store.MANIFEST).exists():
        index = ulisse.open_index(path, device=device, weights=options.get("weights"))
        if encoder is None and options.get("runtime", "auto") != "auto":
            encoder = Encoder.from_spec(index.encoder_spec, device=device, weights=options.get("weights"),
                                        runtime=options["runtime"])
        if encoder is not None:
            index.use_encoder(encoder)
        if model is not None and model != index.encoder_spec.model_name:
            LOG.warning("--model %s ignored: %s holds an index; its own encoder (%s) is used", model, path,
                        index.encoder_spec.model_name)
        return index, index.encoder, index.rgb
    options.setdefault("model_name", "efficientnet_b0")
    encoder = encoder or Encoder.load(device=device, **options)
    return None, encoder, RGBConfig()


def _weights_arg(weights) -> str | None:
    """``--weights`` as workers elsewhere can use it: a file as an absolute path, a keyword as it is."""
    if weights is None:
        return None
    return str(Path(weights).resolve()) if Path(weights).is_file() else str(weights)


def check_geometry(index, geometry: CutoutGeometry) -> None:
    """An existing index must hold cutouts of the same geometry as those this run would add.

    Raises:
        InputError: the index records another cutout geometry.
    """
    if index is None:
        return
    recorded = (index.manifest or {}).get(MANIFEST_KEY)
    if recorded is None:
        LOG.warning("%s records no cutout geometry; adding %s cutouts", index.path, geometry.describe())
        return
    warning = geometry_warning(recorded, geometry.to_dict())
    if warning:
        raise InputError(f"{index.path}: holds cutouts of another geometry than asked "
                         f"({warning.split('(', 1)[1].split(')')[0]}); use the index's own --size/--scale")


def index_fields(index_dir: str | os.PathLike, tasks: Sequence[FieldTask], services: SDSSConfig = SDSSConfig(), *,
                 model: str | None = None, weights=None, device: str = "auto", encoder: Encoder | None = None,
                 encoder_options: dict | None = None, factory: str = "Flat", metric: str = "L2",
                 cache_dir: str | os.PathLike | None = None, geometry: CutoutGeometry = CutoutGeometry(),
                 edge: str = "skip", object_filter: ObjectFilter = ObjectFilter(), runner=None,
                 prune_cache: bool = False, progress: bool = True) -> BatchReport:
    """Index the objects of SDSS fields in ``index_dir`` (created, or extended with its own encoder).

    Fields with a shard from an earlier run are not done again; failed fields
    are retried (``services.retries``, exponential backoff) and then reported in
    :attr:`BatchReport.failed`, after the good fields are indexed. A field without
    objects (or none left by ``object_filter``) is done, with an empty shard
    (:attr:`BatchReport.empty`). One run at a time per folder (:func:`~.runlock.run_lock`,
    taken before any download); an index created in the folder meanwhile by another
    writer is extended.

    Args:
        index_dir: the index directory (``.sdss-work/``, ``cutouts/`` and, by default, ``.sdss-cache/`` go inside).
        tasks: the fields, with their objects when known (:class:`FieldTask`).
        services: service URLs, release, time-out, retries.
        model, weights, device, encoder: the encoder of a new index (an existing index uses its own).
        encoder_options: the options of ``Encoder.load`` for a new index, as ``ulisse index build`` takes them
            (the ``encoder_options`` of :func:`ulisse.options.encoder_options`); ``runtime`` also for an existing one.
        factory, metric: FAISS index of a new index (metric ``L2``, ``IP`` or ``cosine``).
        cache_dir: frame cache (default ``index_dir/.sdss-cache``).
        geometry: the cutouts' grid, recorded in the manifest under ``cutout_geometry``.
        edge, prune_cache: see :class:`BatchSettings`.
        object_filter: which of a field's objects to take.
        runner: runs the fields (``run``/``close``); None: :class:`LocalRunner`. It is closed at the end.
        progress: progress bars.

    Raises:
        InputError: bad options, ``index_dir`` is a file, or its index holds another cutout geometry.
        RunBusy: another ``ulisse sdss index`` run is using ``index_dir``.
        EncoderMismatch: a shard's encoder differs from the index's.
    """
    from ulisse.embedding import create_observers
    from ulisse.indexes import faiss_backend, store

    from .assemble import Assembler
    from .runlock import run_lock

    t0 = time.perf_counter()
    index_dir = Path(index_dir)
    runner = runner or LocalRunner()
    runtime = (encoder_options or {}).get("runtime") or "auto"
    history = {"action": "sdss index", "fields": len(tasks), "release": services.release,
               "filter": object_filter.to_dict(), "edge": edge}
    report = BatchReport([], index_path=str(index_dir))
    options = dict(model=model, weights=weights, device=device, encoder=encoder, encoder_options=encoder_options)
    closed = False
    try:
        tasks = _in_field_order(tasks)
        index, encoder, rgb = prepare(index_dir, **options)
        check_geometry(index, geometry)
        if index is None and factory != "auto":
            faiss_backend.new_faiss_index(factory, encoder.spec.dim, metric)  # a bad factory fails before the work
        with run_lock(index_dir):  # before any download: a second run on this folder stops here
            if index is None and (index_dir / store.MANIFEST).exists():  # another run created it meanwhile: extend it
                index, encoder, rgb = prepare(index_dir, **options)
                check_geometry(index, geometry)
            observers = create_observers(index)
            work = index_dir / WORK_DIR
            settings = BatchSettings(
                work_dir=str(work.resolve()), cache_dir=str(Path(cache_dir or index_dir / CACHE_DIR).resolve()),
                services=services, encoder_spec=encoder.spec.to_dict(), device=device, runtime=runtime,
                observe=bool(observers), weights=_weights_arg(weights or (encoder_options or {}).get("weights")),
                rgb=rgb.to_dict(), geometry=geometry.to_dict(), edge=edge, filter=object_filter.to_dict(),
                prune_cache=prune_cache, progress=progress and isinstance(runner, LocalRunner))
            settings.shard_dir.mkdir(parents=True, exist_ok=True)
            remember_encoder(encoder, device, runtime)
            assembler = Assembler(index_dir, index, encoder, rgb, report, [t.field for t in tasks], observers,
                                  factory=factory, metric=metric, device=device, history=history,
                                  manifest_extra={MANIFEST_KEY: geometry.to_dict()},
                                  check_index=lambda found: check_geometry(found, geometry))
            try:
                _run_fields(tasks, settings, runner, progress, assembler.take)
            finally:
                closed = True
                runner.close()
            index = assembler.close()
    finally:
        if not closed:  # a run stopped before its fields
            runner.close()
    report.outcomes = [assembler.outcomes[t.field] for t in tasks]
    report.written = index is not None
    report.total = len(index) if index is not None else 0
    report.seconds = time.perf_counter() - t0
    return report


def _in_field_order(tasks: Sequence[FieldTask]) -> list[FieldTask]:
    tasks = sorted(tasks, key=lambda t: t.field)
    repeated = [a.field for a, b in zip(tasks, tasks[1:]) if a.field == b.field]
    if repeated:
        raise InputError(f"field {repeated[0]} is given twice")
    return tasks


def _run_fields(tasks: Sequence[FieldTask], settings: BatchSettings, runner, progress: bool, take) -> None:
    """Run the fields (in field order) that have no shard yet; ``take(FieldOutcome)`` gets every field as it ends."""
    from ulisse.progress import progress_bar

    pending, reused = [], []
    for task in tasks:
        npz = task.shard_path(settings)
        if npz.is_file() and npz.with_suffix(".parquet").is_file():
            reused.append(FieldOutcome(task.field, shard=str(npz), reused=True))
        else:
            pending.append(task)
    if reused:
        LOG.info("%d of %d field(s) done by an earlier run (shards in %s)", len(reused), len(tasks), settings.shard_dir)

    bar = progress_bar(total=len(tasks), initial=len(reused), desc="sdss fields", unit="field", enabled=progress)
    counts = {"objects": 0, "failed": 0}

    def done(outcome: FieldOutcome) -> None:
        take(outcome)
        counts["objects"] += outcome.objects
        counts["failed"] += not outcome.ok
        if not outcome.ok:
            LOG.warning("field %s failed after %d attempt(s): %s", outcome.field, outcome.attempts, outcome.error)
        bar.set_postfix(objects=counts["objects"], failed=counts["failed"], refresh=False)
        bar.update(1)

    try:
        for outcome in reused:
            take(outcome)
        if pending:
            runner.run(pending, settings, done)
    finally:
        bar.close()


def clean_work(index_dir: str | os.PathLike) -> None:
    """Remove the work folder (shards) of ``index_dir``."""
    shutil.rmtree(Path(index_dir) / WORK_DIR, ignore_errors=True)


# --------------------------------------------------------------------------- building tasks

def tasks_from_objects(objects: pd.DataFrame, fields: Iterable[Field] | None = None) -> list[FieldTask]:
    """Group objects by (run, camcol, field) into tasks; with ``fields``, one task for each of those (maybe empty)."""
    groups = {Field(int(r), int(c), int(f)): g.reset_index(drop=True)
              for (r, c, f), g in objects.groupby(["run", "camcol", "field"], sort=True)}
    if fields is None:
        return [FieldTask(f, g) for f, g in sorted(groups.items())]
    return [FieldTask(f, groups.get(f, objects.iloc[:0])) for f in sorted(set(fields))]


def read_object_catalog(path: str | os.PathLike) -> pd.DataFrame:
    """A user's catalogue of SDSS objects: objid (or id), ra, dec, run, camcol, field and any other columns.

    Raises:
        InputError: unreadable file, missing columns, or rows without ra/dec or field.
    """
    from ulisse.catalog import read_catalog

    df = read_catalog(path)
    df = normalise_objects(df, str(path))
    bad = df[["ra", "dec"]].isna().any(axis=1)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} row(s) without ra/dec (first id {df['id'][bad].iloc[0]})")
    return df
