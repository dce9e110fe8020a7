"""``--factory auto``: a FAISS factory string from the object count, the dimension and a memory budget.

The rules are autofaiss's (``get_optimal_index_keys_v2`` with
``should_be_memory_mappable=True``, ``get_optimal_nb_clusters``,
``get_optimal_quantization``), with the changes an append-only store of
memory-mapped segments on a CPU node asks for; each choice comes with the
reason, which the manifest keeps and ``ulisse index info`` prints.

Example:
    >>> choose_factory(1_000_000, 1280, "8GB").factory
    'IVF1024,Flat'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ulisse.errors import InputError

FLAT_BELOW = 10_000          # exact search over fewer vectors takes milliseconds and needs no training
IVF_FLAT_BELOW = 10_000_000  # autofaiss stops at 1M for RAM-resident indexes; ours are memory-mapped
MAX_NLIST = 1024             # k-means of more 1280-d centroids takes many minutes on a CPU node
PQ_SIZES = (256, 128, 64, 48, 32, 24, 16, 8, 4)
ID_BYTES = 8
PQ_RERANK = 64               # IVF-PQ candidates re-ranked exactly from the raw vectors by default
PQ_NPROBE = (8, 16)          # lists an IVF-PQ search probes by default, at least and at most ...
PQ_SCAN = 80_000             # ... so that a query scans about this many codes (one query: ~40 ms on 2 cores)
DEFAULT_MEMORY = "8GB"
UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


@dataclass(frozen=True)
class AutoChoice:
    """A factory string, its default search parameters and why it was chosen."""

    factory: str
    nprobe: int | None
    reason: str
    rerank: int | None = None  # candidates re-ranked exactly from the raw vectors (IVF-PQ)

    def to_dict(self) -> dict:
        return {"factory": self.factory, "nprobe": self.nprobe, "reason": self.reason,
                **({"rerank": self.rerank} if self.rerank else {})}


def parse_memory(text: str | int | float) -> int:
    """Bytes from ``8GB``, ``512MB``, ``2GiB`` or a plain number.

    Raises:
        InputError: not a size.
    """
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in UNITS or float(m.group(1)) <= 0:
        raise InputError(f"--memory {text}: expected a size such as 8GB, 512MB or 2GiB")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def nb_clusters(n: int) -> int:
    """autofaiss's first choice below 1M vectors, the power of two nearest to 4 sqrt(n), at most 1024.

    autofaiss goes up to 16384+ clusters (with an HNSW quantizer) at 1M and more;
    k-means of that many 1280-d centroids takes tens of minutes on a CPU node, and
    training on 64 points per list keeps 1024 lists at about a minute. Larger
    indexes get longer lists (a search reads nprobe of them, memory-mapped).
    """
    return int(min(MAX_NLIST, 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))))


def default_nprobe(nlist: int) -> int:
    """Lists probed by default: 1/32 of them, at least 8 (recall@16 >= 0.9 on clustered 1280-d data)."""
    return int(min(nlist, max(8, nlist // 32)))


def choose_factory(n: int, dim: int, memory: str | int = DEFAULT_MEMORY) -> AutoChoice:
    """The factory for ``n`` vectors of dimension ``dim`` within ``memory`` bytes of index.

    Rules, in order:

    1. fewer than 10,000 vectors: ``Flat`` (exact; autofaiss takes Flat below 1,000 and
       HNSW15 or a small IVF below 10,000, but exact search over 10^4 vectors costs milliseconds);
    2. HNSW is never chosen: its graph cannot be split into append-only segments
       and memory-mapped (autofaiss's ``should_be_memory_mappable`` case);
    3. an IVF-Flat of ``n * (4 dim + 8)`` bytes that fits in ``memory``: ``IVF<nlist>,Flat``,
       nlist the power of two nearest 4 sqrt(n), at most 1024 (see :func:`nb_clusters`);
    4. otherwise IVF-PQ with the largest PQ code (of 256, 128, 64, 48, 32, 24, 16, 8, 4 bytes,
       dividing ``dim``) whose ``n * (code + 8)`` bytes fit (autofaiss also puts OPQ in front;
       left out here: the search re-ranks from the raw vectors instead). Its searches probe
       :data:`PQ_NPROBE` lists and re-rank the best :data:`PQ_RERANK` candidates exactly by
       default, both recorded in the manifest and overridable per query. nprobe is 16, or fewer (down to 8)
       where the lists are so long that 16 of them exceed :data:`PQ_SCAN` codes: 8 at 10^7 vectors, where
       recall@16 is 0.993 (0.758 with nprobe 32 and no re-ranking) and a warm query by id takes 58-63 ms on
       2 cores (97-107 ms with 16); on 12,736 real cutout vectors (IVF512) 16 lists reach 0.976 where
       8 reach 0.941 (benchmarks/store.md).
    """
    budget = parse_memory(memory)
    if n < 1 or dim < 1:
        raise InputError(f"auto factory: nothing to index ({n} vectors of dimension {dim})")
    if n < FLAT_BELOW:
        return AutoChoice("Flat", None, f"{n} vectors < {FLAT_BELOW}: exact search (Flat) is fast enough and needs no training")
    nlist = nb_clusters(n)
    nprobe = default_nprobe(nlist)
    ivf_flat = n * (4 * dim + ID_BYTES)
    if ivf_flat <= budget and n < IVF_FLAT_BELOW:
        return AutoChoice(f"IVF{nlist},Flat", nprobe,
                          f"{n} vectors x {dim}-d: IVF-Flat needs {_gb(ivf_flat)} <= memory {_gb(budget)}; "
                          f"nlist {nlist} ~ 4 sqrt(n) (autofaiss; at most {MAX_NLIST} on CPU), nprobe {nprobe}; "
                          "HNSW left out (segments must be memory-mappable)")
    nprobe = int(min(nlist, max(PQ_NPROBE[0], min(PQ_NPROBE[1], PQ_SCAN * nlist // n))))
    for code in PQ_SIZES:
        if code < dim and dim % code == 0 and n * (code + ID_BYTES) <= budget:
            return AutoChoice(f"IVF{nlist},PQ{code}x8", nprobe,
                              f"{n} vectors x {dim}-d: IVF-Flat would need {_gb(ivf_flat)} > memory {_gb(budget)}; "
                              f"PQ{code} codes need {_gb(n * (code + ID_BYTES))}; nlist {nlist} ~ 4 sqrt(n) (at most {MAX_NLIST}), "
                              f"nprobe {nprobe}, the best {PQ_RERANK} candidates re-ranked exactly from the raw vectors "
                              "(--rerank N to change)", rerank=PQ_RERANK)
    raise InputError(f"--memory {memory}: too small for {n} vectors even with 4-byte PQ codes "
                     f"({_gb(n * (4 + ID_BYTES))} needed)")


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"
