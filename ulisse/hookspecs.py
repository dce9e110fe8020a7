"""Every hook a ulisse plugin can implement. This file is the plugin API.

A plugin is a module (or object) with functions marked ``@ulisse.hookimpl``
whose names are hooks below. First-party plugins (``ulisse.plugins.*``) and
third-party ones are registered the same way: through the ``ulisse``
entry-point group in their package's ``pyproject.toml``::

    [project.entry-points.ulisse]
    my_plugin = "my_package.my_plugin"

``ulisse plugins`` lists what loaded. Each hook has a one-line docstring; a
test fails when one is missing.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ulisse")


@hookspec
def register_commands(cli):
    """Add click commands or groups to the ``ulisse`` command-line group ``cli``."""
