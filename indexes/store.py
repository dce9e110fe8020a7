"""The on-disk index directory (format 2): a manifest plus immutable segments.

::

    DIR/
      manifest.json                  factory, dim, metric, count, generation, search parameters,
                                     encoder, history, and every file below with bytes and sha256
      trained-<id>.faiss             the trained, empty FAISS index (IVF, PQ...; none for Flat/HNSW)
      seg-<id>.vectors.npy           raw vectors of one segment, memory-mappable (float32 or float16)
      seg-<id>.metadata.parquet      one row per vector: row, id, ra, dec, source, catalogue columns
      seg-<id>.faiss                 the segment's part of the FAISS index (none for Flat)
      seg-<id>.ids.npy               sorted id hashes and their rows: lookups by id (:mod:`.idtable`)
      .ulisse.lock                   the writers' lock (see :mod:`.lock`)
      derived/                       derived columns, marks, plugins' artefacts (not part of a generation)

Every write goes through :func:`.transaction.transaction`. An add writes only its
new segment's files, then commits by replacing ``manifest.json`` (``os.replace``)
under the writer lock, after checking that the generation it started from is
still current. Readers never lock: they read one manifest (:class:`.manifest.Manifest`)
and the files it names, so they always see a whole generation.
Opening checks sizes, ``.npy`` headers and Parquet footers (cheap, catches
truncation); :func:`verify` re-hashes everything. Names in a manifest must be
plain file names inside the directory.

Format 1 directories (one ``vectors.gNNNN.faiss`` + ``metadata.gNNNN.parquet``)
open read-only; :func:`.writes.upgrade` rewrites them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulisse._io import TMP_PREFIX, WriteError, atomic_write, fsync_dir, os_error_reason, sha256_file
from ulisse.errors import IndexError_, IndexNotFound, InputError

from . import idtable
from .manifest import FORMAT_VERSION, MANIFEST, FileEntry, Manifest, SegmentEntry, check_name  # noqa: F401 (re-exported)
from .metadata import write_parquet

LOG = logging.getLogger(__name__)

SEGMENT_PREFIX = "seg-"
TRAINED_PREFIX = "trained-"
V1_PREFIXES = ("vectors.g", "metadata.g")
SIDE_DIR = "derived"          # files kept with the index outside its generations: derived columns, marks
STAGED_PREFIX = ".txn-"       # a side file written by a transaction, before its commit
DTYPES = ("float32", "float16")
PARQUET_MAGIC = b"PAR1"


# -- manifest (see :mod:`.manifest`) -----------------------------------------------


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of the index at ``path`` (format 1 or 2), its file names checked (:meth:`Manifest.read`)."""
    return Manifest.read(path)


def file_names(manifest: Manifest) -> list[str]:
    """Every file name a manifest refers to."""
    return Manifest.from_dict(manifest).file_names()


def is_v1(manifest: Manifest) -> bool:
    return Manifest.from_dict(manifest).is_v1


# -- writing -------------------------------------------------------------------------


def write_file(path: Path, name: str, data) -> FileEntry:
    """Write ``path/name`` atomically; its manifest entry (name, bytes, sha256).

    Raises:
        WriteError: ``DIR: <reason>`` (disk full, permission denied...); nothing is left behind.
    """
    final = path / name
    try:
        atomic_write(final, data)
        return FileEntry(name, final.stat().st_size, sha256_file(final))
    except WriteError as exc:
        raise WriteError(f"{path}: {_reason(exc, final)}") from None
    except OSError as exc:
        raise WriteError(f"{path}: {os_error_reason(exc)}") from None
    except RuntimeError as exc:  # FAISS's writers raise RuntimeError for I/O errors
        lines = str(exc).strip().splitlines()
        raise WriteError(f"{path}: write failed ({lines[-1][:160] if lines else exc})") from None


