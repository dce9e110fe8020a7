"""Per-feature top objects and population statistics: kept while embedding, stored with the index.

The activation of feature ``f`` on an object is the spatial mean of ``f``'s final
feature map (ULISSE's definition), whatever pooling the index's vectors use.
For every feature the store keeps the ``top_n`` most active objects (their rows,
activations and ``h x w`` maps of that feature) and the population's count, mean
and sum of squared deviations (Welford/Chan), so that adds merge exactly.

Files, in ``DIR/derived/features/``: ``top.npz`` (the arrays, with the index
fingerprint they describe) and ``info.json`` (the same facts for people), written
together in one transaction of the index (:func:`ulisse.indexes.transaction`).
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulisse.errors import InputError, QueryError
from ulisse.indexes.transaction import SIDE_WAIT, transaction

LOG = logging.getLogger(__name__)

DEFAULT_TOP = 9
FOLDER = "features"
DATA = "top.npz"
INFO = "info.json"
FORMAT = 1


def activations(maps: np.ndarray) -> np.ndarray:
    """ULISSE's activation of every feature on every object: the spatial mean of its final map.

    Args:
        maps: ``N x C x h x w`` final feature maps (before pooling).

    Returns:
        float64 ``N x C``.
    """
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise InputError(f"feature maps of shape {maps.shape}: expected N x C x h x w")
    return maps.mean(axis=(2, 3), dtype=np.float64)


@dataclass
class FeatureLists:
    """What is stored of the features of an index.

    Attributes:
        rows: int64 ``C x n``, the rows of each feature's most active objects, most active first.
        activation: float64 ``C x n``, their activations.
        maps: float32 ``C x n x h x w``, each top object's map of that feature.
        count: objects in the population statistics (the whole index).
        mean: float64 ``C``, mean activation of each feature over the index.
        m2: float64 ``C``, sum of squared deviations from the mean.
        fingerprint: the index fingerprint these describe.
        top_n: the list length asked for (lists are shorter when the index is smaller).
    """

    rows: np.ndarray
    activation: np.ndarray
    maps: np.ndarray
    count: int
    mean: np.ndarray
    m2: np.ndarray
    fingerprint: str
    top_n: int

    @property
    def channels(self) -> int:
        """Number of features (1280 for EfficientNet-B0 and Lite0)."""
        return int(self.rows.shape[0])

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation of each feature's activation over the index."""
        return np.sqrt(self.m2 / max(self.count, 1))

    @property
    def scale(self) -> np.ndarray:
        """Each feature's z-score scale, ``sqrt(std**2 + s0**2)`` with ``s0`` the median standard deviation of
        the features that vary: a moderated z (as SAM's fudge factor, Tusher et al. 2001), so that a feature
        active on a handful of objects does not give a faint activation the largest z of all."""
        std = self.std
        varying = std[std > 0]
        s0 = float(np.median(varying)) if varying.size else 0.0
        return np.where(std > 0, np.sqrt(std ** 2 + s0 ** 2), 0.0)

    def z(self, activation: np.ndarray) -> np.ndarray:
        """Moderated z-scores (:attr:`scale`) of activations (``... x C``) against the index population (0 where
        a feature never varies)."""
        scale = self.scale
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.asarray(activation, np.float64) - self.mean) / scale
        return np.where(scale > 0, z, 0.0)

    def check_feature(self, feature) -> int:
        """``feature`` as an int in ``[0, C)``, else a one-line :class:`QueryError`."""
        try:
            f = int(str(feature).strip())
        except ValueError:
            raise QueryError(f"feature {feature!r}: not a feature number (features are 0 to {self.channels - 1})") from None
        if not 0 <= f < self.channels:
            raise QueryError(f"feature {f}: out of range (this index has features 0 to {self.channels - 1})")
        return f


