"""Building the plugin manager, and calling hooks so that one broken plugin never breaks the others.

Nothing is discovered at import time. :func:`make_plugin_manager` loads, one
plugin at a time, the application's own plugins (:data:`DEFAULT_PLUGINS`, as
datasette does), then the ``ulisse`` entry-point group: a plugin that fails to
import or implements a hook wrongly is recorded in :func:`failed_plugins`
(``ulisse plugins`` lists it with its error) and left out; everything else
loads. A plugin whose hook raises when called is reported once, disabled, and
the hook's other implementations still answer (:func:`call_hook`).

``ULISSE_TRACE_PLUGINS=1`` logs every hook call; ``ulisse --plugins-dir DIR``
(or ``ULISSE_PLUGINS_DIR``) loads every ``*.py`` file of DIR as a plugin.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pluggy

from . import hookspecs
from .errors import UlisseError

LOG = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ulisse"
TRACE_ENV = "ULISSE_TRACE_PLUGINS"
PLUGINS_DIR_ENV = "ULISSE_PLUGINS_DIR"
hookimpl = pluggy.HookimplMarker("ulisse")

# The application's own plugins, loaded first and by module name (importlib, so the core imports none of them):
# the core's defaults (encoders, export formats), then the first-party plugins, each written as a third party would.
DEFAULT_PLUGINS = (
    "ulisse._builtins",
    "ulisse.plugins.prototype",
    "ulisse.plugins.recursive",
    "ulisse.plugins.anomalies",
    "ulisse.plugins.morphology",
    "ulisse.plugins.feedback",
    "ulisse.plugins.demo",
    "ulisse.plugins.sdss.plugin",
    "ulisse.plugins.heads.plugin",
    "ulisse.plugins.features",
    "ulisse.plugins.denoise.plugin",
    "ulisse.plugins.cluster",
    "ulisse.ui.plugin",
)


def default_plugin_name(module: str) -> str:
    """The name a default plugin is registered under: ``ulisse.plugins.sdss.plugin`` -> ``sdss``."""
    parts = [p for p in module.split(".") if p not in ("ulisse", "plugins", "plugin")]
    return parts[-1].lstrip("_") if parts else module


class PluginError(UlisseError):
    """A plugin failed to load or implements a hook wrongly."""


@dataclass
class PluginFailure:
    """A plugin that was left out, and why."""

    name: str
    source: str  # entry point value, file, or object
    error: str


def _short(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{exc.__class__.__name__}: {text}".strip().rstrip(":")


def _register_checked(pm: pluggy.PluginManager, plugin, name: str, source: str, failures: list) -> bool:
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
        return True
    except (pluggy.PluginValidationError, ValueError) as exc:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        failures.append(PluginFailure(name, source, _short(exc)))
        return False


def _load_file_plugin(path: Path):
    modname = f"ulisse_plugin_file_{path.stem}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    return module


def _own_distribution():
    try:
        return md.distribution("ulisse")
    except md.PackageNotFoundError:  # run from a source tree that is not installed
        return None


def _load_defaults(pm: pluggy.PluginManager, failures: list) -> None:
    own = _own_distribution()
    for module in DEFAULT_PLUGINS:
        name = default_plugin_name(module)
        if pm.is_blocked(name):
            continue
        try:
            plugin = importlib.import_module(module)
        except Exception as exc:  # a default plugin that fails to import is left out like any other
            failures.append(PluginFailure(name, module, _short(exc)))
            continue
        if _register_checked(pm, plugin, name, module, failures) and own is not None:
            pm.ulisse_dists[name] = own


def _load_entrypoints(pm: pluggy.PluginManager, failures: list) -> None:
    loaded = {getattr(p, "__name__", None) for p in pm.get_plugins()}
    for dist in md.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            if ep.module in loaded and not ep.attr:  # a default plugin already loaded by module name
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # any error in a plugin's import leaves that plugin out
                failures.append(PluginFailure(ep.name, ep.value, _short(exc)))
                continue
            if _register_checked(pm, plugin, ep.name, ep.value, failures):
                pm.ulisse_dists[ep.name] = dist


def make_plugin_manager(load_entrypoints: bool = True, plugins=(), plugins_dirs=(), strict: bool = False,
                        load_defaults: bool = True) -> pluggy.PluginManager:
    """A new plugin manager with the hook specs of :mod:`ulisse.hookspecs`.

    Args:
        load_entrypoints: load every plugin of the ``ulisse`` entry-point group
            (one naming a module already loaded as a default plugin is skipped).
        plugins: extra plugin modules or objects to register.
        plugins_dirs: folders whose ``*.py`` files are loaded as plugins.
        strict: raise :class:`PluginError` on the first broken plugin instead of leaving it out.
        load_defaults: load the application's own plugins (:data:`DEFAULT_PLUGINS`) first;
            ``False`` gives a manager with nothing but what is asked for (tests).

    The plugins left out are listed in ``pm.ulisse_failures``.

    Example:
        >>> pm = make_plugin_manager(load_entrypoints=False)
        >>> pm.has_plugin("prototype")
        True
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    failures: list[PluginFailure] = []
    pm.ulisse_failures = failures
    pm.ulisse_dists = {}
    if load_defaults:
        _load_defaults(pm, failures)
    if load_entrypoints:
        _load_entrypoints(pm, failures)
    for d in plugins_dirs:
        for path in sorted(Path(d).glob("*.py")):
            try:
                plugin = _load_file_plugin(path)
            except Exception as exc:
                failures.append(PluginFailure(path.stem, str(path), _short(exc)))
                continue
            _register_checked(pm, plugin, f"file:{path.stem}", str(path), failures)
    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin)}"
        _register_checked(pm, plugin, name, repr(plugin), failures)
    if strict and failures:
        f = failures[0]
        raise PluginError(f"plugin {f.name} ({f.source}): {f.error}")
    if os.environ.get(TRACE_ENV, "") not in ("", "0"):
        _enable_trace(pm)
    return pm


