"""Progress for long work: a live bar on a terminal, a log line every few seconds otherwise.

Redirected logs (a batch job's output file, ``2> log``) get plain lines such as
``ulisse: embedding: 1200/5000 cutout (24 %), 61.3/s, about 1 min left`` instead of carriage-return
frames. After the first batches (:data:`ESTIMATE_AFTER_SECONDS`) one line says what the whole job
will cost, from the rate measured so far: ``ulisse: embedding: about 1 min for 5000 cutouts ...``.

A caller that shows progress its own way (the web UI's progress bar) watches every bar opened in
its context with :func:`watching`, whether or not the bar itself prints (``enabled=False``).

Example:
    >>> with progress_bar(total=1000, desc="embedding", unit="cutout") as bar:   # doctest: +SKIP
    ...     bar.update(10)
    >>> with watching(lambda state: print(state.text)):                         # doctest: +SKIP
    ...     index.derived("morphology")
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable

LOG = logging.getLogger("ulisse")

LOG_EVERY_SECONDS = 10.0
ESTIMATE_AFTER_SECONDS = 3.0  # the first batches measured: then the whole job's cost is said, once
WATCH_EVERY_SECONDS = 0.3  # a watcher hears of a bar at most this often (and always of its first and last step)


@dataclass(frozen=True)
class ProgressState:
    """Where one bar stands, as :func:`watching`'s callbacks get it."""

    desc: str
    n: int
    total: int | None
    unit: str
    left: str  # ", about 3 min left" once a rate is known, else ""

    @property
    def fraction(self) -> float:
        """Done, from 0 to 1 (0 while the total is unknown)."""
        return min(1.0, self.n / self.total) if self.total else 0.0

    @property
    def text(self) -> str:
        """``morphology (statmorph): 120/3000 cutouts (4 %), about 6 min left``."""
        if self.total:
            return (f"{self.desc}: {self.n}/{_units(self.total, self.unit)} "
                    f"({100 * self.n // max(self.total, 1)} %){self.left}")
        return f"{self.desc}: {_units(self.n, self.unit)}"


_WATCHERS: ContextVar[tuple] = ContextVar("ulisse_progress_watchers", default=())


@contextmanager
def watching(callback: Callable[[ProgressState], None]):
    """Call ``callback(state)`` as every progress bar opened in this context advances (at most every
    :data:`WATCH_EVERY_SECONDS` per bar, and at its first step, its last and its close). Nested contexts add
    watchers."""
    token = _WATCHERS.set(_WATCHERS.get() + (callback,))
    try:
        yield
    finally:
        _WATCHERS.reset(token)


def duration_text(seconds: float) -> str:
    """A duration for the eye: ``40 s``, ``3 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _units(n: int, unit: str) -> str:
    unit = "step" if unit == "it" else unit
    return f"{n} {unit}" + ("" if n == 1 or unit.endswith("s") else "s")


class _Clock:
    """What every progress display measures: the rate since the first step, the time left, the estimate."""

    def _start_clock(self, estimate_after: float) -> None:
        self.t0 = time.monotonic()
        self.first: tuple[float, int] | None = None  # (time, count) at the first step: warm-up left out of the rate
        self.estimate_after = estimate_after
        self.estimated = False
        self.watchers = _WATCHERS.get()
        self.watched: float | None = None

    def _watch(self, n_now: int, now: float, last: bool = False) -> None:
        """Tell the watchers of :func:`watching` (those of the context the bar was opened in)."""
        if not self.watchers or (not last and self.watched is not None and now - self.watched < WATCH_EVERY_SECONDS
                                 and n_now != self.total):
            return
        self.watched = now
        state = ProgressState(self.desc, n_now, self.total, self.unit, self.eta_text(n_now, now))
        watchers = self.watchers
        if last:  # closed: heard of once, not again (tqdm closes a bar a second time when it is collected)
            self.watchers = ()
        for callback in watchers:
            callback(state)

    def _step(self, n_now: int, now: float) -> str | None:
        """Note a step; the job's cost (once, after ``estimate_after`` seconds) when it is due."""
        if self.first is None:
            self.first = (now, n_now)
        self._watch(n_now, now)
        # the rate is measured from the first step on (a warm-up before it, such as starting workers, would make
        # it slow), over at least ``estimate_after`` seconds (steps that come in bursts would make it fast)
        if (self.estimated or not self.total or now - self.first[0] < self.estimate_after
                or n_now <= self.first[1] or n_now >= self.total):
            return None
        self.estimated = True
        start = self.initial_n
        rate = self._rate(n_now, now)
        if not rate or (self.total - n_now) / rate < self.estimate_after:  # nearly done: nothing worth saying
            return None
        whole = (self.total - start) / rate
        return (f"{self.desc}: about {duration_text(whole)} for {_units(self.total - start, self.unit)} "
                f"(measured on the first {n_now - start}: {rate:.3g}/s); about "
                f"{duration_text((self.total - n_now) / rate)} left")

    def _rate(self, n_now: int, now: float) -> float:
        t1, n1 = self.first or (self.t0, self.initial_n)
        if n_now > n1 and now > t1 and n1 > self.initial_n:
            return (n_now - n1) / (now - t1)
        return (n_now - self.initial_n) / max(now - self.t0, 1e-9)

    def eta_text(self, n_now: int, now: float) -> str:
        """``, about 3 min left`` once a rate is known, else empty."""
        if not self.total or n_now >= self.total or n_now <= self.initial_n or (
                self.first is not None and n_now <= self.first[1]):  # a rate with the start in it says too little
            return ""
        rate = self._rate(n_now, now)
        return f", about {duration_text((self.total - n_now) / rate)} left" if rate > 0 else ""


