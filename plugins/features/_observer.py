"""The embedding observer that keeps the feature lists during ``build``/``add``, and the one-pass rebuild.

During an embedding run the core calls ``observe(EmbeddingBatch(ids, maps, vectors))``
for every batch, then ``finish(index)`` after the commit. For an add, the
observer starts from the lists stored with the index (merged exactly: the top
``n`` of the union is the top ``n`` of the old top ``n`` and the new objects).
"""

from __future__ import annotations

import inspect
import logging

import numpy as np

from ulisse.errors import InputError, UlisseError
from ulisse.registry import EmbeddingBatch

from ._store import DEFAULT_TOP, TopAccumulator, save_lists, stored_lists

LOG = logging.getLogger(__name__)


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
        self.how = "build"
        if index is not None and len(index):
            self.how = "add"
            try:
                self.acc = TopAccumulator.from_lists(stored_lists(index))
            except UlisseError as exc:
                self.problem = str(exc)

    def observe(self, batch: EmbeddingBatch) -> None:
        """Take in one batch's final feature maps."""
        keys = np.arange(len(batch.ids), dtype=np.int64) + self.n_old + len(self.ids)
        self.acc.add(keys, batch.maps)
        self.ids.extend(str(i) for i in batch.ids)

    def finish(self, index) -> None:
        """Store the lists with the (committed) index; a problem is logged, the index stays as committed."""
        if not self.ids:
            return
        if self.problem is not None:
            LOG.warning("feature lists not updated: %s", self.problem)
            return
        try:
            rows = self._rows(index)
            if self.acc.count != len(index):
                raise InputError(f"the feature lists saw {self.acc.count} objects but the index holds {len(index)} "
                                 f"(run: ulisse features rebuild {index.path})")
            save_lists(index, self.acc.lists(rows, index.fingerprint), self.how)
        except UlisseError as exc:
            LOG.warning("feature lists not stored: %s", exc)

    def _rows(self, index) -> np.ndarray:
        seq_rows = np.array([index.row_of(i) for i in self.ids], dtype=np.int64)
        keys = self.acc.keys
        new = keys >= self.n_old
        rows = keys.copy()
        rows[new] = seq_rows[keys[new] - self.n_old]
        return rows


def encoder_maps(encoder, images) -> np.ndarray:
    """Final feature maps (float32 ``N x C x h x w``) of uint8 RGB cutouts, from the encoder's maps API."""
    if "return_maps" in inspect.signature(encoder.embed_images).parameters:
        return np.asarray(encoder.embed_images(images, return_maps=True)[1], dtype=np.float32)
    import torch  # an encoder without the maps API: the same preprocessing, the model's forward_features

    out = []
    step = encoder.default_batch_size
    for start in range(0, len(images), step):
        with torch.inference_mode():
            out.append(encoder.model.forward_features(encoder.preprocess(images[start:start + step])).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


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
    from tqdm.auto import tqdm

    observer = FeatureObserver(None, top_n)
    encoder = index.encoder
    step = batch_size or encoder.default_batch_size
    ids = index.ids
    with tqdm(total=len(ids), desc="feature lists", unit="cutout", disable=not progress, mininterval=1.0) as bar:
        for start in range(0, len(ids), step):
            chunk = ids[start:start + step]
            images = [cutout_of(index, i) for i in chunk]
            observer.observe(EmbeddingBatch(chunk, encoder_maps(encoder, images), np.zeros((len(chunk), 0), np.float32)))
            bar.update(len(chunk))
    if not ids:
        raise InputError(f"{index.path}: the index is empty")
    rows = observer._rows(index)
    lists = observer.acc.lists(rows, index.fingerprint)
    save_lists(index, lists, "rebuild")
    return lists
