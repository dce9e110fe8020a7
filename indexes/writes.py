"""The writes that make a new generation, each one :func:`.transaction.transaction`: create, add, compact, upgrade.

:func:`create` writes a new index directory from vectors and metadata rows;
:func:`append` adds a segment inside a transaction the caller holds (it checks the
new ids against the generation current under the lock first); :func:`compact`
merges every segment into one; :func:`upgrade` rewrites a format 1 index and gives
segments written before id-hash tables existed their table.
The embedding of cutouts happens before, in :mod:`ulisse.index`.

Example:
    >>> m = create("idx", vectors, rows, spec.to_dict(), dim=spec.dim, factory="Flat")   # doctest: +SKIP
    >>> compact("idx").segments                                                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ulisse.errors import IndexError_, InputError

from . import auto as auto_factory
from . import faiss_backend, idtable, parts, space, store
from .generation import V1_NOTE, read_v1_index
from .manifest import CORE_KEYS, MANIFEST, Manifest, SegmentEntry, check_name
from .metadata import write_parquet
from .transaction import Transaction, transaction

LOG = logging.getLogger(__name__)

DEFAULT_FACTORY = "auto"
DEFAULT_EF_SEARCH = 64
ROW_COLUMNS = ["row", "id", "ra", "dec", "source"]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def versions() -> dict:
    """Library versions for the manifest, read from the installed packages (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    import faiss

    from ulisse import __version__

    out = {"ulisse": __version__, "faiss": faiss.__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    for dist in ("torch", "timm", "astropy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _index_exists(path) -> InputError:
    return InputError(f"{path}: an index exists here already (use 'ulisse index add' to extend it, or --overwrite to replace it)")


def check_new_index_path(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse to write a new index over a file, or over an index unless ``overwrite`` (checked before long work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory")
    if (path / MANIFEST).exists() and not overwrite:
        raise _index_exists(path)
    _check_can_create(path)


def _check_can_create(path: Path) -> None:
    """A folder can be made where ``path`` would go (tried with a probe folder, removed at once)."""
    import tempfile

    from ulisse._io import WriteError, os_error_reason

    place = path
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise InputError(f"{path}: {place} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ulisse-probe-", dir=place))
    except OSError as exc:
        raise WriteError(f"{path}: cannot write there ({os_error_reason(exc)})") from None


def new_rows(metadata: pd.DataFrame, n: int, start: int, index_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The metadata rows of ``n`` new objects, numbered from ``start``: ``row, id, ra, dec, source`` first.

    A ``source`` inside ``index_dir`` is kept relative to it, so that the index can be moved or copied whole
    with its cutouts (readers resolve it: :func:`ulisse.cutouts.source_path`).

    Raises:
        InputError: a row count other than ``n``, no ``id`` column, or an id twice.
    """
    if len(metadata) != n:
        raise InputError(f"{n} vectors but {len(metadata)} metadata rows")
    if "id" not in metadata.columns:
        raise InputError("metadata has no id column")
    meta = metadata.reset_index(drop=True).copy()
    meta["id"] = meta["id"].astype(str)
    dup = meta["id"][meta["id"].duplicated()]
    if len(dup):
        raise InputError(f"id {dup.iloc[0]!r} appears twice among the new objects")
    for col in ("ra", "dec"):
        if col not in meta.columns:
            meta[col] = np.nan
    if "source" not in meta.columns:
        meta["source"] = None
    elif index_dir is not None:
        meta["source"] = [_inside(s, Path(index_dir).resolve()) for s in meta["source"]]
    meta = meta.drop(columns=["row"], errors="ignore")
    meta.insert(0, "row", np.arange(start, start + n, dtype=np.int64))
    return meta[ROW_COLUMNS + [c for c in meta.columns if c not in ROW_COLUMNS]]


def _inside(source, base: Path):
    """``source`` relative to ``base`` (POSIX form) when it is an absolute path under it; else as it is."""
    if not isinstance(source, str) or not source or not os.path.isabs(source):
        return source
    try:
        return Path(source).resolve().relative_to(base).as_posix()
    except (ValueError, OSError):
        return source


def default_search(factory: str, dim: int, metric: str, choice=None, nprobe=None, ef=None) -> dict:
    """The search parameters a new manifest records for ``factory`` (``nprobe``/``nlist``, ``efSearch``, and
    ``rerank`` where ``auto`` chose IVF-PQ)."""
    probe = faiss_backend.new_faiss_index(factory, dim, metric)
    have = faiss_backend.describe_params(probe)
    out = {}
    if "nprobe" in have:
        out["nprobe"] = int(nprobe or (choice.nprobe if choice and choice.nprobe else auto_factory.default_nprobe(have["nlist"])))
        out["nlist"] = have["nlist"]
    if "efSearch" in have:
        out["efSearch"] = int(ef or DEFAULT_EF_SEARCH)
    if choice is not None and choice.rerank:
        out["rerank"] = int(choice.rerank)
    return out


# -- create, add -------------------------------------------------------------------------


def create(path: str | os.PathLike, vectors: np.ndarray, metadata: pd.DataFrame, encoder: dict, *, dim: int,
           factory: str = DEFAULT_FACTORY, metric: str = "L2", rgb: dict | None = None, overwrite: bool = False,
           history: dict | None = None, memory: str = auto_factory.DEFAULT_MEMORY, dtype: str = "float32",
           nprobe: int | None = None, ef: int | None = None, wait: float = 0.0, extra: dict | None = None,
           expected: int | None = None, whiten="auto", trained=None) -> Manifest:
    """Write a new index directory (one transaction); the manifest committed.

    ``encoder`` and ``rgb`` are the encoder spec's and RGB settings' ``to_dict()``; ``dim`` the vectors'
    dimension. ``whiten``: the search space (:func:`.space.resolve_whiten`; ``auto`` = the encoder preset's);
    ``trained``: a trained, empty FAISS index of the final factory to use instead of training one (shards of
    one survey share it, so their distances compare). See :func:`ulisse.index.create_index` for the rest.

    Raises:
        InputError: ``path`` holds an index and ``overwrite`` is False; bad factory or dtype; rows and vectors
            that do not match; ``extra`` names one of the manifest's own keys.
        WriteError: ``DIR: <reason>``; nothing is left behind and an index that was there stays as it was.
    """
    path = Path(path)
    check_new_index_path(path, overwrite)
    faiss_backend.check_metric(metric)
    if dtype not in store.DTYPES:
        raise InputError(f"dtype {dtype!r}: expected one of {', '.join(store.DTYPES)}")
    clash = sorted(set(extra or {}) & set(CORE_KEYS))
    if clash:
        raise InputError(f"manifest_extra cannot replace the manifest's {', '.join(clash)}")
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[1] != dim:
        raise InputError(f"vectors of shape {x.shape} do not fit the encoder's dimension {dim}")
    meta = new_rows(metadata, len(x), start=0, index_dir=path)
    w = space.resolve_whiten(space.whiten_of(factory) or whiten, encoder.get("preset"), len(x), dim)
    choice = None
    if factory == "auto":
        choice = auto_factory.choose_factory(max(len(x), int(expected or 0)), w or dim, memory)
        factory = choice.factory
        LOG.info("factory auto: %s (%s)", factory, choice.reason)
    factory = space.factory_with_space(factory, w)
    kind = parts.kind_of(factory, dim, metric)
    trained = trained if trained is not None else parts.trained_index(factory, dim, metric, x)
    fitted = space.describe(factory, trained, len(x))
    extra = {**(extra or {}), **({"space": fitted} if fitted else {})}
    manifest = Manifest(
        factory=factory, dim=dim, count=len(meta), metric=metric, dtype=dtype, faiss_kind=kind,
        search=default_search(factory, dim, metric, choice, nprobe, ef), auto=choice.to_dict() if choice else None,
        encoder=dict(encoder), rgb=dict(rgb or {}), created=now(), versions=versions(),
        history=({"action": "build", **(history or {}), "count": len(meta), "time": now()},), extra=dict(extra or {}))
    with transaction(path, wait, new=True) as txn:
        if txn.base is not None and not overwrite:
            raise _index_exists(path)
        trained_entry = txn.write_trained(trained) if trained is not None else None
        writer = parts.segment_writer(kind, factory, dim, metric, trained, x, 0)
        seg = txn.write_segment(x, meta, writer, start=0, dtype=dtype, kind=kind)
        return txn.commit(manifest.replace(trained=trained_entry, segments=(seg,)))


def append(txn: Transaction, vectors: np.ndarray, rows: pd.DataFrame, history: dict | None = None,
           column_notes: dict | None = None) -> Manifest:
    """Add ``vectors`` (their rows from :func:`new_rows`, numbered from ``txn.base.count``) as a new segment
    of the generation current under ``txn``'s lock, and commit; the manifest committed. ``column_notes``
    (units, UCDs, descriptions of catalogue columns) join the manifest's; a column's first notes stay."""
    base = txn.base
    if column_notes:
        base = base.replace(extra={**base.extra, "column_notes": {**column_notes, **base.extra.get("column_notes", {})}})
    trained = parts.read_trained(check_name(txn.path, base.trained.name)) if base.trained else None
    writer = parts.segment_writer(base.faiss_kind, base.factory, base.dim, base.metric, trained, vectors, base.count)
    seg = txn.write_segment(vectors, rows, writer, start=base.count, dtype=base.dtype, kind=base.faiss_kind)
    entry = {"action": "add", **(history or {}), "count": len(rows), "time": now()}
    return txn.commit(base.replace(updated=now(), versions=versions(), count=base.count + len(rows),
                                   segments=base.segments + (seg,), history=base.history + (entry,)))


# -- maintenance: compact, upgrade ---------------------------------------------------------------


def compact(path: str | os.PathLike, wait: float = 0.0) -> Manifest:
    """Merge every segment into one (vectors streamed through a memory map); the manifest now current.

    Raises:
        IndexError_: a format 1 index (upgrade it first).
        WriteError: ``DIR: <reason>``; the index stays as it was, nothing is left behind.
    """
    path = Path(path)
    with transaction(path, wait) as txn:
        base = txn.base
        if base.is_v1:
            raise IndexError_(V1_NOTE.format(path=path))
        if len(base.segments) <= 1:
            LOG.info("%s: one segment already; nothing to compact", path)
            return base
        seg = _write_merged_segment(txn, [store.open_segment(path, s, base.dim) for s in base.segments])
        seg = dataclasses.replace(seg, merged=tuple(sha for s in base.segments for sha in s.content))
        entry = {"action": "compact", "segments": len(base.segments), "time": now()}
        return txn.commit(base.replace(segments=(seg,), updated=now(), history=base.history + (entry,)))


def _write_merged_segment(txn: Transaction, files: list) -> SegmentEntry:
    base = txn.base
    dim, dtype, count = base.dim, base.dtype, base.count

    def write_vectors(p):  # plain writes (a full disk gives ENOSPC; a memory map would get SIGBUS)
        with open(p, "wb") as fh:
            fh.write(store.npy_header(dtype, (count, dim)))
            for f in files:
                for lo in range(0, f.count, parts.ADD_CHUNK):
                    fh.write(np.ascontiguousarray(f.vectors[lo:lo + parts.ADD_CHUNK], dtype=dtype).tobytes())

    def write_metadata(p):
        write_parquet(pd.concat([pd.read_parquet(f.metadata_path) for f in files], ignore_index=True), p)

    trained = check_name(txn.path, base.trained.name) if base.trained else None
    writer = parts.merged_writer(base.faiss_kind, base.factory, dim, base.metric, trained, files,
                                 lambda i: files[i].vectors)
    def ids():
        return [x for f in files for x in pq.read_table(f.metadata_path, columns=["id"]).column(0).to_pylist()]

    return txn.write_segment(write_vectors, write_metadata, writer, start=0, dtype=dtype, count=count,
                             kind=base.faiss_kind, ids=ids)


def _add_id_tables(txn: Transaction, path: Path) -> Manifest:
    base = txn.base
    missing = [i for i, s in enumerate(base.segments) if s.ids is None]
    if not missing:
        LOG.info("%s: already format %d, with id tables", path, base.format_version)
        return base
    segments = list(base.segments)
    for i in missing:
        seg = segments[i]
        ids = pq.read_table(check_name(path, seg.metadata.name), columns=["id"]).column(0).to_pylist()
        entry = txn.write_file(f"{store.SEGMENT_PREFIX}{seg.id}{idtable.SUFFIX}",
                               lambda p, ids=ids: store.save_npy(p, idtable.build_table(ids)))
        segments[i] = dataclasses.replace(seg, ids=entry)
        LOG.info("%s: id table for segment %d of %d", path, i + 1, len(segments))
    entry = {"action": "upgrade", "id_tables": len(missing), "time": now()}
    return txn.commit(base.replace(segments=tuple(segments), updated=now(), history=base.history + (entry,)))


def upgrade(path: str | os.PathLike, wait: float = 0.0) -> Manifest:
    """Rewrite a format 1 index in format 2 (one segment); the manifest now current.

    Vectors come from the old FAISS index (exact for Flat/IVF-Flat/HNSW-Flat; for
    PQ/SQ indexes the reconstructions, which the manifest notes). A format 2 index whose
    segments lack their id-hash table (written before it existed) gets one per segment
    (:mod:`.idtable`): only new files, the segments' own files untouched.
    """
    import faiss

    path = Path(path)
    with transaction(path, wait) as txn:
        base = txn.base
        if not base.is_v1:
            return _add_id_tables(txn, path)
        old, meta_file = read_v1_index(path, base)
        kind = parts.kind_of(base.factory, base.dim, base.metric)
        trained_entry, writer = None, None
        if kind == "ivf":
            empty = faiss.clone_index(old)
            empty.reset()
            trained_entry = txn.write_trained(empty)
            writer = lambda p: parts.write_invlists(faiss.extract_index_ivf(old).invlists, p)  # noqa: E731
        elif kind == "index":
            writer = lambda p: faiss.write_index(old, str(p))  # noqa: E731
        exact = (faiss.IndexIVFFlat, faiss.IndexHNSWFlat, faiss.IndexFlat)
        lossy = kind != "flat" and not isinstance(
            faiss.downcast_index(faiss.extract_index_ivf(old) if kind == "ivf" else old), exact)
        seg = txn.write_segment(old.reconstruct_n(0, base.count), pd.read_parquet(meta_file), writer, start=0,
                                kind=kind)
        entry = {"action": "upgrade", "from_format": 1, "time": now(),
                 **({"note": "raw vectors are the old index's reconstructions (lossy codes)"} if lossy else {})}
        return txn.commit(base.replace(
            format_version=store.FORMAT_VERSION, files={}, dtype="float32", faiss_kind=kind, trained=trained_entry,
            segments=(seg,), updated=now(), search=default_search(base.factory, base.dim, base.metric),
            history=base.history + (entry,)))
