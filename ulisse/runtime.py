"""Inference runtimes for the encoder's network: torch, ONNX Runtime, OpenVINO.

Every runtime does one thing: prepared cutouts (uint8 ``N x S x S x 3``, already
resized) in, the network's final feature maps (float32 ``N x C x h x w``) out.
Normalisation runs inside the runtime; pooling, symmetry and observers work on
the maps, so they behave the same on every runtime.

``auto`` picks ONNX Runtime on a CPU when it is installed (about 1.5x torch on
two cores, see benchmarks/speed-cpu.md), OpenVINO for bf16 on a CPU with bf16
arithmetic (AVX-512 BF16 or AMX: the discovery preset's ``precision auto``,
about 1.45x ONNX Runtime fp32 here), and torch on CUDA (bf16 autocast,
channels_last, pinned memory). The ONNX graph (normalisation + ``forward_features``)
is exported once per network (model, weights, input size, normalisation) and
cached in the user cache directory under :meth:`EncoderSpec.network_digest`;
before it is cached it is checked against torch fp32 (cosine of the pooled
vectors >= 0.9999), so runtimes never change vectors silently.

Example:
    >>> enc = Encoder.load(weights="lite0", device="cpu", runtime="onnx")   # doctest: +SKIP
    >>> enc.runtime.name, enc.runtime.batch_size                            # doctest: +SKIP
    ('onnx', 8)
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write
from .errors import InputError

LOG = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx", "openvino")
EXPORT_FORMAT = "maps-uint8-nhwc-v1"  # part of the cache file name: bump when the exported graph changes
EXPORT_COSINE = 0.9999  # an exported graph must give these vectors against torch fp32, or it is not used
BF16_COSINE = 0.99  # the same check for a runtime computing in bf16 (measured: 0.994-0.997 on random cutouts)
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}

# Batch sizes chosen by measurement (ulisse benchmark speed, benchmarks/speed-cpu.md): on CPUs small
# batches stay in cache; GPUs want large ones.
BATCH_SIZES = {"torch-cpu": 4, "torch-cuda": 256, "onnx": 8, "openvino": 8}


class RuntimeUnavailable(InputError):
    """A runtime cannot be used here (not installed, export failed, or its vectors differ from torch's)."""


def cache_dir() -> Path:
    """Where exported models are kept: the run's :attr:`~ulisse.registry.Config.cache_dir` (the one rule:
    ``$ULISSE_CACHE_DIR``, else the platform's user cache folder, ``$XDG_CACHE_HOME/ulisse`` on Linux)."""
    from .registry import current_config

    return Path(current_config().cache_dir)


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 ``N x S x S x 3`` -> float ``N x 3 x S x S`` ``(x / 255 - mean) / std`` (channels_last), as ULISSE."""
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def forward_maps(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The final feature map: timm's ``forward_features`` (or ``forward``; a 2-d output becomes ``N x C x 1 x 1``)."""
    features = getattr(model, "forward_features", None)
    y = features(x) if callable(features) else model(x)
    return y[:, :, None, None] if y.ndim == 2 else y


def available(name: str) -> bool:
    """Whether the runtime's package is installed."""
    module = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}.get(name)
    if module is None:
        return False
    import importlib.util

    return importlib.util.find_spec(module) is not None


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether OpenVINO is installed and this CPU computes in bf16 (AVX-512 BF16 or AMX)."""
    if not available("openvino"):
        return False
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # an OpenVINO that cannot start is no bf16 arithmetic
        return False


def auto_precision(device: torch.device, runtime: str = "auto") -> str:
    """``precision auto``: bf16 on CUDA, and on a CPU with bf16 arithmetic for the auto or openvino runtime;
    else fp32."""
    if device.type == "cuda":
        return "bf16"
    return "bf16" if str(runtime or "auto").lower() in ("auto", "openvino") and cpu_has_bf16() else "fp32"


def make_runtime(name: str, encoder):
    """The runtime ``name`` for ``encoder`` (``auto``: ONNX Runtime on a CPU when installed, else torch).

    Raises:
        InputError: an unknown runtime name, or one that cannot serve this encoder.
    """
    name = str(name or "auto").lower()
    if name not in RUNTIMES:
        raise InputError(f"--runtime {name}: expected one of {', '.join(RUNTIMES)}")
    precision = encoder.spec.precision
    if name == "auto":
        if not encoder.cuda and precision == "bf16" and available("openvino"):
            try:  # bf16 on a CPU: OpenVINO where the CPU computes in bf16 (AVX-512 BF16, AMX), else torch
                return OpenVinoRuntime(encoder)
            except RuntimeUnavailable as exc:
                LOG.warning("OpenVINO not used for bf16 (%s); using torch", exc)
        if encoder.cuda or precision == "bf16" or not available("onnx"):
            return TorchRuntime(encoder)
        try:
            return OnnxRuntime(encoder)
        except RuntimeUnavailable as exc:
            LOG.warning("ONNX Runtime not used (%s); using torch", exc)
            return TorchRuntime(encoder)
    if name == "torch":
        return TorchRuntime(encoder)
    if encoder.cuda:
        raise InputError(f"--runtime {name}: runs on the CPU; use --runtime torch (or auto) with --device cuda")
    if precision == "bf16" and name == "onnx":
        raise InputError(f"--runtime {name}: bf16 runs on torch or openvino")
    return OnnxRuntime(encoder) if name == "onnx" else OpenVinoRuntime(encoder)


# --------------------------------------------------------------------------- torch

class TorchRuntime:
    """The torch module itself: fp32, or bf16 autocast (the CUDA default); inputs through pinned memory on CUDA."""

    name = "torch"

    def __init__(self, encoder):
        self.model = encoder.model
        self.device = encoder.device
        self.mean, self.std = encoder.spec.mean, encoder.spec.std
        self.bf16 = encoder.spec.precision == "bf16"
        self.batch_size = BATCH_SIZES["torch-cuda" if encoder.cuda else "torch-cpu"]

    @torch.inference_mode()
    def maps(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = normalise(x, self.mean, self.std)
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            y = forward_maps(self.model, x)
        return y.float().cpu().numpy()


# --------------------------------------------------------------------------- export

class _MapGraph(torch.nn.Module):
    """What is exported: uint8 NHWC cutouts -> normalisation -> the final feature map."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return forward_maps(self.model, (x - self.mean) / self.std)


