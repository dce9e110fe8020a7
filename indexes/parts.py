"""Each segment's part of the FAISS index, by kind of factory.

- ``flat`` (``Flat``): no FAISS file; segments are searched exactly from their raw vectors.
- ``ivf`` (``IVF...``, with or without a pre-transform): one trained, empty index
  (``trained-<id>.faiss``) holds the coarse quantizer and codecs; each segment
  stores only its inverted lists, with global row numbers as ids. At open the
  lists of every segment are stacked (``HStackInvertedLists``, memory-mapped),
  so one search probes every segment at once.
- ``index`` (anything else: HNSW, PQ, LSH...): each segment stores a whole FAISS
  index of its vectors (HNSW graphs cannot be merged); searches run per segment
  and are merged by distance.
"""

from __future__ import annotations

import os
import struct

import faiss
import numpy as np

from . import faiss_backend, space
from .segments import Segment

ADD_CHUNK = 65536


def kind_of(factory: str, dim: int, metric: str) -> str:
    if factory.strip() == "Flat":
        return "flat"
    probe = faiss_backend.new_faiss_index(factory, dim, metric)
    return "ivf" if faiss.try_extract_index_ivf(probe) is not None else "index"


def trained_index(factory: str, dim: int, metric: str, vectors: np.ndarray):
    """The trained, empty index (None when the factory needs no training or is Flat)."""
    if kind_of(factory, dim, metric) == "flat":
        return None
    index = faiss_backend.new_faiss_index(factory, dim, metric)
    if index.is_trained:
        return None
    faiss_backend.train(index, vectors, metric)
    return index


def set_default_params(index, params: dict) -> None:
    """Put the manifest's search parameters on a FAISS index."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and params.get("nprobe"):
        ivf.nprobe = int(params["nprobe"])
    hnsw = faiss_backend._hnsw_of(index)
    if hnsw is not None and params.get("efSearch"):
        hnsw.hnsw.efSearch = int(params["efSearch"])


def _add_chunked(index, vectors, metric, ids=None) -> None:
    for lo in range(0, len(vectors), ADD_CHUNK):
        x = faiss_backend.prepared(vectors[lo:lo + ADD_CHUNK], metric)
        if ids is None:
            index.add(x)
        else:
            index.add_with_ids(x, np.ascontiguousarray(ids[lo:lo + ADD_CHUNK], dtype=np.int64))


def copy_index(index):
    """A deep copy of a FAISS index (through its serialised form: ``clone_index`` cannot copy ``L2norm``)."""
    return faiss.deserialize_index(faiss.serialize_index(index), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)


def segment_writer(kind: str, factory: str, dim: int, metric: str, trained, vectors: np.ndarray, start: int):
    """A function writing this segment's FAISS part to the path it is given (None for ``flat``)."""
    if kind == "flat":
        return None
    if kind == "ivf":
        part = copy_index(trained)
        _add_chunked(part, vectors, metric, ids=np.arange(start, start + len(vectors), dtype=np.int64))
        return lambda p: write_invlists(faiss.extract_index_ivf(part).invlists, p)
    part = copy_index(trained) if trained is not None else faiss_backend.new_faiss_index(factory, dim, metric)
    _add_chunked(part, vectors, metric)
    return lambda p: faiss.write_index(part, str(p))


def write_invlists(invlists, p) -> None:
    writer = faiss.FileIOWriter(str(p))
    try:
        faiss.write_InvertedLists(invlists, writer)
    finally:
        del writer  # closes the file


def read_invlists(path):
    reader = faiss.FileIOReader(str(path))
    return faiss.read_InvertedLists(reader, faiss.IO_FLAG_MMAP), reader


