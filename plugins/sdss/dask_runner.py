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
import uuid
from typing import Callable, Sequence

from ulisse.indexes.dask_search import connect, parse_dask  # noqa: F401 (parse_dask: the one --dask parser, used by plugin.py)

from .shards import BatchSettings, FieldOutcome, FieldTask
from .worker import attempt_field

LOG = logging.getLogger(__name__)


class DaskRunner:
    """A Dask client (and the local cluster it started, if any) that runs fields."""

    def __init__(self, spec: str):
        self.client, self.cluster = connect(spec)

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