def _enable_trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name, impls, kwargs):
        LOG.warning("hook %s -> %s", hook_name, ", ".join(i.plugin_name for i in impls))

    pm.add_hookcall_monitoring(before, lambda *a: None)
    pm.ulisse_trace = True


_PLUGINS_DIRS: list[str] = []


def set_plugins_dirs(dirs) -> None:
    """Folders of one-off plugin files for the process-wide manager (``--plugins-dir``); resets it."""
    _PLUGINS_DIRS[:] = [str(d) for d in dirs]
    get_plugin_manager.cache_clear()


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built on first use)."""
    dirs = list(_PLUGINS_DIRS)
    env = os.environ.get(PLUGINS_DIR_ENV)
    if env:
        dirs += [d for d in env.split(os.pathsep) if d]
    pm = make_plugin_manager(plugins_dirs=dirs)
    for f in pm.ulisse_failures:
        LOG.warning("plugin %s failed to load and is disabled: %s", f.name, f.error)
    return pm


def failed_plugins(pm: pluggy.PluginManager | None = None) -> list[PluginFailure]:
    """The plugins left out of ``pm`` (the process-wide manager by default), with their errors."""
    pm = pm or get_plugin_manager()
    return list(getattr(pm, "ulisse_failures", []))


def call_hook(pm: pluggy.PluginManager, hook_name: str, **kwargs) -> list:
    """Call every implementation of a hook, each alone: one that raises is reported, disabled, and skipped.

    Returns the non-None results, in pluggy's calling order.
    """
    return [out for _, out in iter_hook(pm, hook_name, **kwargs) if out is not None]


def iter_hook(pm: pluggy.PluginManager, hook_name: str, **kwargs) -> Iterator[tuple[str, object]]:
    """As :func:`call_hook`, one implementation at a time: yields ``(plugin name, result)`` after each call."""
    caller = getattr(pm.hook, hook_name)
    trace = getattr(pm, "ulisse_trace", False)
    for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
        args = {a: kwargs[a] for a in impl.argnames if a in kwargs}
        if trace:
            LOG.warning("hook %s -> %s(%s)", hook_name, impl.plugin_name, ", ".join(args))
        try:
            out = impl.function(**args)
        except Exception as exc:  # a broken plugin must not take the others down
            error = _short(exc)
            LOG.warning("plugin %s failed in %s and is disabled: %s", impl.plugin_name, hook_name, error)
            getattr(pm, "ulisse_failures", []).append(PluginFailure(impl.plugin_name, hook_name, error))
            pm.unregister(impl.plugin)
            continue
        yield impl.plugin_name, out


def plugin_info(pm: pluggy.PluginManager) -> list[dict]:
    """Name, version, distribution, hooks and status of every plugin, loaded or failed."""
    dists = getattr(pm, "ulisse_dists", {})
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda x: x[0]):
        if plugin is None:
            continue
        dist = dists.get(name)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({
            "name": name,
            "module": getattr(plugin, "__name__", type(plugin).__name__),
            "distribution": dist.metadata["name"] if dist else None,
            "version": dist.version if dist else None,
            "hooks": hooks,
            "status": "loaded",
        })
    for f in getattr(pm, "ulisse_failures", []):
        out.append({"name": f.name, "module": f.source, "distribution": None, "version": None, "hooks": [],
                    "status": "failed", "error": f.error})
    return out
