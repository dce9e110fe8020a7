"""ulisse: one-shot similarity search and anomaly discovery for astronomical surveys.

The method of ULISSE (Doorenbos et al. 2022, A&A 666, A171): an ImageNet-pretrained
EfficientNet turns survey cutouts into 1280-d vectors kept in a FAISS index; the
nearest neighbours of one prototype's vector are the answer.

Public API::

    ulisse.Encoder          cutouts -> vectors
    ulisse.build_index      cutouts (+ catalogue) -> index directory
    ulisse.open_index       index directory -> Index (query, add)
    ulisse.hookimpl         marker for plugin hooks (see ulisse.hookspecs)

Names are imported on first use (module ``__getattr__``), so ``ulisse --help``
and queries of stored vectors never import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Cutout": ".cutouts", "RGBConfig": ".cutouts", "read_cutout": ".cutouts",
    "Encoder": ".encoder", "EncoderSpec": ".encoder",
    "CutoutError": ".errors", "EncoderMismatch": ".errors", "IndexError_": ".errors", "IndexNotFound": ".errors",
    "InputError": ".errors", "QueryError": ".errors", "UlisseError": ".errors", "WeightsError": ".errors",
    "AddReport": ".index", "Index": ".index", "build_index": ".index", "create_index": ".index",
    "open_index": ".index", "open_sharded": ".indexes.dask_search",
    "hookimpl": ".plugin_manager", "make_plugin_manager": ".plugin_manager",
    "Neighbours": ".results",
}
_SUBMODULES = ("plot", "results", "labels", "registry", "index", "encoder", "errors", "cutouts", "options")

__all__ = [
    "__version__", "Encoder", "EncoderSpec", "Index", "AddReport", "Neighbours", "Cutout", "RGBConfig",
    "build_index", "create_index", "open_index", "open_sharded", "read_cutout", "hookimpl", "make_plugin_manager",
    "UlisseError", "InputError", "CutoutError", "WeightsError", "IndexError_", "IndexNotFound",
    "EncoderMismatch", "QueryError",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ulisse' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
