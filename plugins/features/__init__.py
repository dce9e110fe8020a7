"""Feature-activation browsing: which objects light up each of the encoder's features, and where.

ULISSE (Doorenbos et al. 2022, Fig. 1) shows, for a feature, the objects of the
sample that activate it most, with their 7x7 feature maps. The activation of
feature ``f`` on an object is the spatial mean of ``f``'s final feature map,
whatever pooling the index's vectors use.

While an index is built or extended, an embedding observer keeps, for every
feature, the top objects (default 9) with their maps of that feature, and the
population's mean and standard deviation; they are stored with the index in
``DIR/derived/features/`` (an index built without them: ``ulisse features
rebuild DIR``, one pass over its cutouts).

Python API::

    >>> from ulisse.plugins import features
    >>> view = features.feature_view(index, 541)            # doctest: +SKIP
    >>> view.table[["rank", "id", "activation"]]              # doctest: +SKIP
    >>> view.overlays[0].shape == view.images[0].shape        # doctest: +SKIP
    >>> features.object_features(index, "hdf-0042", n=10, by="z").table   # doctest: +SKIP
    >>> features.rank_features(index, "label", "agn").head()  # doctest: +SKIP

Command line::

    ulisse features top DIR --feature 541 --out grid.png
    ulisse features object DIR --id hdf-0042 --by z --out overlay.png
    ulisse features rank DIR --label bpt_class --value agn
    ulisse features rebuild DIR
"""

from __future__ import annotations

from pathlib import Path

import ulisse
from ulisse.registry import EmbeddingObserver

from ._display import (BY, FeatureView, ObjectFeatures, class_fractions_by_feature, feature_view, object_features,
                       object_maps, overlay, rank_features, top_objects)
from ._observer import FeatureObserver, encoder_maps, rebuild_lists
from ._store import DEFAULT_TOP, FeatureLists, activations, stored_lists

__all__ = [
    "BY", "DEFAULT_TOP", "FeatureLists", "FeatureObserver", "FeatureView", "ObjectFeatures", "activations",
    "class_fractions_by_feature", "encoder_maps", "feature_view", "object_features", "object_maps", "overlay",
    "rank_features", "rebuild_lists", "stored_lists", "top_objects",
]

TOP_OPTION = "features.top_n"  # Config.options key: list length for new builds


def _top_n(config) -> int:
    options = getattr(config, "options", None) or {}
    value = options.get(TOP_OPTION, DEFAULT_TOP)
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ulisse.InputError(f"{TOP_OPTION}={value!r}: must be a whole number") from None
    if value < 1:
        raise ulisse.InputError(f"{TOP_OPTION}={value}: must be at least 1")
    return value


@ulisse.hookimpl
def register_embedding_observers(config):
    """``features``: per-feature top objects and statistics, kept while embedding."""
    top_n = _top_n(config)
    return [EmbeddingObserver("features", f"per-feature top {top_n} objects, their maps, and mean/std of every feature",
                              create=lambda index: FeatureObserver(index, top_n))]


@ulisse.hookimpl
def describe_index(index):
    """``ulisse index info``'s line on the feature lists kept with the index (fresh, stale or missing)."""
    from ._store import lists_text

    return {"features": lists_text(index)}


@ulisse.hookimpl
def register_commands(cli):
    """``ulisse features top|object|rank|rebuild``."""
    from ._cli import features_group

    cli.add_command(features_group)


@ulisse.hookimpl
def register_ui_pages(config):
    """The web UI's Features page."""
    from ulisse.registry import UIPage

    return [UIPage("Features", Path(__file__).with_name("page.py"), order=40)]
