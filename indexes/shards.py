"""A sharded index: a directory naming several ordinary index directories (its shards).

::

    DIR/
      sharded.json      {"format": "ulisse-sharded", "version": 1, "dim", "metric", "encoder",
                         "shards": ["shard-000", ...]}   (paths relative to DIR, or absolute)
      shard-000/        an ordinary ulisse index (manifest + segments), its own writer lock
      shard-001/        ...

Every shard has the same encoder spec, dimension, metric and search space (checked when the sharded
index is made, and again by every process that opens a shard: :func:`check_shard`), so
distances from different shards compare and their top-k merge exactly. A shard is the
unit a Dask worker keeps resident (:mod:`.dask_search`) and the unit of writing: an add
goes to one shard under that shard's own transaction (:func:`add_to_shard`), so the
single-writer guarantee of :mod:`.transaction` holds per shard and writers of different
shards never wait for each other. The shards' answers to one query merge into one
:class:`ShardedAnswer` (:func:`merge_answers`: the k smallest exact distances).

Example:
    >>> from ulisse.indexes import shards
    >>> shards.create_sharded("survey", ["survey/shard-000", "survey/shard-001"])   # doctest: +SKIP
    >>> shards.add_to_shard("survey", vectors, rows, shard="shard-001")             # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ulisse._io import WriteError, atomic_write, os_error_reason
from ulisse.errors import IndexError_, IndexNotFound, InputError, UlisseError

from . import idtable
from .manifest import MANIFEST, Manifest, check_name

SHARDED = "sharded.json"
FORMAT = "ulisse-sharded"
VERSION = 1


@dataclass(frozen=True)
class ShardedManifest:
    """What ``sharded.json`` says: the shards' paths (as written) and what every shard must share."""

    path: Path
    shards: tuple[str, ...]
    dim: int
    metric: str
    encoder: dict
    space: str | None = None  # the fingerprint of the shards' whitening (indexes/space.py); None: raw vectors

    def shard_path(self, name: str) -> Path:
        """A shard's directory (relative names are inside the sharded index's directory)."""
        p = Path(name)
        return p if p.is_absolute() else self.path / p

    @property
    def shard_paths(self) -> list[Path]:
        return [self.shard_path(s) for s in self.shards]

    def label(self, name: str) -> str:
        """A shard's name to show (tables, exports): relative to the sharded index's directory, never absolute."""
        p = Path(name)
        if not p.is_absolute():
            return name
        rel = os.path.relpath(p, self.path.absolute())
        return p.name if rel == "." else rel  # "." : a plain index searched as one shard, itself

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, "dim": self.dim, "metric": self.metric,
                           "encoder": self.encoder, "space": self.space, "shards": list(self.shards)}, indent=1) + "\n"


def is_sharded(path: str | os.PathLike) -> bool:
    """True when ``path`` is a sharded index directory (holds ``sharded.json``)."""
    return (Path(path) / SHARDED).is_file()


