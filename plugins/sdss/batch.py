"""Batch indexing of SDSS fields: fields -> vector shards (one process or Dask workers) -> one index.

Work is split by field (run, camcol, field): each field's objects are cut out
of its g, r, i frames, embedded and written as a *shard*:

``DIR/.sdss-work/shards/{run}-{camcol}-{field}-{key}.parquet``
    the objects' metadata rows (id, ra, dec, source, catalogue columns, padded);
``DIR/.sdss-work/shards/{run}-{camcol}-{field}-{key}.npz``
    their vectors, ids, the objects skipped with their reasons and the settings;
    written last, so a shard is *done* once its ``.npz`` exists.

``key`` is a digest of what decides the shard's content (encoder, RGB settings,
cutout geometry, edge policy, release, catalogue source, object filter and, for
objects given by a region or a catalogue, their ids), so a shard is reused only when it is the
one this run would write. Both files are written through a temporary name and
``os.replace``.

:func:`~ulisse.plugins.sdss.worker.process_field` does one field, identically in the driver process and on
Dask workers; the encoder is loaded once per process (a module-level cache).
:func:`~ulisse.plugins.sdss.worker.attempt_field` wraps it with retries and returns a
:class:`~ulisse.plugins.sdss.shards.FieldOutcome` instead of raising. :func:`index_fields` runs the fields that have no shard yet
(in this process, or through any runner with ``run``/``close`` such as
:class:`ulisse.plugins.sdss.dask_runner.DaskRunner`), then assembles the index from the shards in field
order, objects in objid order, leaving out ids the index already holds: an
interrupted run, run again, does only what is missing and indexes each object
once, and a Dask run gives the same index as a one-process run.

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

import numpy as np
import pandas as pd

import ulisse
from ulisse.cutouts import RGBConfig
from ulisse.encoder import Encoder, EncoderSpec, check_compatible
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

ASSEMBLE_ROWS = 200_000  # objects per index commit while assembling


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
    """

    outcomes: list[FieldOutcome]
    added: int = 0
    already: int = 0
    total: int = 0
    skipped: list[tuple[str, str]] = dc_field(default_factory=list)
    index_path: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> dict[str, str]:
        return {str(o.field): o.error for o in self.outcomes if not o.ok}

    @property
    def done(self) -> list[FieldOutcome]:
        return [o for o in self.outcomes if o.ok]


def prepare(index_dir: str | os.PathLike, *, model: str | None = None, weights=None, device: str = "auto",
            encoder: Encoder | None = None):
    """The encoder and RGB settings for ``index_dir``: the index's own when it exists, else a new encoder.

    For an existing index, ``weights`` is the weights file it was built with, if that has moved.

    Returns ``(index or None, encoder, rgb)``.
    """
    from ulisse.indexes import store

    path = Path(index_dir)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory")
    if (path / store.MANIFEST).exists():
        index = ulisse.open_index(path, device=device, weights=weights)
        if encoder is not None:
            index.use_encoder(encoder)
        if model is not None and model != index.encoder_spec.model_name:
            LOG.warning("--model %s ignored: %s holds an index; its own encoder (%s) is used", model, path,
                        index.encoder_spec.model_name)
        return index, index.encoder, index.rgb
    encoder = encoder or Encoder.load(model or "efficientnet_b0", weights=weights, device=device)
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
                 factory: str = "Flat", metric: str = "L2", cache_dir: str | os.PathLike | None = None,
                 geometry: CutoutGeometry = CutoutGeometry(), edge: str = "skip",
                 object_filter: ObjectFilter = ObjectFilter(), runner=None, prune_cache: bool = False,
                 progress: bool = True) -> BatchReport:
    """Index the objects of SDSS fields in ``index_dir`` (created, or extended with its own encoder).

    Fields with a shard from an earlier run are not done again; failed fields
    are retried (``services.retries``, exponential backoff) and then reported in
    :attr:`BatchReport.failed`, after the good fields are indexed.

    Args:
        index_dir: the index directory (``.sdss-work/``, ``cutouts/`` and, by default, ``.sdss-cache/`` go inside).
        tasks: the fields, with their objects when known (:class:`FieldTask`).
        services: service URLs, release, time-out, retries.
        model, weights, device, encoder: the encoder of a new index (an existing index uses its own).
        factory, metric: FAISS index of a new index.
        cache_dir: frame cache (default ``index_dir/.sdss-cache``).
        geometry: the cutouts' grid, recorded in the manifest under ``cutout_geometry``.
        edge, prune_cache: see :class:`BatchSettings`.
        object_filter: which of a field's objects to take.
        runner: runs the fields (``run``/``close``); None: :class:`LocalRunner`. It is closed at the end.
        progress: progress bars.

    Raises:
        InputError: bad options, ``index_dir`` is a file, or its index holds another cutout geometry.
        EncoderMismatch: a shard's encoder differs from the index's.
    """
    from ulisse.indexes import faiss_backend

    t0 = time.perf_counter()
    index_dir = Path(index_dir)
    runner = runner or LocalRunner()
    try:
        index, encoder, rgb = prepare(index_dir, model=model, weights=weights, device=device, encoder=encoder)
        check_geometry(index, geometry)
        if index is None:
            faiss_backend.new_faiss_index(factory, encoder.spec.dim, metric)  # a bad factory fails before the work
        work = index_dir / WORK_DIR
        settings = BatchSettings(
            work_dir=str(work.resolve()), cache_dir=str(Path(cache_dir or index_dir / CACHE_DIR).resolve()),
            services=services, encoder_spec=encoder.spec.to_dict(), device=device,
            weights=_weights_arg(weights), rgb=rgb.to_dict(), geometry=geometry.to_dict(), edge=edge,
            filter=object_filter.to_dict(), prune_cache=prune_cache,
            progress=progress and isinstance(runner, LocalRunner))
        settings.shard_dir.mkdir(parents=True, exist_ok=True)
        remember_encoder(encoder, device)
        outcomes, ordered_tasks = _run_fields(tasks, settings, runner, progress)
    finally:
        runner.close()

    ordered = [outcomes[t.field] for t in ordered_tasks]
    report = BatchReport(ordered, index_path=str(index_dir))
    history = {"action": "sdss index", "fields": len(ordered_tasks), "release": services.release,
               "filter": object_filter.to_dict(), "edge": edge}
    index = assemble(index_dir, index, [o for o in ordered if o.ok], encoder, rgb, report, factory=factory,
                     metric=metric, device=device, history=history, manifest_extra={MANIFEST_KEY: geometry.to_dict()})
    report.total = len(index) if index is not None else 0
    report.seconds = time.perf_counter() - t0
    return report


