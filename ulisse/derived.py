"""Derived columns: per-object values computed from an index by plugins, stored and kept fresh by the core.

A set of derived columns (``register_derived_columns``) is stored in the index
directory as ``derived/NAME.parquet`` (one row per object, row order) beside
``derived/NAME.json`` (the vectors' fingerprint it was computed from, the
options, the columns, when). When the index changes (an add), the fingerprint
changes and the set is recomputed with the same options the next time it is read;
a set whose values depend on each object alone (``per_object``) computes only the
objects added since it was stored, and a set that can be brought up to date (``update``:
kNN anomaly scores, predictions from the vectors) is updated from its stored rows and the
objects added. (A compaction keeps the fingerprint: nothing is stale.)
Stored sets are joined into every result table (:meth:`DerivedMixin.derived_table`).
A set is written through the index's transaction (:func:`ulisse.indexes.transaction.transaction`):
under the writer lock, both files staged, then committed together; a failed write leaves
the previous set and no partial file.

Example:
    >>> index = ulisse.open_index("ulisse-demo/hdf")                  # doctest: +SKIP
    >>> index.derived("anomaly", k=10)["anomaly_kth"].nlargest(5)      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import pandas as pd

from ulisse.indexes.lock import IndexBusy
from ulisse.indexes.store import SIDE_DIR
from ulisse.indexes.transaction import SIDE_WAIT, transaction

from ._io import read_parquet, safe_name
from .errors import InputError

LOG = logging.getLogger(__name__)

DERIVED_DIR = SIDE_DIR
CHECKPOINT_SECONDS = 60.0  # a per-object set being computed is stored this often (what is done so far)
JOIN_COMPUTE_MAX = 200  # objects: a result table computes a stale per-object set's new rows up to this many (statmorph: about a minute)
RESERVED = ("row", "id", "rank", "distance")


def join_objects(head: pd.DataFrame, objects: pd.DataFrame) -> pd.DataFrame:
    """A result table: ``head`` (rank, id, the verb's own scores...) and then the columns of ``objects``
    (:meth:`DerivedMixin.object_rows` of the same rows) that ``head`` does not have."""
    drop = [c for c in objects.columns if c in head.columns]
    return pd.concat([head.reset_index(drop=True), objects.drop(columns=drop).reset_index(drop=True)], axis=1)


class DerivedMixin:
    """Derived-column storage for :class:`ulisse.Index`.

    The host class provides ``path``, ``fingerprint`` (changes whenever the vectors change; defined once,
    by the manifest: :attr:`ulisse.indexes.manifest.Manifest.fingerprint`), ``metadata_columns``,
    ``metadata_column`` and ``__len__``.
    """

    @property
    def derived_dir(self) -> Path:
        """``DIR/derived/``: where derived columns and plugins' artefacts live (created on first use)."""
        d = Path(self.path) / DERIVED_DIR
        d.mkdir(exist_ok=True)
        return d

    # -- one set -----------------------------------------------------------------

    def _derived_paths(self, name: str) -> tuple[Path, Path]:
        safe_name(name, "derived column set")
        return self.derived_dir / f"{name}.parquet", self.derived_dir / f"{name}.json"

    def derived_info(self, name: str) -> dict | None:
        """What is stored of a set (fingerprint, options, columns, computed), or None."""
        _, meta = self._derived_paths(name)
        if not meta.is_file():
            return None
        try:
            return json.loads(meta.read_text())
        except (OSError, ValueError):
            return None

    def _derived_state(self, name: str) -> str | None:
        """The registered provider's ``state(index)`` for a set (None: no provider, or no state beyond the vectors)."""
        from .registry import derived_columns

        provider = derived_columns().get(name)
        if provider is None or provider.state is None:
            return None
        return str(provider.state(self))

    def derived_is_fresh(self, name: str) -> bool:
        info = self.derived_info(name)
        return (bool(info) and info.get("fingerprint") == self.fingerprint and info.get("count") == len(self)
                and info.get("state") == self._derived_state(name))

    def _objects_digest(self, count: int) -> str:
        """sha256 of the ids and cutouts (``source``) of the first ``count`` objects: what a per-object set's
        stored rows stand for."""
        h = hashlib.sha256()
        ids = self.ids[:count]
        sources = (self.metadata_column("source").iloc[:count].astype(str).tolist()
                   if "source" in self.metadata_columns else [""] * len(ids))
        for object_id, source in zip(ids, sources):
            h.update(f"{object_id}\t{source}\n".encode())
        return h.hexdigest()

    def derived_pending(self, name: str, **options) -> range:
        """The rows a read of the set ``name`` would compute: none when it is stored and fresh; for a
        ``per_object`` set stored with the same state and options, the objects added since (the stored rows
        still stand for the same ids and cutouts); every row otherwise."""
        from .registry import derived_columns

        n = len(self)
        if self.derived_is_fresh(name) and not options:
            return range(n, n)
        provider = derived_columns().get(name)
        info = self.derived_info(name)
        if provider is None or not (provider.per_object or provider.update) or not info:
            return range(n)
        stored_opts = info.get("options", {})
        count = info.get("count")
        if ({**provider.options, **stored_opts, **options} != {**provider.options, **stored_opts}
                or info.get("state") != self._derived_state(name) or not isinstance(count, int)
                or not 0 < count <= n):
            return range(n)
        if provider.per_object:
            same = info.get("objects") == self._objects_digest(count)
        else:  # an update: the vectors stored then must be the first ones now (the index grew by adds)
            vectors, content = info.get("vectors"), self.manifest.content
            same = isinstance(vectors, list) and 0 < len(vectors) <= len(content) and tuple(vectors) == content[:len(vectors)]
        return range(count, n) if same else range(n)

    def derived_kept(self, name: str) -> pd.DataFrame:
        """The stored rows of the set ``name`` that still hold, computing nothing: every row when fresh, the
        objects stored before an add for a ``per_object`` set (:meth:`derived_pending`), else none. (Of a set with
        ``update``, the stored rows of the objects there were, which the update may change.)"""
        pending = self.derived_pending(name)
        try:
            return self._read_kept(name, pending.start)
        except Exception:
            return pd.DataFrame()

    def _read_kept(self, name: str, count: int) -> pd.DataFrame:
        """The stored table of ``name``, which must hold ``count`` rows (another writer may have stored another
        since its record was read). Raises when it does not, or cannot be read."""
        if count == 0:
            return pd.DataFrame()
        kept = read_parquet(self._derived_paths(name)[0])
        if len(kept) != count:
            raise ValueError(f"{len(kept)} rows stored, {count} recorded")
        return kept

    def save_derived(self, name: str, table: pd.DataFrame, options: dict | None = None, *,
                     wait: float = SIDE_WAIT) -> pd.DataFrame:
        """Store a set computed outside :meth:`derived` (one row per object, row order), in one transaction.

        Raises:
            InputError: the table does not fit the index.
            IndexBusy: another writer holds the index's lock after ``wait`` seconds.
            WriteError: ``FILE: <reason>``; the set stored before stays as it was.
        """
        return self._store_derived(name, _check_table(name, table, len(self), self.metadata_columns), options, wait)

    def _store_derived(self, name: str, table: pd.DataFrame, options: dict | None, wait: float) -> pd.DataFrame:
        """Write a checked table: every object's rows, or (a per-object set's checkpoint) the first ones'."""
        data, meta = self._derived_paths(name)
        record = {
            "name": name, "fingerprint": self.fingerprint, "count": len(table), "options": options or {},
            "state": self._derived_state(name),
            "columns": list(table.columns), "computed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        provider = _provider(name)
        if provider is not None and provider.per_object:
            record["objects"] = self._objects_digest(len(table))
        elif provider is not None and provider.update is not None and len(table) == len(self):
            record["vectors"] = list(self.manifest.content)
        if provider is not None and provider.describe is not None:
            try:
                record["column_notes"] = {c: n for c, n in dict(provider.describe(self)).items() if c in table.columns}
            except Exception as exc:  # the units are a courtesy of the exports: never a reason not to store
                LOG.warning("%s: the description of derived columns %r failed (%s)", self.path, name, exc)
        info = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
        with transaction(self.path, wait) as txn:
            txn.stage(data, lambda p: table.to_parquet(p, index=False))
            txn.stage(meta, info)
            txn.commit()
        return table

    def derived(self, name: str, recompute: bool = False, **options) -> pd.DataFrame:
        """The derived columns ``name`` for every object (row order), computing or refreshing them as needed.

        Options given here replace the stored ones (and force a recompute when they differ).

        Raises:
            InputError: no plugin registers ``name``, or its result does not fit the index.
        """
        from .registry import derived_columns

        providers = derived_columns()
        if name not in providers:
            known = ", ".join(sorted(providers)) or "none"
            raise InputError(f"derived columns {name!r}: no plugin registers them (known: {known})")
        provider = providers[name]
        info = self.derived_info(name)
        stored_opts = (info or {}).get("options", {})
        opts = {**provider.options, **stored_opts, **options}
        fresh = self.derived_is_fresh(name) and not recompute and opts == {**provider.options, **stored_opts}
        data, _ = self._derived_paths(name)
        if fresh:
            try:
                return read_parquet(data)
            except Exception as exc:  # a damaged file is recomputed, with a note
                LOG.warning("derived columns %s unreadable (%s); recomputing", name, exc)
        pending = range(len(self)) if recompute or info is None else self.derived_pending(name, **options)
        kept = None
        if 0 < pending.start:  # a per-object set or an update: compute the objects it lacks from the stored rows
            try:
                kept = self._read_kept(name, pending.start)
            except Exception as exc:
                LOG.warning("derived columns %s: the stored rows cannot be kept (%s); recomputing", name, exc)
                kept, pending = None, range(len(self))
            else:
                LOG.info("derived columns %s: %d of %d objects to compute (the others are stored)", name,
                         len(pending), len(self))
        elif info is not None and not recompute:
            LOG.info("derived columns %s are stale (the index changed); recomputing", name)
        if provider.update is not None and kept is not None:
            table = _check_table(name, provider.update(self, kept.reset_index(drop=True), pending, **opts), len(self),
                                 self.metadata_columns)
        elif not provider.per_object:
            table = provider.compute(self, **opts)
        elif len(pending) or kept is None:
            added = provider.compute(self, rows=pending, checkpoint=self._checkpoint(name, kept, opts), **opts)
            added = _check_table(name, added, len(pending), self.metadata_columns, asked=True)
            table = added if kept is None else pd.concat([kept.reset_index(drop=True), added], ignore_index=True)
        else:  # nothing to compute (the vectors changed, not the objects): stored again under the new fingerprint
            table = kept
        try:
            return self.save_derived(name, table, opts)
        except IndexBusy as exc:  # a long write holds the index: answer now, store another time
            LOG.warning("derived columns %s computed but not stored (%s)", name, exc)
            return _check_table(name, table, len(self), self.metadata_columns)

    def _checkpoint(self, name: str, kept: pd.DataFrame | None, options: dict):
        """For a per-object set's ``compute``: ``checkpoint(part)``, ``part`` the rows computed so far (in order;
        a table, or a function that makes it, called only when a store is due), stores the rows kept and ``part``
        at most every :data:`CHECKPOINT_SECONDS`, so that a computation stopped half-way (a kill, a crash, a
        closed server) resumes where it was. Cheap to call after every chunk."""
        last = [time.monotonic()]

        def checkpoint(part) -> None:
            if time.monotonic() - last[0] < CHECKPOINT_SECONDS:
                return
            part = part() if callable(part) else part
            if not len(part):
                return
            table = part if kept is None else pd.concat([kept.reset_index(drop=True), part], ignore_index=True)
            if len(table) >= len(self):
                return  # the whole set: stored once, at the end
            try:
                self._store_derived(name, table.reset_index(drop=True), options, wait=0.0)
                LOG.debug("derived columns %s: %d of %d objects stored so far", name, len(table), len(self))
            except Exception as exc:  # another writer, a full disk: the computation goes on, stored at the end
                LOG.debug("derived columns %s: checkpoint not stored (%s)", name, exc)
            last[0] = time.monotonic()

        return checkpoint

    def derived_status(self, name: str) -> str:
        """One line on a stored set for ``ulisse index info``: its options, how many objects it holds, and what
        its next read costs (nothing, the objects added since, or every object)."""
        from .registry import derived_columns

        info = self.derived_info(name) or {}
        options = ", ".join(f"{k} {v}" for k, v in sorted(info.get("options", {}).items()))
        head = f"{name}{f' ({options})' if options else ''}: {info.get('count', '?')} objects"
        provider = derived_columns().get(name)
        if self.derived_is_fresh(name):
            return f"{head}, up to date (computed {info.get('computed', '?')})"
        if provider is None:
            return f"{head}, stale, and no plugin computes it (left out of results)"
        pending = self.derived_pending(name)
        if pending.start:
            how = "those computed" if provider.per_object else "the set brought up to date"
            return f"{head} stored, {len(pending)} added since ({how} on the next read)"
        return f"{head} stored, stale (every object computed again on the next read)"

    # -- all sets ------------------------------------------------------------------

    def derived_names(self) -> list[str]:
        """Names of the sets stored with this index."""
        d = Path(self.path) / DERIVED_DIR
        if not d.is_dir():
            return []
        return sorted(p.stem for p in d.glob("*.json") if (d / f"{p.stem}.parquet").is_file())

    def derived_table(self, names: list[str] | None = None) -> pd.DataFrame:
        """Every stored set of derived columns joined side by side (one row per object, row order).

        Stale sets are recomputed when their plugin is present, and left out with a note otherwise; a
        per-object set with more than :data:`JOIN_COMPUTE_MAX` objects still to compute (the index's
        ``join_compute_max`` if set: the web UI's is 0, its pages measure in the background) keeps its stored
        rows and leaves the others blank, with a note.
        """
        from .registry import derived_columns

        registered = derived_columns()
        parts = []
        for name in (self.derived_names() if names is None else names):
            if self.derived_is_fresh(name):
                try:
                    parts.append(read_parquet(self._derived_paths(name)[0]))
                    continue
                except Exception:
                    pass
            pending = self.derived_pending(name) if name in registered and registered[name].per_object else None
            if pending is not None and len(pending) > getattr(self, "join_compute_max", JOIN_COMPUTE_MAX):
                try:
                    kept = self._read_kept(name, pending.start)
                except Exception:
                    kept = pd.DataFrame()
                if len(kept):  # hours of work are not started by a query: the new objects are blank here
                    LOG.warning("derived columns %s: %d of %d objects are not computed yet and blank here "
                                "(index.derived(%r), or the plugin's command, computes them)", name, len(pending),
                                len(self), name)
                    parts.append(kept.reindex(pd.RangeIndex(len(self))))
                    continue
            if name in registered:
                parts.append(self.derived(name))
            else:
                LOG.warning("derived columns %s are stale and no plugin can recompute them; left out", name)
        if not parts:
            return pd.DataFrame(index=pd.RangeIndex(len(self)))
        return pd.concat([p.reset_index(drop=True) for p in parts], axis=1)

    # -- in results and filters ------------------------------------------------------

    def _cached_derived_table(self) -> pd.DataFrame:
        key = (self.fingerprint, tuple((n, self._derived_state(n), (self.derived_info(n) or {}).get("count"))
                                       for n in self.derived_names()))
        cache = getattr(self, "_derived_cache", None)
        if cache is None or cache[0] != key:
            cache = (key, self.derived_table())
            self._derived_cache = cache
        return cache[1]

    def derived_rows(self, rows) -> pd.DataFrame:
        """The stored derived columns of the objects at ``rows`` (in that order)."""
        table = self._cached_derived_table()
        if table.shape[1] == 0:
            return pd.DataFrame(index=pd.RangeIndex(len(rows)))
        return table.iloc[list(rows)].reset_index(drop=True)

    def object_rows(self, rows) -> pd.DataFrame:
        """What every result table shows of the objects at ``rows`` (in that order): their metadata (``id``
        first), then their stored derived columns (anomaly scores, morphology, head predictions...)."""
        meta = self.metadata_rows(rows).reset_index(drop=True)
        derived = self.derived_rows(rows)
        return pd.concat([meta, derived.drop(columns=[c for c in derived.columns if c in meta.columns])], axis=1)

    def _compute_named_sets(self, names) -> None:
        """Compute (and store) the registered sets, not stored yet, that declare one of ``names`` as a column."""
        from .registry import derived_columns

        stored = set(self.derived_names())
        for provider in derived_columns().values():
            if provider.name not in stored and set(provider.columns) & set(names) - set(self.metadata_columns):
                LOG.info("computing the derived columns %s for --where", provider.name)
                self.derived(provider.name)

    def where_mask(self, where: str | None):
        """Boolean mask over rows of the objects matching a ``--where`` expression (None when no filter).

        The expression may name metadata columns and stored derived columns.

        Raises:
            InputError: the expression does not parse, or names an unknown column.
        """
        if where is None:
            return None
        from .filters import parse_where

        parsed = parse_where(where)
        self._compute_named_sets(parsed.columns)
        derived = self._cached_derived_table()
        meta_cols = self.metadata_columns
        # only the columns the filter names are read (not the whole metadata table)
        columns = {c: self.metadata_column(c).reset_index(drop=True) for c in parsed.columns if c in meta_cols}
        columns.update({c: derived[c].reset_index(drop=True) for c in parsed.columns
                        if c not in columns and c in derived.columns})
        missing = [c for c in parsed.columns if c not in columns]
        if missing:
            known = list(meta_cols) + [c for c in derived.columns if c not in meta_cols]
            raise InputError(f"where {where!r}: no column {missing[0]!r} (columns: {', '.join(map(str, known))})")
        return parsed.mask(pd.DataFrame(columns, index=pd.RangeIndex(len(self))))


def _provider(name: str):
    from .registry import derived_columns

    return derived_columns().get(name)


def _check_table(name: str, table, n: int, metadata_columns, asked: bool = False) -> pd.DataFrame:
    """``table`` as a set's rows: a DataFrame of ``n`` rows (every object, or the ``n`` rows ``asked`` for)."""
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"derived columns {name!r}: compute() must return a pandas DataFrame")
    if len(table) != n:
        raise InputError(f"derived columns {name!r}: {len(table)} rows for "
                         + (f"the {n} rows asked for" if asked else f"an index of {n} objects"))
    clash = [c for c in table.columns if c in RESERVED or c in set(metadata_columns)]
    if clash:
        raise InputError(f"derived columns {name!r}: column {clash[0]!r} clashes with the index's own columns")
    return table.reset_index(drop=True)
