"""The manifest of an index directory, typed: what built the index and which files make each generation.

``manifest.json`` is the commit point of every write (:mod:`.transaction`): a
generation is the manifest plus the files it names. :class:`Manifest` is
immutable; a write makes a new one (:meth:`Manifest.replace`) and commits it.

Format 2 (current) lists segments; format 1 (``files``: one FAISS file and one
Parquet file) opens read-only until upgraded. Keys the core does not know
(``cutout_geometry``, a plugin's ``manifest_extra``) are kept in :attr:`Manifest.extra`
and written back unchanged.

Example:
    >>> m = Manifest.read("indexes/hdf-demo")                     # doctest: +SKIP
    >>> m.generation, m.factory, m.count, len(m.segments)         # doctest: +SKIP
    >>> m.to_json()                                               # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ulisse._io import path_inside
from ulisse.errors import IndexError_, IndexNotFound, InputError

MANIFEST = "manifest.json"
FORMAT = "ulisse-index"
FORMAT_VERSION = 2
SEGMENT_ROLES = ("vectors", "metadata", "faiss")


def check_name(path: Path, name) -> Path:
    """``path / name`` for a plain file name inside the index directory; IndexError_ otherwise."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise IndexError_(f"{path}: the manifest names {name!r}, not a plain file name in the index directory")
    try:
        return path_inside(path, name)
    except InputError as exc:
        raise IndexError_(f"{path}: manifest {exc}") from None


@dataclass(frozen=True)
class FileEntry:
    """One file of a generation: its name in the directory, size and sha256 (and, for a FAISS part, its kind)."""

    name: str
    bytes: int
    sha256: str
    kind: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping) -> "FileEntry":
        return cls(d["name"], int(d["bytes"]), str(d["sha256"]), d.get("kind"))

    def to_dict(self) -> dict:
        out = {"name": self.name, "bytes": self.bytes, "sha256": self.sha256}
        if self.kind is not None:
            out["kind"] = self.kind
        return out


@dataclass(frozen=True)
class SegmentEntry:
    """One segment: rows ``start .. start + count``, its raw vectors, metadata and (unless Flat) FAISS part."""

    id: str
    start: int
    count: int
    vectors: FileEntry
    metadata: FileEntry
    faiss: FileEntry | None = None
    dtype: str = "float32"
    merged: tuple[str, ...] = ()  # a compaction's segment: the vector sha256s of the added segments it holds, in order
    ids: FileEntry | None = None  # the sorted id-hash table (indexes/idtable.py); None in segments written before it

    @classmethod
    def from_dict(cls, d: Mapping) -> "SegmentEntry":
        return cls(str(d["id"]), int(d.get("start", 0)), int(d["count"]), FileEntry.from_dict(d["vectors"]),
                   FileEntry.from_dict(d["metadata"]), FileEntry.from_dict(d["faiss"]) if d.get("faiss") else None,
                   str(d.get("dtype", "float32")), tuple(str(x) for x in d.get("merged", ())),
                   FileEntry.from_dict(d["ids"]) if d.get("ids") else None)

    def to_dict(self) -> dict:
        d = {"id": self.id, "start": self.start, "count": self.count, "dtype": self.dtype,
             "vectors": self.vectors.to_dict(), "metadata": self.metadata.to_dict(),
             "faiss": self.faiss.to_dict() if self.faiss else None}
        if self.merged:
            d["merged"] = list(self.merged)
        if self.ids:
            d["ids"] = self.ids.to_dict()
        return d

    @property
    def content(self) -> tuple[str, ...]:
        """What the segment's vectors are, as the sha256s of the segments adds wrote (a compaction keeps them)."""
        return self.merged or (self.vectors.sha256,)

    @property
    def files(self) -> list[FileEntry]:
        return [e for e in (self.vectors, self.metadata, self.faiss, self.ids) if e is not None]


CORE_KEYS = ("format", "format_version", "generation", "factory", "metric", "dim", "count", "dtype", "faiss_kind",
         "trained", "segments", "search", "auto", "encoder", "rgb", "created", "updated", "versions", "history",
         "files")


