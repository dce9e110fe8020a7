"""One transaction behind every write to an index directory.

Create, add, compact, upgrade, derived columns and marks all write through
:func:`transaction`::

    with transaction(path, wait=30) as txn:            # 1. the writer lock; 2. leftovers swept
        seg = txn.write_segment(x, meta, start=txn.base.count)          # 3. staged: no manifest names it yet
        txn.commit(txn.base.replace(count=txn.base.count + len(x), segments=txn.base.segments + (seg,)))  # 4.

1. **lock**: one writer at a time (:func:`.lock.writer_lock`); readers never wait.
2. **sweep**: :attr:`Transaction.base` is the manifest current under the lock (None for a new
   directory); what interrupted writers left (files no manifest names, staged side files) is removed.
3. **stage**: segment and trained files (:meth:`~Transaction.write_segment`,
   :meth:`~Transaction.write_trained`) are written under new names; side files
   (:meth:`~Transaction.stage`: derived columns, marks, plugins' files in ``derived/`` subfolders) beside
   their final name as ``.txn-*``; :meth:`~Transaction.remove` removes one at the commit (and its folder, once empty).
4. **commit** (:meth:`~Transaction.commit`): the new manifest is written atomically as generation
   ``base.generation + 1`` (refused if another writer committed meanwhile); staged side files then
   replace their final names. Files the new generation no longer names (a compaction's old
   segments) are swept.
5. **roll back**: on any error, or when the block ends without a commit, every staged file is
   removed; the previous generation stays whole.

Side files are not part of a generation: ``txn.commit()`` without a manifest publishes them and
keeps the generation, so marking an object does not make readers (and caches keyed by generation)
reopen the index. They record the vectors' fingerprint (:attr:`.manifest.Manifest.fingerprint`) instead.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ulisse._io import WriteError, atomic_write, fsync_dir, os_error_reason
from ulisse.errors import IndexError_, IndexNotFound, InputError

from . import store
from .lock import writer_lock
from .manifest import FileEntry, Manifest, SegmentEntry

SIDE_WAIT = 60.0  # seconds a side write (marks, derived columns) waits for another writer (writers hold the lock briefly)


class Transaction:
    """A write in progress on ``path`` (made by :func:`transaction`, used inside its ``with`` block)."""

    def __init__(self, path: Path, base: Manifest | None):
        self.path = path
        self.base = base
        self.written: Manifest | None = None   # the committed manifest (None: no new generation)
        self.committed = False
        self._staged: list[str] = []            # generation files written by this transaction
        self._side: dict[Path, Path | None] = {}  # final side file -> its staged file (None: remove it)

    # -- staging -----------------------------------------------------------------

    def write_segment(self, vectors, metadata, faiss_write=None, **kw) -> SegmentEntry:
        """Write one segment's files (see :func:`.store.write_segment`); its manifest entry."""
        self._check_open()
        entry = store.write_segment(self.path, vectors, metadata, faiss_write, **kw)
        self._staged += [e.name for e in entry.files]
        return entry

    def write_file(self, name: str, data) -> FileEntry:
        """Write one new file of the generation (see :func:`.store.write_file`); its manifest entry."""
        self._check_open()
        entry = store.write_file(self.path, name, data)
        self._staged.append(entry.name)
        return entry

    def write_trained(self, trained_index) -> FileEntry:
        """Write the trained, empty FAISS index shared by the segments; its manifest entry."""
        self._check_open()
        entry = store.write_trained(self.path, trained_index)
        self._staged.append(entry.name)
        return entry

    def side_path(self, name: str | os.PathLike) -> Path:
        """The side file ``name`` (relative to the index directory, or a path inside it), checked."""
        final = Path(name)
        if not final.is_absolute() and not final.resolve().is_relative_to(self.path.resolve()):
            final = self.path / name  # relative to the index directory (else: a path inside it, from the cwd)
        try:
            rel = final.resolve().relative_to(self.path.resolve())
        except ValueError:
            raise InputError(f"{final}: not inside the index directory {self.path}") from None
        if not rel.parts or rel.parts[0] != store.SIDE_DIR or rel.name.startswith(store.STAGED_PREFIX):
            raise InputError(f"{final}: side files live in {self.path / store.SIDE_DIR}")
        return self.path / rel

    def stage(self, name: str | os.PathLike, data) -> Path:
        """Write a side file's new content (text, bytes, or a function writing the path it is given);
        it replaces ``name`` at the commit. Returns the final path."""
        self._check_open()
        final = self.side_path(name)
        staged = final.with_name(f"{store.STAGED_PREFIX}{uuid.uuid4().hex[:16]}-{final.name}")
        final.parent.mkdir(parents=True, exist_ok=True)
        self._drop_staged(self._side.get(final))  # staged twice: the last content wins
        self._side[final] = staged
        atomic_write(staged, data)
        return final

    def remove(self, name: str | os.PathLike) -> None:
        """Remove the side file ``name`` at the commit; a folder under ``derived/`` left empty by it goes too
        (removing every file of ``derived/heads/NAME/`` removes the folder)."""
        self._check_open()
        final = self.side_path(name)
        self._drop_staged(self._side.get(final))
        self._side[final] = None

    # -- commit and roll back ------------------------------------------------------------

    def commit(self, manifest: Manifest | None = None) -> Manifest | None:
        """Commit: ``manifest`` becomes the next generation (when given), then staged side files replace theirs.

        Returns the manifest written (None when only side files were committed).

        Raises:
            IndexError_: another writer committed since :attr:`base` (nothing is committed).
            WriteError: ``DIR: <reason>`` or ``FILE: <reason>``: the manifest could not be written (the
                previous generation stays), or a side file could not replace its old version.
        """
        self._check_open()
        if manifest is not None:
            self.written = store.commit(self.path, manifest, self.base.generation if self.base else 0)
        self._publish_side()
        self.committed = True
        if self.written is not None:
            store.sweep(self.path, self.written, self.base)  # files of the previous generation no longer named
        return self.written

    def _publish_side(self) -> None:
        folders, emptied = set(), set()
        for final, staged in self._side.items():
            try:
                if staged is None:
                    final.unlink(missing_ok=True)
                    emptied.add(final.parent)
                else:
                    os.replace(staged, final)
            except OSError as exc:
                raise WriteError(f"{final}: {os_error_reason(exc)}") from None
            folders.add(final.parent)
        for folder in folders:
            fsync_dir(folder)
        self._remove_empty(emptied)

    def _remove_empty(self, folders) -> None:
        """Remove ``folders`` and their parents below ``derived/`` while empty (best effort)."""
        side = self.path / store.SIDE_DIR
        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
            while folder != side and side in folder.parents:
                try:
                    folder.rmdir()
                except OSError:
                    break  # not empty (or gone): what is left stays
                fsync_dir(folder.parent)
                folder = folder.parent

    def rollback(self) -> None:
        """Remove every staged file that no committed manifest names (best effort: the next sweep gets the rest)."""
        try:
            keep = set(Manifest.read(self.path).file_names())  # an interrupt right after the manifest's rename
        except IndexError_:
            keep = set()
        store.remove_files(self.path, [n for n in self._staged if n not in keep])
        for staged in self._side.values():
            self._drop_staged(staged)

    @staticmethod
    def _drop_staged(staged: Path | None) -> None:
        if staged is not None:
            try:
                staged.unlink(missing_ok=True)
            except OSError:
                pass  # the next transaction's sweep removes it

    def _check_open(self) -> None:
        if self.committed:
            raise RuntimeError("this transaction has committed; start another one")


@contextmanager
def transaction(index_dir: str | os.PathLike, wait: float = 0.0, *, new: bool = False) -> Iterator[Transaction]:
    """Hold the writer lock of ``index_dir`` for one write; roll it back on any error.

    Args:
        index_dir: the index directory.
        wait: seconds to wait for another writer.
        new: the write may create the index (``index_dir`` need not hold one yet; :attr:`Transaction.base`
            is then None).

    Raises:
        IndexNotFound: no index at ``index_dir`` (unless ``new``).
        IndexBusy: another writer holds the lock after ``wait`` seconds.
    """
    path = Path(index_dir)
    if not new:
        Manifest.read(path)  # no index: say so before the lock creates anything
    with writer_lock(path, wait):
        base = _current(path) if new else Manifest.read(path)
        store.sweep(path, base)
        txn = Transaction(path, base)
        try:
            yield txn
        finally:
            if not txn.committed:
                txn.rollback()


def _current(path: Path) -> Manifest | None:
    try:
        return Manifest.read(path)
    except IndexNotFound:
        return None
