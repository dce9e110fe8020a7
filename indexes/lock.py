"""One writer at a time: an exclusive ``fcntl`` lock on ``DIR/.ulisse.lock``.

Readers never take the lock (they read whole manifests, which are replaced
atomically). The lock is released by the kernel when its holder dies, so a
killed writer never blocks the next one; what it left behind is swept by the
next holder (:func:`ulisse.indexes.store.sweep`).

Writes take it through :func:`ulisse.indexes.transaction.transaction`, not directly.

Example:
    >>> with writer_lock("indexes/survey", wait=30):      # doctest: +SKIP
    ...     ...  # (what a transaction does) read the manifest, write a segment, commit
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from typing import Callable
from pathlib import Path

from ulisse._io import WriteError, os_error_reason
from ulisse.errors import IndexError_

LOCK_FILE = ".ulisse.lock"
POLL_SECONDS = 0.05


class IndexBusy(IndexError_):
    """Another writer holds the index's lock (and ``wait`` ran out)."""


@contextmanager
def writer_lock(path: str | os.PathLike, wait: float = 0.0, *, claim: bool = True):
    """Hold the exclusive writer lock of the index directory ``path`` (created if needed).

    Args:
        path: the index directory.
        wait: seconds to wait for another writer to finish; 0 fails at once.
        claim: write this process's pid in the lock file (False: a probe that leaves the file as it was).

    Raises:
        IndexBusy: another writer holds the lock after ``wait`` seconds.
        WriteError: the directory or its lock file cannot be created (read-only, permission).
    """
    def busy(holder: str) -> Exception:
        return IndexBusy(f"{path}: another writer{holder} is changing this index; "
                         f"try again, or wait for it (--wait SECONDS)")

    with file_lock(path, LOCK_FILE, busy, wait, claim=claim):
        yield


@contextmanager
def file_lock(folder: str | os.PathLike, name: str, busy: Callable[[str], Exception], wait: float = 0.0, *,
              claim: bool = True):
    """Hold an exclusive ``fcntl`` lock on ``folder/name`` (both created if needed): the one lock loop of ulisse.

    Args:
        folder: the folder of the lock file.
        name: the lock file's name.
        busy: makes the error raised when another process holds the lock after ``wait`` seconds, from
            `` (pid N)`` (the holder's pid as it wrote it, or an empty string).
        wait: seconds to wait for the holder; 0 fails at once.
        claim: write this process's pid in the lock file for the next one's message.

    Raises:
        the exception ``busy`` makes; WriteError: the folder or the lock file cannot be created.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise WriteError(f"{folder}: {os_error_reason(exc)}") from None
    try:
        deadline = time.monotonic() + max(0.0, float(wait))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise WriteError(f"{folder}: {os_error_reason(exc)}") from None
                if time.monotonic() >= deadline:
                    raise busy(_holder(fd)) from None
                time.sleep(POLL_SECONDS)
        if claim:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass  # the pid is only a courtesy for the next holder's message
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_free(path: str | os.PathLike, wait: float = 0.0) -> None:
    """Fail now, before long work, when another writer holds ``path`` (waiting up to ``wait`` seconds); the lock is not kept.

    Raises:
        IndexBusy: as :func:`writer_lock`.
    """
    with writer_lock(path, wait, claim=False):
        pass


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