@dataclass(frozen=True)
class Manifest(Mapping):
    """An index generation's manifest.

    Attributes:
        factory, metric, dim, count: the FAISS factory string, ``L2``/``IP``/``cosine``, the vectors' dimension,
            the number of objects.
        generation: increases by one with every committed write.
        format_version: 2 (segments), or 1 (read-only until ``ulisse index upgrade``).
        dtype: how raw vectors are stored (``float32`` or ``float16``).
        faiss_kind: ``flat``, ``ivf`` or ``index`` (see :mod:`.parts`).
        trained: the trained, empty FAISS index shared by the segments (IVF, PQ...), or None.
        segments: the segments, in row order.
        search: default search parameters (``nprobe``, ``nlist``, ``efSearch``).
        auto: how ``--factory auto`` chose, or None.
        encoder, rgb: the encoder spec and RGB settings, as their ``to_dict()``.
        history: one entry per write (``action``, ``time``, ``count``...).
        files: format 1 only: ``vectors`` and ``metadata`` files.
        extra: keys the core does not know (``cutout_geometry``...), kept as they are.

    The manifest also reads as the JSON mapping written to disk (``manifest["factory"]``,
    ``manifest.get("generation")``), for code written against that form; the core uses the attributes.
    """

    factory: str
    dim: int
    count: int
    metric: str = "L2"
    generation: int = 0
    format_version: int = FORMAT_VERSION
    dtype: str = "float32"
    faiss_kind: str = "flat"
    trained: FileEntry | None = None
    segments: tuple[SegmentEntry, ...] = ()
    search: dict = field(default_factory=dict)
    auto: dict | None = None
    encoder: dict = field(default_factory=dict)
    rgb: dict = field(default_factory=dict)
    created: str | None = None
    updated: str | None = None
    versions: dict = field(default_factory=dict)
    history: tuple[dict, ...] = ()
    files: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    # -- JSON form ---------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping) -> "Manifest":
        """A manifest from its JSON form (as read from ``manifest.json``).

        Raises:
            KeyError, TypeError, ValueError: a required key missing or of the wrong type.
        """
        if isinstance(d, Manifest):
            return d
        d = copy.deepcopy(dict(d))
        return cls(
            factory=str(d["factory"]), dim=int(d["dim"]), count=int(d["count"]), metric=str(d.get("metric", "L2")),
            generation=int(d.get("generation", 0)), format_version=int(d.get("format_version", 1)),
            dtype=str(d.get("dtype", "float32")), faiss_kind=str(d.get("faiss_kind", "flat")),
            trained=FileEntry.from_dict(d["trained"]) if d.get("trained") else None,
            segments=tuple(SegmentEntry.from_dict(s) for s in d.get("segments") or []),
            search=dict(d.get("search") or {}), auto=d.get("auto"), encoder=dict(d.get("encoder") or {}),
            rgb=dict(d.get("rgb") or {}), created=d.get("created"), updated=d.get("updated"),
            versions=dict(d.get("versions") or {}), history=tuple(d.get("history") or ()),
            files={role: FileEntry.from_dict(e) for role, e in (d.get("files") or {}).items() if e},
            extra={k: v for k, v in d.items() if k not in CORE_KEYS})

    def to_dict(self) -> dict:
        """The JSON form written to ``manifest.json`` (a new dict each call)."""
        out = {"format": FORMAT, "format_version": self.format_version, "generation": self.generation,
               "factory": self.factory, "metric": self.metric, "dim": self.dim, "count": self.count,
               "encoder": copy.deepcopy(self.encoder), "rgb": copy.deepcopy(self.rgb),
               "versions": copy.deepcopy(self.versions), "history": copy.deepcopy(list(self.history))}
        if self.is_v1:  # format 1 as it was written: its files, and search parameters where it had them
            out["files"] = {role: e.to_dict() for role, e in self.files.items()}
            out.update({"search": dict(self.search)} if self.search else {})
        else:
            out.update(dtype=self.dtype, faiss_kind=self.faiss_kind, segments=[s.to_dict() for s in self.segments],
                       trained=self.trained.to_dict() if self.trained else None, search=dict(self.search),
                       auto=copy.deepcopy(self.auto))
        out.update({k: v for k, v in (("created", self.created), ("updated", self.updated)) if v is not None})
        out.update(copy.deepcopy(self.extra))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, default=str) + "\n"

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Manifest":
        """The manifest of the index at ``path`` (format 1 or 2), its file names checked.

        Raises:
            IndexNotFound: no directory, or no manifest in it.
            IndexError_: not a ulisse manifest, a newer format, a key missing, or file names outside the directory.
        """
        path = Path(path)
        if not path.is_dir():
            raise IndexNotFound(f"{path}: no index here (not a directory)")
        mf = path / MANIFEST
        if not mf.is_file():
            if (path / "sharded.json").is_file():  # a sharded index (indexes/shards.py): say which verbs take it
                raise IndexNotFound(_not_one_index(path))
            raise IndexNotFound(f"{path}: no index here (no {MANIFEST})")
        try:
            raw = json.loads(mf.read_text())
        except (OSError, ValueError) as exc:
            raise IndexError_(f"{mf}: unreadable manifest ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise IndexError_(f"{mf}: not a ulisse index manifest")
        if raw.get("format_version", 0) > FORMAT_VERSION:
            raise IndexError_(f"{mf}: index format {raw['format_version']} is newer than this ulisse reads "
                              f"({FORMAT_VERSION})")
        try:
            manifest = cls.from_dict(raw)
        except KeyError as exc:
            raise IndexError_(f"{mf}: unreadable manifest (no {exc.args[0]!r})") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise IndexError_(f"{mf}: unreadable manifest ({exc})") from None
        for name in manifest.file_names():
            check_name(path, name)
        return manifest

    def replace(self, **changes) -> "Manifest":
        """A copy with ``changes`` (field names) applied."""
        return dataclasses.replace(self, **changes)

    # -- what the files are ----------------------------------------------------------

    @property
    def is_v1(self) -> bool:
        return self.format_version < 2

    def file_names(self) -> list[str]:
        """Every file name this manifest refers to."""
        names = [e.name for e in self.files.values()] if self.is_v1 else []
        if self.trained:
            names.append(self.trained.name)
        for seg in self.segments:
            names += [e.name for e in seg.files]
        return names

    def file_entries(self) -> list[FileEntry]:
        """Every file of the generation, with its recorded size and sha256 (what ``verify`` re-hashes)."""
        if self.is_v1:
            return list(self.files.values())
        return ([self.trained] if self.trained else []) + [e for seg in self.segments for e in seg.files]

    @property
    def fingerprint(self) -> str:
        """Changes whenever the vectors change (an add, an upgrade); the same across processes.

        The sha256 of the count, the metric and the vector files' sha256 sums recorded here (nothing is read).
        Derived columns and plugins' artefacts record it to know when they are stale; it does not change
        when only the manifest's other fields (history, search defaults) change, nor with a compaction, which
        keeps every vector and its row (a merged segment records the sums of the segments it holds).
        """
        h = hashlib.sha256(f"{self.count}|{self.metric}|".encode())
        for p in self.content:
            h.update(p.encode())
        return h.hexdigest()

    @property
    def content(self) -> tuple[str, ...]:
        """What the vectors are, in row order: the sha256s of the vector files the adds wrote (a compaction keeps
        them). An add appends to it, so the content of the index before an add is a prefix of the content after:
        what a derived set that can be brought up to date (``DerivedColumns.update``) checks."""
        if self.is_v1:
            return (self.files["vectors"].sha256 if "vectors" in self.files else "",)
        return tuple(sha for seg in self.segments for sha in seg.content)

    # -- the JSON form as a read-only mapping ------------------------------------------

    @cached_property
    def _json(self) -> dict:
        return self.to_dict()

    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def __iter__(self):
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)


def _not_one_index(path: Path) -> str:
    """What a verb that takes one index says of a sharded index directory (``sharded.json``, indexes/shards.py)."""
    try:
        names = [str(n) for n in json.loads((path / "sharded.json").read_text())["shards"]]
        which = f"{len(names)} shard(s): " + ", ".join(os.path.relpath(n, path.absolute()) if os.path.isabs(n) else n
                                                       for n in names)
    except (OSError, ValueError, KeyError, TypeError):
        which = "its sharded.json unreadable"
    return (f"{path}: a sharded index ({which}), not one index: 'ulisse query {path} --id ID --dask local:N' and "
            f"'ulisse ui --index {path} --dask ...' search it; other verbs take one of its shards")
