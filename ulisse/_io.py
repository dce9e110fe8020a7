"""File helpers shared by the core, the index store and every plugin: one atomic write, one sha256,
one read of a Parquet file that another process may replace.

Example:
    >>> from ulisse._io import atomic_write, sha256_file
    >>> atomic_write("out/result.csv", "id,distance\\n")     # doctest: +SKIP
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Callable

from .errors import InputError, UlisseError

TMP_PREFIX = ".tmp-"
SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")


class WriteError(UlisseError):
    """A file could not be written (disk full, permission denied, read-only file system...)."""


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_parquet(path: str | os.PathLike, **options):
    """A Parquet file as a DataFrame, read through one open file.

    Side files (marks, derived columns) are replaced by another process's commit (``os.replace``) at any
    time. ``pandas.read_parquet(path)`` opens the path more than once (the footer, then the pages), so a
    replace in between mixes two files ("Page was smaller than expected"); one open file keeps the version
    it opened.
    """
    import pandas as pd

    with open(path, "rb") as handle:
        return pd.read_parquet(handle, **options)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry to disk (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def os_error_reason(exc: OSError) -> str:
    """A short reason for an OSError: 'no space left on device', 'permission denied'..."""
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], None], *, fsync: bool = True) -> Path:
    """Write a file atomically: to a temporary file beside it, then ``os.replace``.

    Args:
        path: the final file.
        data: text, bytes, or a function that writes the temporary path it is given
            (``lambda p: table.to_parquet(p)``).
        fsync: flush the file and its directory to disk before returning.

    Raises:
        WriteError: the file could not be written (one line naming the file and the
            reason); no temporary file is left behind and ``path`` is untouched.
    """
    final = Path(path)
    tmp = final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{final.name}")
    try:
        if callable(data):
            data(tmp)
        elif isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if fsync:
            fsync_dir(final.parent)
    except OSError as exc:
        raise WriteError(f"{final}: {os_error_reason(exc)}") from None
    except Exception as exc:  # writers of other libraries (FAISS, pyarrow) raise their own types for I/O errors
        reason = _io_reason_of(exc)
        if reason is None:
            raise
        raise WriteError(f"{final}: {reason}") from None
    finally:
        try:
            if tmp.exists():
                tmp.unlink()
        except OSError:
            pass
    return final


def _io_reason_of(exc: Exception) -> str | None:
    text = str(exc)
    for code in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EIO):
        reason = os.strerror(code)
        if reason.lower() in text.lower():
            return reason.lower()
    low = text.lower()
    if "no space" in low or "disk full" in low:
        return "no space left on device"
    if "write" in low and ("fail" in low or "error" in low) and ("file" in low or "fwrite" in low):
        return "write failed (" + text.strip().splitlines()[-1][:120] + ")"
    return None


def safe_name(name: str, what: str = "id") -> str:
    """``name`` if it can be used as a file name inside a folder, else :class:`InputError`.

    Allowed: ``[A-Za-z0-9._+-]+``, not ``.`` or ``..``. Used wherever an id (from a
    user or a service) becomes part of a path.
    """
    s = str(name)
    if not SAFE_NAME.match(s) or s in (".", ".."):
        raise InputError(f"{what} {s!r}: cannot be used as a file name (allowed: letters, digits, . _ + -)")
    return s


def path_inside(folder: str | os.PathLike, name: str, what: str = "file name") -> Path:
    """``folder / name``, refusing names that are absolute or resolve outside ``folder``."""
    base = Path(folder).resolve()
    p = Path(name)
    if p.is_absolute():
        raise InputError(f"{what} {name!r}: absolute paths are not allowed here")
    full = (base / p).resolve()
    if full != base and base not in full.parents:
        raise InputError(f"{what} {name!r}: points outside {folder}")
    return full
