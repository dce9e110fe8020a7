"""One generation of an index, opened for reading: its manifest, segments, and what searches run over.

Opening memory-maps the raw vectors, opens the metadata files (footers only) and
checks sizes and headers; nothing proportional to the index's size is read. A
generation's files never change, and a reader keeps the files it opened even when a
compaction removes them from the directory afterwards.

Example:
    >>> gen = load_generation(Path("indexes/hdf-demo"))         # doctest: +SKIP
    >>> gen.manifest.generation, [s.count for s in gen.segments]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ulisse._io import os_error_reason
from ulisse.errors import IndexError_

from . import faiss_backend, parts, segments, store
from .manifest import Manifest
from .metadata import SegmentMetadata

LOG = logging.getLogger(__name__)

OPEN_RETRIES = 3  # a compaction may remove files between reading a manifest and opening them
V1_NOTE = "{path}: index format 1 opens read-only; 'ulisse index upgrade {path}' rewrites it in format 2"


@dataclass
class Generation:
    """One generation as opened."""

    manifest: Manifest
    files: list            # store.SegmentFiles, one per segment (format 2)
    segments: list         # segments.Segment, one per segment file (vectors by row)
    searchables: list      # what a search runs over
    metadata_paths: list
    read_only: bool = False
    meta: SegmentMetadata | None = None  # the metadata, read by the piece; files opened with the generation
    _raw: list | None = None

    def over(self, space: str = "index") -> list:
        """What a search in ``space`` runs over: ``index`` (the index's own space: its FAISS parts, a whitened
        index's transform included) or ``raw`` (the raw vectors, searched exactly)."""
        if space == "index":
            return self.searchables
        if space != "raw":
            raise ValueError(f"space {space!r}: expected index or raw")
        if self._raw is None:
            self._raw = [segments.Segment(s.start, s.count, s.dim, s.metric, vectors=lambda s=s: s.vectors)
                         for s in self.segments]
        return self._raw


def metadata_read(path: Path, fn, *args):
    """``fn(*args)`` over an index's metadata files, their errors as one line naming the index."""
    try:
        return fn(*args)
    except ValueError as exc:
        raise IndexError_(f"{path}: metadata {exc}") from None
    except OSError as exc:  # a file gone (a compaction committed meanwhile: the open is retried) or unreadable
        raise IndexError_(f"{path}: metadata unreadable ({os_error_reason(exc)})") from None


def open_generation(path: Path, manifest: Manifest) -> Generation:
    """Open the generation ``manifest`` describes (cheap checks; see the module's docstring).

    Raises:
        IndexError_: a file missing or damaged.
    """
    if manifest.is_v1:
        return _open_v1(path, manifest)
    dim, metric, kind = manifest.dim, manifest.metric, manifest.faiss_kind
    files = [store.open_segment(path, seg, dim) for seg in manifest.segments]
    segs = [segments.Segment(f.start, f.count, dim, metric, f.vectors,
                             faiss_path=f.faiss_path if kind == "index" else None) for f in files]
    trained = store.check_name(path, manifest.trained.name) if manifest.trained else None
    if kind == "ivf" and files and trained is None:
        raise IndexError_(f"{path}: the manifest names no trained index for its IVF segments")
    search_over = parts.searchables(kind, segs, files, trained, manifest.count, manifest.search)
    meta = metadata_read(path, SegmentMetadata, [(f.start, f.count, f.metadata_path) for f in files],
                         [f.ids_path for f in files])
    return Generation(manifest, files, segs, search_over, [f.metadata_path for f in files], meta=meta)


def read_v1_index(path: Path, manifest: Manifest):
    """The FAISS index of a format 1 index (read whole) and its metadata file."""
    import faiss

    vec_file, meta_file = store.v1_files(path, manifest)
    try:
        index = faiss.read_index(str(vec_file))
    except Exception as exc:
        raise IndexError_(f"{path}: unreadable index files ({str(exc).strip().splitlines()[-1]})") from None
    if index.ntotal != manifest.count:
        raise IndexError_(f"{path}: {index.ntotal} vectors but the manifest says {manifest.count}")
    faiss_backend.prepare_for_reconstruct(index)
    parts.set_default_params(index, manifest.search)
    return index, meta_file


def _open_v1(path: Path, manifest: Manifest) -> Generation:
    index, meta_file = read_v1_index(path, manifest)
    n = int(index.ntotal)
    seg = segments.Segment(0, n, manifest.dim, manifest.metric, vectors=lambda: index.reconstruct_n(0, n),
                           faiss_index=index)
    LOG.info(V1_NOTE.format(path=path))
    return Generation(manifest, [], [seg], [seg], [meta_file], read_only=True,
                      meta=metadata_read(path, SegmentMetadata, [(0, n, meta_file)]))


def load_generation(path: Path) -> Generation:
    """The current generation of the index at ``path`` (retried when a compaction commits meanwhile)."""
    last = None
    for _ in range(OPEN_RETRIES):
        manifest = Manifest.read(path)
        try:
            return open_generation(path, manifest)
        except IndexError_ as exc:
            last = exc
            if Manifest.read(path).generation == manifest.generation:
                raise
    raise last
