"""One ``ulisse sdss index`` run per index folder: an exclusive ``fcntl`` lock on ``DIR/.sdss-run.lock``.

Taken before any download and held until the run's last commit, so a second run started on the
same folder stops at once with one line, instead of downloading and embedding every field again
and then finding the index the first run created. The kernel releases the lock when its holder
dies, so a killed run never blocks the next one. (The index's own writer lock, taken by each
commit, is another lock: it keeps one commit at a time, this keeps one batch at a time.)

Example:
    >>> with run_lock("sdss-index"):               # doctest: +SKIP
    ...     ...  # download, embed and commit the fields
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from ulisse.indexes.lock import file_lock

from .errors import RunBusy

RUN_LOCK = ".sdss-run.lock"


_HELD: dict[str, int] = {}  # folders whose run lock this process holds, and how many times


@contextmanager
def run_lock(index_dir: str | os.PathLike):
    """Hold the run lock of ``index_dir``; re-entrant within a process (the CLI and :func:`index_fields` both take it).

    The folder is created if needed, and removed again at the end if the run left nothing in it but the lock
    (a run stopped by a bad option leaves no empty folder behind).

    Raises:
        RunBusy: another run holds it.
        WriteError: the folder or its lock file cannot be created.
    """
    index_dir = Path(index_dir)
    key = str(index_dir.resolve())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    created = not index_dir.exists()

    def busy(holder: str) -> Exception:
        return RunBusy(f"{index_dir}: another 'ulisse sdss index' run{holder} is using this folder; "
                       "run this one again once it has finished (it will add what that one did not)")

    with file_lock(index_dir, RUN_LOCK, busy):
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            if created and [p.name for p in index_dir.iterdir()] == [RUN_LOCK]:
                (index_dir / RUN_LOCK).unlink(missing_ok=True)
                try:
                    index_dir.rmdir()
                except OSError:
                    pass
