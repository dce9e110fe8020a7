"""GPU helpers for FAISS (faiss-gpu, the ``[gpu]`` extra). CPU is the fallback."""

from __future__ import annotations

import logging

import faiss

LOG = logging.getLogger(__name__)


def num_gpus() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu or without a GPU."""
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except Exception:
        return 0


def to_gpu(index: "faiss.Index", ngpu: int = -1) -> "faiss.Index":
    """Clone ``index`` to the GPU(s): ``ngpu=-1`` all there are, 0 none (returns ``index``)."""
    available = num_gpus()
    if ngpu == 0 or available == 0:
        return index
    n = available if ngpu < 0 else min(ngpu, available)
    try:
        co = faiss.GpuMultipleClonerOptions()
        co.shard = True
        if n == 1:
            return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        return faiss.index_cpu_to_all_gpus(index, co=co, ngpu=n)
    except Exception as exc:  # an index type without a GPU version: stay on the CPU
        LOG.warning("FAISS index stays on the CPU: %s", exc)
        return index