class _LogProgress(_Clock):
    """A stand-in for tqdm that logs a line every ``every`` seconds (and at the end)."""

    def __init__(self, total: int | None, desc: str, unit: str, every: float,
                 estimate_after: float = ESTIMATE_AFTER_SECONDS, initial: int = 0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n = self.initial_n = initial
        self.postfix = ""
        self._start_clock(estimate_after)
        self.last = self.t0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        estimate = self._step(self.n, now)
        if estimate:
            LOG.info("%s", estimate)
        if now - self.last >= self.every:
            self.last = now
            self._log(now)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _log(self, now: float) -> None:
        self.logged_n = self.n
        rate = (self.n - self.initial_n) / max(now - self.t0, 1e-9)
        extra = f" ({self.postfix})" if self.postfix else ""
        if self.total:
            LOG.info("%s: %d/%d %s (%d %%), %.1f/s%s%s", self.desc, self.n, self.total, self.unit,
                     100 * self.n // max(self.total, 1), rate, self.eta_text(self.n, now), extra)
        else:
            LOG.info("%s: %d %s, %.1f/s%s", self.desc, self.n, self.unit, rate, extra)

    def close(self) -> None:
        if self.watchers and self.n:
            self._watch(self.n, time.monotonic(), last=True)
        # the last line says where it ended (a quick job too: its first line, "0/3000 (0 %)", is not the last)
        if self.n and self.n != getattr(self, "logged_n", None):
            self._log(time.monotonic())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _NoProgress(_LogProgress):
    """Prints nothing; watchers still hear of it."""

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.watchers:
            self._watch(self.n, time.monotonic())

    def close(self) -> None:
        if self.watchers and self.n:
            self._watch(self.n, time.monotonic(), last=True)


def _terminal_bar(total, desc, unit, stream, initial, estimate_after):
    """tqdm's live bar (its own ETA on the line), which also writes the job's cost once above itself."""
    from tqdm.auto import tqdm

    class Bar(_Clock, tqdm):
        def update(self, n=1):
            shown = super().update(n)
            estimate = self._step(self.n, time.monotonic())
            if estimate:
                self.write(f"ulisse: {estimate}", file=stream)
            return shown

        def close(self):
            if getattr(self, "watchers", None) and self.n and self.watched is not None:
                self._watch(self.n, time.monotonic(), last=True)
            return super().close()

    bar = Bar(total=total, desc=desc, unit=unit, file=stream, mininterval=0.5, initial=initial)
    bar.initial_n = initial
    bar._start_clock(estimate_after)
    return bar


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
                 every: float = LOG_EVERY_SECONDS, stream=None, initial: int = 0,
                 estimate_after: float = ESTIMATE_AFTER_SECONDS):
    """A tqdm bar when ``stream`` (stderr) is a terminal; log lines every ``every`` seconds otherwise.

    Long work says what it will cost: once ``estimate_after`` seconds have passed, one line gives the
    whole job's time from the rate measured so far (``embedding: about 4 min for 5000 cutouts ...``),
    and every progress line then ends with the time left. Use it as a context manager or call
    ``close()``; ``update(n)`` as with tqdm.
    """
    if not enabled:
        return _NoProgress(total, desc, unit, every, estimate_after, initial)
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return _terminal_bar(total, desc, unit, stream, initial, estimate_after)
    bar = _LogProgress(total, desc, unit, every, estimate_after, initial)
    bar._log(time.monotonic())  # a first line at once: long work says it has started
    return bar


def progress_iter(iterable, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
                  estimate_after: float = ESTIMATE_AFTER_SECONDS):
    """Iterate over ``iterable`` with :func:`progress_bar` (one step per item)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with progress_bar(total=total, desc=desc, unit=unit, enabled=enabled, estimate_after=estimate_after) as bar:
        for item in iterable:
            yield item
            bar.update(1)