def _export_bytes(encoder) -> bytes:
    """The ONNX graph of the encoder's network (torch's TorchScript exporter, else its dynamo exporter)."""
    spec = encoder.spec
    # a copy on the CPU: exporting must not touch the live model
    model = copy.deepcopy(encoder.model).to("cpu", memory_format=torch.contiguous_format).eval()
    graph = _MapGraph(model, spec.mean, spec.std).eval()
    dummy = torch.randint(0, 256, (2, spec.network_size, spec.network_size, 3), dtype=torch.uint8)
    errors = []
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            buf = io.BytesIO()
            torch.onnx.export(graph, (dummy,), buf, dynamo=False, opset_version=17, input_names=["cutouts"],
                              output_names=["maps"], dynamic_axes={"cutouts": {0: "n"}, "maps": {0: "n"}})
            return buf.getvalue()
        except Exception as exc:  # torch versions differ in which exporter works; try the other
            errors.append(f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        try:
            program = torch.onnx.export(graph, (dummy,), dynamo=True, input_names=["cutouts"], output_names=["maps"],
                                        dynamic_shapes=({0: torch.export.Dim("n", min=1)},))
            return program.model_proto.SerializeToString()
        except Exception as exc:
            errors.append(f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    raise RuntimeUnavailable(f"could not export {spec.model_name} to ONNX ({'; '.join(errors)})")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def check_against_torch(encoder, runtime, what: str, n: int = 2, threshold: float = EXPORT_COSINE) -> float:
    """Pooled vectors of ``runtime`` against torch fp32 on random cutouts; :class:`RuntimeUnavailable` below ``threshold``."""
    rng = np.random.default_rng(0)
    s = encoder.spec.network_size
    batch = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    with torch.inference_mode():
        ref = forward_maps(encoder.model, normalise(torch.from_numpy(batch).to(encoder.device),
                                                    encoder.spec.mean, encoder.spec.std)).float().cpu().numpy()
    got = runtime.maps(batch)
    if got.shape != ref.shape:
        raise RuntimeUnavailable(f"{what}: maps of shape {got.shape}, torch gives {ref.shape}")
    cos = float(_cosines(got.mean((2, 3)), ref.mean((2, 3))).min())
    if not cos >= threshold:
        raise RuntimeUnavailable(f"{what}: vectors differ from torch fp32 (cosine {cos:.6f} < {threshold})")
    return cos


def exported_model(encoder) -> Path:
    """The encoder's network as ONNX, exported once and cached (atomically) under the network's digest."""
    spec = encoder.spec
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in spec.model_name)
    path = cache_dir() / "onnx" / f"{safe}-{spec.network_digest()}-{EXPORT_FORMAT}.onnx"
    if path.is_file():
        return path
    LOG.info("exporting %s to ONNX (once; cached in %s)", spec.model_name, path.parent)
    data = _export_bytes(encoder)
    # checked before it is cached, so a cached graph is a verified one
    check_against_torch(encoder, _OrtSession(data, threads=1), f"ONNX export of {spec.model_name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return path


# --------------------------------------------------------------------------- ONNX Runtime

def _threads() -> int:
    return max(1, torch.get_num_threads())


class _OrtSession:
    def __init__(self, model: bytes | Path, threads: int):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailable("ONNX Runtime is not installed (pip install onnxruntime)") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between batches: the loader threads need those cycles on a small CPU
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def maps(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch)})[0]


