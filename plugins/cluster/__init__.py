"""Cluster search: the web UI's page for sharded indexes searched on a Dask cluster.

Sharded search itself is the core's (:mod:`ulisse.indexes.dask_search`: ``ulisse query DIR --dask``,
:func:`ulisse.open_sharded`); this plugin adds its web page, registered like any other page.
``ulisse ui --index SHARDED_DIR --dask tcp://scheduler:8786`` opens the app on it.
"""

from __future__ import annotations

from pathlib import Path

import ulisse


@ulisse.hookimpl
def register_ui_pages(config):
    """The Cluster search page (first in the sidebar when the app was started with ``--dask``)."""
    from ulisse.registry import UIPage

    return [UIPage("Cluster search", Path(__file__).with_name("page.py"), order=90, sharded=True,
                   url_state={"cluster": "cluster.dask", "sharded": "cluster.path", "id": "cluster.id",
                              "k": ("cluster.k", int)},
                   persistent_keys=("cluster.path", "cluster.dask", "cluster.id", "cluster.k", "cluster.partial"))]
