"""SDSS batch work units and their shards: the settings a worker needs, one task per field, and the shard files.

A shard is what one field becomes (see :mod:`ulisse.plugins.sdss.batch` for the layout):
``{run}-{camcol}-{field}-{key}.parquet`` (metadata rows) and ``.npz`` (vectors, ids, skipped
objects, settings; written last, so a shard is *done* once its ``.npz`` exists). ``key`` digests
what decides the shard's content (:meth:`BatchSettings.fingerprint` and the task's objects).
When the run has embedding observers (``BatchSettings.observe``), the worker also writes the
objects' final feature maps beside the shard (``.maps.npy``, :class:`MapsRecorder`); the driver
shows them to the observers as it adds the shard to the index, then deletes them.

Example:
    >>> from ulisse.plugins.sdss.config import Field
    >>> FieldOutcome(Field(756, 1, 206)).ok
    False
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
import pandas as pd

from ulisse.cutouts import RGBConfig
from ulisse.encoder import EncoderSpec
from ulisse._io import atomic_write
from ulisse.errors import InputError

from .config import Field, ObjectFilter, SDSSConfig
from .cutting import EDGE_MODES, CutoutGeometry
from .errors import SDSSError

WORK_DIR = ".sdss-work"
CACHE_DIR = ".sdss-cache"
SHARD_FORMAT = 2


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
        runtime: the encoder's inference runtime (``auto``, ``torch``, ``onnx``, ``openvino``).
        observe: record each object's final feature maps for the run's embedding observers.
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
    runtime: str = "auto"
    observe: bool = False
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
    empty: str | None = None  # done, but the field has no object to index: why

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
    empty: str | None = None  # an empty field's shard: why it holds no object


# --------------------------------------------------------------------------- shard files

def write_shard(npz_path: Path, vectors: np.ndarray, metadata: pd.DataFrame, skipped, settings: BatchSettings,
                field: Field, empty: str | None = None) -> None:
    """Write a shard: the ``.parquet`` first, then the ``.npz`` that marks it done (both atomically).

    ``empty``: the shard of a field without objects, and why (kept in the ``.npz``)."""
    buf = io.BytesIO()
    metadata.to_parquet(buf, index=False)
    atomic_write(npz_path.with_suffix(".parquet"), buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, vectors=vectors.astype(np.float32), ids=np.array(metadata["id"].astype(str), dtype=str),
             skipped=np.array(json.dumps([list(s) for s in skipped])), field=np.array(str(field)),
             encoder=np.array(json.dumps(settings.encoder_spec)),
             settings=np.array(json.dumps(settings.fingerprint(), default=str)), empty=np.array(empty or ""))
    atomic_write(npz_path, buf.getvalue())


def maps_path(npz_path: str | os.PathLike) -> Path:
    """Where the shard's feature maps are kept until the driver has shown them to the observers."""
    return Path(npz_path).with_suffix(".maps.npy")


class MapsRecorder:
    """An embedding observer on a worker: writes each object's final feature maps (float32
    ``N x C x h x w``, in the shard's order) to ``path`` through a temporary file, streamed batch by batch."""

    def __init__(self, path: Path, count: int):
        self.path, self.count, self.seen = Path(path), int(count), 0
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._out = None

    def observe(self, batch) -> None:
        maps = np.asarray(batch.maps, dtype=np.float32)
        if self._out is None:
            self._out = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32,
                                                  shape=(self.count,) + maps.shape[1:])
        self._out[self.seen:self.seen + len(maps)] = maps
        self.seen += len(maps)

    def close(self) -> None:
        """Finish the file (none when nothing was observed); raises if not every object was seen."""
        if self._out is None:
            return
        self._out.flush()
        self._out = None
        if self.seen != self.count:
            self.tmp.unlink(missing_ok=True)
            raise SDSSError(f"{self.path}: {self.seen} feature maps for {self.count} objects")
        os.replace(self.tmp, self.path)


def read_maps(npz_path: str | os.PathLike):
    """The shard's feature maps (memory-mapped), or None when it has none."""
    path = maps_path(npz_path)
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        return None
    except Exception as exc:
        raise SDSSError(f"{path}: unreadable feature maps ({exc.__class__.__name__}: {exc})") from None


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
            empty = str(z["empty"]) if "empty" in z.files else ""
        metadata = pd.read_parquet(npz_path.with_suffix(".parquet"))
    except Exception as exc:
        raise SDSSError(f"shard {npz_path}: unreadable ({exc.__class__.__name__}: {exc})") from None
    if list(metadata["id"].astype(str)) != ids or len(vectors) != len(ids):
        raise SDSSError(f"shard {npz_path}: its vectors and metadata do not match")
    return Shard(vectors.astype(np.float32), metadata, skipped, spec, empty or None)