def read_sharded(path: str | os.PathLike) -> ShardedManifest:
    """The manifest of the sharded index at ``path``.

    Raises:
        IndexNotFound: no ``sharded.json`` there.
        IndexError_: it is not a sharded manifest ulisse can read.
    """
    path = Path(path)
    try:
        data = json.loads((path / SHARDED).read_text())
    except FileNotFoundError:
        raise IndexNotFound(f"{path}: not a sharded index (no {SHARDED})") from None
    except (OSError, ValueError) as exc:
        raise IndexError_(f"{path}/{SHARDED}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise IndexError_(f"{path}/{SHARDED}: not a version {VERSION} sharded index manifest")
    try:
        shards = tuple(str(s) for s in data["shards"])
        m = ShardedManifest(path, shards, int(data["dim"]), str(data["metric"]), dict(data["encoder"]),
                            data.get("space"))
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexError_(f"{path}/{SHARDED}: malformed ({exc.__class__.__name__}: {exc})") from None
    if not shards or len(set(shards)) != len(shards):
        raise IndexError_(f"{path}/{SHARDED}: needs one or more distinct shards")
    return m


def _spec_key(encoder: dict) -> tuple:
    """What makes two encoders' vectors comparable (:meth:`ulisse._spec.EncoderSpec.key`)."""
    from ulisse._spec import EncoderSpec

    return EncoderSpec.from_dict(encoder).key()


def check_shard(sharded: ShardedManifest, name: str, manifest: Manifest) -> None:
    """Raise unless the shard's manifest has the sharded index's dimension, metric and encoder spec.

    Raises:
        IndexError_: ``DIR: shard NAME has ...`` naming what differs.
    """
    if manifest.dim != sharded.dim:
        raise IndexError_(f"{sharded.path}: shard {name} has dimension {manifest.dim}, the sharded index {sharded.dim}")
    if manifest.metric != sharded.metric:
        raise IndexError_(f"{sharded.path}: shard {name} has metric {manifest.metric}, the sharded index "
                          f"{sharded.metric}: distances would not compare")
    if _spec_key(dict(manifest.encoder)) != _spec_key(sharded.encoder):
        raise IndexError_(f"{sharded.path}: shard {name} was built with another encoder "
                          f"({manifest.encoder.get('model_name')}) than the sharded index "
                          f"({sharded.encoder.get('model_name')}): distances would not compare")
    if _space_of(manifest) != sharded.space:
        first = "the encoder's raw vectors" if sharded.space is None else "a PCA whitening of its own"
        raise IndexError_(f"{sharded.path}: shard {name} searches another space ({_space_text(manifest)}) than the "
                          f"first shard ({first}): distances would not compare (shards need one space: build each "
                          f"region index with 'ulisse index build ... --whiten none')")


def _space_of(manifest: Manifest) -> str | None:
    return (manifest.extra.get("space") or {}).get("sha256")


def _space_text(manifest: Manifest) -> str:
    from .space import space_text

    return space_text(manifest.extra.get("space"))


def create_sharded(path: str | os.PathLike, shards: Sequence[str | os.PathLike], *, overwrite: bool = False) -> ShardedManifest:
    """Write ``path/sharded.json`` naming existing index directories as the shards of one index.

    Shards inside ``path`` are recorded relative to it (the directory can move as a whole).

    Raises:
        InputError: no shards, a shard named twice, or ``path`` holds a sharded index and not ``overwrite``.
        IndexNotFound: a shard is not an index.
        IndexError_: the shards differ in dimension, metric or encoder spec.
        WriteError: ``DIR: <reason>``.
    """
    path = Path(path)
    if not shards:
        raise InputError(f"{path}: a sharded index needs at least one shard")
    if is_sharded(path) and not overwrite:
        raise InputError(f"{path}: already a sharded index (use overwrite to replace its manifest)")
    names = []
    for s in shards:
        p = Path(s).absolute()
        try:
            names.append(str(p.relative_to(path.absolute())))
        except ValueError:
            names.append(str(p))
    if len(set(names)) != len(names):
        raise InputError(f"{path}: a shard is named twice")
    first = Manifest.read(Path(shards[0]))
    m = ShardedManifest(path, tuple(names), first.dim, first.metric, dict(first.encoder), _space_of(first))
    manifests = {name: Manifest.read(m.shard_path(name)) for name in names}
    for name in names:
        check_shard(m, name, manifests[name])
    _check_disjoint(path, {name: m.shard_path(name) for name in names}, manifests)
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / SHARDED, m.to_json())
    except OSError as exc:
        raise WriteError(f"{path}: {os_error_reason(exc)}") from None
    return m


def _id_hashes(folder: Path, manifest: Manifest) -> np.ndarray:
    """The id hashes of a shard's objects (its segments' id tables; the id column where a segment has none)."""
    parts = []
    for seg in manifest.segments:
        table = idtable.load(folder / seg.ids.name) if seg.ids is not None else None
        if table is None:
            ids = pq.read_table(folder / seg.metadata.name, columns=["id"]).column("id").to_pylist()
            parts.append(idtable.hash_ids(ids))
        else:
            parts.append(np.asarray(table[:, 0]))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def _check_disjoint(path: Path, folders: dict, manifests: dict) -> None:
    """Shards hold different objects: an object in two shards would come back twice (once at distance 0 to itself).

    Raises:
        InputError: two shards share ids (how many, and which shards).
    """
    seen: dict[int, str] = {}
    for name, folder in folders.items():
        hashes = _id_hashes(Path(folder), manifests[name])
        shared = [h for h in hashes.tolist() if h in seen]
        if shared:
            raise InputError(f"{path}: shards {seen[shared[0]]} and {name} share {len(shared)} object id(s); a sharded "
                             "index needs each object in one shard (split overlapping regions by id first)")
        seen.update((h, name) for h in hashes.tolist())


