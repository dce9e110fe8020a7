"""Index backends and the on-disk index format.

- :mod:`.store`: the directory (format 2): a manifest plus immutable segments, sha256 per file,
  cheap checks on open, ``verify``, sweeping of what killed writers left.
- :mod:`.lock`: one writer at a time (``fcntl`` lock), readers never block.
- :mod:`.faiss_backend`: FAISS indexes from factory strings; every result is a distance.
- :mod:`.segments`, :mod:`.parts`: searching segments, each segment's part of the FAISS index.
- :mod:`.auto`: ``--factory auto`` (autofaiss's rules) with its reason.

This package imports nothing from the ulisse core except :mod:`ulisse.errors` and :mod:`ulisse._io`.
"""

from .faiss_backend import gpu_available, new_faiss_index, search
from .store import MANIFEST, commit, read_manifest, verify

__all__ = ["MANIFEST", "commit", "read_manifest", "verify", "new_faiss_index", "search", "gpu_available"]
