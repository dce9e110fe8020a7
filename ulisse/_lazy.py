"""Lazy package APIs: names that load their submodule (and its heavy imports, torch say) on first use.

Example, in a plugin package's ``__init__.py``::

    __getattr__, __dir__ = lazy_api(__name__, {"train": "training", "Denoiser": "model"})
"""

from __future__ import annotations

import importlib
import sys


def lazy_api(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``: each name in ``names`` comes from the submodule it maps to."""

    def __getattr__(name):
        if name in names:
            value = getattr(importlib.import_module(f".{names[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