def read_trained(path):
    """The trained, empty index, without IVF-PQ's precomputed distance table: nlist x M x 256 floats (268 MB
    and 0.5-0.7 s for IVF1024,PQ256 at every open) that save about 1 ms a query at nprobe 8."""
    return faiss.read_index(str(path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)


def stacked_ivf(trained_path, invlist_paths, total: int, params: dict):
    """One searchable IVF index over the inverted lists of every segment (memory-mapped), and what keeps them alive."""
    index = read_trained(trained_path)
    ivf = faiss.extract_index_ivf(index)
    loaded = [read_invlists(p) for p in invlist_paths]
    vec = faiss.InvertedListsPtrVector()
    for il, _ in loaded:
        vec.push_back(il)
    stack = faiss.HStackInvertedLists(len(loaded), vec.data())
    ivf.replace_invlists(stack, False)
    ivf.ntotal = total
    index.ntotal = total
    set_default_params(index, params)
    return index, (loaded, vec, stack)  # the lists must live as long as the index


def searchables(kind: str, segments: list[Segment], files: list, trained_path, total: int, params: dict) -> list[Segment]:
    """What a search runs over: the segments themselves, or one stacked IVF for ``ivf``."""
    if kind != "ivf" or not segments:
        return segments
    dim, metric = segments[0].dim, segments[0].metric
    paths = [f.faiss_path for f in files]
    index, keep = stacked_ivf(trained_path, paths, total, params)
    stacked = Segment(0, total, dim, metric, vectors=lambda: None, faiss_index=index)
    stacked.keep = keep
    stacked.prefetch = ListPrefetch(index, paths)
    return [stacked]


PREFETCH_QUERIES = 8  # searches of at most this many queries ask the OS for their lists first


class ListPrefetch:
    """Before a search of a few queries, ask the OS for the inverted lists it will read, in every segment at once.

    The lists of one IVF list number are spread over every segment's ``.faiss`` file; FAISS reads them through
    its memory maps one page fault at a time. Here the queries are assigned to their ``nprobe`` lists by the
    coarse quantizer (what FAISS does next), and each segment's byte range of those lists is handed to
    ``posix_fadvise(WILLNEED)``, so the reads overlap: at 10^7 objects in 40 segments, with the page cache
    emptied, the search of one query took 0.93-1.21 s without and 0.11-0.14 s with (benchmarks/store.md).
    Lists already in the page cache cost nothing more than the quantizer search (about 1 ms).
    """

    def __init__(self, index, paths):
        self.index, self.paths = index, [str(p) for p in paths]
        self._ranges: dict[str, tuple | None] = {}

    def _layout(self, path: str):
        """(byte offset of each list, bytes of each list) of an ``ilar`` inverted-lists file; None if not one."""
        if path not in self._ranges:
            layout = None
            try:
                with open(path, "rb") as fh:
                    head = fh.read(32)
                    if len(head) == 32 and head[:4] == b"ilar" and head[20:24] == b"full":
                        nlist, code_size = struct.unpack("<QQ", head[4:20])
                        sizes = np.frombuffer(fh.read(8 * nlist), np.uint64).astype(np.int64)
                        if len(sizes) == nlist:
                            per = sizes * (code_size + 8)  # each list: its codes, then its ids
                            layout = (32 + 8 * nlist + np.concatenate([[0], np.cumsum(per)[:-1]]), per)
            except OSError:
                layout = None
            self._ranges[path] = layout
        return self._ranges[path]

    def __call__(self, queries, nprobe) -> None:
        if len(queries) > PREFETCH_QUERIES or not hasattr(os, "posix_fadvise"):
            return
        ivf = faiss.extract_index_ivf(self.index)
        transform = space.transform_of(self.index)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        q = transform(q) if transform is not None else q  # (a cosine query's norm changes no list's rank)
        _, lists = ivf.quantizer.search(q, int(nprobe or ivf.nprobe))
        wanted = np.unique(lists[lists >= 0])
        for path in self.paths:
            layout = self._layout(path)
            if layout is None:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                for lst in wanted:
                    if layout[1][lst]:
                        os.posix_fadvise(fd, int(layout[0][lst]), int(layout[1][lst]), os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)


def merged_writer(kind: str, factory: str, dim: int, metric: str, trained_path, files: list, vectors_of):
    """A writer of one FAISS part for all segments (compaction); ``vectors_of(i)`` gives segment i's raw vectors."""
    if kind == "flat":
        return None
    if kind == "ivf":
        ils = [read_invlists(f.faiss_path) for f in files]
        probe = read_trained(trained_path)
        ivf = faiss.extract_index_ivf(probe)
        merged = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        for il, _ in ils:
            for lst in range(ivf.nlist):
                n = il.list_size(lst)
                if n:
                    ids, codes = il.get_ids(lst), il.get_codes(lst)
                    merged.add_entries(lst, n, ids, codes)
                    il.release_ids(lst, ids)
                    il.release_codes(lst, codes)
        return lambda p: write_invlists(merged, p)
    part = read_trained(trained_path) if trained_path else faiss_backend.new_faiss_index(factory, dim, metric)
    for i in range(len(files)):
        _add_chunked(part, vectors_of(i), metric)
    return lambda p: faiss.write_index(part, str(p))