def split_into_shards(path: str | os.PathLike, vectors: np.ndarray, metadata: pd.DataFrame, encoder_spec, n: int,
                      **create_kw) -> ShardedManifest:
    """A new sharded index of ``n`` shards (``path/shard-000`` ...) from vectors and their metadata rows.

    Rows go to shards in contiguous runs of about ``len / n``; ``create_kw`` goes to
    :func:`ulisse.index.create_index` for every shard (factory, metric, dtype...). The first shard's trained
    FAISS index (its whitening, its IVF quantizer) is every shard's, so distances compare across shards.
    """
    from ulisse.index import create_index

    if n < 1 or n > len(vectors):
        raise InputError(f"{n} shards for {len(vectors)} vectors")
    path = Path(path)
    bounds = np.linspace(0, len(vectors), n + 1).astype(int)
    dirs = []
    for i in range(n):
        lo, hi = bounds[i], bounds[i + 1]
        d = path / f"shard-{i:03d}"
        idx = create_index(d, vectors[lo:hi], metadata.iloc[lo:hi].reset_index(drop=True), encoder_spec,
                           device="cpu", **create_kw)
        if i == 0 and idx.manifest.trained is not None:
            import faiss

            trained = faiss.read_index(str(check_name(d, idx.manifest.trained.name)))
            create_kw = {**create_kw, "factory": idx.manifest.factory, "trained": trained}
        dirs.append(d)
    return create_sharded(path, dirs)


def shard_counts(sharded: ShardedManifest) -> dict[str, int]:
    """Objects per shard, from the shards' manifests."""
    return {name: Manifest.read(sharded.shard_path(name)).count for name in sharded.shards}


def add_to_shard(path: str | os.PathLike, vectors: np.ndarray, metadata: pd.DataFrame, *, shard: str | None = None,
                 wait: float = 0.0, history: dict | None = None) -> str:
    """Add vectors and their metadata rows to one shard (the smallest unless ``shard`` names one); its name.

    The add is the shard's own transaction (its writer lock, its generation): writers of
    different shards run at once, writers of one shard queue for ``wait`` seconds. Ids
    already in another shard are refused before anything is written (a best-effort check:
    two writers adding the same new id to two shards at the same instant are not caught).

    Raises:
        InputError: unknown shard; ids already in the sharded index.
        IndexBusy: the shard's writer lock is held after ``wait`` seconds.
        IndexError_: the shard no longer matches the sharded index's encoder, metric or dimension.
    """
    from ulisse.index import open_index

    sharded = read_sharded(path)
    if shard is None:
        counts = shard_counts(sharded)
        shard = min(sharded.shards, key=lambda s: (counts[s], s))
    elif shard not in sharded.shards:
        raise InputError(f"{path}: no shard {shard!r} (shards: {', '.join(sharded.shards)})")
    ids = metadata["id"].astype(str) if "id" in metadata else None
    for other in sharded.shards:
        index = open_index(sharded.shard_path(other), device="cpu")
        check_shard(sharded, other, index.manifest)
        if other == shard:
            target = index
        elif ids is not None:
            try:
                index._check_new_ids(ids)
            except InputError as exc:
                raise InputError(f"{exc} (shard {other} of {path})") from None
    target.add_vectors(vectors, metadata, history=history, wait=wait)
    return shard


def shard_generation(path: Path) -> int:
    """The generation a shard's manifest is at now (one small read: the cache key of a resident shard)."""
    try:
        return int(json.loads((Path(path) / MANIFEST).read_text()).get("generation", 0))
    except FileNotFoundError:
        raise IndexNotFound(f"{path}: no index here") from None


# -- answers of several shards, merged (indexes/dask_search.py gathers them) ------------------


