"""The on-disk index directory (format 2): a manifest plus immutable segments.

::

    DIR/
      manifest.json                  factory, dim, metric, count, generation, search parameters,
                                     encoder, history, and every file below with bytes and sha256
      trained-<id>.faiss             the trained, empty FAISS index (IVF, PQ...; none for Flat/HNSW)
      seg-<id>.vectors.npy           raw vectors of one segment, memory-mappable (float32 or float16)
      seg-<id>.metadata.parquet      one row per vector: row, id, ra, dec, source, catalogue columns
      seg-<id>.faiss                 the segment's part of the FAISS index (none for Flat)
      .ulisse.lock                   the writers' lock (see :mod:`.lock`)

An add writes only its new segment's files, then commits by replacing
``manifest.json`` (``os.replace``) under the writer lock, after checking that the
generation it started from is still current. Readers never lock: they read one
manifest and the files it names, so they always see a whole generation.
Opening checks sizes, ``.npy`` headers and Parquet footers (cheap, catches
truncation); :func:`verify` re-hashes everything. Names in a manifest must be
plain file names inside the directory.

Format 1 directories (one ``vectors.gNNNN.faiss`` + ``metadata.gNNNN.parquet``)
open read-only; :func:`ulisse.index.upgrade_index` rewrites them.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ulisse._io import TMP_PREFIX, WriteError, atomic_write, fsync_dir, os_error_reason, path_inside, sha256_file
from ulisse.errors import IndexError_, IndexNotFound, InputError

from .metadata import write_parquet

LOG = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "ulisse-index"
FORMAT_VERSION = 2
SEGMENT_PREFIX = "seg-"
TRAINED_PREFIX = "trained-"
V1_PREFIXES = ("vectors.g", "metadata.g")
DTYPES = ("float32", "float16")
PARQUET_MAGIC = b"PAR1"


# -- manifest ----------------------------------------------------------------------


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the index at ``path`` (format 1 or 2), its file names checked.

    Raises:
        IndexNotFound: no directory, or no manifest in it.
        IndexError_: not a ulisse manifest, a newer format, or file names outside the directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise IndexNotFound(f"{path}: no index here (not a directory)")
    mf = path / MANIFEST
    if not mf.is_file():
        raise IndexNotFound(f"{path}: no index here (no {MANIFEST})")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, ValueError) as exc:
        raise IndexError_(f"{mf}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexError_(f"{mf}: not a ulisse index manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise IndexError_(f"{mf}: index format {manifest['format_version']} is newer than this ulisse reads ({FORMAT_VERSION})")
    for name in file_names(manifest):
        check_name(path, name)
    return manifest


def file_names(manifest: dict) -> list[str]:
    """Every file name a manifest refers to."""
    names = [e.get("name") for e in manifest.get("files", {}).values()] if manifest.get("format_version", 1) < 2 else []
    if manifest.get("trained"):
        names.append(manifest["trained"].get("name"))
    for seg in manifest.get("segments", []):
        names += [seg[role]["name"] for role in ("vectors", "metadata", "faiss") if seg.get(role)]
    return names


def check_name(path: Path, name) -> Path:
    """``path / name`` for a plain file name inside the index directory; IndexError_ otherwise."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise IndexError_(f"{path}: the manifest names {name!r}, not a plain file name in the index directory")
    try:
        return path_inside(path, name)
    except InputError as exc:
        raise IndexError_(f"{path}: manifest {exc}") from None


def is_v1(manifest: dict) -> bool:
    return manifest.get("format_version", 1) < 2


# -- writing -------------------------------------------------------------------------


def write_file(path: Path, name: str, data) -> dict:
    """Write ``path/name`` atomically; its manifest entry (name, bytes, sha256).

    Raises:
        WriteError: ``DIR: <reason>`` (disk full, permission denied...); nothing is left behind.
    """
    final = path / name
    try:
        atomic_write(final, data)
        return {"name": name, "bytes": final.stat().st_size, "sha256": sha256_file(final)}
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


