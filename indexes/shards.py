"""A sharded index: a directory naming several ordinary index directories (its shards).

::

    DIR/
      sharded.json      {"format": "ulisse-sharded", "version": 1, "dim", "metric", "encoder",
                         "shards": ["shard-000", ...]}   (paths relative to DIR, or absolute)
      shard-000/        an ordinary ulisse index (manifest + segments), its own writer lock
      shard-001/        ...

Every shard has the same encoder spec, dimension and metric (checked when the sharded
index is made, and again by every process that opens a shard: :func:`check_shard`), so
distances from different shards compare and their top-k merge exactly. A shard is the
unit a Dask worker keeps resident (:mod:`.dask_search`) and the unit of writing: an add
goes to one shard under that shard's own transaction (:func:`add_to_shard`), so the
single-writer guarantee of :mod:`.transaction` holds per shard and writers of different
shards never wait for each other.

Example:
    >>> from ulisse.indexes import shards
    >>> shards.create_sharded("survey", ["survey/shard-000", "survey/shard-001"])   # doctest: +SKIP
    >>> shards.add_to_shard("survey", vectors, rows, shard="shard-001")             # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ulisse._io import WriteError, atomic_write, os_error_reason
from ulisse.errors import IndexError_, IndexNotFound, InputError

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
        raise IndexError_(f"{sharded.path}: shard {name} searches another space ({_space_text(manifest)}) than the "
                          f"sharded index's first shard: distances would not compare (build the shards with one "
                          f"trained index, as split_into_shards does, or with --whiten none)")


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
    for name in names:
        check_shard(m, name, Manifest.read(m.shard_path(name)))
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / SHARDED, m.to_json())
    except OSError as exc:
        raise WriteError(f"{path}: {os_error_reason(exc)}") from None
    return m


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
