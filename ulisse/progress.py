"""Progress for long work: a live bar on a terminal, a log line every few seconds otherwise.

Redirected logs (a batch job's output file, ``2> log``) get plain lines such as
``ulisse: embedding: 1200/5000 (24 %), 61.3/s`` instead of carriage-return frames.

Example:
    >>> with progress_bar(total=1000, desc="embedding", unit="cutout") as bar:   # doctest: +SKIP
    ...     bar.update(10)
"""

from __future__ import annotations

import logging
import sys
import time

LOG = logging.getLogger("ulisse")

LOG_EVERY_SECONDS = 10.0


class _LogProgress:
    """A stand-in for tqdm that logs a line every ``every`` seconds (and at the end)."""

    def __init__(self, total: int | None, desc: str, unit: str, every: float):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n = 0
        self.postfix = ""
        self.t0 = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._log(now)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _log(self, now: float) -> None:
        rate = self.n / max(now - self.t0, 1e-9)
        extra = f" ({self.postfix})" if self.postfix else ""
        if self.total:
            LOG.info("%s: %d/%d %s (%d %%), %.1f/s%s", self.desc, self.n, self.total, self.unit,
                     100 * self.n // max(self.total, 1), rate, extra)
        else:
            LOG.info("%s: %d %s, %.1f/s%s", self.desc, self.n, self.unit, rate, extra)

    def close(self) -> None:
        if self.n and time.monotonic() - self.t0 >= self.every:
            self._log(time.monotonic())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _NoProgress(_LogProgress):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
                 every: float = LOG_EVERY_SECONDS, stream=None, initial: int = 0):
    """A tqdm bar when ``stream`` (stderr) is a terminal; log lines every ``every`` seconds otherwise.

    Use it as a context manager or call ``close()``; ``update(n)`` as with tqdm.
    """
    if not enabled:
        bar = _NoProgress(total, desc, unit, every)
    else:
        stream = stream or sys.stderr
        if getattr(stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit=unit, file=stream, mininterval=0.5, initial=initial)
        bar = _LogProgress(total, desc, unit, every)
    bar.n = initial
    if enabled:
        bar._log(time.monotonic())  # a first line at once: long work says it has started
    return bar


def progress_iter(iterable, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
    """Iterate over ``iterable`` with :func:`progress_bar` (one step per item)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with progress_bar(total=total, desc=desc, unit=unit, enabled=enabled) as bar:
        for item in iterable:
            yield item
            bar.update(1)