class OnnxRuntime:
    """ONNX Runtime on the CPU, fp32 (its int8 path was removed: benchmarks/speed-cpu.md, INT8)."""

    name = "onnx"

    def __init__(self, encoder):
        if not available("onnx"):
            raise RuntimeUnavailable("ONNX Runtime is not installed (pip install onnxruntime)")
        path = exported_model(encoder)
        try:
            self._session = _OrtSession(path, _threads())
        except RuntimeUnavailable:
            raise
        except Exception as exc:  # a damaged cache file: export again
            LOG.warning("cached ONNX model %s unusable (%s); exporting again", path, str(exc).splitlines()[0][:120])
            path.unlink(missing_ok=True)
            self._session = _OrtSession(exported_model(encoder), _threads())
        self.path = path
        self.batch_size = BATCH_SIZES["onnx"]

    def maps(self, batch: np.ndarray) -> np.ndarray:
        return self._session.maps(batch)


# --------------------------------------------------------------------------- OpenVINO

class OpenVinoRuntime:
    """OpenVINO on the CPU, from the same cached ONNX graph: fp32 inference, or bf16 where the CPU has it.

    bf16 is used only on a CPU that computes in bf16 (OpenVINO's ``BF16`` capability: AVX-512 BF16 or
    AMX); its vectors are checked against torch fp32 with the looser :data:`BF16_COSINE`.
    """

    name = "openvino"

    def __init__(self, encoder):
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeUnavailable("OpenVINO is not installed (pip install openvino)") from None
        precision = encoder.spec.precision
        if precision not in ("fp32", "bf16"):
            raise InputError(f"--runtime openvino: {precision} is not supported (fp32 or bf16)")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise RuntimeUnavailable("this CPU has no bf16 arithmetic (AVX-512 BF16 or AMX)")
        model = core.read_model(str(exported_model(encoder)))
        self._compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": _threads(),
                                                           "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
                                                           "PERFORMANCE_HINT": "LATENCY"})
        self._request = self._compiled.create_infer_request()
        self.batch_size = BATCH_SIZES["openvino"]
        check_against_torch(encoder, self, f"OpenVINO {precision}",
                            threshold=EXPORT_COSINE if precision == "fp32" else BF16_COSINE)

    def maps(self, batch: np.ndarray) -> np.ndarray:
        out = self._request.infer({0: np.ascontiguousarray(batch)})
        return np.array(out[self._compiled.output(0)], dtype=np.float32, copy=True)
