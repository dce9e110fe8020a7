"""The similarity index: an index directory plus the encoder that made it (the read side and the Python API).

An index is a manifest plus immutable segments (see :mod:`ulisse.indexes.store`):
an add writes only its new segment and commits a new manifest generation; every
write goes through :func:`ulisse.indexes.transaction.transaction` (the writes
themselves are in :mod:`ulisse.indexes.writes`). Opening memory-maps and reads
nothing proportional to the index's size. Distances are always distances (smaller
is closer): Euclidean for ``L2``, ``-<q, x>`` for ``IP``, ``1 - cos`` for ``cosine``.

Example:
    >>> import ulisse
    >>> index = ulisse.open_index("indexes/hdf-demo")            # doctest: +SKIP
    >>> result = index.query(id="hdf-0042", k=8)                  # doctest: +SKIP
    >>> result.table[["rank", "id", "distance"]]                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ulisse.indexes import auto as auto_factory
from ulisse.indexes import faiss_backend, segments, store, writes
from ulisse.indexes.generation import V1_NOTE, Generation, load_generation, metadata_read, open_generation
from ulisse.indexes.lock import check_free
from ulisse.indexes.manifest import Manifest
from ulisse.indexes.transaction import transaction
from ulisse.indexes.writes import DEFAULT_EF_SEARCH, DEFAULT_FACTORY, check_new_index_path  # noqa: F401 (public names)

from .cutouts import RGBConfig, image_to_rgb, read_cutout
from .derived import DerivedMixin, join_objects
from .errors import IndexError_, InputError, QueryError
from .inputs import AddReport  # noqa: F401 (public here)
from .prototypes import DEFAULT_RADIUS_ARCSEC  # one definition, in the prototype pipeline
from .results import Neighbours

if TYPE_CHECKING:  # the encoder (and torch) load only when an image must be embedded
    from .encoder import Encoder, EncoderSpec

LOG = logging.getLogger(__name__)
WAIT_BEFORE, WAIT_AFTER_EMBEDDING = 30.0, 600.0  # an add's least waits for the lock: before embedding, and after


class Index(DerivedMixin):
    """A loaded similarity index.

    Attributes:
        path: the index directory.
        manifest: its manifest (what built it, its segments, search parameters).
        metadata: one row per object: ``row``, ``id``, ``ra``, ``dec``, ``source``, catalogue columns (read on first use).
        encoder_spec: the encoder the vectors came from.
        nprobe, ef, rerank: search settings overriding the manifest's (None: the manifest's).
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto", weights=None, *, nprobe: int | None = None,
                 ef: int | None = None, rerank: int | None = None):
        self.path = Path(path)
        self.device = device
        self._weights = weights
        self._encoder = None
        self.nprobe, self.ef, self.rerank = nprobe, ef, rerank
        self._set_state(load_generation(self.path))
        self.rgb = RGBConfig.from_dict(self.manifest.rgb)

    def _set_state(self, state: Generation) -> None:
        self._state = state
        self._meta = state.meta
        self._flat_cache = segments.FlatCache()

    @property
    def manifest(self) -> Manifest:
        """The manifest of the generation this object has open (typed; also reads as its JSON mapping)."""
        return self._state.manifest

    @manifest.setter
    def manifest(self, value) -> None:  # a manifest or its JSON form (tests change a key or two)
        self._state.manifest = Manifest.from_dict(value)

    def __len__(self) -> int:
        return self.manifest.count

    def __repr__(self) -> str:
        model = self.manifest.encoder.get("model_name")
        return f"<ulisse.Index {self.path} objects={len(self)} factory={self.manifest.factory!r} encoder={model}>"

    @property
    def read_only(self) -> bool:
        """True for format 1 indexes (``ulisse index upgrade`` rewrites them)."""
        return self._state.read_only

    @property
    def column_notes(self) -> dict:
        """Column name -> :class:`ulisse.record.ColumnAnnotation` (unit, UCD, description) of the catalogue's and
        the derived columns, as every export writes them."""
        from .record import index_column_notes

        return index_column_notes(self.path)

    @property
    def fingerprint(self) -> str:
        """Changes whenever the vectors change (:attr:`ulisse.indexes.manifest.Manifest.fingerprint`, its one
        definition); derived columns and plugins' artefacts record it to know when they are stale."""
        return self.manifest.fingerprint

    # -- encoder -------------------------------------------------------------

    @property
    def encoder_spec(self) -> "EncoderSpec":
        from ._spec import EncoderSpec  # the spec alone: no torch for a query by id

        return EncoderSpec.from_dict(self.manifest.encoder)

    @property
    def encoder(self) -> "Encoder":
        """The encoder this index was built with (loaded on first use; weights checked by sha256)."""
        if self._encoder is None:
            from .encoder import Encoder

            self._encoder = Encoder.from_spec(self.encoder_spec, device=self.device, weights=self._weights, index=self.path)
        return self._encoder

    def use_encoder(self, encoder: "Encoder") -> None:
        """Use an already loaded encoder (it must match the index's)."""
        from .encoder import check_compatible

        check_compatible(self.encoder_spec, encoder.spec, str(self.path))
        self._encoder = encoder

    # -- lookups -------------------------------------------------------------

    # The metadata is read by the piece (indexes.metadata): a query by id reads the id column and
    # its neighbours' row groups, not the whole table; ``metadata`` reads everything, once.

    def _metadata_call(self, fn, *args):
        return metadata_read(self.path, fn, *args)

    @property
    def metadata(self) -> pd.DataFrame:
        table = self._metadata_call(self._meta.table)
        if len(table) != len(self):
            raise IndexError_(f"{self.path}: {len(table)} metadata rows for {len(self)} vectors")
        return table

    @metadata.setter
    def metadata(self, table: pd.DataFrame) -> None:
        self._meta.set_table(table)

    @property
    def metadata_columns(self) -> list[str]:
        """The metadata's column names (read from a file footer, not the table)."""
        return self._metadata_call(lambda: self._meta.columns)

    def metadata_column(self, name: str) -> pd.Series:
        """One metadata column over every object, read alone."""
        if name not in self.metadata_columns:
            raise QueryError(f"column {name!r}: not in the metadata of {self.path}")
        return self._metadata_call(self._meta.column, name)

    def metadata_rows(self, rows: Sequence[int]) -> pd.DataFrame:
        """The metadata of the objects at ``rows``, in that order (reads only the row groups holding them)."""
        try:
            return self._metadata_call(self._meta.rows, rows)
        except IndexError as exc:
            raise QueryError(f"{self.path}: {exc}") from None

    @property
    def ids(self) -> list[str]:
        return [str(x) for x in self._metadata_call(self._meta.ids).to_pylist()]

    def id_of(self, row: int) -> str:
        """The id of the object at ``row``."""
        if not 0 <= int(row) < len(self):
            raise QueryError(f"{self.path}: row {row} outside 0..{len(self) - 1}")
        return self._metadata_call(self._meta.id_of, row)

    def row_of(self, object_id: str) -> int:
        row = self._metadata_call(self._meta.find, str(object_id))
        if row < 0:
            raise QueryError(f"id {object_id!r}: unknown id (not in the index {self.path})")
        return row

    def vector(self, object_id: str) -> np.ndarray:
        """The stored raw vector of an object of the index."""
        return self.vectors_of_rows([self.row_of(object_id)])[0]

    def vectors_of_rows(self, rows: Sequence[int]) -> np.ndarray:
        """Raw vectors of ``rows`` (float32, in the order given), read from the memory-mapped segments in bulk."""
        try:
            return segments.rows_of(self._state.segments, np.asarray(list(rows) if not isinstance(rows, np.ndarray)
                                                                    else rows, dtype=np.int64))
        except IndexError as exc:
            raise QueryError(f"{self.path}: {exc}") from None

    def all_vectors(self) -> np.ndarray:
        """Every raw vector, N x dim float32 in row order: the memory map itself when the index is one
        float32 segment (after ``ulisse index compact``), else one float32 copy."""
        return segments.all_vectors(self._state.segments, self.manifest.dim)

    def nearest_object(self, ra: float, dec: float, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> int:
        """Row of the object nearest to (ra, dec), within ``radius_arcsec`` (:func:`ulisse.prototypes.match_position`)."""
        from .prototypes import match_position

        return match_position(self, ra, dec, radius_arcsec)[0]

    def embed_image(self, image) -> np.ndarray:
        """The vector of an outside cutout: a file path or an image array."""
        if isinstance(image, (str, os.PathLike)):
            arr = read_cutout(image, self.rgb).image
        else:
            arr = image_to_rgb(image, "image", self.rgb)
        return self.encoder.embed_images([arr])[0]

    # -- search --------------------------------------------------------------

    def search_parameters(self) -> dict:
        """The search parameters in use: the manifest's, with this object's overrides."""
        p = dict(self.manifest.search)
        if self.nprobe:
            p["nprobe"] = int(self.nprobe)
        if self.ef:
            p["efSearch"] = int(self.ef)
        if self.rerank is not None:  # 0 turns a manifest's re-ranking off
            p["rerank"] = int(self.rerank)
        return p

    def search(self, vectors: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None,
               allowed: np.ndarray | None = None, *, nprobe: int | None = None, ef: int | None = None,
               rerank: int | None = None, space: str = "index") -> tuple[np.ndarray, np.ndarray]:
        """Raw kNN: (distances, rows), each ``len(vectors) x min(k, len(index))``; smaller distances are closer.

        Args:
            vectors: queries, ``Q x dim``.
            k: neighbours per query.
            exclude: for query i, rows left out of its results (``exclude[i]``); given to FAISS as an
                ID selector (``IDSelectorBatch``), so k is never widened.
            allowed: boolean mask over rows (``--where`` filters): only these rows are searched
                (``IDSelectorBitmap``).
            nprobe, ef: override the manifest's nprobe (IVF) and efSearch (HNSW).
            rerank: re-rank the best ``rerank`` approximate candidates exactly from the raw vectors.
            space: ``index`` (its own: a discovery index's whitened space) or ``raw`` (exact, on raw vectors).

        Rows of -1 (distance inf) pad queries with fewer than k neighbours.
        """
        q = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        dim = self.manifest.dim
        if q.shape[1] != dim:
            raise QueryError(f"query vectors have dimension {q.shape[1]}, the index {dim}")
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (len(self),):
                raise QueryError(f"allowed: a boolean mask of {len(self)} rows expected, got shape {allowed.shape}")
        if exclude is not None and len(exclude) != len(q):
            raise QueryError(f"exclude: one list per query expected ({len(q)}), got {len(exclude)}")
        params = self.search_parameters()
        with faiss_backend.on_device(self.device):  # the GPU(s) unless cpu; clones stay resident while open
            return segments.search_generation(
                self._state.over(space), self._state.segments, q, int(k), len(self), metric=self.manifest.metric,
                exclude=exclude, allowed=allowed, nprobe=nprobe or params.get("nprobe"),
                ef=ef or params.get("efSearch"), rerank=int(rerank if rerank is not None else params.get("rerank") or 0),
                cache=self._flat_cache)

    def distances(self, rows: Sequence[int], vectors: np.ndarray, *, space: str = "index") -> np.ndarray:
        """Exact distances between the objects at ``rows`` and ``vectors``, ``len(rows) x len(vectors)``, in ``space``
        and as :meth:`search` gives them (smaller = closer): every pair is measured, nothing searched."""
        return segments.distances_generation(self._state.over(space), self.vectors_of_rows(rows), vectors,
                                             self.manifest.metric)

    def query(self, id: str | None = None, *, image=None, ra: float | str | None = None, dec: float | str | None = None,
              vector: np.ndarray | None = None, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC, k: int = 16,
              allowed: np.ndarray | None = None, where: str | None = None) -> Neighbours:
        """One-shot query: the ``k`` nearest neighbours of one prototype.

        Give exactly one of ``id`` (an object of the index; left out of its own
        results; its stored raw vector is the query), ``image`` (a cutout file or
        array), ``ra`` and ``dec`` (the index object nearest to that position: degrees, or text such as
        ``"12h36m49.4s"``, ``"-27:46:13.7"``, see :mod:`ulisse.positions`), or ``vector``.
        ``where`` keeps only objects matching a filter on metadata and derived columns
        (``"z_pred < 0.1 and type == 'galaxy'"``, see :mod:`ulisse.filters`); ``allowed``
        is the same as a boolean mask over rows. A thin call into :func:`ulisse.prototypes.query`.

        Raises:
            QueryError: unknown id, k < 1, nothing at (ra, dec), or not exactly one prototype.
        """
        from .prototypes import one_prototype, query

        proto = one_prototype(id, image=image, ra=ra, dec=dec, vector=vector, radius_arcsec=radius_arcsec)
        return query(self, proto, k, where=where, allowed=allowed)  # the one query API checks and searches

    def neighbour_table(self, rows: np.ndarray, distances: np.ndarray) -> pd.DataFrame:
        rows = np.asarray(rows)
        ok = rows >= 0
        objects = self.object_rows(rows[ok])  # metadata and derived columns (anomaly scores, head predictions...)
        table = pd.DataFrame({"rank": np.arange(1, ok.sum() + 1), "id": objects["id"],
                              "distance": np.asarray(distances)[ok]})
        return join_objects(table, objects)

    # -- growing -------------------------------------------------------------

    def add(self, inputs: Sequence[str | os.PathLike], catalog=None, *, skip_bad: bool = False,
            progress: bool = True, wait: float = 0.0) -> AddReport:
        """Embed more cutouts with the index's encoder and add them as a new segment.

        Raises:
            InputError: bad inputs, or ids already in the index (nothing is written).
            IndexBusy: another writer holds the index before the embedding (for ``wait`` or ``WAIT_BEFORE`` s), or
                after it (for ``wait`` or ``WAIT_AFTER_EMBEDDING`` s, whichever is longer).
        """
        from .embedding import create_observers, embed_gathered, finish_observers
        from .inputs import gather

        t0 = time.perf_counter()
        self._check_writable()
        check_free(self.path, max(wait, WAIT_BEFORE))  # a busy index is said before the embedding, not after
        gathered = gather(inputs, catalog, skip_bad=skip_bad)
        self._check_new_ids(gathered.metadata["id"])
        observers = create_observers(self)
        emb, rows = embed_gathered(self.encoder, gathered, self.rgb, skip_bad, progress, observers, "nothing added")
        history = {"action": "add", "inputs": [str(p) for p in inputs],
                   "catalog": None if catalog is None else str(catalog)}
        # the vectors are paid for now: wait for a writer that came meanwhile rather than throw them away
        self.add_vectors(emb.vectors, rows, history=history, wait=max(wait, WAIT_AFTER_EMBEDDING),
                         column_notes=gathered.column_notes)
        finish_observers(observers, self)
        return AddReport(len(emb.ids), len(self), gathered.skipped + emb.skipped, gathered.notes,
                         time.perf_counter() - t0)

    def _check_writable(self) -> None:
        if self.read_only:
            raise IndexError_(V1_NOTE.format(path=self.path))

    def _check_new_ids(self, ids) -> None:
        clash = self._metadata_call(self._meta.known, ids)
        if clash:
            raise InputError(f"id {clash[0]!r} is already in the index {self.path}"
                             + (f" ({len(clash)} of the ids to add are: added before?)" if len(clash) > 1 else ""))

    def add_vectors(self, vectors: np.ndarray, metadata: pd.DataFrame, *, encoder_spec: "EncoderSpec | None" = None,
                    history: dict | None = None, wait: float = 0.0, column_notes: dict | None = None) -> int:
        """Add vectors computed elsewhere (a worker's shard, say) with their metadata rows, as one new segment.

        Only the new segment is written; the commit replaces the manifest under the
        writer lock. Several processes may add at once: each waits up to ``wait``
        seconds for the lock and adds to whatever generation is current then.

        Args:
            vectors: float32 ``N x dim`` from this index's encoder.
            metadata: N rows with an ``id`` column (new ids); ``ra``, ``dec``, ``source`` and any columns.
            encoder_spec: the encoder the vectors came from; checked against the index's when given.
            history: a note for the manifest's history (``action`` and anything JSON-ready).
            wait: seconds to wait for another writer.
            column_notes: ``{column: {"unit", "ucd", "description"}}`` of catalogue columns, kept in the manifest
                (a column's first notes stay) for every export (:attr:`column_notes`).

        Returns the number of objects added.

        Raises:
            InputError: ids already in the index or repeated, or rows and vectors that do not match.
            EncoderMismatch: ``encoder_spec`` differs from the index's.
            IndexBusy: another writer holds the lock after ``wait`` seconds.
            WriteError: ``DIR: <reason>`` (disk full...): nothing is left behind, the index is as it was.
        """
        if encoder_spec is not None:
            from .encoder import check_compatible

            check_compatible(self.encoder_spec, encoder_spec, str(self.path))
        self._check_writable()
        x = np.asarray(vectors)
        if x.ndim != 2 or x.shape[1] != self.manifest.dim:
            raise InputError(f"vectors of shape {x.shape} do not fit an index of dimension {self.manifest.dim}")
        with transaction(self.path, wait) as txn:
            if txn.base.generation != self.manifest.generation:
                self._set_state(open_generation(self.path, txn.base))  # add to the generation current now
            self._check_writable()
            rows = writes.new_rows(metadata, len(x), start=len(self), index_dir=self.path)
            self._check_new_ids(rows["id"])
            written = writes.append(txn, x, rows, history, column_notes)
        before = self._meta
        self._set_state(open_generation(self.path, written))
        self._meta.carry_ids(before, rows["id"])  # the id column read once, extended by each add
        return len(rows)


def open_index(path: str | os.PathLike, device: str = "auto", weights=None, verify: bool = False, *,
               nprobe: int | None = None, ef: int | None = None, rerank: int | None = None) -> Index:
    """Open an index directory (memory-mapped; sizes and truncation are checked, nothing is re-hashed).

    Args:
        path: the index directory.
        device: ``auto``, ``cpu`` or ``cuda`` (for the encoder).
        weights: a weights file, when the index was built from one that has moved.
        verify: also re-hash every file against the manifest (as ``ulisse index verify``).
        nprobe, ef, rerank: override the manifest's search parameters.

    Raises:
        IndexNotFound, IndexError_: no index, or a damaged one.
    """
    if verify:
        problems = store.verify(path)
        if problems:
            raise IndexError_(f"{path}: damaged: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return Index(path, device=device, weights=weights, nprobe=nprobe, ef=ef, rerank=rerank)


def build_index(inputs: Sequence[str | os.PathLike], path: str | os.PathLike, catalog=None, *,
                factory: str = DEFAULT_FACTORY, metric: str = "L2", encoder: "Encoder | None" = None,
                weights=None, device: str = "auto", rgb: RGBConfig = RGBConfig(), skip_bad: bool = False,
                overwrite: bool = False, progress: bool = True, memory: str = auto_factory.DEFAULT_MEMORY,
                dtype: str = "float32", nprobe: int | None = None, ef: int | None = None, whiten="auto",
                wait: float = 0.0, manifest_extra: dict | None = None, gathered=None) -> tuple[Index, AddReport]:
    """Embed cutouts and write a new index directory at ``path``.

    ``gathered``: the :func:`~ulisse.inputs.gather` of ``inputs`` and ``catalog`` when the caller has it already.

    Everything is checked and embedded before anything is written; the write is atomic.
    ``manifest_extra``: JSON-ready keys added to the manifest (see :func:`create_index`).

    Raises:
        InputError: bad inputs or factory string; ``path`` holds an index and ``overwrite`` is False.
    """
    from .embedding import create_observers, embed_gathered, finish_observers
    from .encoder import Encoder
    from .inputs import gather

    t0 = time.perf_counter()
    path = Path(path)
    check_new_index_path(path, overwrite)
    faiss_backend.check_metric(metric)
    gathered = gathered if gathered is not None else gather(inputs, catalog, skip_bad=skip_bad)
    encoder = encoder or Encoder.load(weights=weights, device=device)
    if factory != "auto":
        faiss_backend.new_faiss_index(factory, encoder.spec.dim, metric)  # a bad factory fails before the long work
    observers = create_observers(None)
    emb, rows = embed_gathered(encoder, gathered, rgb, skip_bad, progress, observers, "no index written")
    if gathered.column_notes:
        manifest_extra = {"column_notes": gathered.column_notes, **(manifest_extra or {})}
    idx = create_index(path, emb.vectors, rows, encoder.spec,
                       factory=factory, metric=metric, rgb=rgb, device=device, overwrite=overwrite,
                       memory=memory, dtype=dtype, nprobe=nprobe, ef=ef, wait=wait, manifest_extra=manifest_extra,
                       whiten=whiten, history={"action": "build", "inputs": [str(p) for p in inputs],
                                "catalog": None if catalog is None else str(catalog)})
    idx._encoder = encoder
    finish_observers(observers, idx)
    return idx, AddReport(len(emb.ids), len(idx), gathered.skipped + emb.skipped, gathered.notes,
                          time.perf_counter() - t0)


def create_index(path: str | os.PathLike, vectors: np.ndarray, metadata: pd.DataFrame, encoder_spec: "EncoderSpec", *,
                 factory: str = DEFAULT_FACTORY, metric: str = "L2", rgb: RGBConfig = RGBConfig(),
                 device: str = "auto", overwrite: bool = False, history: dict | None = None,
                 memory: str = auto_factory.DEFAULT_MEMORY, dtype: str = "float32", nprobe: int | None = None,
                 ef: int | None = None, wait: float = 0.0, manifest_extra: dict | None = None,
                 expected: int | None = None, whiten="auto", trained=None) -> Index:
    """Write a new index directory from vectors computed elsewhere and their metadata rows (atomically).

    Args:
        factory: a FAISS factory string, or ``auto`` (chosen from the count, the dimension and ``memory``;
            the reason is kept in the manifest and shown by ``ulisse index info``).
        metric: ``L2``, ``IP`` or ``cosine``.
        dtype: how raw vectors are stored: ``float32`` or ``float16`` (half the disk; searches of
            Flat indexes and re-ranking read them back as float32).
        nprobe, ef: default search parameters kept in the manifest (IVF lists probed, HNSW efSearch).
        expected: for ``auto``, the number of objects the index will hold once every batch is added
            (survey builds start from one batch; the factory is chosen for the final size).
        whiten: ``auto`` (the preset's: ``discovery`` PCA-whitens to 64 dimensions), ``none`` or a number
            (:mod:`ulisse.indexes.space`); ``trained``: a trained FAISS index of the factory to share.
        manifest_extra: JSON-ready keys added to the manifest (e.g. ``cutout_geometry``); they cannot
            replace the core's own keys.

    Raises:
        InputError: ``path`` holds an index and ``overwrite`` is False; bad factory; rows and vectors that do not match.
        WriteError: ``DIR: <reason>``; nothing is left behind and an index that was there stays as it was.
    """
    writes.create(path, vectors, metadata, encoder_spec.to_dict(), dim=encoder_spec.dim, factory=factory,
                  metric=metric, rgb=rgb.to_dict(), overwrite=overwrite, history=history, memory=memory, dtype=dtype,
                  nprobe=nprobe, ef=ef, wait=wait, extra=manifest_extra, expected=expected, whiten=whiten,
                  trained=trained)
    return open_index(path, device=device)


def compact_index(path: str | os.PathLike, wait: float = 0.0) -> Manifest:
    """Merge every segment into one (see :func:`ulisse.indexes.writes.compact`); returns the new manifest."""
    return writes.compact(path, wait)


def upgrade_index(path: str | os.PathLike, wait: float = 0.0) -> Manifest:
    """Format 1 to 2, or missing id tables added (:func:`ulisse.indexes.writes.upgrade`); the new manifest."""
    return writes.upgrade(path, wait)


def verify_index(path: str | os.PathLike) -> list[str]:
    """Re-hash every file of the index against the sha256 sums its manifest recorded; the problems found."""
    return store.verify(path)
