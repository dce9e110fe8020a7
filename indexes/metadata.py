"""The metadata of an index's segments, read by the piece: what a query needs, not the whole table.

Each segment keeps its metadata in a Parquet file (one row per vector, row order).
Files are written in row groups of :data:`ROW_GROUP` rows, so the rows of a few
neighbours are read from a few row groups, and a lookup by id binary-searches the
segments' id-hash tables (:mod:`.idtable`), reading the ``id`` column of one row group to
confirm; segments without a table have their ``id`` column read alone. The whole table is
read only when something asks for it (:meth:`SegmentMetadata.table`: ``--where``, exports of
everything, the UI grid).

Example:
    >>> meta = SegmentMetadata([(0, 10, "seg-a.metadata.parquet")])   # doctest: +SKIP
    >>> meta.find("obj-7"), meta.rows([7, 2])                         # doctest: +SKIP
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import pandas as pd

from . import idtable

ROW_GROUP = 8192
EMPTY_COLUMNS = ("row", "id", "ra", "dec", "source")
OPEN_AT_ONCE = 256  # file handles held per open index (one per segment); compact indexes with more segments


def write_parquet(table: pd.DataFrame, path) -> None:
    """Write a metadata table in row groups of :data:`ROW_GROUP` rows (what :meth:`SegmentMetadata.rows` reads)."""
    table.to_parquet(path, index=False, row_group_size=ROW_GROUP)


class SegmentMetadata:
    """The metadata of one generation: ``(start, count, parquet path)`` per segment, read lazily and cached.

    Raises ``ValueError`` when a file holds a number of rows other than its segment's count
    (the caller turns it into its own error).
    """

    def __init__(self, parts: list[tuple[int, int, Path]], id_tables: list | None = None):
        self.parts = [(int(s), int(c), Path(p)) for s, c, p in parts]
        self._id_table_paths = list(id_tables or [None] * len(self.parts))
        self._id_tables: dict[int, object] = {}
        self._id_groups: dict[tuple[int, int], object] = {}  # id columns of the last row groups read
        self.starts = [s for s, _, _ in self.parts]
        self.count = sum(c for _, c, _ in self.parts)
        self._files: dict[int, object] = {}
        self._ids = None
        self._row_of: dict | None = None
        self._lookups = 0
        self._table: pd.DataFrame | None = None
        self._column_cache: dict[str, pd.Series] = {}  # a generation's files never change: columns read once
        # Open the files now (footers only): a reader keeps its generation's metadata even when a
        # compaction deletes the files afterwards. Past OPEN_AT_ONCE segments, files open on first use.
        for i in range(min(len(self.parts), OPEN_AT_ONCE)):
            self._file(i)

    # -- files -----------------------------------------------------------------

    def _file(self, i: int):
        import pyarrow.parquet as pq

        if i not in self._files:
            f = pq.ParquetFile(self.parts[i][2])
            if f.metadata.num_rows != self.parts[i][1]:
                raise ValueError(f"{self.parts[i][2].name} holds {f.metadata.num_rows} rows, "
                                 f"the manifest says {self.parts[i][1]}")
            self._files[i] = f
        return self._files[i]

    def _names(self, i: int) -> list[str]:
        return [c for c in self._file(i).schema_arrow.names if not c.startswith("__index_level")]

    @property
    def columns(self) -> list[str]:
        """The column names: every segment's, in order of appearance (from the files' footers, not their rows).

        Segments may differ (an add with a catalogue column the first batch lacked); rows of a
        segment without a column hold a missing value there, as in the whole table.
        """
        if self._table is not None:
            return list(self._table.columns)
        if not self.parts:
            return list(EMPTY_COLUMNS)
        names: dict[str, None] = {}
        for i in range(len(self.parts)):
            names.update(dict.fromkeys(self._names(i)))
        return list(names)

    # -- the whole table ---------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """Every row (read once, then cached)."""
        if self._table is None:
            if not self.parts:
                self._table = pd.DataFrame(columns=list(EMPTY_COLUMNS))
            else:
                tables = [self._file(i).read().to_pandas() for i in range(len(self.parts))]
                self._table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
        return self._table

    def set_table(self, table: pd.DataFrame) -> None:
        self._table = table
        self._column_cache = {}
        self._ids = None
        self._row_of = None

    # -- columns and rows ----------------------------------------------------------

    def column(self, name: str) -> pd.Series:
        """One column over every row, read alone (then kept)."""
        if self._table is not None:
            return self._table[name]
        if not self.parts:
            return pd.Series([], dtype=object, name=name)
        if name not in self._column_cache:
            self._column_cache[name] = self._read_column(name)
        return self._column_cache[name]

    def _read_column(self, name: str) -> pd.Series:
        pieces = [self._file(i).read(columns=[name]).column(0).to_pandas() if name in self._names(i)
                  else pd.Series(np.full(self.parts[i][1], np.nan)) for i in range(len(self.parts))]
        pieces = [p for p in pieces if len(p)] or pieces[:1]
        return pd.concat(pieces, ignore_index=True).rename(name) if len(pieces) > 1 else pieces[0].rename(name)

    def ids(self):
        """The ``id`` column as one Arrow array (cached)."""
        import pyarrow as pa

        if self._ids is None:
            if self._table is not None:
                self._ids = pa.array(self._table["id"].astype(str).to_numpy(), type=pa.string())
            elif not self.parts:
                self._ids = pa.array([], type=pa.string())
            else:
                chunks = [self._file(i).read(columns=["id"]).column(0) for i in range(len(self.parts))]
                self._ids = pa.chunked_array([c for ch in chunks for c in ch.chunks], type=chunks[0].type)
        return self._ids

    def carry_ids(self, before: "SegmentMetadata", new_ids) -> None:
        """Take over ``before``'s id column (if read) extended by the ids just added (this object's last rows)."""
        import pyarrow as pa

        if before._ids is None or before.count + len(new_ids) != self.count:
            return
        added = pa.array([str(x) for x in new_ids], type=pa.string())
        old = before._ids if isinstance(before._ids, pa.ChunkedArray) else pa.chunked_array([before._ids])
        self._ids = pa.chunked_array(old.chunks + [added.cast(old.type)], type=old.type)
        if before._row_of is not None:
            before._row_of.update({oid: before.count + i for i, oid in enumerate(added.to_pylist())})
            self._row_of, self._lookups = before._row_of, before._lookups

    def _id_table(self, i: int):
        """Segment ``i``'s id-hash table (memory-mapped), or None (then its id column is scanned)."""
        if i not in self._id_tables:
            p = self._id_table_paths[i] if i < len(self._id_table_paths) else None
            table = idtable.load(p) if p is not None else None
            self._id_tables[i] = table if table is not None and len(table) == self.parts[i][1] else None
        return self._id_tables[i]

    def _tables_usable(self) -> bool:
        return self._table is None and self._ids is None and bool(self.parts) and \
            all(self._id_table(i) is not None for i in range(len(self.parts)))

    def _id_at(self, i: int, local: int) -> str:
        """The id of segment ``i``'s local row ``local`` (one row group's id column read)."""
        f = self._file(i)
        g, lo = 0, 0
        while lo + f.metadata.row_group(g).num_rows <= local:
            lo += f.metadata.row_group(g).num_rows
            g += 1
        if (i, g) not in self._id_groups:
            if len(self._id_groups) >= 64:
                self._id_groups.pop(next(iter(self._id_groups)))
            self._id_groups[(i, g)] = f.read_row_group(g, columns=["id"]).column(0)
        return str(self._id_groups[(i, g)][local - lo].as_py())

    def _find_in_tables(self, object_id: str) -> int:
        h = idtable.hash_ids([object_id])[0]
        for i, (start, _, _) in enumerate(self.parts):
            for local in idtable.candidates(self._id_table(i), h):
                if self._id_at(i, int(local)) == object_id:
                    return start + int(local)
        return -1

    def find(self, object_id: str) -> int:
        """The row of ``object_id``, or -1. With every segment's id-hash table: a binary search per
        segment. Otherwise the first lookups scan the id column (vectorised); after a few, a
        dictionary is built for the rest."""
        import pyarrow.compute as pc

        if self._row_of is None and self._tables_usable():
            return self._find_in_tables(str(object_id))
        self._lookups += 1
        if self._row_of is None and self._lookups > 8:
            self._row_of = {oid: i for i, oid in enumerate(self.ids().to_pylist())}
        if self._row_of is not None:
            return self._row_of.get(str(object_id), -1)
        return int(pc.index(self.ids(), str(object_id)).as_py())

    def known(self, new_ids) -> list[str]:
        """Those of ``new_ids`` already here, in their order.

        The ids are scanned against a hash set of the new ones: O(N) in C, no O(N) set built per add.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        new = [str(x) for x in new_ids]
        if self._tables_usable():  # only the ids whose hash some segment holds are checked, one by one
            hashes = idtable.hash_ids(new)
            maybe = np.zeros(len(new), bool)
            for i in range(len(self.parts)):
                maybe |= idtable.members(self._id_table(i), hashes)
            return [oid for oid, m in zip(new, maybe) if m and self._find_in_tables(oid) >= 0]
        ids = self.ids()
        found = set(pc.filter(ids, pc.is_in(ids, value_set=pa.array(new, type=pa.string()))).to_pylist())
        return [oid for oid in new if oid in found]

    def id_of(self, row: int) -> str:
        if self._ids is None and self._table is None and 0 <= int(row) < self.count:  # one row group, not the column
            i = bisect.bisect_right(self.starts, int(row)) - 1
            return self._id_at(i, int(row) - self.starts[i])
        return str(self.ids()[int(row)].as_py())

    def rows(self, rows) -> pd.DataFrame:
        """The rows ``rows`` (global row numbers, any order, repeats allowed), in that order.

        Reads only the row groups holding them.
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if self._table is not None:
            return self._table.iloc[rows].reset_index(drop=True)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.count):
            raise IndexError(f"rows outside 0..{self.count - 1}")
        pieces, where = [], np.empty(len(rows), dtype=np.int64)
        offset = 0
        for seg in np.unique([bisect.bisect_right(self.starts, r) - 1 for r in rows]) if len(rows) else []:
            start, _, _ = self.parts[seg]
            mine = np.flatnonzero((rows >= start) & (rows < start + self.parts[seg][1]))
            local = rows[mine] - start
            f = self._file(seg)
            sizes = [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)]
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            groups = np.searchsorted(bounds, local, side="right") - 1
            need = np.unique(groups)
            first = {int(g): int(sum(sizes[int(h)] for h in need[need < g])) for g in need}
            take = np.array([first[int(g)] + int(lr - bounds[g]) for g, lr in zip(groups, local)], dtype=np.int64)
            pieces.append(f.read_row_groups([int(g) for g in need]).take(take))  # Arrow: one conversion below
            where[mine] = np.arange(offset, offset + len(mine))
            offset += len(mine)
        if not pieces:
            return pd.DataFrame(columns=self.columns)
        out = _concat(pieces)
        return out.iloc[where].reset_index(drop=True).reindex(columns=self.columns)  # back to the order asked


def _concat(tables) -> pd.DataFrame:
    """Arrow tables of several segments as one DataFrame (columns a segment lacks are missing values there)."""
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0].to_pandas()
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # types no promotion reconciles: as pandas would
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)
