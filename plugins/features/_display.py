"""Showing features: top objects with their maps overlaid, an object's strongest features, labelled rankings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ulisse.errors import QueryError
from ulisse.labels import labels_of

from ._observer import cutout_of, encoder_maps
from ._store import activations, stored_lists

LOG = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.45
DEFAULT_CMAP = "inferno"
BY = ("activation", "z")


def _check_count(n, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise QueryError(f"{what}={n!r}: must be a whole number of at least 1")
    return int(n)


# -- overlays --------------------------------------------------------------------

def upsample(fmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """A small ``h x w`` map resized (bilinear) to ``height x width`` (float32)."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(fmap, dtype=np.float32), mode="F")
    return np.asarray(im.resize((int(width), int(height)), Image.Resampling.BILINEAR), dtype=np.float32)


def overlay(image: np.ndarray, fmap: np.ndarray, *, low: float | None = None, high: float | None = None,
            alpha: float = DEFAULT_ALPHA, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """A cutout with one feature map laid over it: uint8 RGB of the cutout's own size.

    The map is resized to the cutout, scaled to ``[low, high]`` (default: its own
    range), coloured with ``cmap`` and blended with weight ``alpha``.
    """
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise QueryError(f"alpha={alpha}: must be between 0 and 1")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    height, width = image.shape[:2]
    big = upsample(fmap, height, width)
    low = float(np.min(fmap)) if low is None else float(low)
    high = float(np.max(fmap)) if high is None else float(high)
    scaled = np.clip((big - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(big)
    colour = matplotlib.colormaps[cmap](scaled)[..., :3]
    out = (1.0 - alpha) * image[..., :3].astype(np.float32) / 255.0 + alpha * colour
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


# -- one feature ------------------------------------------------------------------

@dataclass
class FeatureView:
    """A feature's most active objects, with their cutouts and maps.

    Attributes:
        feature: the feature number.
        table: ``rank``, ``id``, ``activation``, ``z``, then the metadata columns.
        images: each object's cutout (None where its file is gone).
        maps: float32 ``n x h x w``, each object's map of this feature.
        overlays: each cutout with its map overlaid (cutout size; None where the cutout is gone).
        mean, std: the feature's activation over the whole index.
    """

    feature: int
    table: pd.DataFrame
    images: list
    maps: np.ndarray
    overlays: list
    mean: float
    std: float
    notes: list = field(default_factory=list)


def top_objects(index, feature, n: int | None = None) -> pd.DataFrame:
    """The ``n`` objects (default: all stored, 9) that activate ``feature`` most: ``rank``, ``id``, ``activation``,
    ``z_score`` (moderated: :attr:`FeatureLists.scale`).

    Raises:
        QueryError: feature out of range, bad ``n``, or no fresh lists stored.
    """
    lists = stored_lists(index)
    f = lists.check_feature(feature)
    n = lists.rows.shape[1] if n is None else _check_count(n)
    if n > lists.top_n:
        raise QueryError(f"n={n}: the index stores the top {lists.top_n} objects of each feature "
                         f"(run: ulisse features rebuild {index.path} --top-n {n})")
    rows = lists.rows[f, :n]
    acts = lists.activation[f, :n]
    meta = index.metadata_rows(rows).drop(columns=["row"], errors="ignore").reset_index(drop=True)
    scale = lists.scale[f]
    table = pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "id": meta["id"], "activation": acts,
                          "z_score": (acts - lists.mean[f]) / scale if scale > 0 else np.zeros(len(acts))})
    return pd.concat([table, meta.drop(columns=["id"])], axis=1)


def object_maps(index, object_ids) -> tuple[list, np.ndarray]:
    """Cutouts of index objects and their final feature maps, recomputed with the index's encoder.

    Returns:
        (images, maps float32 ``N x C x h x w``).

    Raises:
        QueryError: unknown id. InputError: a cutout cannot be read.
    """
    for oid in object_ids:
        index.row_of(oid)
    images = [cutout_of(index, oid) for oid in object_ids]
    return images, encoder_maps(index.encoder, images)


def feature_view(index, feature, n: int | None = None, *, recompute: bool = False, alpha: float = DEFAULT_ALPHA,
                 cmap: str = DEFAULT_CMAP) -> FeatureView:
    """A feature's top objects with their maps overlaid on their cutouts.

    The maps come from the lists stored with the index (kept while embedding);
    ``recompute=True`` embeds the shown cutouts again with the index's encoder.
    One colour scale for the whole view: 0 (or the lowest value) to the highest.
    """
    from ulisse.plot import thumbnail

    table = top_objects(index, feature, n)
    lists = stored_lists(index)
    f = lists.check_feature(feature)
    ids = list(table["id"])
    notes = []
    if recompute:
        images, maps = object_maps(index, ids)
        maps = maps[:, f]
    else:
        images = [thumbnail(index, oid) for oid in ids]
        maps = lists.maps[f, :len(ids)]
    idle = int((table["activation"] <= 0).sum())
    if idle:
        notes.append(f"{idle} of the {len(table)} objects shown have activation <= 0: feature {f} is active on "
                     f"fewer objects than that")
    missing = [oid for oid, im in zip(ids, images) if im is None]
    if missing:
        notes.append(f"{len(missing)} cutout(s) cannot be read: {', '.join(missing[:5])}")
    low, high = min(0.0, float(maps.min(initial=0.0))), float(maps.max(initial=0.0))
    overlays = [None if im is None else overlay(im, m, low=low, high=high, alpha=alpha, cmap=cmap)
                for im, m in zip(images, maps)]
    return FeatureView(f, table, images, maps, overlays, float(lists.mean[f]), float(lists.std[f]), notes)


# -- one object --------------------------------------------------------------------

@dataclass
class ObjectFeatures:
    """An object's features: ``table`` (``feature``, ``activation``, ``z``; the strongest first), all
    ``activation`` and ``z`` (float64 ``C``), its cutout, maps (``C x h x w``) and the overlays of the table's features."""

    object_id: str
    by: str
    table: pd.DataFrame
    activation: np.ndarray
    z: np.ndarray
    image: np.ndarray
    maps: np.ndarray
    overlays: list


def object_features(index, object_id: str, n: int = 10, by: str = "activation", *, alpha: float = DEFAULT_ALPHA,
                    cmap: str = DEFAULT_CMAP) -> ObjectFeatures:
    """The ``n`` features most active on one object, by activation or by z-score against the index.

    The object's maps are recomputed from its cutout with the index's encoder.

    Raises:
        QueryError: unknown id, bad ``n`` or ``by``, no fresh lists stored.
        InputError: the object's cutout cannot be read.
    """
    if by not in BY:
        raise QueryError(f"by={by!r}: expected one of {', '.join(BY)}")
    n = _check_count(n)
    lists = stored_lists(index)
    object_id = str(object_id)
    images, maps = object_maps(index, [object_id])
    act = activations(maps)[0]
    if act.shape[0] != lists.channels:
        raise QueryError(f"{object_id}: the encoder gives {act.shape[0]} features, the stored lists {lists.channels}")
    z = lists.z(act)
    key = act if by == "activation" else z
    order = np.lexsort((np.arange(len(key)), -key))[:n]
    table = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "feature": order.astype(np.int64),
                          "activation": act[order], "z_score": z[order]})
    overlays = [overlay(images[0], maps[0, f], alpha=alpha, cmap=cmap) for f in order]
    return ObjectFeatures(object_id, by, table, act, z, images[0], maps[0], overlays)


