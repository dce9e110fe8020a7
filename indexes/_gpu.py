"""FAISS on GPUs (faiss-gpu, the ``[gpu]`` extra); the CPU is the fallback.

A search runs on the GPU(s) when FAISS sees one (``faiss.get_num_gpus() > 0``) and
the index's device is not ``cpu`` (:func:`searching_on`, set by ``Index.search``
from ``open_index(device=...)``). Index files stay CPU-format, so an index built
on a GPU machine opens anywhere: each searchable part is cloned to the GPU(s) when
first searched there (``index_cpu_to_gpu``, or ``index_cpu_to_all_gpus`` sharded
over several), and the clone is kept with it, resident between queries for as
long as the index stays open (the web UI keeps its open index for the process).

- Flat segments become a ``GpuIndexFlat`` of their raw vectors stored in float16,
  unless float16 costs recall: on first use, :data:`RECALL_SAMPLE` of the
  segment's own vectors are searched both ways and float16 is kept only when
  recall@16 against exact float32 kNN is at least :data:`FLOAT16_MIN_RECALL`
  (else float32).
- IVF indexes (the stacked inverted lists of every segment) are copied whole;
  index types without a GPU version (HNSW...) stay on the CPU.
- GPU searches take no ID selector: exclusions (a query's own row) are dropped from
  a search of ``k + len(excluded)``; filtered searches (``--where``) and ``k`` above
  :data:`MAX_K` run on the CPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import threading

import faiss
import numpy as np

from ._vectors import METRICS, prepared

LOG = logging.getLogger(__name__)

MAX_K = 2048                # FAISS's GPU k-selection limit
FLOAT16_MIN_RECALL = 0.99   # float16 storage only where it keeps recall@16 this high
RECALL_SAMPLE = 64          # stored vectors searched both ways to measure it
RECALL_K = 16
ADD_ROWS = 65536            # rows copied to the GPU at a time

_DEVICE: contextvars.ContextVar[str] = contextvars.ContextVar("ulisse_search_device", default="auto")
LOCK = threading.RLock()   # GPU clones are made, and searched, one at a time
_RESOURCES: list = []
_NOTED: set = set()
_ATTR = "_ulisse_gpu"       # where a segment keeps its GPU clone (None: none yet; False: it has no GPU version)


@functools.lru_cache(maxsize=1)
def num_gpus() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu or without a GPU (asked once per process)."""
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except Exception:
        return 0


@contextlib.contextmanager
def searching_on(device: str | None):
    """Searches inside run on ``device`` (``auto``, ``cpu``, ``cuda``): on the GPU(s) unless ``cpu`` or none.

    ``cuda`` where FAISS sees no GPU gives one note per process and the CPU answers.
    """
    device = str(device or "auto")
    if device.startswith("cuda") and num_gpus() == 0 and "faiss" not in _NOTED:
        _NOTED.add("faiss")
        LOG.warning("--device %s: FAISS sees no GPU (faiss-cpu installed, or no CUDA); searching on the CPU",
                    device)
    token = _DEVICE.set(device)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def active() -> bool:
    """Whether the search running now goes to the GPU(s)."""
    return _DEVICE.get() != "cpu" and num_gpus() > 0


def resources():
    """One ``StandardGpuResources`` per GPU for the whole process (their scratch memory is reused)."""
    with LOCK:
        while len(_RESOURCES) < num_gpus():
            _RESOURCES.append(faiss.StandardGpuResources())
        return _RESOURCES


def with_transforms(pre: "faiss.IndexPreTransform", inner: "faiss.Index") -> "faiss.Index":
    """``inner`` behind the vector transforms of ``pre`` (shared, not copied)."""
    out = faiss.IndexPreTransform(inner)
    for i in reversed(range(pre.chain.size())):
        out.prepend_transform(pre.chain.at(i))
    out.own_fields = False  # the transforms belong to ``pre``, kept alive as long as this wrapper
    out.referenced_objects = list(getattr(out, "referenced_objects", [])) + [pre, inner]
    return out


def to_gpu(index: "faiss.Index", ngpu: int = -1, float16: bool = False) -> "faiss.Index":
    """Clone ``index`` to the GPU(s): ``ngpu=-1`` all there are, 0 none (returns ``index``).

    ``float16``: store Flat vectors in float16. An index type without a GPU version stays on the CPU.
    """
    available = num_gpus()
    if ngpu == 0 or available == 0:
        return index
    n = available if ngpu < 0 else min(ngpu, available)
    pre = faiss.downcast_index(index)
    if isinstance(pre, faiss.IndexPreTransform):  # a whitened index: its transforms stay on the CPU (FAISS
        cpu = pre.index                                                  # clones no L2norm), its vectors go over
        gpu = to_gpu(cpu, ngpu, float16)
        if gpu is cpu:
            return index
        out = with_transforms(pre, gpu)
        out.referenced_objects.append(index)  # ``pre`` is a view of ``index``: keep its owner alive
        return out
    try:
        if n == 1:
            co = faiss.GpuClonerOptions()
            co.useFloat16 = float16
            clone = faiss.index_cpu_to_gpu(resources()[0], 0, index, co)
        else:
            co = faiss.GpuMultipleClonerOptions()
            co.shard = True
            co.useFloat16 = float16
            clone = faiss.index_cpu_to_gpu_multiple_py(resources()[:n], index, co)
    except Exception as exc:  # an index type without a GPU version: stay on the CPU
        LOG.info("FAISS index %s stays on the CPU: %s", type(index).__name__, str(exc).strip().splitlines()[-1:])
        return index
    return clone


