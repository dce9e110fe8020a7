"""The on-disk index directory: manifest, FAISS file and metadata table, written atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import faiss
import pandas as pd

from ulisse.errors import IndexError_, IndexNotFound

LOG = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "ulisse-index"
FORMAT_VERSION = 1


@dataclass
class IndexFiles:
    """A loaded index directory."""

    path: Path
    manifest: dict
    faiss_index: "faiss.Index"
    metadata: pd.DataFrame


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the index at ``path``.

    Raises:
        IndexNotFound: no directory, or no manifest in it.
        IndexError_: the manifest is not a ulisse index manifest.
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
    return manifest


def load(path: str | os.PathLike, verify: bool = True) -> IndexFiles:
    """Load an index directory, checking file sizes and (with ``verify``) sha256 sums."""
    path = Path(path)
    manifest = read_manifest(path)
    files = manifest.get("files", {})
    for role in ("vectors", "metadata"):
        entry = files.get(role)
        if not entry:
            raise IndexError_(f"{path}: manifest lists no {role} file")
        f = path / entry["name"]
        if not f.is_file():
            raise IndexError_(f"{path}: {role} file {entry['name']} is missing")
        if f.stat().st_size != entry["bytes"] or (verify and _sha256(f) != entry["sha256"]):
            raise IndexError_(f"{path}: {role} file {entry['name']} is damaged (checksum mismatch)")
    try:
        index = faiss.read_index(str(path / files["vectors"]["name"]))
        metadata = pd.read_parquet(path / files["metadata"]["name"])
    except Exception as exc:
        raise IndexError_(f"{path}: unreadable index files ({exc})") from None
    if index.ntotal != len(metadata) or index.ntotal != manifest.get("count"):
        raise IndexError_(f"{path}: {index.ntotal} vectors but {len(metadata)} metadata rows")
    return IndexFiles(path, manifest, index, metadata)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(final: Path, writer) -> None:
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex}-{final.name}")
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def commit(path: str | os.PathLike, faiss_index: "faiss.Index", metadata: pd.DataFrame, manifest: dict) -> dict:
    """Write an index directory atomically and return the manifest written.

    New files get a new generation number; ``manifest.json`` is replaced last, in
    one ``os.replace``. Until then the previous index (if any) is untouched;
    afterwards the previous generation's files are removed.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        previous = read_manifest(path)
    except IndexNotFound:
        previous = None
    generation = (previous or {}).get("generation", 0) + 1
    vec_name = f"vectors.g{generation:04d}.faiss"
    meta_name = f"metadata.g{generation:04d}.parquet"
    _write_file(path / vec_name, lambda p: faiss.write_index(faiss_index, str(p)))
    _write_file(path / meta_name, lambda p: metadata.to_parquet(p, index=False))
    manifest = dict(manifest)
    manifest.update(
        format=FORMAT, format_version=FORMAT_VERSION, generation=generation, count=int(faiss_index.ntotal),
        files={
            "vectors": {"name": vec_name, "bytes": (path / vec_name).stat().st_size, "sha256": _sha256(path / vec_name)},
            "metadata": {"name": meta_name, "bytes": (path / meta_name).stat().st_size, "sha256": _sha256(path / meta_name)},
        },
    )
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
    _write_file(path / MANIFEST, lambda p: p.write_text(text))
    _fsync_dir(path)
    keep = {vec_name, meta_name, MANIFEST}
    for f in path.iterdir():
        stale = f.name.startswith(("vectors.g", "metadata.g")) or (f.name.startswith(".tmp-") and f.is_file())
        if stale and f.name not in keep:
            f.unlink(missing_ok=True)
    return manifest
