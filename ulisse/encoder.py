"""The encoder: survey cutouts -> feature vectors (ULISSE's method).

Every encoder is a registered one (``register_encoders``, as timm's
``register_model``): the core registers ``efficientnet_b0`` (ULISSE's
ImageNet-pretrained EfficientNet-B0 from timm, the default), ``lite0`` (the
offline ImageNet EfficientNet-Lite0) and ``timm`` (any timm model by name) in
:mod:`ulisse._builtins`, exactly as a plugin registers its own. The vector is
the spatial mean of the network's final feature map; preprocessing follows
ULISSE (Doorenbos et al. 2022): RGB cutouts resized to the input size (224 x
224) with bilinear interpolation, normalised with the weights' own mean and std.
Where the weights come from is said in :mod:`ulisse._weights`.

Beyond ULISSE's vector (``pool="mean"``, ``tta="none"``: ``preset="ulisse"``), the
final map can be pooled over its central cells (``pool="centre:3"``) and the
vectors averaged over the rotations (``tta="rot4"``) or rotations and flips
(``tta="d4"``) of each cutout (:mod:`ulisse._pooling`), and the network can see
only the centre of the resized cutout (``crop``). The settings come from a
preset (:data:`ulisse._spec.PRESETS`): ``discovery``, the default, chosen by
measurement (benchmarks/discovery.md), or ``ulisse``; explicit options override
its fields, and the preset's name is recorded in the spec. Registered
preprocessing steps (:func:`ulisse.registry.preprocessors`) run on the uint8
cutouts before the resize. The network runs on an inference runtime
(:mod:`ulisse.runtime`: torch, ONNX Runtime, OpenVINO); all of this except the
runtime is recorded in the :class:`EncoderSpec` (:mod:`ulisse._spec`), so an
index is always queried the way it was built.

Example:
    >>> enc = Encoder.load()                      # doctest: +SKIP
    >>> vectors = enc.embed_images([rgb_uint8])   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from ._pooling import SYMMETRIES, pool_maps, resize_cutout
from ._spec import (DEFAULT_PRESET, PRECISIONS, POOLS, PRESETS, TTAS, EncoderSpec, check_compatible, check_precision,
                    parse_pool, parse_tta, preset_settings)
from ._weights import (DEFAULT_MODEL, LITE0_MODEL, LITE0_PACKAGE, lite0_state_dict, lite0_weights_path,
                       map_state_dict_by_order, resolve_weights, timm_model)
from .checks import rgb_images
from .errors import EncoderMismatch, InputError, UlisseError

LOG = logging.getLogger(__name__)

TIMM_ENCODER = "timm"  # the registered encoder that builds any timm model by name (``--model``)

__all__ = ["Encoder", "EncoderSpec", "check_compatible", "resolve_device", "load_preprocessors", "parse_pool",
           "parse_tta", "pool_maps", "resize_cutout", "resolve_weights", "lite0_state_dict", "lite0_weights_path",
           "map_state_dict_by_order", "DEFAULT_MODEL", "LITE0_MODEL", "LITE0_PACKAGE", "POOLS", "TTAS", "PRECISIONS",
           "SYMMETRIES", "TIMM_ENCODER", "PRESETS", "DEFAULT_PRESET", "preset_settings"]
_timm_model = timm_model  # the name benchmarks/ used before the split


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
        check_precision(spec.precision)
        if len(steps) != len(spec.preprocessors):
            raise InputError(f"{len(steps)} preprocessing steps for the {len(spec.preprocessors)} of the spec")
        self.spec = spec
        self.batch_symmetries = True  # the views of a batch (--tta) go through the network as one batch
        self._steps = list(steps)
        self._steps_lock = threading.Lock()
        from .runtime import make_runtime

        self.runtime = make_runtime(runtime, self)

    # -- construction -----------------------------------------------------------

    @classmethod
    def load(cls, model_name: str = DEFAULT_MODEL, weights=None, device="auto", input_size: int | None = None, *,
             pool: str | None = None, tta: str | None = None, runtime: str = "auto", preprocess: Sequence = (),
             encoder: str | None = None, precision: str | None = None, preset: str | None = None,
             crop: int | None = None) -> "Encoder":
        """Build an encoder through the registry: ``encoder`` by name, else the ``timm`` entry with ``model_name``.

        The input size, pooling, symmetry and precision come from ``preset`` (:data:`ulisse._spec.PRESETS`:
        ``discovery``, the default, or ``ulisse``, the paper's exact vector); each one given overrides its
        preset's value. The preset's name is recorded in the spec.

        Args:
            model_name: a timm model name for the ``timm`` encoder (the default one; ignored by the others).
            weights: see :func:`ulisse._weights.resolve_weights` (a registered encoder may read it its own way).
            device: ``auto``, ``cpu`` or ``cuda``.
            input_size: the side the cutouts are resized to.
            pool: ``mean`` (ULISSE) or ``centre:N``.
            tta: ``none``, ``rot4`` or ``d4``.
            runtime: ``auto`` (ONNX Runtime on a CPU when installed, OpenVINO for bf16 on a CPU, torch on CUDA),
                ``torch``, ``onnx``, ``openvino``.
            preprocess: ``[(name, arg), ...]`` registered preprocessing steps, applied in order.
            encoder: a registered encoder's name (``ulisse plugins`` lists them).
            precision: ``fp32``, ``bf16`` or ``auto`` (bf16 on CUDA and on a CPU with bf16
                arithmetic and OpenVINO, else fp32). ``int8`` was removed (an index that recorded it is
                readable, but gets no new vectors: :data:`ulisse._spec.REMOVED_PRECISIONS`).
            preset: ``discovery`` (default) or ``ulisse``.
            crop: the side of the centre crop of the resized cutout that the network sees (0: none).

        Raises:
            WeightsError, InputError: unknown encoder or preprocessor, bad option, weights that do not fit.
        """
        dev = resolve_device(device)
        preset, settings = preset_settings(preset, input_size=input_size, pool=pool, tta=tta, precision=precision,
                                           crop=crop)
        if crop is None and settings["crop"] and settings["crop"] >= settings["input_size"]:
            settings["crop"] = None  # the preset's crop does not apply to a smaller --input-size
        name = encoder or TIMM_ENCODER
        options = {"model_name": model_name} if name == TIMM_ENCODER else {}
        base, entry = _registered_encoder(name, device=str(dev), weights=weights,
                                          input_size=int(settings["crop"] or settings["input_size"]), **options)
        model, spec = base.model, (replace(base.spec, encoder=name) if entry.record_name else base.spec)
        if spec.input_size != int(settings["crop"] or settings["input_size"]):
            # an encoder with its own fixed size: the preset's size, crop and central cells (tuned on EfficientNet
            # at 224 px) do not apply; its whole map is pooled unless --pool says otherwise
            settings["input_size"], settings["crop"] = spec.input_size, None
            settings["pool"] = pool or "mean"
        steps, records = load_preprocessors(preprocess)
        precision = settings["precision"]
        if precision == "auto":
            from .runtime import auto_precision

            precision = auto_precision(dev, runtime)
        spec = replace(spec, pool=parse_pool(settings["pool"]), tta=parse_tta(settings["tta"]), preprocessors=records,
                       precision=precision, preset=preset, input_size=int(settings["input_size"]),
                       crop=_parse_crop(settings["crop"], settings["input_size"]))
        enc = cls(model, spec, dev, runtime=runtime, steps=steps)
        LOG.info("encoder: %s (runtime %s)", enc.spec.describe(), enc.runtime.name)
        return enc

    @classmethod
    def from_spec(cls, spec: EncoderSpec, device="auto", weights=None, runtime: str = "auto",
                  index: str | os.PathLike | None = None) -> "Encoder":
        """Rebuild the encoder described by ``spec`` (an index's): weights checked by sha256, the same
        registered encoder, pooling, symmetry, precision and preprocessing steps (checked by fingerprint).
        ``index``: the folder of the index that recorded ``spec``, named in the errors' fixes.

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
        try:
            enc = cls.load(spec.model_name, weights=weights, device=device, input_size=spec.input_size,
                           pool=spec.pool, tta=spec.tta, runtime=runtime, encoder=spec.encoder,
                           precision=spec.precision, preset=spec.preset, crop=spec.crop or 0,
                           preprocess=[dict(p) for p in spec.preprocessors])
        except EncoderMismatch as exc:  # a recorded step's fix ("... relink INDEX ...") names the index
            if index is None:
                raise
            raise EncoderMismatch(str(exc).replace(" INDEX ", f" {shlex.quote(str(index))} ")) from None
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
        """One uint8 RGB cutout resized to the input size (see :func:`resize_cutout`), then its centre crop
        (``spec.crop``)."""
        out = resize_cutout(image, self.spec.input_size, self.spec.interpolation)
        if self.spec.crop:
            top = (self.spec.input_size - self.spec.crop) // 2
            out = np.ascontiguousarray(out[top:top + self.spec.crop, top:top + self.spec.crop])
        return out

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
            s = self.spec.network_size
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
        transforms = SYMMETRIES[self.spec.tta]
        views = [t(batch) if t is not None else batch for t in transforms]
        if self.batch_symmetries and len(views) > 1:  # one forward pass over every view of the batch
            stacked = self.runtime.maps(np.concatenate(views))
            per_view = np.split(stacked, len(views))
        else:
            per_view = [self.runtime.maps(v) for v in views]
        vectors = sum(pool_maps(m, self.spec.pool) for m in per_view) / len(views)
        vectors = vectors.astype(np.float32, copy=False)
        return (vectors, per_view[0]) if return_maps else vectors  # the first view is the cutout as it is

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int | None = None, return_maps: bool = False):
        """Embed uint8 RGB arrays of any size (``H x W x 3``; ``H x W`` grey is repeated into three
        channels; :func:`ulisse.checks.rgb_images` says what else is refused); returns float32 ``N x dim``
        (or ``(vectors, maps)``).

        Example:
            >>> vectors, maps = encoder.embed_images(cutouts, return_maps=True)   # doctest: +SKIP
            >>> maps.shape                                                       # doctest: +SKIP
            (16, 1280, 7, 7)
        """
        images = rgb_images(images)  # a list of H x W x 3 uint8 arrays, or a one-line error
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



def _parse_crop(crop, input_size: int) -> int | None:
    """``--crop``: None or 0 (no crop), else a side from 32 to the input size."""
    if not crop:
        return None
    crop = int(crop)
    if not 32 <= crop <= int(input_size):
        raise InputError(f"--crop {crop}: expected 0 (none) or a side from 32 to the input size ({input_size})")
    return None if crop == int(input_size) else crop


def _registered_encoder(name: str, **kwargs):
    """``(encoder, entry)``: the registered encoder ``name`` loaded with ``kwargs``."""
    from .registry import encoders

    registered = encoders()
    if name not in registered:
        raise InputError(f"--encoder {name}: no such encoder (registered: {', '.join(sorted(registered)) or 'none'})")
    entry = registered[name]
    enc = entry.load(**kwargs)
    if not isinstance(enc, Encoder):
        raise InputError(f"--encoder {name}: the plugin returned {type(enc).__name__}, not a ulisse.Encoder")
    return enc, entry


def load_preprocessors(preprocess: Sequence) -> tuple[list, tuple]:
    """``[(name, arg), ...]`` -> (loaded steps, the spec's ``({"name", "arg", "fingerprint"}, ...)``).

    The recorded ``arg`` is the step's own ``arg`` attribute when it has one (its canonical form: a model
    folder's absolute path, say), else the argument given. An item may be a spec's record (a dict): the
    index's recorded step, whose load errors then say so (with the error's ``index_hint``, if the plugin
    gave one: how to fix it).

    Raises:
        InputError: an unknown step, or one whose plugin refuses the argument.
        EncoderMismatch: an index's recorded step cannot be loaded.
    """
    if not preprocess:
        return [], ()
    from .registry import preprocessors

    registered = preprocessors()
    steps, records = [], []
    for item in preprocess:
        recorded = isinstance(item, dict)
        name, arg = ((item["name"], item["arg"]) if recorded else
                     (item if isinstance(item, (tuple, list)) else str(item).split("=", 1) + [""])[:2])
        if name not in registered:
            raise InputError(f"--preprocess {name}: no such preprocessor "
                             f"(registered: {', '.join(sorted(registered)) or 'none'})")
        try:
            step = registered[name].load(str(arg))
        except UlisseError as exc:
            if not recorded:
                raise
            hint, where = getattr(exc, "index_hint", ""), "" if str(exc).startswith(str(arg)) else f" ({arg})"
            raise EncoderMismatch(f"the index's recorded preprocessing step {name}{where} cannot be loaded: {exc}"
                                  + (f"; {hint}" if hint else "")) from None
        steps.append(step)
        records.append({"name": str(name), "arg": str(getattr(step, "arg", None) or arg),
                        "fingerprint": str(step.fingerprint)})
    return steps, tuple(records)


def _check_step_available(rec: dict) -> None:
    from .registry import preprocessors

    if rec["name"] not in preprocessors():
        raise EncoderMismatch(f"the index was built with the preprocessor {rec['name']!r} "
                              f"(argument {rec['arg']!r}), which no installed plugin provides")