def _top_order(act: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``act`` (C x N), the columns of its ``n`` largest values, largest first, ties: smaller key first."""
    grid = np.broadcast_to(keys, act.shape)
    if act.shape[1] <= n:
        return np.lexsort((grid, -act), axis=1)
    part = np.argpartition(-act, n - 1, axis=1)[:, :n]  # O(N); which of equal values it keeps is arbitrary...
    kth = np.take_along_axis(act, part, 1).min(axis=1, keepdims=True)
    if ((act >= kth).sum(axis=1) > n).any():  # ...so on a tie at the boundary, the full stable order
        return np.lexsort((grid, -act), axis=1)[:, :n]
    order = np.lexsort((keys[part], -np.take_along_axis(act, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


class TopAccumulator:
    """Per-feature top ``n`` (ties: the earlier key first) and Chan-merged running statistics."""

    def __init__(self, top_n: int):
        if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
            raise InputError(f"top_n={top_n!r}: must be a whole number of at least 1")
        self.top_n = int(top_n)
        self.keys = self.act = self.maps = None
        self.count = 0
        self.mean = self.m2 = None

    @classmethod
    def from_lists(cls, lists: FeatureLists) -> "TopAccumulator":
        acc = cls(lists.top_n)
        acc.keys, acc.act, acc.maps = lists.rows.copy(), lists.activation.copy(), lists.maps.copy()
        acc.count, acc.mean, acc.m2 = int(lists.count), lists.mean.copy(), lists.m2.copy()
        return acc

    def add(self, keys: np.ndarray, maps: np.ndarray) -> None:
        """Take in a batch: ``keys`` (int64 ``N``, the tie-break order) and its maps ``N x C x h x w``."""
        maps = np.asarray(maps, dtype=np.float32)
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) == 0:
            return
        act = activations(maps).T  # C x N
        if self.act is not None and (act.shape[0] != self.act.shape[0] or maps.shape[2:] != self.maps.shape[2:]):
            raise InputError(f"feature maps of shape {maps.shape[1:]} after maps of shape {self.maps.shape[1:]}")
        self._add_stats(act)
        channels = act.shape[0]
        order = _top_order(act, keys, self.top_n)
        cand_act = np.take_along_axis(act, order, 1)
        cand_keys = keys[order]
        cand_maps = maps.transpose(1, 0, 2, 3)[np.arange(channels)[:, None], order]
        if self.act is None:
            self.keys, self.act, self.maps = cand_keys, cand_act, cand_maps
            return
        keys2 = np.concatenate([self.keys, cand_keys], axis=1)
        act2 = np.concatenate([self.act, cand_act], axis=1)
        order = np.lexsort((keys2, -act2), axis=1)[:, :self.top_n]
        maps2 = np.concatenate([self.maps, cand_maps], axis=1)
        self.keys = np.take_along_axis(keys2, order, 1)
        self.act = np.take_along_axis(act2, order, 1)
        self.maps = maps2[np.arange(channels)[:, None], order]

    def _add_stats(self, act: np.ndarray) -> None:
        nb = act.shape[1]
        mb = act.mean(axis=1)
        m2b = ((act - mb[:, None]) ** 2).sum(axis=1)
        if self.count == 0:
            self.count, self.mean, self.m2 = nb, mb, m2b
            return
        total = self.count + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / total)
        self.m2 = self.m2 + m2b + delta ** 2 * (self.count * nb / total)
        self.count = total

    def lists(self, rows: np.ndarray, fingerprint: str) -> FeatureLists:
        """The stored form, with ``rows`` (same shape as the keys) and re-sorted by (activation, row)."""
        order = np.lexsort((rows, -self.act), axis=1)
        return FeatureLists(np.take_along_axis(rows, order, 1).astype(np.int64),
                            np.take_along_axis(self.act, order, 1),
                            self.maps[np.arange(self.act.shape[0])[:, None], order].astype(np.float32),
                            int(self.count), self.mean, self.m2, fingerprint, self.top_n)


def minus_stats(acc: "TopAccumulator", base: FeatureLists) -> tuple[int, np.ndarray, np.ndarray]:
    """``(count, mean, m2)`` of the objects ``acc`` took in after starting from ``base`` (Chan's merge undone)."""
    n = acc.count - base.count
    if n <= 0:
        return 0, np.zeros_like(base.mean), np.zeros_like(base.m2)
    mean = (acc.mean * acc.count - base.mean * base.count) / n
    delta = mean - base.mean
    m2 = acc.m2 - base.m2 - delta ** 2 * (base.count * n / acc.count)
    return n, mean, np.maximum(m2, 0.0)


def merge_lists(now: FeatureLists, stats: tuple, act: np.ndarray, rows: np.ndarray, maps: np.ndarray,
                new: np.ndarray, fingerprint: str) -> FeatureLists:
    """``now`` with more objects merged in: their statistics ``stats`` (count, mean, m2) and, of the top-list
    entries ``act``/``rows``/``maps`` (``C x n``), those where ``new`` (the others are in ``now`` already).

    Exact: an entry left out of the other top list was beaten by as many objects that ``now`` holds."""
    n_b, mean_b, m2_b = stats
    total = now.count + n_b
    delta = mean_b - now.mean
    mean = now.mean + delta * (n_b / total) if total else now.mean
    m2 = now.m2 + m2_b + delta ** 2 * (now.count * n_b / total) if total else now.m2
    big = np.iinfo(np.int64).max
    act2 = np.concatenate([now.activation, np.where(new, act, -np.inf)], axis=1)
    rows2 = np.concatenate([now.rows, np.where(new, rows, big)], axis=1)
    maps2 = np.concatenate([now.maps, maps.astype(np.float32)], axis=1)
    order = np.lexsort((rows2, -act2), axis=1)[:, :min(now.top_n, total)]  # as long as a build's lists
    channels = np.arange(act2.shape[0])[:, None]
    return FeatureLists(np.take_along_axis(rows2, order, 1).astype(np.int64), np.take_along_axis(act2, order, 1),
                        maps2[channels, order], int(total), mean, m2, fingerprint, now.top_n)


# -- storage -----------------------------------------------------------------

def folder_of(index) -> Path:
    """``DIR/derived/features/`` (not created here)."""
    return Path(index.path) / "derived" / FOLDER


def save_lists(index, lists: FeatureLists, how: str, wait: float = SIDE_WAIT) -> Path:
    """Store the lists with the index (``derived/features/``) in one transaction: both files, or neither.

    Raises:
        InputError: the index's vectors changed since the lists were computed (nothing is stored).
        IndexBusy: another writer holds the index's lock after ``wait`` seconds.
        WriteError: a file could not be written; the lists stored before stay.
    """
    folder = folder_of(index)
    buf = io.BytesIO()
    np.savez(buf, rows=lists.rows, activation=lists.activation, maps=lists.maps, count=np.int64(lists.count),
             mean=lists.mean, m2=lists.m2, fingerprint=np.array(lists.fingerprint), top_n=np.int64(lists.top_n),
             format=np.int64(FORMAT))
    info = json.dumps({
        "format": FORMAT, "fingerprint": lists.fingerprint, "count": lists.count, "features": lists.channels,
        "top_n": lists.top_n, "map_shape": list(lists.maps.shape[2:]), "how": how,
        "encoder": index.encoder_spec.to_dict(),
        "computed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2, sort_keys=True, default=str) + "\n"
    try:
        with transaction(index.path, wait) as txn:
            if txn.base.fingerprint != lists.fingerprint:  # another writer added vectors meanwhile
                raise InputError(f"{index.path}: the index changed while its feature lists were computed "
                                 f"({_rebuild_hint(index)})")
            txn.stage(folder / DATA, buf.getvalue())
            txn.stage(folder / INFO, info)
            txn.commit()
    finally:
        _CACHE.clear()
    return folder


_CACHE: dict = {}


def _rebuild_hint(index) -> str:
    return f"run: ulisse features rebuild {index.path}"


def stored_lists(index, *, check_fresh: bool = True) -> FeatureLists:
    """The feature lists stored with ``index`` (cached per file version).

    Raises:
        QueryError: none stored, unreadable, or stale (the index changed after they were computed).
    """
    path = folder_of(index) / DATA
    if not path.is_file():
        raise QueryError(f"{index.path}: no feature lists are stored with this index ({_rebuild_hint(index)})")
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    lists = _CACHE.get(key)
    if lists is None:
        try:
            with np.load(path) as z:
                lists = FeatureLists(z["rows"], z["activation"], z["maps"], int(z["count"]), z["mean"], z["m2"],
                                     str(z["fingerprint"]), int(z["top_n"]))
        except Exception as exc:  # damaged or foreign file
            raise QueryError(f"{path}: unreadable feature lists ({exc.__class__.__name__}; {_rebuild_hint(index)})") from None
        _CACHE.clear()
        _CACHE[key] = lists
    if check_fresh and (lists.fingerprint != index.fingerprint or lists.count != len(index)):
        raise QueryError(f"{index.path}: the stored feature lists are stale: the index changed after they were "
                         f"computed ({_rebuild_hint(index)})")
    return lists


def lists_text(index) -> str:
    """One line on the feature lists kept with ``index`` (read from their small info file): present, fresh or stale."""
    try:
        info = json.loads((folder_of(index) / INFO).read_text())
        count, fingerprint = int(info["count"]), str(info["fingerprint"])
    except FileNotFoundError:
        return f"none stored ({_rebuild_hint(index)})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"unreadable ({_rebuild_hint(index)})"
    what = f"{info.get('features', '?')} features, top {info.get('top_n', '?')} objects each"
    if fingerprint != index.fingerprint or count != len(index):
        return (f"stale: {what}, computed over {count} of the {len(index)} objects; 'features' commands refuse "
                f"them until rebuilt ({_rebuild_hint(index)})")
    return f"{what}, over all {count} objects (computed {info.get('computed', '?')})"