# -- labelled indexes --------------------------------------------------------------

def class_fractions_by_feature(index, label: str, n: int | None = None) -> pd.DataFrame:
    """For every feature, the fraction of each class of ``label`` among its top ``n`` objects (features x classes)."""
    lists = stored_lists(index)
    n = lists.rows.shape[1] if n is None else min(_check_count(n), lists.rows.shape[1])
    names = labels_of(index, label).to_numpy()
    top = names[lists.rows[:, :n]]
    classes = pd.Index(pd.Series(names).value_counts().index)
    table = pd.DataFrame({c: (top == c).mean(axis=1) for c in classes})
    table.index.name = "feature"
    return table


def rank_features(index, label: str, value, n: int | None = None) -> pd.DataFrame:
    """Features ranked by the fraction of class ``value`` of ``label`` among their top objects.

    Columns: ``rank``, ``feature``, ``fraction`` (of ``value`` among the top ``n``),
    ``count``, ``n``, ``base_rate`` (its fraction in the whole index), ``lift``,
    ``z_class`` (mean z-score of the top objects of that class, the tie-break).

    Raises:
        QueryError: unknown column, or ``value`` is not one of its classes.
    """
    lists = stored_lists(index)
    names = labels_of(index, label)
    value = str(value)
    base = names.value_counts(normalize=True)
    if value not in base.index:
        shown = ", ".join(map(str, base.index[:20]))
        raise QueryError(f"--value {value}: not a class of {label} (classes: {shown})")
    n = lists.rows.shape[1] if n is None else min(_check_count(n), lists.rows.shape[1])
    hit = names.to_numpy()[lists.rows[:, :n]] == value  # C x n
    z = lists.z(lists.activation[:, :n].T).T
    count = hit.sum(axis=1)
    fraction = count / n
    with np.errstate(invalid="ignore"):
        z_class = np.where(count > 0, (z * hit).sum(axis=1) / np.maximum(count, 1), np.nan)
    feature = np.arange(lists.channels)
    order = np.lexsort((feature, -np.nan_to_num(z_class, nan=-np.inf), -fraction))
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "feature": feature[order], "fraction": fraction[order],
                         "count": count[order], "n": n, "base_rate": float(base[value]),
                         "lift": fraction[order] / float(base[value]), "z_class": z_class[order]})

