"""Searching an index made of segments: one k-NN per segment, merged by distance.

Flat segments are searched exactly from their raw (memory-mapped) vectors,
copied into a FAISS ``IndexFlat`` a chunk at a time (kept in memory while the
index is small). Other segments carry their own part of the FAISS index,
memory-mapped on first use (``IO_FLAG_MMAP``: an IVF search reads only the
lists it probes). Exclusions and filters reach FAISS as ID selectors
(``IDSelectorBatch`` / ``IDSelectorBitmap``), never as a wider k.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

import faiss
import numpy as np

from ulisse.errors import QueryError

from . import _gpu, faiss_backend, space

LOG = logging.getLogger(__name__)

_OPEN_LOCK = threading.Lock()  # web UI sessions share segments: one opens a segment's file
PREAD_ROWS = 4096           # reads of up to this many rows of a segment use pread (see Segment.rows)
CHUNK_ROWS = 65536          # rows per IndexFlat when a Flat segment is streamed
FLAT_CACHE_BYTES = 1 << 30  # Flat segments kept in memory while their float32 copies fit in this


class Segment:
    """Rows ``start .. start + count`` of an index: their raw vectors and, unless Flat, their FAISS part."""

    def __init__(self, start: int, count: int, dim: int, metric: str, vectors: np.ndarray | Callable[[], np.ndarray],
                 faiss_path=None, faiss_index=None):
        self.start, self.count, self.dim, self.metric = int(start), int(count), int(dim), metric
        self._vectors = vectors
        self.faiss_path = faiss_path
        self._faiss = faiss_index
        self._flat = None
        self._file = None  # the vectors' file, opened for scattered reads (rows)
        self.prefetch = None  # prefetch(queries, nprobe): ask the OS for the lists a search will read (parts.py)

    @property
    def vectors(self) -> np.ndarray:
        """Raw vectors (count x dim), memory-mapped when on disk."""
        if callable(self._vectors):
            self._vectors = self._vectors()
        return self._vectors

    def rows(self, local: np.ndarray) -> np.ndarray:
        """Raw vectors of the segment's ``local`` rows (sorted), as stored.

        A few scattered rows of a memory-mapped file are read with ``pread``: a page fault on the map
        would read the 128 KB around each row (64 rows of re-ranking at 10^7 objects: 30-40 ms through
        the map, 1-2 ms with ``pread``), each asked of the OS first (``posix_fadvise(WILLNEED)``) so that
        rows not in the page cache are read from disk at once, not one after another. Many rows, or a file
        that cannot be read so (gone after a compaction: the map still holds it), go through the map.
        """
        v = self.vectors
        name = getattr(v, "filename", None)
        if name is None or not 0 < len(local) <= PREAD_ROWS or v.ndim != 2 or not v.flags.c_contiguous:
            return v[local]
        try:
            f = self._file  # held here: another thread replacing it cannot close it under this read
            if f is None:
                with _OPEN_LOCK:
                    if self._file is None:
                        self._file = open(name, "rb", buffering=0)  # noqa: SIM115 (kept open with the segment)
                    f = self._file
            fd, size, offset = f.fileno(), v.strides[0], int(v.offset)
            if len(local) > 1 and hasattr(os, "posix_fadvise"):  # all the reads at once, then each in turn
                for r in local:
                    os.posix_fadvise(fd, offset + int(r) * size, size, os.POSIX_FADV_WILLNEED)
            data = b"".join(os.pread(fd, size, offset + int(r) * size) for r in local)
        except OSError:
            return v[local]
        if len(data) != size * len(local):
            return v[local]
        return np.frombuffer(data, dtype=v.dtype).reshape(len(local), v.shape[1])

    @property
    def faiss_index(self):
        """This segment's FAISS part (None for Flat), memory-mapped on first use."""
        if self._faiss is None and self.faiss_path is not None:
            self._faiss = faiss.read_index(str(self.faiss_path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        return self._faiss

    def search(self, queries: np.ndarray, k: int, *, nprobe=None, ef=None, allowed: np.ndarray | None = None,
               excluded: np.ndarray | None = None, cache: "FlatCache | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, global rows), ``len(queries) x min(k, count)``; -1 / inf where fewer were found.

        ``allowed`` (bool, this segment's rows) and ``excluded`` (local row numbers) restrict the search.
        """
        gpu = _gpu.for_segment(self, k, allowed, excluded)  # None unless this search runs on a GPU
        if gpu is not None:
            return self._search_dropping(gpu, queries, k, _gpu.rows(excluded), nprobe, ef)
        index = self.faiss_index
        if index is not None:
            if self.prefetch is not None:
                self.prefetch(queries, nprobe)
            sel, keep = _selector(allowed, excluded, 0, self.count)
            try:
                D, I = faiss_backend.search(index, queries, k, nprobe=nprobe, metric=self.metric, ef=ef, selector=sel)
            except RuntimeError as exc:
                if sel is None or "params" not in str(exc):
                    raise
                # an index type that takes no ID selector (IndexPQ, LSH...): drop the few excluded rows
                # from a search of k + len(excluded); filters (allowed) search the raw vectors exactly
                LOG.debug("FAISS index %s takes no ID selector", type(index).__name__)
                if allowed is None:
                    return self._search_dropping(index, queries, k, excluded, nprobe, ef)
            else:
                del keep
                return D, np.where(I >= 0, I + self.start, -1)
        return self._search_flat(queries, k, allowed, excluded, cache)

    def _search_dropping(self, index, queries, k, excluded, nprobe, ef):
        D, I = faiss_backend.search(index, queries, k + len(excluded), nprobe=nprobe, metric=self.metric, ef=ef)
        D = np.where(np.isin(I, excluded), np.inf, D)
        I = np.where(np.isin(I, excluded), -1, I)
        D, I = merge([D], [I], min(k, self.count))
        return D, np.where(I >= 0, I + self.start, -1)

    def _search_flat(self, queries, k, allowed, excluded, cache):
        k = min(int(k), self.count)
        parts_D, parts_I = [], []
        for lo, flat in self._flat_chunks(cache):
            hi = lo + flat.ntotal
            sel, keep = _selector(allowed, excluded, lo, hi)
            D, I = faiss_backend.search(flat, queries, min(k, hi - lo), metric=self.metric, selector=sel)
            del keep
            parts_D.append(D)
            parts_I.append(np.where(I >= 0, I + lo + self.start, -1))
        return merge(parts_D, parts_I, k)

    def _flat_chunks(self, cache):
        if self._flat is not None:
            yield from self._flat
            return
        keep = cache is not None and cache.take(self.count * self.dim * 4)
        chunks = []
        step = self.count if keep else CHUNK_ROWS
        for lo in range(0, self.count, step):
            flat = faiss.IndexFlat(self.dim, faiss_backend.METRICS[self.metric])
            flat.add(faiss_backend.prepared(self.vectors[lo:lo + step], self.metric))
            if keep:
                chunks.append((lo, flat))
            yield lo, flat
        if keep:
            self._flat = chunks


class FlatCache:
    """A budget of bytes for Flat segments kept in memory between searches."""

    def __init__(self, budget: int = FLAT_CACHE_BYTES):
        self.left = budget

    def take(self, nbytes: int) -> bool:
        if nbytes <= self.left:
            self.left -= nbytes
            return True
        return False


def _selector(allowed, excluded, lo, hi):
    """A FAISS ID selector over local ids ``0 .. hi - lo`` (rows ``lo .. hi`` of a segment), and what keeps it alive."""
    if allowed is None and (excluded is None or len(excluded) == 0):
        return None, None
    if allowed is None:
        ids = excluded[(excluded >= lo) & (excluded < hi)] - lo
        if len(ids) == 0:
            return None, None
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        inner = faiss.IDSelectorBatch(ids)
        sel = faiss.IDSelectorNot(inner)
        return sel, (inner, ids)
    mask = np.array(allowed[lo:hi], dtype=bool)
    if excluded is not None and len(excluded):
        ex = excluded[(excluded >= lo) & (excluded < hi)] - lo
        mask[ex] = False
    bits = np.packbits(mask, bitorder="little")
    sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    return sel, bits


def merge(parts_D: list[np.ndarray], parts_I: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest distances of several result lists (each ``Q x k_i``), with their rows."""
    if not parts_D:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64)
    if len(parts_D) == 1:
        D, I = parts_D[0], parts_I[0]
    else:
        D, I = np.concatenate(parts_D, axis=1), np.concatenate(parts_I, axis=1)
    D = np.where(I >= 0, D, np.inf).astype(np.float32)
    k = min(int(k), D.shape[1])
    order = np.argsort(D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


def search_segments(segments: list[Segment], queries: np.ndarray, k: int, *, nprobe=None, ef=None,
                    allowed: np.ndarray | None = None, excluded: np.ndarray | None = None,
                    cache: FlatCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k-NN over all segments: (distances, rows), ``len(queries) x min(k, rows)``; -1 / inf pad what is missing.

    ``allowed``: bool over all rows (None: all); ``excluded``: global rows left out.
    """
    parts_D, parts_I = [], []
    excluded = None if excluded is None else np.asarray(excluded, dtype=np.int64)
    for seg in segments:
        lo, hi = seg.start, seg.start + seg.count
        seg_allowed = None if allowed is None else allowed[lo:hi]
        if seg_allowed is not None and not seg_allowed.any():
            continue
        seg_excluded = None if excluded is None else excluded[(excluded >= lo) & (excluded < hi)] - lo
        D, I = seg.search(queries, k, nprobe=nprobe, ef=ef, allowed=seg_allowed, excluded=seg_excluded, cache=cache)
        parts_D.append(D)
        parts_I.append(I)
    if not parts_D:
        n = len(queries)
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    return merge(parts_D, parts_I, k)


def rows_of(segments: list[Segment], rows: np.ndarray) -> np.ndarray:
    """Raw vectors of global ``rows`` (any order, repeats allowed), float32, in the order given."""
    rows = np.asarray(rows, dtype=np.int64).ravel()
    dim = segments[0].dim if segments else 0
    out = np.empty((len(rows), dim), np.float32)
    if len(rows) == 0:
        return out
    total = segments[-1].start + segments[-1].count if segments else 0
    if rows.min() < 0 or rows.max() >= total:
        raise IndexError(f"row out of range (the index has {total} rows)")
    starts = np.array([s.start for s in segments], dtype=np.int64)
    which = np.searchsorted(starts, rows, side="right") - 1
    for si in np.unique(which):
        pick = np.flatnonzero(which == si)
        local = rows[pick] - segments[si].start
        order = np.argsort(local, kind="stable")  # sorted reads are friendlier to the page cache
        out[pick[order]] = segments[si].rows(local[order])
    return out


def all_vectors(segments: list[Segment], dim: int) -> np.ndarray:
    """Every raw vector, N x dim float32 in row order: the memory map itself when there is one float32 segment."""
    if len(segments) == 1 and segments[0].vectors.dtype == np.float32:
        return segments[0].vectors
    if not segments:
        return np.zeros((0, dim), np.float32)
    return np.concatenate([np.asarray(s.vectors, dtype=np.float32) for s in segments])


# -- a search over a whole generation ---------------------------------------------------

SMALL_EXCLUSION = 4  # per-query exclusions up to this size, on many distinct queries, are filtered after a batched search


def search_generation(searchables: list[Segment], raw: list[Segment], queries: np.ndarray, k: int, total: int, *,
                      metric: str, exclude=None, allowed: np.ndarray | None = None, nprobe=None, ef=None,
                      rerank: int = 0, cache: FlatCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k-NN of ``queries`` over a generation of ``total`` rows: (distances, rows), ``Q x min(k, total)``.

    ``searchables`` are what the search runs over, ``raw`` the segments holding the raw vectors
    (re-ranking reads them). ``exclude[i]``: rows left out of query i's results; ``allowed``: bool over
    rows; ``rerank``: re-rank the best ``rerank`` candidates exactly. -1 / inf pad what is missing.
    """
    k = int(k)
    kk = max(k, rerank)
    D = np.full((len(queries), min(kk, total)), np.inf, np.float32)
    I = np.full(D.shape, -1, np.int64)
    groups = _exclusion_groups(exclude, len(queries))
    if allowed is None and len(groups) > 8 and all(ex is None or len(ex) <= SMALL_EXCLUSION for _, ex in groups):
        # many queries, each leaving out a few rows of its own (itself, say): one batched search, filtered after
        d, i = _search_filtered(searchables, queries, exclude, min(kk, total), nprobe, ef, cache)
        D[:, :d.shape[1]], I[:, :i.shape[1]] = d, i
    else:
        for group, excluded in groups:
            d, i = search_segments(searchables, queries[group], kk, nprobe=nprobe, ef=ef, allowed=allowed,
                                   excluded=excluded, cache=cache)
            D[group, :d.shape[1]], I[group, :i.shape[1]] = d, i
    if rerank:
        D, I = _rerank(raw, queries, D, I, metric, space.transform_of(searchables[0].faiss_index if searchables else None))
    return D[:, :k], I[:, :k]


def distances_generation(searchables: list[Segment], queries: np.ndarray, vectors: np.ndarray,
                         metric: str) -> np.ndarray:
    """Exact distances between ``queries`` and ``vectors`` (raw), ``Q x len(vectors)``, in the space ``searchables``
    search (a whitened index's transform applied to both), as a search gives them."""
    q = np.atleast_2d(np.asarray(queries, np.float32))
    x = np.atleast_2d(np.asarray(vectors, np.float32))
    if x.shape[1] != q.shape[1]:
        raise QueryError(f"vectors have dimension {x.shape[1]}, the index {q.shape[1]}")
    transform = space.transform_of(searchables[0].faiss_index if searchables else None)
    if transform is not None:  # as a search: normalised for cosine, then into the index's space
        q, x = transform(faiss_backend.prepared(q, metric)), transform(faiss_backend.prepared(x, metric))
    return faiss_backend.pairwise_distances(q, x, metric).astype(np.float32)


def _exclusion_groups(exclude, n):
    """Queries grouped by identical exclusion lists: ``[(query positions, excluded rows or None)]``."""
    if exclude is None:
        return [(np.arange(n), None)]
    groups: dict = {}
    seen_objects: dict = {}
    for qi, ex in enumerate(exclude):
        key = seen_objects.get(id(ex))
        if key is None:
            key = tuple(sorted({int(x) for x in ex}))
            seen_objects[id(ex)] = key
        groups.setdefault(key, []).append(qi)
    return [(np.array(g), np.array(key, dtype=np.int64) if key else None) for key, g in groups.items()]


def _search_filtered(searchables, q, exclude, width, nprobe, ef, cache):
    """Batched search of many queries that each leave out at most SMALL_EXCLUSION rows of their own."""
    extra = max((len(e) for e in exclude), default=0)
    d, i = search_segments(searchables, q, width + extra, nprobe=nprobe, ef=ef, cache=cache)
    outD = np.full((len(q), width), np.inf, np.float32)
    outI = np.full(outD.shape, -1, np.int64)
    for j in range(len(q)):
        drop = np.isin(i[j], np.asarray(list(exclude[j]), dtype=np.int64)) | (i[j] < 0)
        keep = np.flatnonzero(~drop)[:width]
        outD[j, :len(keep)], outI[j, :len(keep)] = d[j, keep], i[j, keep]
    return outD, outI


def _rerank(raw, q, D, I, metric, transform=None):
    """Exact distances of the candidates from the raw vectors (in the index's space: ``transform``), re-sorted."""
    valid = I >= 0
    if not valid.any():
        return D, I
    vecs = np.zeros(I.shape + (q.shape[1],), np.float32)
    vecs[valid] = rows_of(raw, I[valid])
    if transform is not None:  # a whitened index: distances in its space, as its search gives them (cosine: normalised first)
        q = transform(faiss_backend.prepared(q, metric))
        vecs = transform(faiss_backend.prepared(vecs.reshape(-1, vecs.shape[-1]), metric)).reshape(I.shape + (-1,))
    exact = faiss_backend.exact_distances(q, vecs, metric).astype(np.float32)
    exact[~valid] = np.inf
    order = np.argsort(exact, axis=1, kind="stable")
    return np.take_along_axis(exact, order, axis=1), np.take_along_axis(I, order, axis=1)
