"""The embedding observer that keeps the feature lists during ``build``/``add``, and the one-pass rebuild.

During an embedding run the core calls ``observe(EmbeddingBatch(ids, maps, vectors))``
for every batch, then ``finish(index)`` after the commit. For an add, the
observer starts from the lists stored with the index (merged exactly: the top
``n`` of the union is the top ``n`` of the old top ``n`` and the new objects).
"""

from __future__ import annotations

import logging

import numpy as np

from ulisse.errors import InputError, UlisseError
from ulisse.registry import EmbeddingBatch

from ._store import DEFAULT_TOP, TopAccumulator, merge_lists, minus_stats, save_lists, stored_lists

LOG = logging.getLogger(__name__)

BUFFER = 64  # objects gathered before a merge: small CPU batches cost a fixed ~10 ms each otherwise


class FeatureObserver:
    """Keeps per-feature top objects and statistics over one build or add.

    Args:
        index: the index being extended (``None`` for a new build).
        top_n: list length for a new build (an add keeps the stored length).
    """

    def __init__(self, index=None, top_n: int = DEFAULT_TOP):
        self.n_old = 0 if index is None else len(index)
        self.problem = None
        self.acc = TopAccumulator(top_n)
        self.ids: list[str] = []
        self._pending: list[np.ndarray] = []
        self.how = "build"
        self.base = None  # the lists this add started from (to merge with another writer's, see finish)
        if index is not None and len(index):
            self.how = "add"
            try:
                self.base = stored_lists(index)
                self.acc = TopAccumulator.from_lists(self.base)
            except UlisseError as exc:
                self.problem = str(exc)

    def observe(self, batch: EmbeddingBatch) -> None:
        """Take in one batch's final feature maps."""
        if len(batch.ids) != len(batch.maps):
            raise InputError(f"a batch of {len(batch.ids)} ids with {len(batch.maps)} feature maps")
        self._pending.append(np.array(batch.maps, dtype=np.float32, copy=True))  # the caller may reuse its buffer
        self.ids.extend(str(i) for i in batch.ids)
        if sum(len(m) for m in self._pending) >= BUFFER:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        maps = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending = []
        first = len(self.ids) - len(maps)  # the pending maps are the last ones observed
        self.acc.add(np.arange(first, first + len(maps), dtype=np.int64) + self.n_old, maps)

    def lists(self, index):
        """The lists of everything observed (and stored before), for the committed ``index``."""
        self._flush()
        if self.acc.count != len(index):
            raise InputError(f"the feature lists saw {self.acc.count} objects but the index holds {len(index)} "
                             f"(run: ulisse features rebuild {index.path})")
        return self.acc.lists(self._rows(index), index.fingerprint)

    def finish(self, index) -> None:
        """Store the lists with the (committed) index; a problem is logged, the index stays as committed."""
        if not self.ids:
            return
        if self.problem is not None:
            LOG.warning("feature lists not updated: %s", self.problem)
            return
        try:
            self._flush()
            if self.acc.count == len(index) or self.base is None:
                save_lists(index, self.lists(index), self.how)
            else:  # another writer added objects meanwhile: merge with the lists it stored, if they are what we miss
                save_lists(index, self._merged(index), self.how)
        except UlisseError as exc:
            LOG.warning("feature lists not stored: %s", exc)

    def _merged(self, index):
        """The lists another writer stored since this add began, with this add's objects merged in (exactly: the
        top ``n`` lists merge, the statistics combine); an error when those lists do not hold the others' objects."""
        now = stored_lists(index, check_fresh=False)
        mine = len(self.ids)
        if now.count + mine != len(index) or now.count < self.base.count or now.top_n != self.acc.top_n:
            raise InputError(f"the feature lists saw {self.acc.count} objects but the index holds {len(index)} "
                             f"(run: ulisse features rebuild {index.path})")
        new = self.acc.keys >= self.n_old  # this add's objects among the accumulated top lists
        rows = self._rows(index)
        LOG.info("feature lists: merged with those another writer stored meanwhile (%d + %d objects)",
                 now.count, mine)
        return merge_lists(now, minus_stats(self.acc, self.base), self.acc.act, rows, self.acc.maps, new,
                           index.fingerprint)

    def _rows(self, index) -> np.ndarray:
        seq_rows = np.array([index.row_of(i) for i in self.ids], dtype=np.int64)
        keys = self.acc.keys
        new = keys >= self.n_old
        rows = keys.copy()
        rows[new] = seq_rows[keys[new] - self.n_old]
        return rows


def encoder_maps(encoder, images) -> np.ndarray:
    """Final feature maps (float32 ``N x C x h x w``) of uint8 RGB cutouts, from the encoder's maps API."""
    return np.asarray(encoder.embed_images(images, return_maps=True)[1], dtype=np.float32)


def cutout_of(index, object_id: str) -> np.ndarray:
    """The RGB cutout of an index object, read again from its ``source`` file.

    Raises:
        InputError: the file is gone or unreadable.
    """
    from ulisse.plot import thumbnail

    image = thumbnail(index, object_id)
    if image is None:
        source = index.metadata["source"].iloc[index.row_of(object_id)]
        raise InputError(f"{object_id}: its cutout cannot be read (source {source!r})")
    return image


def rebuild_lists(index, top_n: int = DEFAULT_TOP, batch_size: int | None = None, progress: bool = True):
    """Compute the feature lists of an index in one pass over its cutouts (for indexes built without them).

    Returns:
        The stored :class:`~ulisse.plugins.features.FeatureLists`.

    Raises:
        InputError: a cutout cannot be read (nothing is stored).
    """
    from ulisse.progress import progress_bar

    observer = FeatureObserver(None, top_n)
    encoder = index.encoder
    step = batch_size or encoder.default_batch_size
    ids = index.ids
    with progress_bar(total=len(ids), desc="feature lists", unit="cutout", enabled=progress) as bar:
        for start in range(0, len(ids), step):
            chunk = ids[start:start + step]
            images = [cutout_of(index, i) for i in chunk]
            observer.observe(EmbeddingBatch(chunk, encoder_maps(encoder, images), np.zeros((len(chunk), 0), np.float32)))
            bar.update(len(chunk))
    if not ids:
        raise InputError(f"{index.path}: the index is empty")
    lists = observer.lists(index)
    save_lists(index, lists, "rebuild")
    return lists