@dataclass
class ShardedAnswer:
    """A sharded query's answer: the merged table (or arrays) and the shards that did not answer."""

    table: pd.DataFrame | None = None
    distances: np.ndarray | None = None
    ids: np.ndarray | None = None          # 1 x k object ids of a one-query answer ("" where fewer were found)
    shard_of: np.ndarray | None = None     # Q x k shard names
    rows: np.ndarray | None = None         # Q x k rows within their shard
    missing: dict[str, str] = field(default_factory=dict)
    prototype: str | None = None
    labels: list | None = None            # with label=: the classes of the table's rows
    label_counts: dict | None = None      # ... and of every object of the shards that answered (prototype left out)
    manifest: ShardedManifest | None = None
    rgb: dict = field(default_factory=dict)  # shard -> its RGB settings (FITS cutouts)
    prototype_cutout: tuple | None = None    # (shard, source) of the prototype

    @property
    def complete(self) -> bool:
        return not self.missing

    def missing_text(self) -> str:
        name = self.manifest.label if self.manifest else str
        return "; ".join(f"{name(s)} ({why})" for s, why in self.missing.items())

    def cutout(self, shard: str, source) -> np.ndarray | None:
        """The RGB cutout of an object of ``shard`` from its ``source`` (relative to the shard), or None."""
        from ulisse.cutouts import RGBConfig, read_cutout, source_path

        path = source_path(self.manifest.shard_path(shard), source) if self.manifest and shard else None
        try:
            return None if path is None else read_cutout(path, RGBConfig.from_dict(self.rgb.get(shard) or {})).image
        except UlisseError:
            return None


def merge_answers(names: Sequence[str], results: dict, nq: int, k: int, missing: dict) -> ShardedAnswer:
    """The k smallest exact distances over the shards that answered (ties: shard order, then rank)."""
    parts = [(n, results[n]) for n in names if n in results]
    if not parts:
        return ShardedAnswer(table=pd.DataFrame(columns=["rank", "id", "distance", "shard", "row"]),
                             distances=np.zeros((nq, 0), np.float32), missing=missing)
    D = np.concatenate([np.where(r[1] >= 0, r[0], np.inf) for _, r in parts], axis=1)
    I = np.concatenate([r[1] for _, r in parts], axis=1)
    S = np.concatenate([np.full(r[1].shape, j) for j, (_, r) in enumerate(parts)], axis=1)
    order = np.argsort(D, axis=1, kind="stable")[:, :k]
    D, I, S = (np.take_along_axis(a, order, axis=1) for a in (D, I, S))
    shard_names = np.array([n for n, _ in parts], dtype=object)[S]
    shard_names[I < 0] = ""
    answer = ShardedAnswer(distances=D, shard_of=shard_names, rows=I, missing=missing)
    if nq == 1:  # one query: the table with the neighbours' metadata, as the shards sent it
        metas = {n: r[2] for n, r in parts}
        pos = {n: {int(row): j for j, row in enumerate(r[1][0][r[1][0] >= 0])} for n, r in parts}
        rows_meta = [metas[s].iloc[pos[s][int(i)]] for s, i in zip(shard_names[0], I[0]) if i >= 0]
        meta = pd.DataFrame(rows_meta).reset_index(drop=True) if rows_meta else pd.DataFrame(columns=["id"])
        ok = I[0] >= 0
        table = pd.DataFrame({"rank": np.arange(1, ok.sum() + 1), "id": meta["id"].astype(str).to_numpy(),
                              "distance": D[0][ok], "shard": shard_names[0][ok], "row": I[0][ok]})
        others = meta.drop(columns=[c for c in ("id", "row") if c in meta], errors="ignore").reset_index(drop=True)
        answer.table = pd.concat([table, others], axis=1)
        answer.ids = np.array([list(table["id"]) + [""] * (k - len(table))], dtype=object)
        if all(r[3] is not None for _, r in parts):  # label=: the rows' classes, and every object's counted
            found = {n: r[3]["found"] for n, r in parts}
            answer.labels = [found[s][pos[s][int(i)]] for s, i in zip(shard_names[0], I[0]) if i >= 0]
            answer.label_counts = {}
            for _, r in parts:
                for c, n in r[3]["counts"].items():
                    answer.label_counts[c] = answer.label_counts.get(c, 0) + int(n)
    return answer