def write_segment(path: Path, vectors, metadata, faiss_write=None, *, dtype: str = "float32",
                  count: int | None = None, kind: str | None = None) -> dict:
    """Write one segment's files; its manifest entry (without ``start``).

    Args:
        vectors: an N x dim array (stored as ``dtype``), or a function writing the ``.npy`` to the path it is given
            (then give ``count``).
        metadata: a DataFrame, or a function writing the Parquet file.
        faiss_write: a function writing the segment's FAISS part, or None.
        kind: the FAISS part's kind, recorded with it.

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
            vec_write = lambda p: _save_npy(p, raw)  # noqa: E731
        meta_write = metadata if callable(metadata) else (lambda p: write_parquet(metadata, p))
        entry = {"id": sid, "count": int(count), "dtype": dtype}
        entry["vectors"] = put(f"{SEGMENT_PREFIX}{sid}.vectors.npy", vec_write)
        entry["metadata"] = put(f"{SEGMENT_PREFIX}{sid}.metadata.parquet", meta_write)
        entry["faiss"] = None
        if faiss_write is not None:
            entry["faiss"] = dict(put(f"{SEGMENT_PREFIX}{sid}.faiss", faiss_write), kind=kind)
        return entry
    except BaseException:
        remove_files(path, written)
        raise


def write_trained(path: Path, trained_index) -> dict:
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


def _save_npy(p: Path, array: np.ndarray) -> None:
    # plain writes, so that a full disk raises OSError(ENOSPC) (numpy's tofile loses the errno)
    with open(p, "wb") as f:
        f.write(npy_header(array.dtype, array.shape))
        f.write(memoryview(np.ascontiguousarray(array)).cast("B"))


def commit(path: Path, manifest: dict, expected_generation: int) -> dict:
    """Replace the manifest with ``manifest`` (generation ``expected_generation + 1``); call under the writer lock.

    Raises:
        IndexError_: the index changed since ``expected_generation`` (nothing is written).
        WriteError: the manifest could not be written (the previous one stays).
    """
    try:
        current = read_manifest(path).get("generation", 0)
    except IndexNotFound:
        current = 0
    if current != expected_generation:
        raise IndexError_(f"{path}: changed by another writer (generation {current}, this write started from "
                          f"{expected_generation}); nothing written, try again")
    manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION, generation=expected_generation + 1)
    text = json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n"
    write_file(path, MANIFEST, text)
    fsync_dir(path)
    return manifest


def sweep(path: Path, manifest: dict | None) -> list[str]:
    """Remove what killed or failed writers left: temporary files and files no manifest refers to.

    Call under the writer lock (every writer holds it from before its first file to its commit);
    ``manifest`` is the current one (None where there is none yet: then every file of ours goes).
    Returns the names removed.
    """
    keep = set(file_names(manifest)) if manifest else set()
    gone = []
    try:
        entries = list(os.scandir(path))
    except OSError:
        return []
    for e in entries:
        ours = e.name.startswith((SEGMENT_PREFIX, TRAINED_PREFIX, TMP_PREFIX) + V1_PREFIXES)
        if ours and e.name not in keep and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
                gone.append(e.name)
            except OSError:
                pass
    if gone:
        LOG.info("%s: removed %d file(s) left by interrupted writes", path, len(gone))
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
    entry: dict = field(repr=False, default_factory=dict)


def _damaged(path: Path, name: str, why: str) -> IndexError_:
    return IndexError_(f"{path}: file {name} is damaged ({why}); run 'ulisse index verify {path}'")


def _check_size(path: Path, entry: dict) -> Path:
    f = check_name(path, entry["name"])
    try:
        size = f.stat().st_size
    except FileNotFoundError:
        raise IndexError_(f"{path}: file {entry['name']} is missing") from None
    if size != entry["bytes"]:
        raise _damaged(path, entry["name"], f"{size} bytes, the manifest says {entry['bytes']}")
    return f


def open_segment(path: Path, seg: dict, dim: int) -> SegmentFiles:
    """Check one segment cheaply (sizes, ``.npy`` header, Parquet footer) and memory-map its vectors."""
    vec = _check_size(path, seg["vectors"])
    meta = _check_size(path, seg["metadata"])
    fai = _check_size(path, seg["faiss"]) if seg.get("faiss") else None
    try:
        vectors = np.load(vec, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _damaged(path, seg["vectors"]["name"], str(exc).splitlines()[0]) from None
    if vectors.shape != (seg["count"], dim) or vectors.dtype.name != seg.get("dtype", "float32"):
        raise _damaged(path, seg["vectors"]["name"], f"holds {vectors.shape} {vectors.dtype}, "
                                                     f"the manifest says ({seg['count']}, {dim}) {seg.get('dtype')}")
    try:
        with open(meta, "rb") as f:
            f.seek(-4, os.SEEK_END)
            tail = f.read(4)
    except OSError as exc:
        raise _damaged(path, seg["metadata"]["name"], os_error_reason(exc)) from None
    if tail != PARQUET_MAGIC:
        raise _damaged(path, seg["metadata"]["name"], "no Parquet footer")
    return SegmentFiles(seg["id"], int(seg["start"]), int(seg["count"]), vectors, meta, fai, seg)


def verify(path: str | os.PathLike) -> list[str]:
    """Re-hash every file the manifest names; the problems found (empty when all is well)."""
    path = Path(path)
    manifest = read_manifest(path)
    if is_v1(manifest):
        entries = list(manifest.get("files", {}).values())
    else:
        entries = [manifest["trained"]] if manifest.get("trained") else []
        for seg in manifest.get("segments", []):
            entries += [seg[r] for r in ("vectors", "metadata", "faiss") if seg.get(r)]
    problems = []
    for e in entries:
        f = path / e["name"]
        if not f.is_file():
            problems.append(f"{e['name']}: missing")
            continue
        size = f.stat().st_size
        if size != e["bytes"]:
            problems.append(f"{e['name']}: {size} bytes, the manifest says {e['bytes']}")
        elif sha256_file(f) != e["sha256"]:
            problems.append(f"{e['name']}: sha256 differs from the manifest's (the file changed after it was written)")
    return problems


def v1_files(path: Path, manifest: dict) -> tuple[Path, Path]:
    """The FAISS file and the metadata file of a format 1 index, sizes checked."""
    files = manifest.get("files", {})
    out = []
    for role in ("vectors", "metadata"):
        if not files.get(role):
            raise IndexError_(f"{path}: manifest lists no {role} file")
        out.append(_check_size(path, files[role]))
    return out[0], out[1]
