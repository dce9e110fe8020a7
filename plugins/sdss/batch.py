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

:func:`process_field` does one field, identically in the driver process and on
Dask workers; the encoder is loaded once per process (a module-level cache).
:func:`attempt_field` wraps it with retries and returns a :class:`FieldOutcome`
instead of raising. :func:`index_fields` runs the fields that have no shard yet
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

import hashlib
import io
import json
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

import ulisse
from ulisse.cutouts import RGBConfig
from ulisse.encoder import Encoder, EncoderSpec, check_compatible
from ulisse._io import atomic_write, path_inside, safe_name
from ulisse.errors import InputError, UlisseError

from .catalog import TapCatalog, normalise_objects, read_photoobj, sort_objects
from .config import BANDS, Field, ObjectFilter, SDSSConfig
from .cutting import EDGE_MODES, MANIFEST_KEY, PNG_KEY, CutoutGeometry, cut_field, geometry_warning
from .errors import EmptyFieldError, SDSSError
from .frames import ScienceArchive
from .services import new_session, with_retries

LOG = logging.getLogger(__name__)

WORK_DIR = ".sdss-work"
CACHE_DIR = ".sdss-cache"
SHARD_FORMAT = 2
ASSEMBLE_ROWS = 200_000  # objects per index commit while assembling


# --------------------------------------------------------------------------- settings and tasks

@dataclass(frozen=True)
class BatchSettings:
    """Everything a worker needs to turn a field into a shard (picklable, sent to Dask workers).

    Attributes:
        work_dir: the run's work folder (``DIR/.sdss-work``); shards go in its ``shards/``.
        cache_dir: where frames are cached (None: not cached).
        services: SDSS service URLs, release, time-out, retries.
        encoder_spec: the encoder's :class:`~ulisse.encoder.EncoderSpec` as a dict.
        device: ``cpu``, ``cuda`` or ``auto`` for the encoder.
        weights: the encoder's weights where its spec's source will not do (a moved file); None: the spec's.
        rgb: the index's :class:`~ulisse.cutouts.RGBConfig` as a dict.
        geometry: the cutouts' :class:`~ulisse.plugins.sdss.cutting.CutoutGeometry` as a dict.
        edge: ``skip`` or ``pad`` for objects whose cutout runs off a frame.
        filter: the :class:`~ulisse.plugins.sdss.config.ObjectFilter` as a dict.
        prune_cache: remove a field's frames from the cache once its shard is written.
        progress: show a per-field progress bar (in-process runs only).
    """

    work_dir: str
    cache_dir: str | None
    services: SDSSConfig
    encoder_spec: dict
    device: str = "cpu"
    weights: str | None = None
    rgb: dict = dc_field(default_factory=lambda: RGBConfig().to_dict())
    geometry: dict = dc_field(default_factory=lambda: CutoutGeometry().to_dict())
    edge: str = "skip"
    filter: dict = dc_field(default_factory=lambda: ObjectFilter().to_dict())
    prune_cache: bool = False
    progress: bool = False

    def __post_init__(self):
        if self.edge not in EDGE_MODES:
            raise InputError(f"--edge {self.edge}: expected one of {', '.join(EDGE_MODES)}")
        CutoutGeometry(**self.geometry)

    @property
    def index_dir(self) -> Path:
        return Path(self.work_dir).parent

    @property
    def object_filter(self) -> ObjectFilter:
        f = self.filter
        return ObjectFilter(kind=f["type"], mag_r_max=f["mag_r_max"], clean=f["clean"])

    @property
    def shard_dir(self) -> Path:
        return Path(self.work_dir) / "shards"

    def fingerprint(self) -> dict:
        """What decides a shard's content."""
        spec = EncoderSpec.from_dict(self.encoder_spec)
        s = self.services
        catalogue = ["tap", s.tap, s.table, s.columns] if s.tap else ["sas photoObj"]
        return {"format": SHARD_FORMAT, "encoder": list(map(str, spec.key())), "rgb": self.rgb,
                "geometry": self.geometry, "edge": self.edge, "filter": self.filter, "release": s.release,
                "rerun": s.rerun, "catalogue": catalogue}


