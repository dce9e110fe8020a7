"""Building the plugin manager (nothing is discovered at import time)."""

from __future__ import annotations

import functools
import importlib.metadata as md

import pluggy

from . import hookspecs
from .errors import UlisseError

ENTRY_POINT_GROUP = "ulisse"
hookimpl = pluggy.HookimplMarker("ulisse")


class PluginError(UlisseError):
    """A plugin failed to load or implements a hook wrongly."""


def make_plugin_manager(load_entrypoints: bool = True, plugins=()) -> pluggy.PluginManager:
    """A new plugin manager with the hook specs of :mod:`ulisse.hookspecs`.

    Args:
        load_entrypoints: load every plugin of the ``ulisse`` entry-point group
            (first-party plugins are registered there too).
        plugins: extra plugin modules or objects to register.

    Raises:
        PluginError: a plugin implements an unknown hook or a hook with wrong arguments.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    try:
        if load_entrypoints:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in plugins:
            pm.register(plugin)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {getattr(exc, 'plugin', '?')}: {exc}") from None
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise PluginError(f"a plugin of the '{ENTRY_POINT_GROUP}' entry-point group failed to load: {exc}") from None
    return pm


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built on first use)."""
    return make_plugin_manager()


def plugin_info(pm: pluggy.PluginManager) -> list[dict]:
    """Name, version, distribution and hooks of every registered plugin."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda x: x[0]):
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({
            "name": name,
            "module": getattr(plugin, "__name__", type(plugin).__name__),
            "distribution": dist.metadata["name"] if dist else None,
            "version": dist.version if dist else None,
            "hooks": hooks,
        })
    return out