def _reason(exc: WriteError, final: Path) -> str:
    text = str(exc)
    prefix = f"{final}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def remove_files(path: Path, names) -> None:
    """Remove files (best effort: a failure here leaves a leftover for the next sweep)."""
    for name in names:
        try:
            (path / name).unlink(missing_ok=True)
        except OSError:
            pass


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def write_segment(path: Path, vectors, metadata, faiss_write=None, *, start: int, dtype: str = "float32",
                  count: int | None = None, kind: str | None = None, ids=None) -> SegmentEntry:
    """Write one segment's files (rows ``start ..``); its manifest entry.

    Args:
        vectors: an N x dim array (stored as ``dtype``), or a function writing the ``.npy`` to the path it is given
            (then give ``count``).
        metadata: a DataFrame, or a function writing the Parquet file.
        faiss_write: a function writing the segment's FAISS part, or None.
        kind: the FAISS part's kind, recorded with it.
        ids: the segment's ids in row order, or a function returning them (default: ``metadata``'s ``id``
            column); they make the id-hash table (:mod:`.idtable`).

    On any error, the files already written are removed before the error is raised.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    sid = new_id()
    written: list[str] = []

    def put(name, data):
        written.append(name)
        return write_file(path, name, data)

    try:
        if callable(vectors):
            vec_write = vectors
        else:
            raw = np.ascontiguousarray(vectors, dtype=dtype)
            count = len(raw)
            vec_write = lambda p: save_npy(p, raw)  # noqa: E731
        meta_write = metadata if callable(metadata) else (lambda p: write_parquet(metadata, p))
        vec_entry = put(f"{SEGMENT_PREFIX}{sid}.vectors.npy", vec_write)
        meta_entry = put(f"{SEGMENT_PREFIX}{sid}.metadata.parquet", meta_write)
        faiss_entry = None
        if faiss_write is not None:
            faiss_entry = dataclasses.replace(put(f"{SEGMENT_PREFIX}{sid}.faiss", faiss_write), kind=kind)
        ids = ids() if callable(ids) else (metadata.get("id") if ids is None and not callable(metadata) else ids)
        ids_entry = None
        if ids is not None:
            table = idtable.build_table(list(ids))
            if len(table) != count:
                raise InputError(f"{len(table)} ids for a segment of {count} rows")
            ids_entry = put(f"{SEGMENT_PREFIX}{sid}{idtable.SUFFIX}", lambda p: save_npy(p, table))
        return SegmentEntry(sid, int(start), int(count), vec_entry, meta_entry, faiss_entry, dtype, ids=ids_entry)
    except BaseException:
        remove_files(path, written)
        raise


def write_trained(path: Path, trained_index) -> FileEntry:
    """Write the trained, empty FAISS index; its manifest entry."""
    import faiss

    return write_file(path, f"{TRAINED_PREFIX}{new_id()}.faiss", lambda p: faiss.write_index(trained_index, str(p)))


def npy_header(dtype, shape) -> bytes:
    """The header of a ``.npy`` file holding a C-order array of ``dtype`` and ``shape``."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def save_npy(p: Path, array: np.ndarray) -> None:
    # plain writes, so that a full disk raises OSError(ENOSPC) (numpy's tofile loses the errno)
    with open(p, "wb") as f:
        f.write(npy_header(array.dtype, array.shape))
        f.write(memoryview(np.ascontiguousarray(array)).cast("B"))


def commit(path: Path, manifest: Manifest, expected_generation: int) -> Manifest:
    """Replace the manifest with ``manifest`` (generation ``expected_generation + 1``); returns what was written.

    Called by :class:`.transaction.Transaction` (under the writer lock), nowhere else.

    Raises:
        IndexError_: the index changed since ``expected_generation`` (nothing is written).
        WriteError: the manifest could not be written (the previous one stays).
    """
    try:
        current = Manifest.read(path).generation
    except IndexNotFound:
        current = 0
    if current != expected_generation:
        raise IndexError_(f"{path}: changed by another writer (generation {current}, this write started from "
                          f"{expected_generation}); nothing written, try again")
    manifest = manifest.replace(format_version=FORMAT_VERSION, generation=expected_generation + 1)
    write_file(path, MANIFEST, manifest.to_json())
    fsync_dir(path)
    return manifest


def sweep(path: Path, manifest: Manifest | None, previous: Manifest | None = None) -> list[str]:
    """Remove what killed or failed writers left: temporary files and files no manifest refers to.

    Call under the writer lock (every writer holds it from before its first file to its commit);
    ``manifest`` is the current one (None where there is none yet: then every file of ours goes).
    After a commit, ``previous`` is the generation it replaced: its files that the new one no longer
    names (a compaction's merged segments) are removed too, and logged as superseded, not as leftovers.
    Returns the names removed.
    """
    keep = set(manifest.file_names()) if manifest else set()
    gone = _remove_matching(path, lambda name: name.startswith((SEGMENT_PREFIX, TRAINED_PREFIX, TMP_PREFIX)
                                                               + V1_PREFIXES) and name not in keep)
    # side files staged by a transaction that never committed (plugins' own temporary files are left alone)
    for folder, _, _ in os.walk(path / SIDE_DIR):
        gone += [os.path.relpath(os.path.join(folder, n), path) for n in _remove_matching(Path(folder), _staged)]
    old = set(previous.file_names()) if previous else set()
    superseded = sum(name in old for name in gone)
    if superseded:
        LOG.info("%s: removed %d superseded file(s) of generation %d (generation %d no longer uses them)",
                 path, superseded, previous.generation, manifest.generation if manifest else 0)
    if len(gone) > superseded:
        LOG.info("%s: removed %d file(s) left by interrupted writes", path, len(gone) - superseded)
    return gone


