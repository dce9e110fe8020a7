"""INT8: ONNX Runtime static quantisation of the encoder's graph, calibrated on the index's own cutouts.

Optional and a default nowhere (benchmarks/speed-cpu.md has its speed, its cosine
to fp32 and the overlap of each object's 16 nearest neighbours with the fp32
ones). The quantised graph is cached beside the fp32 export under its own
sha256, which the encoder spec records (``precision="int8"``, ``quantization``),
so an index built with it is queried with the same graph and never mixed with
fp32 vectors.

Example:
    >>> enc = Encoder.load(weights="lite0", device="cpu", precision="int8", calibration=cutouts)   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ._io import atomic_write
from .runtime import RuntimeUnavailable, exported_model, int8_model, int8_path

__all__ = ["CALIBRATION_BATCH", "int8_model", "quantize_int8"]

LOG = logging.getLogger(__name__)

CALIBRATION_BATCH = 8


def quantize_int8(encoder, calibration: Sequence[np.ndarray]) -> str:
    """Quantise ``encoder``'s fp32 graph (QDQ, per-channel int8 weights, uint8 activations, min-max calibration
    on ``calibration``: uint8 RGB cutouts of any size); returns the quantised graph's sha256.

    Raises:
        RuntimeUnavailable: ONNX Runtime's quantisation tools are missing, or there is nothing to calibrate on.
    """
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise RuntimeUnavailable("int8 needs ONNX Runtime's quantisation tools (pip install onnxruntime onnx)") from None
    if len(calibration) == 0:
        raise RuntimeUnavailable("int8 needs calibration cutouts (the index's own)")
    prepared = encoder.prepare(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([prepared[i:i + CALIBRATION_BATCH] for i in range(0, len(prepared), CALIBRATION_BATCH)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"cutouts": batch}

    source = exported_model(encoder)
    with tempfile.TemporaryDirectory(prefix="ulisse-int8-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        data = out.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    path = int8_path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    LOG.info("int8 graph calibrated on %d cutouts: %s", len(prepared), path)
    return sha