class Resident:
    """A searchable part's GPU clone, kept resident: what :func:`ulisse.indexes.faiss_backend.search` searches
    on the GPU (no ``SearchParameters``; nprobe is set on the clone; one GPU search at a time).

    Attributes:
        index: the FAISS GPU index (a ``GpuIndex*``, or ``IndexShards`` over several GPUs).
        float16: whether raw vectors are stored in float16.
    """

    def __init__(self, index, float16: bool = False, keep=()):
        self.index, self.float16, self._keep = index, float16, keep

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def metric_type(self):
        return self.index.metric_type

    def search(self, q: np.ndarray, k: int, nprobe: int | None = None):
        with LOCK:  # the process's GPU resources are not thread-safe
            set_nprobe(self.index, nprobe)
            return self.index.search(q, k)


def is_on_gpu(index) -> bool:
    return isinstance(index, Resident)


def set_nprobe(index, nprobe: int | None) -> None:
    """Set an IVF clone's nprobe (GPU indexes take no ``SearchParameters``)."""
    if nprobe:
        with contextlib.suppress(Exception):
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))


def rows(excluded) -> np.ndarray:
    return np.zeros(0, np.int64) if excluded is None else np.asarray(excluded, dtype=np.int64)


def for_segment(segment, k: int, allowed=None, excluded=None):
    """The GPU clone to search ``segment`` with (made and kept on first use), or None: search it on the CPU.

    None when searches run on the CPU now, with a filter (``allowed``), past :data:`MAX_K`, or for a
    part without a GPU version.
    """
    if not active() or allowed is not None or int(k) + len(rows(excluded)) > MAX_K:
        return None
    clone = getattr(segment, _ATTR, None)
    if clone is None:
        with LOCK:
            clone = getattr(segment, _ATTR, None)
            if clone is None:
                try:
                    clone = _make_resident(segment)
                except Exception as exc:  # GPU memory full, say: this part is searched on the CPU
                    LOG.warning("FAISS: %d vectors stay on the CPU (%s: %s)", segment.count,
                                exc.__class__.__name__, " ".join(str(exc).split())[:200])
                    clone = False
                setattr(segment, _ATTR, clone)
    return clone or None


def _make_resident(segment):
    index = segment.faiss_index
    if index is not None:
        clone = to_gpu(index)
        if clone is index:
            return False
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            set_nprobe(clone, int(ivf.nprobe))
        LOG.info("FAISS: %s of %d vectors resident on %d GPU(s)", type(index).__name__, index.ntotal, num_gpus())
        return Resident(clone)
    return flat_resident(segment.vectors, segment.metric)


def flat_resident(vectors: np.ndarray, metric: str):
    """Raw vectors as an exact GPU index (float16 where it keeps recall@16, else float32)."""
    clone = _flat(vectors, metric, float16=True)
    recall = _float16_recall(clone, vectors, metric)
    float16 = recall >= FLOAT16_MIN_RECALL
    if not float16:
        del clone
        clone = _flat(vectors, metric, float16=False)
    LOG.info("FAISS: %d raw vectors resident on %d GPU(s) in %s (float16 recall@%d %.3f on %d sampled queries)",
             len(vectors), num_gpus(), "float16" if float16 else "float32", RECALL_K, recall,
             min(RECALL_SAMPLE, len(vectors)))
    return clone


def _flat(vectors: np.ndarray, metric: str, float16: bool):
    """A ``GpuIndexFlat`` per GPU (sharded in row order when there are several), filled a chunk at a time."""
    dim, n = int(vectors.shape[1]), len(vectors)
    res = resources()
    parts = []
    bounds = np.linspace(0, n, len(res) + 1).astype(int)
    for dev, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = dev
        cfg.useFloat16 = float16
        part = faiss.GpuIndexFlat(res[dev], dim, METRICS[metric], cfg)
        for a in range(lo, hi, ADD_ROWS):
            part.add(prepared(vectors[a:min(hi, a + ADD_ROWS)], metric))
        parts.append(part)
    if len(parts) == 1:
        return Resident(parts[0], float16)
    index = faiss.IndexShards(dim, True, True)  # threaded, successive ids: the row order is kept
    index.metric_type = METRICS[metric]  # how the shards' results are merged
    for part in parts:
        index.add_shard(part)
    index.syncWithSubIndexes()
    return Resident(index, float16, keep=parts)  # the shards live as long as the index


def _float16_recall(clone, vectors: np.ndarray, metric: str) -> float:
    """Recall@16 of ``clone`` on a sample of the stored vectors as queries, against exact float32 kNN."""
    n = len(vectors)
    if n == 0:
        return 1.0
    k = min(RECALL_K, n)
    pick = np.sort(np.random.default_rng(0).choice(n, size=min(RECALL_SAMPLE, n), replace=False))
    q = prepared(np.asarray(vectors[pick]), metric)
    _, got = clone.search(q, k)
    truth = exact_knn(vectors, q, k, metric)
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(got, truth)]))


def exact_knn(vectors: np.ndarray, q: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Rows of the exact ``k`` nearest neighbours of (prepared) queries ``q``, float32 on the CPU, by chunks."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for lo in range(0, len(vectors), ADD_ROWS):
        x = prepared(vectors[lo:lo + ADD_ROWS], metric)
        score = q @ x.T  # larger is closer
        if metric == "L2":
            score = 2 * score - (x * x).sum(1)[None, :]
        s = np.concatenate([best_s, score], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, lo + len(x)), score.shape)], axis=1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i
