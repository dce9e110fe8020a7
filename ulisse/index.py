"""The similarity index: an index directory plus the encoder that made it.

An index is a manifest plus immutable segments (see :mod:`ulisse.indexes.store`):
an add writes only its new segment and commits by replacing the manifest under
the writer lock; opening memory-maps and reads nothing proportional to the
index's size. Distances are always distances (smaller is closer): Euclidean for
``L2``, ``-<q, x>`` for ``IP``, ``1 - cos`` for ``cosine``.

Example:
    >>> import ulisse
    >>> index = ulisse.open_index("indexes/hdf-demo")            # doctest: +SKIP
    >>> result = index.query(id="hdf-0042", k=8)                  # doctest: +SKIP
    >>> result.table[["rank", "id", "distance"]]                  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ulisse.indexes import auto as auto_factory
from ulisse.indexes import faiss_backend, parts, segments, store
from ulisse.indexes.lock import writer_lock
from ulisse.indexes.metadata import SegmentMetadata, write_parquet

from ._io import os_error_reason
from .cutouts import RGBConfig, image_to_rgb, read_cutout
from .derived import DerivedMixin
from .errors import IndexError_, InputError, QueryError
from .prototypes import DEFAULT_RADIUS_ARCSEC  # one definition, in the prototype pipeline
from .results import Neighbours

if TYPE_CHECKING:  # the encoder (and torch) load only when an image must be embedded
    from .encoder import Encoder, EncoderSpec

LOG = logging.getLogger(__name__)

DEFAULT_FACTORY = "auto"
DEFAULT_EF_SEARCH = 64
SMALL_EXCLUSION = 4     # per-query exclusions up to this size, on many distinct queries, are filtered after a batched search
OPEN_RETRIES = 3        # a compaction may remove files between reading a manifest and opening them
V1_NOTE = "{path}: index format 1 opens read-only; 'ulisse index upgrade {path}' rewrites it in format 2"


@dataclass
class AddReport:
    """What a build or add did."""

    added: int
    total: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _versions() -> dict:
    """Library versions for the manifest, read from the installed packages (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    import faiss

    from . import __version__

    out = {"ulisse": __version__, "faiss": faiss.__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    for dist in ("torch", "timm", "astropy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


@dataclass
class _State:
    """One generation of an index as opened: its manifest, segments and what searches run over."""

    manifest: dict
    files: list            # store.SegmentFiles (format 2)
    segments: list         # segments.Segment, one per segment file (vectors by row)
    searchables: list      # what a search runs over
    metadata_paths: list
    read_only: bool = False
    meta: SegmentMetadata | None = None  # the metadata, read by the piece; files opened with the state


def _metadata_read(path: Path, fn, *args):
    """``fn(*args)`` over an index's metadata files, their errors as one line naming the index."""
    try:
        return fn(*args)
    except ValueError as exc:
        raise IndexError_(f"{path}: metadata {exc}") from None
    except OSError as exc:  # a file gone (a compaction committed meanwhile: the open is retried) or unreadable
        raise IndexError_(f"{path}: metadata unreadable ({os_error_reason(exc)})") from None


def _open_state(path: Path, manifest: dict) -> _State:
    dim, metric = int(manifest["dim"]), manifest.get("metric", "L2")
    if store.is_v1(manifest):
        return _open_v1(path, manifest, dim, metric)
    files = [store.open_segment(path, seg, dim) for seg in manifest.get("segments", [])]
    kind = manifest.get("faiss_kind", "flat")
    params = manifest.get("search", {})
    segs = []
    for f in files:
        fpath = f.faiss_path if kind == "index" else None
        segs.append(segments.Segment(f.start, f.count, dim, metric, f.vectors, faiss_path=fpath))
    trained = store.check_name(path, manifest["trained"]["name"]) if manifest.get("trained") else None
    if kind == "ivf" and files and trained is None:
        raise IndexError_(f"{path}: the manifest names no trained index for its IVF segments")
    search_over = parts.searchables(kind, segs, files, trained, int(manifest["count"]), params)
    meta = _metadata_read(path, SegmentMetadata, [(f.start, f.count, f.metadata_path) for f in files])
    return _State(manifest, files, segs, search_over, [f.metadata_path for f in files], meta=meta)


def _open_v1(path: Path, manifest: dict, dim: int, metric: str) -> _State:
    import faiss

    vec_file, meta_file = store.v1_files(path, manifest)
    try:
        index = faiss.read_index(str(vec_file))
    except Exception as exc:
        raise IndexError_(f"{path}: unreadable index files ({str(exc).strip().splitlines()[-1]})") from None
    if index.ntotal != manifest.get("count"):
        raise IndexError_(f"{path}: {index.ntotal} vectors but the manifest says {manifest.get('count')}")
    faiss_backend.prepare_for_reconstruct(index)
    parts.set_default_params(index, manifest.get("search", {}))
    n = int(index.ntotal)
    seg = segments.Segment(0, n, dim, metric, vectors=lambda: index.reconstruct_n(0, n), faiss_index=index)
    LOG.info(V1_NOTE.format(path=path))
    return _State(manifest, [], [seg], [seg], [meta_file], read_only=True,
                  meta=_metadata_read(path, SegmentMetadata, [(0, n, meta_file)]))


def _load_state(path: Path) -> _State:
    last = None
    for _ in range(OPEN_RETRIES):
        manifest = store.read_manifest(path)
        try:
            return _open_state(path, manifest)
        except IndexError_ as exc:
            last = exc
            if store.read_manifest(path).get("generation") == manifest.get("generation"):
                raise
    raise last


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
        self._set_state(_load_state(self.path))
        self.rgb = RGBConfig.from_dict(self.manifest.get("rgb", {}))

    def _set_state(self, state: _State) -> None:
        self._state = state
        self.manifest = state.manifest
        self._meta = state.meta
        self._flat_cache = segments.FlatCache()

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def __repr__(self) -> str:
        model = self.manifest.get("encoder", {}).get("model_name")
        return f"<ulisse.Index {self.path} objects={len(self)} factory={self.manifest['factory']!r} encoder={model}>"

    @property
    def read_only(self) -> bool:
        """True for format 1 indexes (``ulisse index upgrade`` rewrites them)."""
        return self._state.read_only

    @property
    def fingerprint(self) -> str:
        """Changes whenever the vectors change; from the segments' sha256 sums in the manifest (nothing is read)."""
        m = self.manifest
        if store.is_v1(m):
            parts_ = [m.get("files", {}).get("vectors", {}).get("sha256", "")]
        else:
            parts_ = [seg["vectors"]["sha256"] for seg in m.get("segments", [])]
        h = hashlib.sha256(f"{len(self)}|{m.get('metric')}|".encode())
        for p in parts_:
            h.update(p.encode())
        return h.hexdigest()

    # -- encoder -------------------------------------------------------------

    @property
    def encoder_spec(self) -> "EncoderSpec":
        from .encoder import EncoderSpec

        return EncoderSpec.from_dict(self.manifest["encoder"])

    @property
    def encoder(self) -> "Encoder":
        """The encoder this index was built with (loaded on first use; weights checked by sha256)."""
        if self._encoder is None:
            from .encoder import Encoder

            self._encoder = Encoder.from_spec(self.encoder_spec, device=self.device, weights=self._weights)
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
        return _metadata_read(self.path, fn, *args)

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
        segs = self._state.segments
        if len(segs) == 1 and segs[0].vectors.dtype == np.float32:
            return segs[0].vectors
        if not segs:
            return np.zeros((0, int(self.manifest["dim"])), np.float32)
        return np.concatenate([np.asarray(s.vectors, dtype=np.float32) for s in segs])

    def nearest_object(self, ra: float, dec: float, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> int:
        """Row of the object nearest to (ra, dec), within ``radius_arcsec``."""
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        if not (-90.0 <= dec <= 90.0) or not math.isfinite(ra):
            raise QueryError(f"--ra {ra} --dec {dec}: not a sky position")
        if not {"ra", "dec"} <= set(self.metadata_columns):
            raise QueryError(f"{self.path}: the index has no ra/dec for its objects")
        ra_all = pd.to_numeric(self.metadata_column("ra"), errors="coerce").to_numpy(np.float64)
        dec_all = pd.to_numeric(self.metadata_column("dec"), errors="coerce").to_numpy(np.float64)
        have = np.isfinite(ra_all) & np.isfinite(dec_all)
        if not have.any():
            raise QueryError(f"{self.path}: the index has no ra/dec for its objects")
        rows = np.flatnonzero(have)
        cat = SkyCoord(ra_all[rows] * u.deg, dec_all[rows] * u.deg)
        target = SkyCoord(ra * u.deg, dec * u.deg)
        sep = target.separation(cat).arcsec
        best = int(np.argmin(sep))
        if sep[best] > radius_arcsec:
            raise QueryError(f"no object within {radius_arcsec:g} arcsec of ra={ra} dec={dec} "
                             f"(nearest is {self.id_of(rows[best])} at {sep[best]:.1f} arcsec)")
        return int(rows[best])

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
        p = dict(self.manifest.get("search", {}))
        if self.nprobe:
            p["nprobe"] = int(self.nprobe)
        if self.ef:
            p["efSearch"] = int(self.ef)
        if self.rerank:
            p["rerank"] = int(self.rerank)
        return p

    def search(self, vectors: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None,
               allowed: np.ndarray | None = None, *, nprobe: int | None = None, ef: int | None = None,
               rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
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

        Rows of -1 (distance inf) pad queries with fewer than k neighbours.
        """
        q = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        dim = int(self.manifest["dim"])
        if q.shape[1] != dim:
            raise QueryError(f"query vectors have dimension {q.shape[1]}, the index {dim}")
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (len(self),):
                raise QueryError(f"allowed: a boolean mask of {len(self)} rows expected, got shape {allowed.shape}")
        if exclude is not None and len(exclude) != len(q):
            raise QueryError(f"exclude: one list per query expected ({len(q)}), got {len(exclude)}")
        params = self.search_parameters()
        nprobe = nprobe or params.get("nprobe")
        ef = ef or params.get("efSearch")
        rerank = int(rerank if rerank is not None else params.get("rerank") or 0)
        k = int(k)
        kk = max(k, rerank)
        D = np.full((len(q), min(kk, len(self))), np.inf, np.float32)
        I = np.full(D.shape, -1, np.int64)
        groups = self._exclusion_groups(exclude, len(q))
        if allowed is None and len(groups) > 8 and all(ex is None or len(ex) <= SMALL_EXCLUSION for _, ex in groups):
            # many queries, each leaving out a few rows of its own (itself, say): one batched search, filtered after
            d, i = self._search_filtered(q, exclude, kk, nprobe, ef)
            D[:, :d.shape[1]], I[:, :i.shape[1]] = d, i
        else:
            for group, excluded in groups:
                d, i = segments.search_segments(self._state.searchables, q[group], kk, nprobe=nprobe, ef=ef,
                                                allowed=allowed, excluded=excluded, cache=self._flat_cache)
                D[group, :d.shape[1]], I[group, :i.shape[1]] = d, i
        if rerank:
            D, I = self._rerank(q, D, I)
        return D[:, :k], I[:, :k]

    @staticmethod
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

    def _search_filtered(self, q, exclude, k, nprobe, ef):
        """Batched search of many queries that each leave out at most SMALL_EXCLUSION rows of their own."""
        extra = max((len(e) for e in exclude), default=0)
        d, i = segments.search_segments(self._state.searchables, q, k + extra, nprobe=nprobe, ef=ef,
                                        cache=self._flat_cache)
        outD = np.full((len(q), min(k, len(self))), np.inf, np.float32)
        outI = np.full(outD.shape, -1, np.int64)
        for j, qi in enumerate(range(len(q))):
            drop = np.isin(i[j], np.asarray(list(exclude[qi]), dtype=np.int64)) | (i[j] < 0)
            keep = np.flatnonzero(~drop)[: outD.shape[1]]
            outD[j, :len(keep)], outI[j, :len(keep)] = d[j, keep], i[j, keep]
        return outD, outI

    def _rerank(self, q, D, I):
        """Exact distances of the candidates from the raw vectors, re-sorted."""
        metric = self.manifest.get("metric", "L2")
        valid = I >= 0
        if not valid.any():
            return D, I
        vecs = np.zeros(I.shape + (q.shape[1],), np.float32)
        vecs[valid] = self.vectors_of_rows(I[valid])
        exact = faiss_backend.exact_distances(q, vecs, metric).astype(np.float32)
        exact[~valid] = np.inf
        order = np.argsort(exact, axis=1, kind="stable")
        return np.take_along_axis(exact, order, axis=1), np.take_along_axis(I, order, axis=1)

    def query(self, id: str | None = None, *, image=None, ra: float | None = None, dec: float | None = None,
              vector: np.ndarray | None = None, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC, k: int = 16,
              allowed: np.ndarray | None = None, where: str | None = None) -> Neighbours:
        """One-shot query: the ``k`` nearest neighbours of one prototype.

        Give exactly one of ``id`` (an object of the index; left out of its own
        results; its stored raw vector is the query), ``image`` (a cutout file or
        array), ``ra`` and ``dec`` (the index object nearest to that position), or ``vector``.
        ``where`` keeps only objects matching a filter on metadata and derived columns
        (``"z_pred < 0.1 and type == 'galaxy'"``, see :mod:`ulisse.filters`); ``allowed``
        is the same as a boolean mask over rows.

        Raises:
            QueryError: unknown id, k < 1, nothing at (ra, dec), or not exactly one prototype.
        """
        from .prototypes import Prototype, resolve

        given = [x is not None for x in (id, image, vector)] + [ra is not None or dec is not None]
        if sum(given) != 1:
            raise QueryError("give exactly one prototype: id, image, ra/dec or vector")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise QueryError(f"k={k}: must be at least 1")
        if id is not None:
            proto = Prototype("id", str(id))
        elif ra is not None or dec is not None:
            if ra is None or dec is None:
                raise QueryError("give both ra and dec")
            proto = Prototype("sky", (float(ra), float(dec)), radius_arcsec)
        elif image is not None:
            proto = Prototype("image", Path(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image))
        else:
            proto = Prototype("vector", np.asarray(vector, dtype=np.float32))
        r = resolve(self, proto)
        q = np.asarray(r.vector, dtype=np.float32)[None]
        exclude = [[r.row]] if r.row is not None else None
        proto_id, what = r.id, proto.describe()
        if where is not None:  # a filter on metadata and derived columns (parsed, never evaluated)
            mask = self.where_mask(where)
            allowed = mask if allowed is None else (np.asarray(allowed, bool) & mask)
        D, I = self.search(q, int(k), exclude=exclude, allowed=allowed)
        info = {} if r.separation_arcsec is None else {"matched": [{"id": r.id, "separation_arcsec": r.separation_arcsec}]}
        return Neighbours(what, proto_id, self.neighbour_table(I[0], D[0]), info)

    def neighbour_table(self, rows: np.ndarray, distances: np.ndarray) -> pd.DataFrame:
        rows = np.asarray(rows)
        ok = rows >= 0
        meta = self.metadata_rows(rows[ok])
        table = pd.DataFrame({"rank": np.arange(1, ok.sum() + 1), "id": meta["id"],
                              "distance": np.asarray(distances)[ok]})
        others = meta.drop(columns=["id"])
        derived = self.derived_rows(rows[ok])  # derived columns (anomaly scores, head predictions...)
        return pd.concat([table, others, derived], axis=1)

    # -- growing -------------------------------------------------------------

    def add(self, inputs: Sequence[str | os.PathLike], catalog=None, *, skip_bad: bool = False,
            progress: bool = True, wait: float = 0.0) -> AddReport:
        """Embed more cutouts with the index's encoder and add them as a new segment.

        Raises:
            InputError: bad inputs, or ids already in the index (nothing is written).
            IndexBusy: another writer holds the index after ``wait`` seconds.
        """
        from .embedding import create_observers, embed_files, finish_observers
        from .inputs import gather

        t0 = time.perf_counter()
        self._check_writable()
        gathered = gather(inputs, catalog, skip_bad=skip_bad)
        self._check_new_ids(gathered.metadata["id"])
        observers = create_observers(self)
        emb = embed_files(self.encoder, gathered.paths, rgb=self.rgb, skip_bad=skip_bad, progress=progress,
                          observers=observers)
        if len(emb.ids) == 0:
            raise InputError("no cutout could be read; nothing added")
        self.add_vectors(emb.vectors, _metadata_rows(gathered.metadata, emb),
                         history={"action": "add", "inputs": [str(p) for p in inputs]}, wait=wait)
        finish_observers(observers, self)
        return AddReport(len(emb.ids), len(self), gathered.skipped + emb.skipped, gathered.notes,
                         time.perf_counter() - t0)

    def _check_writable(self) -> None:
        if self.read_only:
            raise IndexError_(V1_NOTE.format(path=self.path))

    def _check_new_ids(self, ids) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        new = [str(x) for x in ids]
        known = self._metadata_call(self._meta.ids)
        # the known ids are scanned against a hash set of the new ones: O(N) in C, no O(N) set built per add
        hit = pc.is_in(known, value_set=pa.array(new, type=pa.string()))
        found = set(pc.filter(known, hit).to_pylist())
        clash = [oid for oid in new if oid in found]
        if clash:
            raise InputError(f"id {clash[0]!r} is already in the index {self.path}"
                             + (f" ({len(clash)} ids in all)" if len(clash) > 1 else ""))

    def add_vectors(self, vectors: np.ndarray, metadata: pd.DataFrame, *, encoder_spec: "EncoderSpec | None" = None,
                    history: dict | None = None, wait: float = 0.0) -> int:
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
        dim = int(self.manifest["dim"])
        if x.ndim != 2 or x.shape[1] != dim:
            raise InputError(f"vectors of shape {x.shape} do not fit an index of dimension {dim}")
        with writer_lock(self.path, wait):
            current = store.read_manifest(self.path)
            store.sweep(self.path, current)
            if current.get("generation") != self.manifest.get("generation"):
                self._refresh(current)
            self._check_writable()
            new_meta = _normalise_new_rows(metadata, len(x), start=len(self))
            self._check_new_ids(new_meta["id"])
            m = self.manifest
            entry = _write_new_segment(self.path, m, x, new_meta, start=len(self))
            manifest = dict(m, updated=_now(), versions=_versions(), count=len(self) + len(new_meta),
                            segments=list(m.get("segments", [])) + [entry])
            manifest["history"] = list(m.get("history", [])) + [
                {"action": "add", **(history or {}), "count": len(new_meta), "time": _now()}]
            try:
                written = store.commit(self.path, manifest, m.get("generation", 0))
            except BaseException:
                store.remove_files(self.path, _entry_names(entry))
                raise
        before = self._meta
        self._set_state(_open_state(self.path, written))
        self._meta.carry_ids(before, new_meta["id"])  # the id column read once, extended by each add
        return len(new_meta)

    def _refresh(self, manifest: dict | None = None) -> None:
        self._set_state(_open_state(self.path, manifest or store.read_manifest(self.path)))


def _entry_names(entry: dict) -> list[str]:
    return [entry[r]["name"] for r in ("vectors", "metadata", "faiss") if entry.get(r)]


def _write_new_segment(path: Path, manifest: dict, vectors: np.ndarray, meta: pd.DataFrame, start: int) -> dict:
    import faiss

    kind = manifest.get("faiss_kind", "flat")
    trained = None
    if manifest.get("trained"):
        trained = faiss.read_index(str(store.check_name(path, manifest["trained"]["name"])))
    writer = parts.segment_writer(kind, manifest["factory"], int(manifest["dim"]), manifest.get("metric", "L2"),
                                  trained, vectors, start)
    entry = store.write_segment(path, vectors, meta, writer, dtype=manifest.get("dtype", "float32"), kind=kind)
    entry["start"] = int(start)
    return entry


def _normalise_new_rows(metadata: pd.DataFrame, n: int, start: int) -> pd.DataFrame:
    if len(metadata) != n:
        raise InputError(f"{n} vectors but {len(metadata)} metadata rows")
    if "id" not in metadata.columns:
        raise InputError("metadata has no id column")
    meta = metadata.reset_index(drop=True).copy()
    meta["id"] = meta["id"].astype(str)
    dup = meta["id"][meta["id"].duplicated()]
    if len(dup):
        raise InputError(f"id {dup.iloc[0]!r} appears twice among the new objects")
    for col in ("ra", "dec"):
        if col not in meta.columns:
            meta[col] = np.nan
    if "source" not in meta.columns:
        meta["source"] = None
    meta = meta.drop(columns=["row"], errors="ignore")
    meta.insert(0, "row", np.arange(start, start + n, dtype=np.int64))
    cols = ["row", "id", "ra", "dec", "source"]
    return meta[cols + [c for c in meta.columns if c not in cols]]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _metadata_rows(meta: pd.DataFrame, emb) -> pd.DataFrame:
    rows = meta.iloc[emb.positions].reset_index(drop=True).copy()
    # positions from FITS WCS fill in where the catalogue has none
    for col, values in (("ra", emb.ra), ("dec", emb.dec)):
        have = rows[col].notna().to_numpy()
        rows.loc[~have, col] = values[~have]
    return rows


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
                dtype: str = "float32", nprobe: int | None = None, ef: int | None = None,
                wait: float = 0.0, manifest_extra: dict | None = None) -> tuple[Index, AddReport]:
    """Embed cutouts and write a new index directory at ``path``.

    Everything is checked and embedded before anything is written; the write is atomic.
    ``manifest_extra``: JSON-ready keys added to the manifest (see :func:`create_index`).

    Raises:
        InputError: bad inputs or factory string; ``path`` holds an index and ``overwrite`` is False.
    """
    from .embedding import create_observers, embed_files, finish_observers
    from .encoder import Encoder
    from .inputs import gather

    t0 = time.perf_counter()
    path = Path(path)
    check_new_index_path(path, overwrite)
    faiss_backend.check_metric(metric)
    gathered = gather(inputs, catalog, skip_bad=skip_bad)
    encoder = encoder or Encoder.load(weights=weights, device=device)
    if factory != "auto":
        faiss_backend.new_faiss_index(factory, encoder.spec.dim, metric)  # a bad factory fails before the long work
    observers = create_observers(None)
    emb = embed_files(encoder, gathered.paths, rgb=rgb, skip_bad=skip_bad, progress=progress, observers=observers)
    if len(emb.ids) == 0:
        raise InputError("no cutout could be read; no index written")
    idx = create_index(path, emb.vectors, _metadata_rows(gathered.metadata, emb), encoder.spec,
                       factory=factory, metric=metric, rgb=rgb, device=device, overwrite=overwrite,
                       memory=memory, dtype=dtype, nprobe=nprobe, ef=ef, wait=wait, manifest_extra=manifest_extra,
                       history={"action": "build", "inputs": [str(p) for p in inputs],
                                "catalog": None if catalog is None else str(catalog)})
    idx._encoder = encoder
    finish_observers(observers, idx)
    return idx, AddReport(len(emb.ids), len(idx), gathered.skipped + emb.skipped, gathered.notes,
                          time.perf_counter() - t0)


def _index_exists(path) -> InputError:
    return InputError(f"{path}: an index exists here already (use 'ulisse index add' to extend it, or --overwrite)")


def check_new_index_path(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse to write a new index over a file, or over an index unless ``overwrite`` (checked before long work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory")
    if (path / store.MANIFEST).exists() and not overwrite:
        raise _index_exists(path)



def create_index(path: str | os.PathLike, vectors: np.ndarray, metadata: pd.DataFrame, encoder_spec: "EncoderSpec", *,
                 factory: str = DEFAULT_FACTORY, metric: str = "L2", rgb: RGBConfig = RGBConfig(),
                 device: str = "auto", overwrite: bool = False, history: dict | None = None,
                 memory: str = auto_factory.DEFAULT_MEMORY, dtype: str = "float32", nprobe: int | None = None,
                 ef: int | None = None, wait: float = 0.0, manifest_extra: dict | None = None,
                 expected: int | None = None) -> Index:
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
        manifest_extra: JSON-ready keys added to the manifest (e.g. ``cutout_geometry``); they cannot
            replace the core's own keys.

    Raises:
        InputError: ``path`` holds an index and ``overwrite`` is False; bad factory; rows and vectors that do not match.
        WriteError: ``DIR: <reason>``; nothing is left behind and an index that was there stays as it was.
    """
    path = Path(path)
    check_new_index_path(path, overwrite)
    faiss_backend.check_metric(metric)
    if dtype not in store.DTYPES:
        raise InputError(f"dtype {dtype!r}: expected one of {', '.join(store.DTYPES)}")
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[1] != encoder_spec.dim:
        raise InputError(f"vectors of shape {x.shape} do not fit the encoder's dimension {encoder_spec.dim}")
    meta = _normalise_new_rows(metadata, len(x), start=0)
    choice = None
    if factory == "auto":
        choice = auto_factory.choose_factory(max(len(x), int(expected or 0)), encoder_spec.dim, memory)
        factory = choice.factory
        LOG.info("factory auto: %s (%s)", factory, choice.reason)
    kind = parts.kind_of(factory, encoder_spec.dim, metric)
    trained = parts.trained_index(factory, encoder_spec.dim, metric, x)
    search = _default_search(factory, encoder_spec.dim, metric, choice, nprobe, ef)
    with writer_lock(path, wait):
        try:
            previous = store.read_manifest(path)
        except store.IndexNotFound:
            previous = None
        if previous is not None and not overwrite:
            raise _index_exists(path)
        store.sweep(path, previous)
        trained_entry = store.write_trained(path, trained) if trained is not None else None
        try:
            writer = parts.segment_writer(kind, factory, encoder_spec.dim, metric, trained, x, 0)
            entry = dict(store.write_segment(path, x, meta, writer, dtype=dtype, kind=kind), start=0)
        except BaseException:
            if trained_entry:
                store.remove_files(path, [trained_entry["name"]])
            raise
        manifest = {
            "factory": factory, "metric": metric, "dim": encoder_spec.dim, "count": len(meta), "dtype": dtype,
            "faiss_kind": kind, "trained": trained_entry, "segments": [entry], "search": search,
            "auto": choice.to_dict() if choice else None,
            "encoder": encoder_spec.to_dict(), "rgb": rgb.to_dict(),
            "created": _now(), "versions": _versions(),
            "history": [{"action": "build", **(history or {}), "count": len(meta), "time": _now()}],
        }
        clash = sorted(set(manifest_extra or {}) & set(manifest))
        if clash:
            raise InputError(f"manifest_extra cannot replace the manifest's {', '.join(clash)}")
        manifest.update(manifest_extra or {})
        try:
            store.commit(path, manifest, (previous or {}).get("generation", 0))
        except BaseException:
            store.remove_files(path, _entry_names(entry) + ([trained_entry["name"]] if trained_entry else []))
            raise
        store.sweep(path, store.read_manifest(path))
    return open_index(path, device=device)


def _default_search(factory: str, dim: int, metric: str, choice, nprobe, ef) -> dict:
    probe = faiss_backend.new_faiss_index(factory, dim, metric)
    have = faiss_backend.describe_params(probe)
    out = {}
    if "nprobe" in have:
        out["nprobe"] = int(nprobe or (choice.nprobe if choice and choice.nprobe else auto_factory.default_nprobe(have["nlist"])))
        out["nlist"] = have["nlist"]
    if "efSearch" in have:
        out["efSearch"] = int(ef or DEFAULT_EF_SEARCH)
    return out


# -- maintenance: compact, upgrade, verify ------------------------------------------------------


def compact_index(path: str | os.PathLike, wait: float = 0.0) -> dict:
    """Merge every segment into one (vectors streamed through a memory map); returns the new manifest.

    Raises:
        IndexError_: a format 1 index (upgrade it first).
        WriteError: ``DIR: <reason>``; the index stays as it was, nothing is left behind.
    """
    path = Path(path)
    with writer_lock(path, wait):
        manifest = store.read_manifest(path)
        store.sweep(path, manifest)
        if store.is_v1(manifest):
            raise IndexError_(V1_NOTE.format(path=path))
        if len(manifest.get("segments", [])) <= 1:
            LOG.info("%s: one segment already; nothing to compact", path)
            return manifest
        state = _open_state(path, manifest)
        entry = _write_merged_segment(path, manifest, state)
        new = dict(manifest, segments=[entry], updated=_now())
        new["history"] = list(manifest.get("history", [])) + [
            {"action": "compact", "segments": len(manifest["segments"]), "time": _now()}]
        try:
            written = store.commit(path, new, manifest.get("generation", 0))
        except BaseException:
            store.remove_files(path, _entry_names(entry))
            raise
        store.sweep(path, written)
    return written


def _write_merged_segment(path: Path, manifest: dict, state: _State) -> dict:
    dim, metric, dtype = int(manifest["dim"]), manifest.get("metric", "L2"), manifest.get("dtype", "float32")
    count = int(manifest["count"])
    files = state.files

    def write_vectors(p):  # plain writes (a full disk gives ENOSPC; a memory map would get SIGBUS)
        with open(p, "wb") as fh:
            fh.write(store.npy_header(dtype, (count, dim)))
            for f in files:
                for lo in range(0, f.count, parts.ADD_CHUNK):
                    fh.write(np.ascontiguousarray(f.vectors[lo:lo + parts.ADD_CHUNK], dtype=dtype).tobytes())

    def write_metadata(p):
        write_parquet(pd.concat([pd.read_parquet(f.metadata_path) for f in files], ignore_index=True), p)

    kind = manifest.get("faiss_kind", "flat")
    trained = store.check_name(path, manifest["trained"]["name"]) if manifest.get("trained") else None
    writer = parts.merged_writer(kind, manifest["factory"], dim, metric, trained, files, lambda i: files[i].vectors)
    entry = store.write_segment(path, write_vectors, write_metadata, writer, dtype=dtype, count=count, kind=kind)
    entry["start"] = 0
    return entry


def upgrade_index(path: str | os.PathLike, wait: float = 0.0) -> dict:
    """Rewrite a format 1 index in format 2 (one segment); returns the new manifest.

    Vectors come from the old FAISS index (exact for Flat/IVF-Flat/HNSW-Flat; for
    PQ/SQ indexes the reconstructions, which the manifest notes).
    """
    import faiss

    path = Path(path)
    with writer_lock(path, wait):
        manifest = store.read_manifest(path)
        if not store.is_v1(manifest):
            LOG.info("%s: already format %d", path, manifest.get("format_version"))
            return manifest
        state = _open_v1(path, manifest, int(manifest["dim"]), manifest.get("metric", "L2"))
        old = state.segments[0].faiss_index
        vectors = state.segments[0].vectors
        meta = pd.read_parquet(state.metadata_paths[0])
        factory, metric, dim = manifest["factory"], manifest.get("metric", "L2"), int(manifest["dim"])
        kind = parts.kind_of(factory, dim, metric)
        trained_entry, writer = None, None
        if kind == "ivf":
            empty = faiss.clone_index(old)
            empty.reset()
            trained_entry = store.write_trained(path, empty)
            writer = lambda p: parts.write_invlists(faiss.extract_index_ivf(old).invlists, p)  # noqa: E731
        elif kind == "index":
            writer = lambda p: faiss.write_index(old, str(p))  # noqa: E731
        lossy = kind != "flat" and not isinstance(faiss.downcast_index(faiss.extract_index_ivf(old) if kind == "ivf" else old),
                                                   (faiss.IndexIVFFlat, faiss.IndexHNSWFlat, faiss.IndexFlat))
        try:
            entry = dict(store.write_segment(path, vectors, meta, writer, kind=kind), start=0)
        except BaseException:
            if trained_entry:
                store.remove_files(path, [trained_entry["name"]])
            raise
        new = {k: v for k, v in manifest.items() if k != "files"}
        new.update(dtype="float32", faiss_kind=kind, trained=trained_entry, segments=[entry], updated=_now(),
                   search=_default_search(factory, dim, metric, None, None, None))
        new["history"] = list(manifest.get("history", [])) + [
            {"action": "upgrade", "from_format": 1, "time": _now(),
             **({"note": "raw vectors are the old index's reconstructions (lossy codes)"} if lossy else {})}]
        try:
            written = store.commit(path, new, manifest.get("generation", 0))
        except BaseException:
            store.remove_files(path, _entry_names(entry) + ([trained_entry["name"]] if trained_entry else []))
            raise
        store.sweep(path, written)
    return written


def verify_index(path: str | os.PathLike) -> list[str]:
    """Re-hash every file of the index against the sha256 sums its manifest recorded; the problems found."""
    return store.verify(path)
