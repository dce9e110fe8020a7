"""Long work a page need not wait for: one thread per job in the server process, shared by every session.

A page starts a job with :func:`start_job` (a key and a function; a second start of the same key
joins the first) and keeps answering meanwhile; :func:`job` tells any session where the job stands
(the progress of the bars it opens, :mod:`ulisse.progress`), and :func:`job_status` shows that
as a progress bar, refreshed every few seconds, and runs the page again once when the job ends. What the
job computes goes where the Python API keeps it (a derived set of the index, say), so the page that
asks again finds it there.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import streamlit as st

from ulisse.progress import ProgressState, duration_text, watching

REFRESH_SECONDS = 2.0
NICE = 10  # a job's thread, and the processes it starts, yield the CPU to the pages' own work


@dataclass
class Job:
    """One background job: what it is, where its progress stands, how it ended."""

    key: str
    desc: str
    started: float = field(default_factory=time.monotonic)
    state: ProgressState | None = None
    error: str | None = None  # one line: ``ValueError: ...``
    done: bool = False
    ended: float | None = None  # time.monotonic() when it ended

    @property
    def text(self) -> str:
        """``morphology (statmorph): 120/3000 cutouts (4 %), about 6 min left``, or how long it has run."""
        if self.error:
            return f"{self.desc} failed: {self.error}"
        if self.done:
            return f"{self.desc}: done in {duration_text((self.ended or time.monotonic()) - self.started)}"
        if self.state is not None:
            return self.state.text
        return f"{self.desc}: starting, {duration_text(time.monotonic() - self.started)} so far"

    @property
    def fraction(self) -> float:
        return 1.0 if self.done else self.state.fraction if self.state is not None else 0.0


@st.cache_resource(show_spinner=False)
def _jobs() -> tuple[dict, threading.Lock]:
    return {}, threading.Lock()


def job(key: str) -> Job | None:
    """The job started under ``key`` in this server process (running or ended), or None."""
    jobs, lock = _jobs()
    with lock:
        return jobs.get(key)


def start_job(key: str, work: Callable[[], object], desc: str) -> Job:
    """Run ``work()`` in a thread of its own unless a job ``key`` was started before; returns the job.

    A job is started once per key and server process, however it ended: a key that names what the work
    depends on (an index's path and generation, say) runs again when that changes. The job runs at a
    lower priority (:data:`NICE`), so that the pages stay quick on a machine it keeps busy."""
    jobs, lock = _jobs()
    with lock:
        current = jobs.get(key)
        if current is not None:
            return current
        started = jobs[key] = Job(key, desc)

    def follow(state: ProgressState) -> None:
        started.state = state

    def run() -> None:
        try:
            if hasattr(os, "setpriority"):  # Linux: per thread, inherited by the processes the job starts
                try:
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
                except OSError:
                    pass
            with watching(follow):
                work()
        except Exception as exc:  # the page says it; the server goes on
            started.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        finally:
            started.ended = time.monotonic()
            started.done = True

    threading.Thread(target=run, name=f"ulisse-job-{key}", daemon=True).start()
    return started


@st.fragment(run_every=REFRESH_SECONDS)
def _status(key: str, note: str) -> None:
    current = job(key)
    if current is None:
        return
    if current.done:  # the page runs again, and uses what the job made (or says why it failed)
        st.rerun(scope="app")
    st.progress(current.fraction, text=current.text + (f" · {note}" if note else ""))


def job_status(key: str, note: str = "") -> None:
    """The running job's progress bar, with ``note`` after it, refreshed every :data:`REFRESH_SECONDS`; when
    the job ends, the whole page runs again once. Call it while the job runs (``not job(key).done``)."""
    _status(key, note)
