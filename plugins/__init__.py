"""First-party ulisse plugins.

Each module here is a plugin registered through the ``ulisse`` entry-point
group in ``pyproject.toml``, exactly like a third-party plugin; the core never
imports them by name.
"""