@dataclass
class FieldTask:
    """One unit of work: a field, and its objects when they are known already (region or catalogue)."""

    field: Field
    objects: pd.DataFrame | None = None  # None: the field's photoObj catalogue (or the TAP service)

    def key(self, settings: BatchSettings) -> str:
        selection = "all" if self.objects is None else sorted(self.objects["id"].astype(str))
        text = json.dumps({"field": str(self.field), "settings": settings.fingerprint(), "objects": selection},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def shard_path(self, settings: BatchSettings) -> Path:
        """The shard's ``.npz`` (its ``.parquet`` is beside it)."""
        return settings.shard_dir / f"{self.field}-{self.key(settings)}.npz"


@dataclass
class FieldOutcome:
    """What became of one field."""

    field: Field
    shard: str | None = None
    error: str | None = None
    error_type: str | None = None
    attempts: int = 0
    objects: int = 0
    skipped: int = 0
    seconds: float = 0.0
    reused: bool = False

    @property
    def ok(self) -> bool:
        return self.shard is not None


@dataclass
class Shard:
    """A field's vectors and metadata, as a worker wrote them."""

    vectors: np.ndarray
    metadata: pd.DataFrame
    skipped: list[tuple[str, str]]
    encoder_spec: dict


# --------------------------------------------------------------------------- per-process caches

_ENCODERS: dict[tuple, Encoder] = {}
_SESSION = None


def worker_encoder(settings: BatchSettings) -> Encoder:
    """The encoder of ``settings``, loaded once per process."""
    spec = EncoderSpec.from_dict(settings.encoder_spec)
    key = (spec.key(), settings.device)
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder.from_spec(spec, device=settings.device, weights=settings.weights)
    return _ENCODERS[key]


def remember_encoder(encoder: Encoder, device: str) -> None:
    """Let this process's workers use an encoder the driver has loaded already."""
    _ENCODERS[(encoder.spec.key(), device)] = encoder


def _session():
    global _SESSION
    if _SESSION is None:
        _SESSION = new_session()
    return _SESSION


# --------------------------------------------------------------------------- shards

def write_shard(npz_path: Path, vectors: np.ndarray, metadata: pd.DataFrame, skipped, settings: BatchSettings,
                field: Field) -> None:
    """Write a shard: the ``.parquet`` first, then the ``.npz`` that marks it done (both atomically)."""
    buf = io.BytesIO()
    metadata.to_parquet(buf, index=False)
    atomic_write(npz_path.with_suffix(".parquet"), buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, vectors=vectors.astype(np.float32), ids=np.array(metadata["id"].astype(str), dtype=str),
             skipped=np.array(json.dumps([list(s) for s in skipped])), field=np.array(str(field)),
             encoder=np.array(json.dumps(settings.encoder_spec)),
             settings=np.array(json.dumps(settings.fingerprint(), default=str)))
    atomic_write(npz_path, buf.getvalue())


def read_shard(npz_path: str | os.PathLike) -> Shard:
    """Read a shard written by :func:`write_shard`.

    Raises:
        SDSSError: missing or damaged shard files.
    """
    npz_path = Path(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            vectors = z["vectors"]
            ids = [str(i) for i in z["ids"]]
            skipped = [tuple(s) for s in json.loads(str(z["skipped"]))]
            spec = json.loads(str(z["encoder"]))
        metadata = pd.read_parquet(npz_path.with_suffix(".parquet"))
    except Exception as exc:
        raise SDSSError(f"shard {npz_path}: unreadable ({exc.__class__.__name__}: {exc})") from None
    if list(metadata["id"].astype(str)) != ids or len(vectors) != len(ids):
        raise SDSSError(f"shard {npz_path}: its vectors and metadata do not match")
    return Shard(vectors.astype(np.float32), metadata, skipped, spec)


# --------------------------------------------------------------------------- one field

def save_cutouts(index_dir: Path, folder: str, ids, images, geometry: CutoutGeometry | None = None) -> list[str]:
    """Write each object's RGB cutout as ``index_dir/folder/{id}.png`` (atomically): thumbnails for grids and the UI.

    With ``geometry``, each PNG carries it in a text chunk (see :func:`~ulisse.plugins.sdss.cutting.prototype_geometry`),
    so a cutout used as a query prototype elsewhere says how it was cut. Returns the paths relative to
    ``index_dir`` (the metadata's ``source``).

    Raises:
        InputError: an id that cannot be a file name, or a path that would leave ``index_dir``.
    """
    from PIL import Image, PngImagePlugin

    info = None
    if geometry is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_KEY, json.dumps(geometry.to_dict()))
    base = path_inside(index_dir, folder, "cutout folder")
    base.mkdir(parents=True, exist_ok=True)
    root = Path(index_dir).resolve()
    paths = []
    for oid, image in zip(ids, images):
        path = path_inside(base, safe_name(str(oid), "object id") + ".png", "cutout file")
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", pnginfo=info)
        atomic_write(path, buf.getvalue(), fsync=False)
        paths.append(path.relative_to(root).as_posix())
    return paths


def field_objects(field: Field, settings: BatchSettings, archive: ScienceArchive, session) -> pd.DataFrame:
    """A field's primary objects that pass the filter: from its SAS photoObj file, or the TAP service if one is set.

    Raises:
        ServiceError, FrameError: the catalogue could not be had.
        EmptyFieldError: no object left.
    """
    services, filt = settings.services, settings.object_filter
    if services.tap:
        return TapCatalog(services, session=session).objects_in_field(field, filt)
    objects = read_photoobj(archive.photoobj(field), archive.photoobj_path(field), field)
    objects = objects[filt.mask(objects)].reset_index(drop=True)
    if len(objects) == 0:
        raise EmptyFieldError(f"no primary objects in field {field} ({filt.describe()})")
    return objects


def process_field(field: Field, settings: BatchSettings, objects: pd.DataFrame | None = None,
                  session=None) -> Path:
    """Turn one field into a shard and return the shard's ``.npz`` path (at once if it exists already).

    The same function runs in the driver process and on Dask workers.

    Args:
        field: the field.
        settings: see :class:`BatchSettings`.
        objects: the field's objects (``id``, ``ra``, ``dec`` and catalogue columns); None: its photoObj file.
        session: a :class:`requests.Session` (one per process by default).

    Raises:
        ServiceError: the catalogue or a frame download failed.
        InputError: an object id that cannot be a file name.
        FrameError: a frame is truncated or corrupt.
        EmptyFieldError: the field has no objects.
    """
    task = FieldTask(field, objects)
    npz = task.shard_path(settings)
    if npz.is_file() and npz.with_suffix(".parquet").is_file():
        return npz
    session = session or _session()
    archive = ScienceArchive(settings.services, cache_dir=settings.cache_dir, session=session)
    if objects is None:
        objects = field_objects(field, settings, archive, session)
    elif len(objects) == 0:
        raise EmptyFieldError(f"no objects of the catalogue in field {field}")
    objects = sort_objects(objects)
    frames = {band: archive.frame(band, field) for band in BANDS}
    rgb = RGBConfig.from_dict(settings.rgb)
    bar = None
    if settings.progress:
        from ulisse.progress import progress_bar

        bar = progress_bar(total=len(objects), desc=f"field {field}", unit="object")
    try:
        cut = cut_field(frames, objects, CutoutGeometry(**settings.geometry), edge=settings.edge, rgb=rgb,
                        progress=None if bar is None else (lambda: bar.update(1)))
    finally:
        if bar is not None:
            bar.close()
    encoder = worker_encoder(settings)
    vectors = encoder.embed_images(cut.images) if cut.images else np.zeros((0, encoder.spec.dim), np.float32)
    meta = objects.iloc[cut.rows].reset_index(drop=True).copy()
    meta["padded"] = np.array(cut.padded, dtype=float)
    geometry = CutoutGeometry(**settings.geometry)
    meta["source"] = save_cutouts(settings.index_dir, f"cutouts/{field}", meta["id"], cut.images, geometry)
    meta["frame"] = archive.frame_path("r", field)
    write_shard(npz, vectors, meta, cut.skipped, settings, field)
    if settings.prune_cache:
        archive.forget(field)
    return npz


def attempt_field(task: FieldTask, settings: BatchSettings) -> FieldOutcome:
    """:func:`process_field` with retries (exponential backoff); never raises, returns a :class:`FieldOutcome`."""
    t0 = time.perf_counter()
    outcome = FieldOutcome(task.field)
    attempts = [0]

    def once():
        attempts[0] += 1
        return process_field(task.field, settings, task.objects)

    try:
        npz = with_retries(once, settings.services, f"field {task.field}")
        shard = read_shard(npz)
        outcome.shard, outcome.objects, outcome.skipped = str(npz), len(shard.metadata), len(shard.skipped)
    except UlisseError as exc:
        outcome.error, outcome.error_type = str(exc), exc.__class__.__name__
    except Exception as exc:  # a bug must not lose the other fields: report it with the field
        LOG.debug("field %s:\n%s", task.field, traceback.format_exc())
        outcome.error, outcome.error_type = f"internal error {exc.__class__.__name__}: {exc}", exc.__class__.__name__
    outcome.attempts = attempts[0]
    outcome.seconds = time.perf_counter() - t0
    return outcome


# --------------------------------------------------------------------------- running many fields

class LocalRunner:
    """Runs fields one after the other in this process (the default runner of :func:`index_fields`).

    A runner has ``run(tasks, settings, done)``, calling ``done(FieldOutcome)`` as each
    field finishes, and ``close()``; :class:`~ulisse.plugins.sdss.dask_runner.DaskRunner` is another.
    """

    def run(self, tasks: Sequence[FieldTask], settings: BatchSettings, done) -> None:
        for task in tasks:
            done(attempt_field(task, settings))

    def close(self) -> None:
        pass


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