def _run_fields(tasks: Sequence[FieldTask], settings: BatchSettings, runner, progress: bool):
    """Run the fields that have no shard yet; returns ``({field: FieldOutcome}, tasks in field order)``."""
    from ulisse.progress import progress_bar

    tasks = sorted(tasks, key=lambda t: t.field)
    repeated = [a.field for a, b in zip(tasks, tasks[1:]) if a.field == b.field]
    if repeated:
        raise InputError(f"field {repeated[0]} is given twice")
    outcomes: dict[Field, FieldOutcome] = {}
    pending = []
    for task in tasks:
        npz = task.shard_path(settings)
        if npz.is_file() and npz.with_suffix(".parquet").is_file():
            outcomes[task.field] = FieldOutcome(task.field, shard=str(npz), reused=True)
        else:
            pending.append(task)
    if outcomes:
        LOG.info("%d of %d field(s) done by an earlier run (shards in %s)", len(outcomes), len(tasks), settings.shard_dir)

    bar = progress_bar(total=len(tasks), initial=len(outcomes), desc="sdss fields", unit="field", enabled=progress)
    counts = {"objects": 0, "failed": 0}

    def done(outcome: FieldOutcome) -> None:
        outcomes[outcome.field] = outcome
        counts["objects"] += outcome.objects
        counts["failed"] += not outcome.ok
        if not outcome.ok:
            LOG.warning("field %s failed after %d attempt(s): %s", outcome.field, outcome.attempts, outcome.error)
        bar.set_postfix(objects=counts["objects"], failed=counts["failed"], refresh=False)
        bar.update(1)

    try:
        if pending:
            runner.run(pending, settings, done)
    finally:
        bar.close()
    return outcomes, tasks


def assemble(index_dir: Path, index, outcomes: Sequence[FieldOutcome], encoder: Encoder, rgb: RGBConfig,
             report: BatchReport, *, factory: str = "Flat", metric: str = "L2", device: str = "auto",
             history: dict | None = None, manifest_extra: dict | None = None):
    """Add the shards' objects to ``index`` (in the order given), leaving out ids it holds already.

    With ``index`` None, creates the index at ``index_dir`` when there is something to put in it, with
    ``manifest_extra`` (the cutout geometry) in its manifest.
    Returns the index (or None when there is still none).
    """
    known = set(index.metadata["id"].astype(str)) if index is not None else set()
    vectors, metas, rows = [], [], 0

    def commit():
        nonlocal index, vectors, metas, rows
        if not rows:
            return
        v = np.concatenate(vectors)
        m = pd.concat(metas, ignore_index=True)
        if index is None:
            index = ulisse.create_index(index_dir, v, m, encoder.spec, factory=factory, metric=metric, rgb=rgb,
                                        device=device, history=history, manifest_extra=manifest_extra)
        else:
            index.add_vectors(v, m, encoder_spec=encoder.spec, history=history)
        report.added += rows
        vectors, metas, rows = [], [], 0

    for outcome in outcomes:
        shard = read_shard(outcome.shard)
        outcome.objects, outcome.skipped = len(shard.metadata), len(shard.skipped)
        check_compatible(encoder.spec, EncoderSpec.from_dict(shard.encoder_spec), outcome.shard)
        report.skipped.extend(shard.skipped)
        ids = shard.metadata["id"].astype(str).to_numpy()
        new = np.array([i not in known for i in ids], dtype=bool)
        report.already += int((~new).sum())
        if new.any():
            known.update(ids[new])
            vectors.append(shard.vectors[new])
            metas.append(shard.metadata[new].reset_index(drop=True))
            rows += int(new.sum())
        if rows >= ASSEMBLE_ROWS:
            commit()
    commit()
    return index


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
