"""Running :func:`~ulisse.plugins.sdss.worker.attempt_field` on Dask: a local cluster or an existing scheduler.

``local:N`` starts a :class:`distributed.LocalCluster` of N worker processes
with one thread each (no dashboard); ``tcp://HOST:8786`` connects to a running
scheduler, whose workers must see the index directory (a shared file system)
and have ulisse installed. Each field is one task; results come back as
:class:`~ulisse.plugins.sdss.shards.FieldOutcome` in the order they finish.
This module imports :mod:`~ulisse.plugins.sdss.worker` and :mod:`~ulisse.plugins.sdss.shards`;
neither they nor :mod:`~ulisse.plugins.sdss.batch` import this one (the batch takes any runner).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from typing import Callable, Sequence

from ulisse.errors import InputError

from .shards import BatchSettings, FieldOutcome, FieldTask
from .worker import attempt_field

LOG = logging.getLogger(__name__)


def parse_dask(spec: str) -> tuple[str, int | str]:
    """``local:N`` -> ("local", N); ``tcp://host:8786`` (or ``host:8786``) -> ("address", "tcp://host:8786")."""
    m = re.fullmatch(r"local(?::(\d+))?", spec.strip())
    if m:
        n = int(m.group(1) or os.cpu_count() or 1)
        if n < 1:
            raise InputError(f"--dask {spec}: at least one worker")
        return "local", n
    if re.fullmatch(r"(tcp|tls|ucx|inproc)://\S+", spec.strip()):
        return "address", spec.strip()
    if re.fullmatch(r"[\w.-]+:\d+", spec.strip()):
        return "address", f"tcp://{spec.strip()}"
    raise InputError(f"--dask {spec}: expected local:N or a scheduler address such as tcp://HOST:8786")


class DaskRunner:
    """A Dask client (and the local cluster it started, if any) that runs fields."""

    def __init__(self, spec: str):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError("--dask needs dask.distributed: pip install 'dask[distributed]'") from None
        kind, value = parse_dask(spec)
        self.cluster = None
        try:
            if kind == "local":
                self.cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
                self.client = Client(self.cluster)
            else:
                self.client = Client(value, timeout="20s")
        except Exception as exc:  # OSError, TimeoutError, "Nanny failed to start"...
            if self.cluster is not None:
                self.cluster.close()
            what = "the local Dask cluster did not start" if kind == "local" else "cannot reach the Dask scheduler"
            raise InputError(f"--dask {spec}: {what} ({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]})") from None
        LOG.info("dask: %s with %d worker(s)", spec, len(self.client.scheduler_info().get("workers", {})))

    def run(self, tasks: Sequence[FieldTask], settings: BatchSettings, done: Callable[[FieldOutcome], None]) -> None:
        """Run every task; call ``done(outcome)`` as each field finishes (a lost worker is the field's error)."""
        from distributed import as_completed

        run = uuid.uuid4().hex[:8]  # keys unique to this run, even on a shared scheduler
        futures = {self.client.submit(attempt_field, t, settings, pure=False, key=f"sdss-field-{t.field}-{run}"): t
                   for t in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # the worker died, or the result could not travel
                outcome = FieldOutcome(task.field, error=f"Dask task failed: {exc.__class__.__name__}: {exc}",
                                       error_type=exc.__class__.__name__)
            done(outcome)

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
