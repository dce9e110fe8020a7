"""The index store: the on-disk format, its one write path, and the FAISS backends.

- :mod:`.manifest`: :class:`~.manifest.Manifest`, the typed manifest (what built the index, which files
  make each generation); ``Manifest.read(dir)``, ``.to_json()``.
- :mod:`.transaction`: :func:`~.transaction.transaction`, behind every write (create, add, compact,
  upgrade, derived columns, marks): lock, sweep, stage, commit a new generation, roll back on error.
- :mod:`.writes`: the writes that make a generation (create, add, compact, upgrade).
- :mod:`.generation`: one generation opened for reading (memory-mapped segments, metadata by the piece).
- :mod:`.store`: the directory (format 2): segment files, sha256 per file, cheap checks on open, ``verify``,
  sweeping of what killed writers left.
- :mod:`.lock`: one writer at a time (``fcntl`` lock), readers never block.
- :mod:`.faiss_backend`: FAISS indexes from factory strings; every result is a distance.
- :mod:`.segments`, :mod:`.parts`: searching segments, each segment's part of the FAISS index.
- :mod:`.metadata`: the metadata, read by the piece. :mod:`.auto`: ``--factory auto`` with its reason.

This package imports nothing from the ulisse core except :mod:`ulisse.errors`, :mod:`ulisse._io` and
``ulisse.__version__``; :mod:`ulisse.index` (the read side and the Python API) is built on it.
"""

from .faiss_backend import gpu_available, new_faiss_index, search
from .manifest import Manifest
from .store import MANIFEST, read_manifest, verify
from .transaction import transaction

__all__ = ["MANIFEST", "Manifest", "read_manifest", "transaction", "verify", "new_faiss_index", "search",
           "gpu_available"]
