"""The driver's side of an SDSS batch: finished fields' shards into the index, in field order, as they come.

:class:`Assembler` takes each field's :class:`~.shards.FieldOutcome` as soon as the
runner reports it (in this process or from a Dask worker) and adds the fields in
(run, camcol, field) order, objects in objid order, leaving out ids the index holds
already: a Dask run gives the same index as a one-process run, and an interrupted
run, run again, indexes each object once. Each shard is read once. The run's
embedding observers (feature lists...) see the new objects' feature maps, which the
workers recorded beside the shards (:class:`~.shards.MapsRecorder`), exactly as they
would in ``ulisse index build``; the maps files go once their objects are committed.
Objects are committed every :data:`ASSEMBLE_ROWS` objects (or :data:`MAPS_BYTES` of
maps waiting), so the driver never holds every vector of a survey.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

import ulisse
from ulisse.encoder import EncoderSpec, check_compatible
from ulisse.errors import InputError

from ulisse.indexes.store import MANIFEST

from .config import Field
from .shards import FieldOutcome, maps_path, read_maps, read_shard

LOG = logging.getLogger(__name__)

ASSEMBLE_ROWS = 200_000  # objects per index commit
MAPS_BYTES = 4 << 30     # feature maps waiting on disk for their commit, at most (about)
OBSERVE_ROWS = 256       # objects per batch shown to the observers


class Assembler:
    """Adds finished fields to the index at ``index_dir`` in the order of ``fields`` (see the module).

    Args:
        index: the index being extended, or None (created at the first commit, with ``manifest_extra``).
        encoder: the run's encoder (its spec is checked against each shard's).
        report: a :class:`~.batch.BatchReport`, updated as fields are added.
        observers: the run's live embedding observers (:func:`ulisse.embedding.create_observers`).
        index_options: ``factory``, ``metric``, ``device``, ``history``, ``manifest_extra`` of a new index;
            ``check_index``: called with an index that another writer created in ``index_dir`` during the run
            (raises if this run's objects may not go into it), before the run extends it.
    """

    def __init__(self, index_dir: Path, index, encoder, rgb, report, fields: Sequence[Field], observers=(),
                 **index_options):
        self.index_dir, self.index, self.encoder, self.rgb, self.report = Path(index_dir), index, encoder, rgb, report
        self.observers = list(observers)
        self.check_index = index_options.pop("check_index", None)
        self.options = index_options
        self.order = list(fields)
        self.outcomes: dict[Field, FieldOutcome] = {}
        self._next = 0
        self.known = set(index.metadata["id"].astype(str)) if index is not None else set()
        self._vectors: list[np.ndarray] = []
        self._metas: list[pd.DataFrame] = []
        self._rows = 0
        self._maps_files: list[Path] = []
        self._maps_bytes = 0
        self.unobserved = 0

    def take(self, outcome: FieldOutcome) -> None:
        """A field is finished (or failed): add it, and every later field already finished, in field order."""
        self.outcomes[outcome.field] = outcome
        while self._next < len(self.order) and self.order[self._next] in self.outcomes:
            done = self.outcomes[self.order[self._next]]
            self._next += 1
            if done.ok:
                self._add(done)

    def close(self):
        """The last commit, then the observers store their results; returns the index (None if still none)."""
        self._commit()
        if self.unobserved:
            LOG.warning("%d object(s) came from shards written without feature maps: the embedding observers "
                        "did not see them (ulisse features rebuild %s computes the feature lists again)",
                        self.unobserved, self.index_dir)
        if self.index is not None and self.observers:
            from ulisse.embedding import finish_observers

            finish_observers(self.observers, self.index)
        return self.index

    def _add(self, outcome: FieldOutcome) -> None:
        shard = read_shard(outcome.shard)
        outcome.objects, outcome.skipped, outcome.empty = len(shard.metadata), len(shard.skipped), shard.empty
        check_compatible(self.encoder.spec, EncoderSpec.from_dict(shard.encoder_spec), outcome.shard)
        self.report.skipped.extend(shard.skipped)
        ids = shard.metadata["id"].astype(str).to_numpy()
        new = np.array([i not in self.known for i in ids], dtype=bool)
        self.report.already += int((~new).sum())
        maps_file = maps_path(outcome.shard)
        if new.any():
            self.known.update(ids[new])
            self._observe(outcome.shard, ids[new], shard.vectors[new], new)
            self._vectors.append(shard.vectors[new])
            self._metas.append(shard.metadata[new].reset_index(drop=True))
            self._rows += int(new.sum())
        if maps_file.is_file():
            self._maps_files.append(maps_file)
            self._maps_bytes += maps_file.stat().st_size
        if self._rows >= ASSEMBLE_ROWS or self._maps_bytes >= MAPS_BYTES:
            self._commit()

    def _observe(self, npz, ids: np.ndarray, vectors: np.ndarray, new: np.ndarray) -> None:
        """Show the new objects' feature maps to the observers, a batch at a time, as the core pipeline does."""
        if not self.observers:
            return
        maps = read_maps(npz)
        if maps is None or len(maps) != len(new):
            self.unobserved += len(ids)
            return
        from ulisse.registry import EmbeddingBatch

        rows = np.flatnonzero(new)
        for lo in range(0, len(rows), OBSERVE_ROWS):
            pick = rows[lo:lo + OBSERVE_ROWS]
            batch = EmbeddingBatch([str(i) for i in ids[lo:lo + OBSERVE_ROWS]], np.asarray(maps[pick], np.float32),
                                   vectors[lo:lo + OBSERVE_ROWS])
            for obs in self.observers:
                obs.observe(batch)
        del maps

    def _adopt(self) -> None:
        """Another writer created the index during this run: extend it, leaving out the ids it holds already."""
        index = ulisse.open_index(self.index_dir, device=self.options.get("device", "auto"))
        if self.check_index is not None:
            self.check_index(index)
        if index.rgb.to_dict() != self.rgb.to_dict():
            raise InputError(f"{self.index_dir}: an index made meanwhile by another writer uses other RGB settings "
                             "than this run's cutouts; run this command again to extend it with its own")
        LOG.warning("%s: an index was created here during this run; adding this run's objects to it", self.index_dir)
        held = set(index.metadata["id"].astype(str))
        keep = [~m["id"].astype(str).isin(held).to_numpy() for m in self._metas]
        self.report.already += int(sum((~k).sum() for k in keep))
        self._vectors = [v[k] for v, k in zip(self._vectors, keep)]
        self._metas = [m[k].reset_index(drop=True) for m, k in zip(self._metas, keep)]
        self._rows = int(sum(k.sum() for k in keep))
        self.known |= held
        self.index = index

    def _commit(self) -> None:
        opts = self.options
        if self._rows and self.index is None and (self.index_dir / MANIFEST).exists():
            self._adopt()
        if self._rows:
            v = np.concatenate(self._vectors)
            m = pd.concat(self._metas, ignore_index=True)
            if self.index is None:
                self.index = ulisse.create_index(
                    self.index_dir, v, m, self.encoder.spec, factory=opts.get("factory", "Flat"),
                    metric=opts.get("metric", "L2"), rgb=self.rgb, device=opts.get("device", "auto"),
                    history=opts.get("history"), manifest_extra=opts.get("manifest_extra"))
            else:
                self.index.add_vectors(v, m, encoder_spec=self.encoder.spec, history=opts.get("history"))
            self.report.added += self._rows
            self._vectors, self._metas, self._rows = [], [], 0
        for path in self._maps_files:  # their objects are in the index (or were before this run)
            path.unlink(missing_ok=True)
        self._maps_files, self._maps_bytes = [], 0
