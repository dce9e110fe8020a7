"""The exceptions of ulisse's SDSS plugin.

Hierarchy (all are :class:`ulisse.UlisseError`, so the CLI prints them on one line)::

    UlisseError
    └── SDSSError               anything that went wrong with SDSS data
        ├── ServiceError        an HTTP, SqlSearch or TAP request failed (status, time-out, bad answer)
        ├── FrameError          a frame file is truncated, corrupt or not an SDSS frame
        ├── EmptyFieldError     no objects in a field or a region (a batch's empty field is done, not failed;
        │                       a batch that wrote no index at all ends with one)
        ├── BatchIncomplete     some fields of ``ulisse sdss index`` failed (raised after the others are indexed)
        └── RunBusy             another ``ulisse sdss index`` run is using the folder

``retryable`` tells whether trying again may help (HTTP 5xx, 429, time-outs,
broken downloads: yes; HTTP 404, a bad query, an empty field: no).
"""

from __future__ import annotations

from ulisse.errors import UlisseError


class SDSSError(UlisseError):
    """Base class of the SDSS plugin's errors."""

    retryable = False


class ServiceError(SDSSError):
    """An SDSS web service failed: HTTP error, time-out, connection error or an unreadable answer.

    Attributes:
        url: the URL asked.
        status: the HTTP status, or None when no answer came.
        retryable: True for errors that may pass (5xx, 408, 429, time-outs, connection errors).
    """

    def __init__(self, message: str, url: str | None = None, status: int | None = None, retryable: bool = False):
        self.url = url
        self.status = status
        self.retryable = retryable
        super().__init__(message)


class FrameError(SDSSError):
    """A frame file cannot be used (truncated or corrupt download, no image, no WCS)."""

    retryable = True  # a broken download is fetched again

    def __init__(self, what: str, reason: str):
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class EmptyFieldError(SDSSError):
    """The catalogue holds no objects for a field (or none inside the asked region)."""


class BatchIncomplete(SDSSError):
    """Some fields could not be indexed; the others were. ``failures`` maps field names to reasons."""

    def __init__(self, failures: dict[str, str], indexed: int):
        self.failures = dict(failures)
        first = next(iter(self.failures.items()))
        more = f" (and {len(self.failures) - 1} more; see the summary above)" if len(self.failures) > 1 else ""
        super().__init__(f"{len(self.failures)} field(s) failed, {indexed} object(s) indexed from the others: "
                         f"field {first[0]}: {first[1]}{more}")


class RunBusy(SDSSError):
    """Another ``ulisse sdss index`` run holds the folder's run lock (:mod:`ulisse.plugins.sdss.runlock`)."""
