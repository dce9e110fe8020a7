"""Every hook a ulisse plugin can implement. This file is the plugin API.

A plugin is a module (or object) with functions marked ``@ulisse.hookimpl``
whose names are hooks below. First-party plugins (``ulisse.plugins.*``) and
third-party ones are registered the same way: through the ``ulisse``
entry-point group in their package's ``pyproject.toml``::

    [project.entry-points.ulisse]
    my_plugin = "my_package.my_plugin"

``ulisse plugins`` lists what loaded. ``register_*`` hooks return a list (the
lists of all plugins are concatenated). Each hook has a one-line docstring; a
test fails when one is missing.

The objects they return are defined in :mod:`ulisse.registry`:
:class:`~ulisse.registry.QueryStrategy`, :class:`~ulisse.registry.ScoreProvider`
and :class:`~ulisse.registry.UIPage`.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ulisse")


@hookspec
def register_commands(cli):
    """Add click commands or groups to the ``ulisse`` command-line group ``cli``."""


@hookspec
def register_query_strategies():
    """Return a list of QueryStrategy: named ways to turn prototypes into ranked neighbours."""


@hookspec
def register_scores():
    """Return a list of ScoreProvider: per-object scores or heads computed from an index (anomaly, regression)."""


@hookspec
def register_ui_pages():
    """Return a list of UIPage: Streamlit page scripts that ``ulisse ui`` adds to the web app."""
