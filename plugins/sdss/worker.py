"""One SDSS field into a shard, identically in the driver process and on Dask workers.

:func:`process_field` cuts a field's objects out of its g, r, i frames, embeds them
(:func:`embed_cutouts`: the core pipeline of :func:`ulisse.embedding.embed_arrays`, with the
encoder's preprocessing steps, pooling, symmetry and runtime, the encoder loaded once per
process and kept for the next fields) and writes the shard, and the objects' feature maps
when the run has embedding observers; :func:`attempt_field` wraps it with retries and returns
a :class:`~.shards.FieldOutcome` instead of raising; :class:`LocalRunner` runs tasks one after
the other in this process.

Example:
    >>> from ulisse.plugins.sdss.worker import attempt_field                # doctest: +SKIP
    >>> attempt_field(FieldTask(Field(756, 1, 206)), settings).ok           # doctest: +SKIP
    True
"""

from __future__ import annotations

import io
import json
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ulisse.cutouts import RGBConfig
from ulisse.encoder import Encoder, EncoderSpec
from ulisse._io import atomic_write, path_inside, safe_name
from ulisse.errors import UlisseError

from .catalog import TapCatalog, sort_objects
from .config import BANDS, Field
from .cutting import PNG_KEY, CutoutGeometry, cut_field
from .errors import EmptyFieldError
from .frames import ScienceArchive
from .services import new_session, with_retries
from .shards import BatchSettings, FieldOutcome, FieldTask, MapsRecorder, maps_path, write_shard

LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------- per-process caches

_ENCODERS: dict[tuple, Encoder] = {}
_SESSION = None


def _encoder_key(spec: EncoderSpec, device: str, runtime: str) -> tuple:
    return (spec.key(), device, runtime)


def worker_encoder(settings: BatchSettings) -> Encoder:
    """The encoder of ``settings`` (its spec, device and runtime), loaded once per process (per Dask worker)."""
    spec = EncoderSpec.from_dict(settings.encoder_spec)
    key = _encoder_key(spec, settings.device, settings.runtime)
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder.from_spec(spec, device=settings.device, weights=settings.weights,
                                           runtime=settings.runtime)
    return _ENCODERS[key]


def remember_encoder(encoder: Encoder, device: str, runtime: str = "auto") -> None:
    """Let this process's workers use an encoder the driver has loaded already."""
    _ENCODERS[_encoder_key(encoder.spec, device, runtime)] = encoder


def _session():
    global _SESSION
    if _SESSION is None:
        _SESSION = new_session()
    return _SESSION


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
    objects = archive.photoobj_objects(field)
    objects = objects[filt.mask(objects)].reset_index(drop=True)
    if len(objects) == 0:
        raise EmptyFieldError(f"no primary objects in field {field} ({filt.describe()})")
    return objects


def embed_cutouts(images: Sequence[np.ndarray], ids: Sequence[str], settings: BatchSettings,
                  observers: Sequence = ()) -> np.ndarray:
    """The cutouts' vectors (``N x dim`` float32) from this process's encoder, through the core pipeline
    (:func:`ulisse.embedding.embed_arrays`: preprocessing steps, encoder, ``observers``): the one place a
    field is embedded."""
    from ulisse.embedding import embed_arrays

    return embed_arrays(worker_encoder(settings), list(images), ids, observers=observers)


@dataclass
class WrittenShard:
    """What :func:`process_field` left: the shard's ``.npz``, with its counts (None for a shard written before)
    and, for an empty field, why it is empty."""

    path: Path
    objects: int | None = None
    skipped: int | None = None
    empty: str | None = None  # why the field has no object to index (its shard holds none)


def process_field(field: Field, settings: BatchSettings, objects: pd.DataFrame | None = None,
                  session=None) -> WrittenShard:
    """Turn one field into a shard (written once, never read back here); at once if it exists already.

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

    A field without objects (none in its catalogue, or none left by the filter) is done too: its shard
    holds no object and says why (:attr:`WrittenShard.empty`), so a later run does not ask for it again.
    """
    task = FieldTask(field, objects)
    npz = task.shard_path(settings)
    if npz.is_file() and npz.with_suffix(".parquet").is_file():
        return WrittenShard(npz)
    session = session or _session()
    archive = ScienceArchive(settings.services, cache_dir=settings.cache_dir, session=session)
    try:
        if objects is None:
            objects = field_objects(field, settings, archive, session)
        elif len(objects) == 0:
            raise EmptyFieldError(f"no objects of the catalogue in field {field}")
    except EmptyFieldError as exc:
        return _empty_shard(npz, field, settings, archive, str(exc))
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
    meta = objects.iloc[cut.rows].reset_index(drop=True).copy()
    meta["padded"] = np.array(cut.padded, dtype=float)
    geometry = CutoutGeometry(**settings.geometry)
    meta["source"] = save_cutouts(settings.index_dir, f"cutouts/{field}", meta["id"], cut.images, geometry)
    meta["frame"] = archive.frame_path("r", field)
    recorder = MapsRecorder(maps_path(npz), len(meta)) if settings.observe else None
    vectors = embed_cutouts(cut.images, meta["id"].astype(str), settings, [recorder] if recorder else ())
    if recorder is not None:
        recorder.close()  # the maps are on disk before the .npz says the shard is done
    write_shard(npz, vectors, meta, cut.skipped, settings, field)
    if settings.prune_cache:
        archive.forget(field)
    return WrittenShard(npz, len(meta), len(cut.skipped))


def _empty_shard(npz: Path, field: Field, settings: BatchSettings, archive: ScienceArchive, why: str) -> WrittenShard:
    """The shard of a field without objects: no vector, no row, and the reason (no frame is downloaded)."""
    dim = EncoderSpec.from_dict(settings.encoder_spec).dim
    meta = pd.DataFrame({"id": pd.Series([], dtype=str)})
    write_shard(npz, np.zeros((0, dim), np.float32), meta, [], settings, field, empty=why)
    if settings.prune_cache:
        archive.forget(field)
    return WrittenShard(npz, 0, 0, empty=why)


def attempt_field(task: FieldTask, settings: BatchSettings) -> FieldOutcome:
    """:func:`process_field` with retries (exponential backoff); never raises, returns a :class:`FieldOutcome`."""
    t0 = time.perf_counter()
    outcome = FieldOutcome(task.field)
    attempts = [0]

    def once():
        attempts[0] += 1
        return process_field(task.field, settings, task.objects)

    try:
        written = with_retries(once, settings.services, f"field {task.field}")
        outcome.shard, outcome.objects, outcome.skipped = str(written.path), written.objects or 0, written.skipped or 0
        outcome.empty = written.empty
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