def _staged(name: str) -> bool:
    return name.startswith(STAGED_PREFIX) or name.startswith(TMP_PREFIX) and f"-{STAGED_PREFIX}" in name


def _remove_matching(folder: Path, match) -> list[str]:
    gone = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for e in entries:
        if match(e.name) and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
                gone.append(e.name)
            except OSError:
                pass
    return gone


# -- reading -------------------------------------------------------------------------


@dataclass
class SegmentFiles:
    """One segment on disk, checked cheaply: raw vectors memory-mapped, the rest by name."""

    id: str
    start: int
    count: int
    vectors: np.ndarray                 # N x dim, memory-mapped (read-only)
    metadata_path: Path
    faiss_path: Path | None
    ids_path: Path | None = None        # the id-hash table, when the segment has a readable one


def _damaged(path: Path, name: str, why: str) -> IndexError_:
    return IndexError_(f"{path}: file {name} is damaged ({why}); run 'ulisse index verify {path}'")


def _check_size(path: Path, entry: FileEntry) -> Path:
    f = check_name(path, entry.name)
    try:
        size = f.stat().st_size
    except FileNotFoundError:
        raise IndexError_(f"{path}: file {entry.name} is missing") from None
    if size != entry.bytes:
        raise _damaged(path, entry.name, f"{size} bytes, the manifest says {entry.bytes}")
    return f


def open_segment(path: Path, seg: SegmentEntry, dim: int) -> SegmentFiles:
    """Check one segment cheaply (sizes, ``.npy`` header, Parquet footer) and memory-map its vectors."""
    vec = _check_size(path, seg.vectors)
    meta = _check_size(path, seg.metadata)
    fai = _check_size(path, seg.faiss) if seg.faiss else None
    try:
        vectors = np.load(vec, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _damaged(path, seg.vectors.name, str(exc).splitlines()[0]) from None
    if vectors.shape != (seg.count, dim) or vectors.dtype.name != seg.dtype:
        raise _damaged(path, seg.vectors.name, f"holds {vectors.shape} {vectors.dtype}, "
                                               f"the manifest says ({seg.count}, {dim}) {seg.dtype}")
    try:
        with open(meta, "rb") as f:
            f.seek(-4, os.SEEK_END)
            tail = f.read(4)
    except OSError as exc:
        raise _damaged(path, seg.metadata.name, os_error_reason(exc)) from None
    if tail != PARQUET_MAGIC:
        raise _damaged(path, seg.metadata.name, "no Parquet footer")
    return SegmentFiles(seg.id, seg.start, seg.count, vectors, meta, fai, _ids_path(path, seg))


def _ids_path(path: Path, seg: SegmentEntry) -> Path | None:
    """The segment's id-hash table, if it has one of the recorded size (else lookups scan its id column)."""
    if seg.ids is None:
        return None
    try:
        return _check_size(path, seg.ids)
    except IndexError_ as exc:  # a lookup aid only: the index still answers, by scanning; verify reports it
        LOG.warning("%s", exc)
        return None


def verify(path: str | os.PathLike) -> list[str]:
    """Re-hash every file the manifest names; the problems found (empty when all is well)."""
    path = Path(path)
    problems = []
    for e in Manifest.read(path).file_entries():
        f = path / e.name
        if not f.is_file():
            problems.append(f"{e.name}: missing")
            continue
        size = f.stat().st_size
        if size != e.bytes:
            problems.append(f"{e.name}: {size} bytes, the manifest says {e.bytes}")
        elif sha256_file(f) != e.sha256:
            problems.append(f"{e.name}: sha256 differs from the manifest's (the file changed after it was written)")
    return problems


def v1_files(path: Path, manifest: Manifest) -> tuple[Path, Path]:
    """The FAISS file and the metadata file of a format 1 index, sizes checked."""
    files = manifest.files
    out = []
    for role in ("vectors", "metadata"):
        if not files.get(role):
            raise IndexError_(f"{path}: manifest lists no {role} file")
        out.append(_check_size(path, files[role]))
    return out[0], out[1]
