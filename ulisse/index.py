"""The similarity index: an index directory plus the encoder that made it.

Example:
    >>> import ulisse
    >>> index = ulisse.open_index("indexes/hdf-demo")            # doctest: +SKIP
    >>> result = index.query(id="hdf-0042", k=8)                  # doctest: +SKIP
    >>> result.table[["rank", "id", "distance"]]                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ulisse.indexes import faiss_backend, store
from ulisse.indexes._gpu import to_gpu

from .cutouts import RGBConfig, image_to_rgb, read_cutout
from .derived import DerivedMixin
from .embedding import embed_files
from .encoder import Encoder, EncoderSpec, check_compatible
from .errors import IndexError_, InputError, QueryError
from .inputs import gather
from .results import Neighbours

LOG = logging.getLogger(__name__)

DEFAULT_FACTORY = "Flat"
DEFAULT_RADIUS_ARCSEC = 3.0


@dataclass
class AddReport:
    """What a build or add did."""

    added: int
    total: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _versions() -> dict:
    import astropy
    import faiss
    import timm
    import torch

    from . import __version__

    return {"ulisse": __version__, "faiss": faiss.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "astropy": astropy.__version__, "numpy": np.__version__, "python": platform.python_version()}


class Index(DerivedMixin):
    """A loaded similarity index.

    Attributes:
        path: the index directory.
        manifest: its manifest (what built it).
        metadata: one row per object: ``row``, ``id``, ``ra``, ``dec``, ``source``, catalogue columns.
        encoder_spec: the encoder the vectors came from.
    """

    def __init__(self, files: store.IndexFiles, device: str = "auto", weights=None):
        self.path = files.path
        self.manifest = files.manifest
        self.metadata = files.metadata
        self._cpu_index = files.faiss_index
        faiss_backend.prepare_for_reconstruct(self._cpu_index)
        self._search_index = None
        self.device = device
        self._weights = weights
        self._encoder: Encoder | None = None
        self.encoder_spec = EncoderSpec.from_dict(self.manifest["encoder"])
        self.rgb = RGBConfig.from_dict(self.manifest.get("rgb", {}))
        self._row_of = {oid: i for i, oid in enumerate(self.metadata["id"])}

    def __len__(self) -> int:
        return int(self._cpu_index.ntotal)

    def __repr__(self) -> str:
        return f"<ulisse.Index {self.path} objects={len(self)} factory={self.manifest['factory']!r} encoder={self.encoder_spec.model_name}>"

    # -- encoder -------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The encoder this index was built with (loaded on first use; weights checked by sha256)."""
        if self._encoder is None:
            self._encoder = Encoder.from_spec(self.encoder_spec, device=self.device, weights=self._weights)
        return self._encoder

    def use_encoder(self, encoder: Encoder) -> None:
        """Use an already loaded encoder (it must match the index's)."""
        check_compatible(self.encoder_spec, encoder.spec, str(self.path))
        self._encoder = encoder

    # -- lookups -------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        return list(self.metadata["id"])

    def row_of(self, object_id: str) -> int:
        try:
            return self._row_of[str(object_id)]
        except KeyError:
            raise QueryError(f"id {object_id!r}: unknown id (not in the index {self.path})") from None

    def vector(self, object_id: str) -> np.ndarray:
        """The stored vector of an object of the index."""
        return self.vectors_of_rows([self.row_of(object_id)])[0]

    def vectors_of_rows(self, rows: Sequence[int]) -> np.ndarray:
        return np.stack([self._cpu_index.reconstruct(int(r)) for r in rows]).astype(np.float32)

    def nearest_object(self, ra: float, dec: float, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> int:
        """Row of the object nearest to (ra, dec), within ``radius_arcsec``."""
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        if not (-90.0 <= dec <= 90.0) or not math.isfinite(ra):
            raise QueryError(f"--ra {ra} --dec {dec}: not a sky position")
        have = self.metadata[["ra", "dec"]].notna().all(axis=1).to_numpy()
        if not have.any():
            raise QueryError(f"{self.path}: the index has no ra/dec for its objects")
        rows = np.flatnonzero(have)
        cat = SkyCoord(self.metadata["ra"].to_numpy()[rows] * u.deg, self.metadata["dec"].to_numpy()[rows] * u.deg)
        target = SkyCoord(ra * u.deg, dec * u.deg)
        sep = target.separation(cat).arcsec
        best = int(np.argmin(sep))
        if sep[best] > radius_arcsec:
            raise QueryError(f"no object within {radius_arcsec:g} arcsec of ra={ra} dec={dec} "
                             f"(nearest is {self.metadata['id'].iloc[rows[best]]} at {sep[best]:.1f} arcsec)")
        return int(rows[best])

    def embed_image(self, image) -> np.ndarray:
        """The vector of an outside cutout: a file path or an image array."""
        if isinstance(image, (str, os.PathLike)):
            arr = read_cutout(image, self.rgb).image
        else:
            arr = image_to_rgb(image, "image", self.rgb)
        return self.encoder.embed_images([arr])[0]

    # -- search --------------------------------------------------------------

    def _index_for_search(self):
        if self._search_index is None:
            self._search_index = self._cpu_index if self.device == "cpu" else to_gpu(self._cpu_index)
        return self._search_index

    def search(self, vectors: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw kNN: (distances, rows), each ``len(vectors) x k``, leaving out ``exclude[i]`` rows for query i."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.encoder_spec.dim:
            raise QueryError(f"query vectors have dimension {vectors.shape[1]}, the index {self.encoder_spec.dim}")
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        D, I = faiss_backend.search(self._index_for_search(), vectors, k + extra, nprobe=nprobe)
        if not exclude:
            return D[:, :k], I[:, :k]
        outD = np.full((len(vectors), k), np.nan, np.float32)
        outI = np.full((len(vectors), k), -1, np.int64)
        for q in range(len(vectors)):
            drop = set(int(x) for x in exclude[q])
            keep = [j for j in range(I.shape[1]) if I[q, j] >= 0 and int(I[q, j]) not in drop][:k]
            outD[q, :len(keep)] = D[q, keep]
            outI[q, :len(keep)] = I[q, keep]
        return outD, outI

    def query(self, id: str | None = None, *, image=None, ra: float | None = None, dec: float | None = None,
              vector: np.ndarray | None = None, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC, k: int = 16,
              where: str | None = None) -> Neighbours:
        """One-shot query: the ``k`` nearest neighbours of one prototype.

        Give exactly one of ``id`` (an object of the index; left out of its own
        results), ``image`` (a cutout file or array), ``ra`` and ``dec`` (the
        index object nearest to that position), or ``vector``. ``where`` keeps
        only objects matching a filter on metadata and derived columns
        (``"z_pred < 0.1 and type == 'galaxy'"``; see :mod:`ulisse.filters`).

        Raises:
            QueryError: unknown id, k < 1, nothing at (ra, dec), or not exactly one prototype.
        """
        given = [x is not None for x in (id, image, vector)] + [ra is not None or dec is not None]
        if sum(given) != 1:
            raise QueryError("give exactly one prototype: id, image, ra/dec or vector")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise QueryError(f"k={k}: must be at least 1")
        exclude = None
        proto_id = None
        if id is not None:
            row = self.row_of(id)
            proto_id, what = str(id), f"id={id}"
        elif ra is not None or dec is not None:
            if ra is None or dec is None:
                raise QueryError("give both ra and dec")
            row = self.nearest_object(float(ra), float(dec), radius_arcsec)
            proto_id, what = self.metadata["id"].iloc[row], f"ra={ra} dec={dec} -> {self.metadata['id'].iloc[row]}"
        else:
            row = None
        if row is not None:
            q = self.vectors_of_rows([row])
            exclude = [[row]]
        elif image is not None:
            q = self.embed_image(image)[None]
            what = f"image={image}" if isinstance(image, (str, os.PathLike)) else "image"
        else:
            q = np.asarray(vector, dtype=np.float32)[None]
            what = "vector"
        allowed = self.where_mask(where)
        D, I = self.search(q, int(k), exclude=exclude, **({} if allowed is None else {"allowed": allowed}))
        return Neighbours(what, proto_id, self.neighbour_table(I[0], D[0]))

    def neighbour_table(self, rows: np.ndarray, distances: np.ndarray) -> pd.DataFrame:
        ok = rows >= 0
        meta = self.metadata.iloc[rows[ok]].reset_index(drop=True)
        table = pd.DataFrame({"rank": np.arange(1, ok.sum() + 1), "id": meta["id"], "distance": distances[ok]})
        others = meta.drop(columns=["id"])
        derived = self.derived_rows(rows[ok])  # derived columns (anomaly scores, head predictions...)
        return pd.concat([table, others, derived], axis=1)

    # -- growing -------------------------------------------------------------

    def add(self, inputs: Sequence[str | os.PathLike], catalog=None, *, skip_bad: bool = False,
            progress: bool = True) -> AddReport:
        """Embed more cutouts with the index's encoder and add them, atomically.

        Raises:
            InputError: bad inputs, or ids already in the index (nothing is written).
        """
        t0 = time.perf_counter()
        gathered = gather(inputs, catalog, skip_bad=skip_bad)
        clash = [oid for oid in gathered.metadata["id"] if oid in self._row_of]
        if clash:
            raise InputError(f"id {clash[0]!r} is already in the index {self.path}"
                             + (f" ({len(clash)} ids in all)" if len(clash) > 1 else ""))
        emb = embed_files(self.encoder, gathered.paths, rgb=self.rgb, skip_bad=skip_bad, progress=progress)
        if len(emb.ids) == 0:
            raise InputError("no cutout could be read; nothing added")
        self.add_vectors(emb.vectors, _metadata_rows(gathered.metadata, emb),
                         history={"action": "add", "inputs": [str(p) for p in inputs]})
        return AddReport(len(emb.ids), len(self), gathered.skipped + emb.skipped, gathered.notes,
                         time.perf_counter() - t0)

    def add_vectors(self, vectors: np.ndarray, metadata: pd.DataFrame, *, encoder_spec: EncoderSpec | None = None,
                    history: dict | None = None) -> int:
        """Add vectors computed elsewhere (a worker's shard, say) with their metadata rows, atomically.

        Args:
            vectors: float32 ``N x dim`` from this index's encoder.
            metadata: N rows with an ``id`` column (new ids); ``ra``, ``dec``, ``source`` and any columns.
            encoder_spec: the encoder the vectors came from; checked against the index's when given.
            history: a note for the manifest's history (``action`` and anything JSON-ready).

        Returns the number of objects added.

        Raises:
            InputError: ids already in the index or repeated, or rows and vectors that do not match.
            EncoderMismatch: ``encoder_spec`` differs from the index's.
        """
        if encoder_spec is not None:
            check_compatible(self.encoder_spec, encoder_spec, str(self.path))
        new_meta = _normalise_new_rows(metadata, len(vectors), start=len(self))
        clash = [oid for oid in new_meta["id"] if oid in self._row_of]
        if clash:
            raise InputError(f"id {clash[0]!r} is already in the index {self.path}"
                             + (f" ({len(clash)} ids in all)" if len(clash) > 1 else ""))
        index = faiss_backend.clone(self._cpu_index)
        faiss_backend.add_vectors(index, vectors)
        metadata = pd.concat([self.metadata, new_meta], ignore_index=True)
        manifest = dict(self.manifest)
        manifest.update(updated=_now(), versions=_versions())
        manifest["history"] = list(manifest.get("history", [])) + [
            {"action": "add", **(history or {}), "count": len(new_meta), "time": _now()}]
        written = store.commit(self.path, index, metadata, manifest)
        self.manifest, self.metadata, self._cpu_index, self._search_index = written, metadata, index, None
        self._row_of = {oid: i for i, oid in enumerate(self.metadata["id"])}
        return len(new_meta)


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


def open_index(path: str | os.PathLike, device: str = "auto", weights=None, verify: bool = True) -> Index:
    """Open an index directory.

    Args:
        path: the index directory.
        device: ``auto``, ``cpu`` or ``cuda`` (for the encoder and, with faiss-gpu, the search).
        weights: a weights file, when the index was built from one that has moved.
        verify: check the files' sha256 sums against the manifest.

    Raises:
        IndexNotFound, IndexError_: no index, or a damaged one.
    """
    return Index(store.load(path, verify=verify), device=device, weights=weights)


def build_index(inputs: Sequence[str | os.PathLike], path: str | os.PathLike, catalog=None, *,
                factory: str = DEFAULT_FACTORY, metric: str = "L2", encoder: Encoder | None = None,
                weights=None, device: str = "auto", rgb: RGBConfig = RGBConfig(), skip_bad: bool = False,
                overwrite: bool = False, progress: bool = True) -> tuple[Index, AddReport]:
    """Embed cutouts and write a new index directory at ``path``.

    Everything is checked and embedded before anything is written; the write is atomic.

    Raises:
        InputError: bad inputs or factory string; ``path`` holds an index and ``overwrite`` is False.
    """
    t0 = time.perf_counter()
    path = Path(path)
    if (path / store.MANIFEST).exists() and not overwrite:
        raise InputError(f"{path}: an index exists here already (use 'ulisse index add' to extend it, or --overwrite)")
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory")
    gathered = gather(inputs, catalog, skip_bad=skip_bad)
    encoder = encoder or Encoder.load(weights=weights, device=device)
    faiss_backend.new_faiss_index(factory, encoder.spec.dim, metric)  # a bad factory fails before the long work
    emb = embed_files(encoder, gathered.paths, rgb=rgb, skip_bad=skip_bad, progress=progress)
    if len(emb.ids) == 0:
        raise InputError("no cutout could be read; no index written")
    idx = create_index(path, emb.vectors, _metadata_rows(gathered.metadata, emb), encoder.spec,
                       factory=factory, metric=metric, rgb=rgb, device=device, overwrite=overwrite,
                       history={"action": "build", "inputs": [str(p) for p in inputs],
                                "catalog": None if catalog is None else str(catalog)})
    idx._encoder = encoder
    return idx, AddReport(len(emb.ids), len(idx), gathered.skipped + emb.skipped, gathered.notes,
                          time.perf_counter() - t0)


def create_index(path: str | os.PathLike, vectors: np.ndarray, metadata: pd.DataFrame, encoder_spec: EncoderSpec, *,
                 factory: str = DEFAULT_FACTORY, metric: str = "L2", rgb: RGBConfig = RGBConfig(),
                 device: str = "auto", overwrite: bool = False, history: dict | None = None,
                 manifest_extra: dict | None = None) -> Index:
    """Write a new index directory from vectors computed elsewhere and their metadata rows (atomically).

    ``manifest_extra`` adds JSON-ready keys to the manifest (e.g. ``cutout_geometry``); it cannot replace
    the core's own keys.

    Raises:
        InputError: ``path`` holds an index and ``overwrite`` is False; bad factory; rows and vectors that do not match.
    """
    path = Path(path)
    if (path / store.MANIFEST).exists() and not overwrite:
        raise InputError(f"{path}: an index exists here already (use 'ulisse index add' to extend it, or --overwrite)")
    meta = _normalise_new_rows(metadata, len(vectors), start=0)
    index = faiss_backend.new_faiss_index(factory, encoder_spec.dim, metric)
    faiss_backend.add_vectors(index, vectors)
    manifest = {
        "factory": factory, "metric": metric, "dim": encoder_spec.dim,
        "encoder": encoder_spec.to_dict(), "rgb": rgb.to_dict(),
        "created": _now(), "versions": _versions(),
        "history": [{"action": "build", **(history or {}), "count": len(meta), "time": _now()}],
    }
    clash = sorted(set(manifest_extra or {}) & set(manifest))
    if clash:
        raise InputError(f"manifest_extra cannot replace the manifest's {', '.join(clash)}")
    manifest.update(manifest_extra or {})
    store.commit(path, index, meta, manifest)
    return open_index(path, device=device)
