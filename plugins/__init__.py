"""First-party ulisse plugins.

Each package here is a plugin written exactly like a third-party one. They are
loaded by module name from ``ulisse.plugin_manager.DEFAULT_PLUGINS`` (with
importlib: the core imports none of them), before the ``ulisse`` entry-point
group that third-party plugins register in.
"""
