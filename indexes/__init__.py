"""Index backends and the on-disk index format.

An index on disk is a directory::

    DIR/
      manifest.json              what built it: factory, dim, metric, count, encoder,
                                 library versions, and the files below with sha256
      vectors.gNNNN.faiss        the FAISS index (faiss.write_index; nothing pickled)
      metadata.gNNNN.parquet     one row per vector: row, id, ra, dec, source, catalogue columns

Every write makes a new generation of files and then replaces ``manifest.json``
atomically (``os.replace``), so an interrupted build or add leaves the previous
index loadable and intact. This package imports nothing from the ulisse core
except :mod:`ulisse.errors`.
"""

from .faiss_backend import gpu_available, new_faiss_index, search
from .store import IndexFiles, commit, read_manifest, load

__all__ = ["IndexFiles", "commit", "read_manifest", "load", "new_faiss_index", "search", "gpu_available"]
