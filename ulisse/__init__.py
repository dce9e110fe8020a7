"""ulisse: one-shot similarity search and anomaly discovery for astronomical surveys.

The method of ULISSE (Doorenbos et al. 2022, A&A 666, A171): an ImageNet-pretrained
EfficientNet turns survey cutouts into 1280-d vectors kept in a FAISS index; the
nearest neighbours of one prototype's vector are the answer.

Public API::

    ulisse.Encoder          cutouts -> vectors
    ulisse.build_index      cutouts (+ catalogue) -> index directory
    ulisse.open_index       index directory -> Index (query, add)
    ulisse.hookimpl         marker for plugin hooks (see ulisse.hookspecs)
"""

__version__ = "0.1.0"

from .cutouts import Cutout, RGBConfig, read_cutout
from .encoder import Encoder, EncoderSpec
from .errors import (CutoutError, EncoderMismatch, IndexError_, IndexNotFound, InputError, QueryError,
                     UlisseError, WeightsError)
from .index import AddReport, Index, build_index, create_index, open_index
from .plugin_manager import hookimpl, make_plugin_manager
from .results import Neighbours
from . import plot

__all__ = [
    "__version__", "Encoder", "EncoderSpec", "Index", "AddReport", "Neighbours", "Cutout", "RGBConfig",
    "build_index", "create_index", "open_index", "read_cutout", "hookimpl", "make_plugin_manager",
    "UlisseError", "InputError", "CutoutError", "WeightsError", "IndexError_", "IndexNotFound",
    "EncoderMismatch", "QueryError",
]
