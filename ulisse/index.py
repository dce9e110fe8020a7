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


class Index:
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
              vector: np.ndarray | None = None, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC, k: int = 16) -> Neighbours:
        """One-shot query: the ``k`` nearest neighbours of one prototype.

        Give exactly one of ``id`` (an object of the index; left out of its own
        results), ``image`` (a cutout file or array), ``ra`` and ``dec`` (the
        index object nearest to that position), or ``vector``.

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
        D, I = self.search(q, int(k), exclude=exclude)
        return Neighbours(what, proto_id, self.neighbour_table(I[0], D[0]))

    def neighbour_table(self, rows: np.ndarray, distances: np.ndarray) -> pd.DataFrame:
        ok = rows >= 0
        meta = self.metadata.iloc[rows[ok]].reset_index(drop=True)
        table = pd.DataFrame({"rank": np.arange(1, ok.sum() + 1), "id": meta["id"], "distance": distances[ok]})
        others = meta.drop(columns=["id"])
        return pd.concat([table, others], axis=1)

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
        new_meta = _metadata_rows(gathered.metadata, emb, start=len(self))
        if len(emb.ids) == 0:
            raise InputError("no cutout could be read; nothing added")
        index = faiss_backend_clone(self._cpu_index)
        faiss_backend.add_vectors(index, emb.vectors)
        metadata = pd.concat([self.metadata, new_meta], ignore_index=True)
        manifest = dict(self.manifest)
        manifest.update(updated=_now(), versions=_versions())
        manifest["history"] = list(manifest.get("history", [])) + [
            {"action": "add", "count": len(emb.ids), "time": _now(), "inputs": [str(p) for p in inputs]}]
        written = store.commit(self.path, index, metadata, manifest)
        self.manifest, self.metadata, self._cpu_index, self._search_index = written, metadata, index, None
        self._row_of = {oid: i for i, oid in enumerate(self.metadata["id"])}
        return AddReport(len(emb.ids), len(self), gathered.skipped + emb.skipped, gathered.notes,
                         time.perf_counter() - t0)


def faiss_backend_clone(index):
    import faiss

    return faiss.clone_index(index)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _metadata_rows(meta: pd.DataFrame, emb, start: int) -> pd.DataFrame:
    rows = meta.iloc[emb.positions].reset_index(drop=True).copy()
    # positions from FITS WCS fill in where the catalogue has none
    for col, values in (("ra", emb.ra), ("dec", emb.dec)):
        have = rows[col].notna().to_numpy()
        rows.loc[~have, col] = values[~have]
    rows.insert(0, "row", np.arange(start, start + len(rows), dtype=np.int64))
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
    index = faiss_backend.new_faiss_index(factory, encoder.spec.dim, metric)  # checks the factory early
    emb = embed_files(encoder, gathered.paths, rgb=rgb, skip_bad=skip_bad, progress=progress)
    if len(emb.ids) == 0:
        raise InputError("no cutout could be read; no index written")
    faiss_backend.add_vectors(index, emb.vectors)
    metadata = _metadata_rows(gathered.metadata, emb, start=0)
    manifest = {
        "factory": factory, "metric": metric, "dim": encoder.spec.dim,
        "encoder": encoder.spec.to_dict(), "rgb": rgb.to_dict(),
        "created": _now(), "versions": _versions(),
        "history": [{"action": "build", "count": len(emb.ids), "time": _now(), "inputs": [str(p) for p in inputs],
                     "catalog": None if catalog is None else str(catalog)}],
    }
    store.commit(path, index, metadata, manifest)
    idx = open_index(path, device=device)
    idx._encoder = encoder
    return idx, AddReport(len(emb.ids), len(idx), gathered.skipped + emb.skipped, gathered.notes,
                          time.perf_counter() - t0)
