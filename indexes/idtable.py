"""Finding an object by id without reading the id column: a sorted table of id hashes per segment.

Each segment written since store format 2.1 carries ``seg-<id>.ids.npy``: an N x 2 ``uint64``
array, column 0 the hash of every id (the first 8 bytes of BLAKE2b over the id's UTF-8, read
little-endian), sorted, column 1 the segment-local row of that id. A lookup by id is a binary
search of the memory-mapped table (a few pages read, whatever the size of the segment), and
the candidate row is then checked against the id column (one row group read), so a hash
collision can never return the wrong object. Without the table (segments written before it, or
``ulisse index upgrade`` not yet run) a lookup scans the segment's id column instead.

At 10^7 objects the scan reads ~150 MB of ids in a new process (seconds); the table reads
kilobytes (benchmarks/store.md).

Example:
    >>> import numpy as np
    >>> table = build_table(["a", "b", "c"])
    >>> int(table.shape[0]), bool(np.all(np.diff(table[:, 0].astype(np.float64)) >= 0))
    (3, True)
    >>> candidates(table, hash_ids(["b"])[0]).tolist()
    [1]
"""

from __future__ import annotations

import hashlib

import numpy as np

SUFFIX = ".ids.npy"


def hash_ids(ids) -> np.ndarray:
    """The 64-bit hash of each id (as ``str``), as ``uint64``."""
    out = np.empty(len(ids), np.uint64)
    for i, oid in enumerate(ids):
        out[i] = int.from_bytes(hashlib.blake2b(str(oid).encode("utf-8"), digest_size=8).digest(), "little")
    return out


def build_table(ids) -> np.ndarray:
    """The N x 2 ``uint64`` table of a segment's ids: sorted hashes and their local rows."""
    h = hash_ids(ids)
    order = np.argsort(h, kind="stable")
    table = np.empty((len(h), 2), np.uint64)
    table[:, 0] = h[order]
    table[:, 1] = order
    return table


def candidates(table: np.ndarray, h) -> np.ndarray:
    """Local rows whose id hashes to ``h`` (usually zero or one)."""
    keys = table[:, 0]
    h = np.uint64(h)
    lo = int(np.searchsorted(keys, h, side="left"))
    hi = lo
    while hi < len(keys) and keys[hi] == h:
        hi += 1
    return np.asarray(table[lo:hi, 1], dtype=np.int64)


def members(table: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """For each of ``hashes``, whether some id of the segment has it (a vectorised binary search)."""
    keys = table[:, 0]
    if not len(keys):
        return np.zeros(len(hashes), bool)
    pos = np.searchsorted(keys, hashes, side="left")
    return keys[np.minimum(pos, len(keys) - 1)] == hashes


def load(path) -> np.ndarray | None:
    """The table, memory-mapped; None when it cannot be read as one (the caller scans instead)."""
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if table.ndim != 2 or table.shape[1] != 2 or table.dtype != np.uint64:
        return None
    return table
