"""What decides an encoder's vectors: :class:`EncoderSpec`, recorded in every index manifest.

Two encoders give comparable vectors only when their specs are compatible
(:func:`check_compatible`). Re-exported by :mod:`ulisse.encoder`.

Example:
    >>> parse_pool("center")
    'centre:3'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from .errors import EncoderMismatch, InputError

POOLS = ("mean", "centre")
TTAS = ("none", "rot4", "d4")
PRECISIONS = ("fp32", "bf16")
# Precisions ulisse no longer computes: an index that recorded one stays readable (search by id or vector,
# ``index info``), but nothing can make new vectors of it (a query by image, adding objects).
REMOVED_PRECISIONS = {
    "int8": "precision int8 was removed (issue 28: at best 0.59 of each object's 16 nearest neighbours were "
            "fp32's, 0.9 asked; benchmarks/speed-cpu.md, INT8): use fp32 or bf16, and rebuild an int8 index to "
            "embed into it",
}

# The named settings of the vector (``--preset``); explicit options override their fields. ``precision``
# ``auto``: bf16 where the device computes in bf16 (CUDA; a CPU with AVX-512 BF16 or AMX and OpenVINO),
# else fp32. The discovery preset's settings were chosen by measurement (benchmarks/discovery.md).
PRESETS = {
    "ulisse": {"input_size": 224, "crop": None, "pool": "mean", "tta": "none", "precision": "fp32"},
    "discovery": {"input_size": 224, "crop": 160, "pool": "centre:3", "tta": "rot4", "precision": "auto"},
}
DEFAULT_PRESET = "discovery"
PRESET_FIELDS = ("input_size", "crop", "pool", "tta", "precision")


def preset_settings(preset: str | None = None, **overrides) -> tuple[str, dict]:
    """``(name, {input_size, pool, tta, precision})``: the preset's settings (the default one's without
    ``preset``), with every override that is not None in their place.

    Example:
        >>> preset_settings("ulisse", pool="centre")[1]["pool"]
        'centre'
    """
    name = str(preset or DEFAULT_PRESET).strip().lower()
    if name not in PRESETS:
        raise InputError(f"--preset {preset}: expected one of {', '.join(PRESETS)}")
    settings = dict(PRESETS[name])
    settings.update({k: v for k, v in overrides.items() if k in PRESET_FIELDS and v is not None})
    if settings["precision"] != "auto":
        check_precision(settings["precision"])
    return name, settings


def check_precision(precision: str) -> str:
    """``precision`` if ulisse computes it; else :class:`InputError` (one line; a removed one says why)."""
    if precision in REMOVED_PRECISIONS:
        raise InputError(REMOVED_PRECISIONS[precision])
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision}: expected one of {', '.join(PRECISIONS)}")
    return precision


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
        precision: ``fp32`` or ``bf16`` (``int8`` in an index built before it was removed: readable, see
            :data:`REMOVED_PRECISIONS`).
        quantization: with the removed int8, the sha256 of its quantised graph (read from old manifests).
        crop: the side of the centre crop of the resized cutout that the network sees (None: all of it).
            The objects keep the input size's scale and the network computes only the centre (the part that
            ``centre:N`` pooling reads).
        preset: the ``--preset`` the settings started from (``ulisse`` or ``discovery``; older manifests
            read as ``ulisse``). A label: compatibility is decided by the fields, not by it.
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
    preset: str = "ulisse"
    crop: int | None = None

    @property
    def network_size(self) -> int:
        """The side of the network's input: the centre crop's, else the input size."""
        return int(self.crop or self.input_size)

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
                tuple((p["name"], p["fingerprint"]) for p in self.preprocessors), self.precision, self.quantization,
                self.crop)

    def compatible_with(self, other: "EncoderSpec") -> bool:
        return self.key() == other.key()

    def network_digest(self) -> str:
        """A short hash of what decides the network's feature maps (model, weights, input size, normalisation).

        Exported runtime models are cached under it; pooling, symmetry and
        preprocessing act outside the network and do not change it.
        """
        text = json.dumps([self.encoder, self.model_name, self.weights_sha256, self.network_size, list(self.mean),
                           list(self.std), self.dim])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: "EncoderSpec") -> list[str]:
        """Names of the fields that make ``other`` incompatible with this spec."""
        names = ("model_name", "weights_sha256", "input_size", "mean", "std", "interpolation", "dim", "encoder",
                 "pool", "tta", "preprocessors", "precision", "quantization", "crop")
        return [n for n, a, b in zip(names, self.key(), other.key()) if a != b]

    def describe(self) -> str:
        raw = self.weights_sha256 or "none"
        sha = "none: random weights" if raw.startswith("random") else raw[:12]
        text = (f"{self.model_name} with weights from {self.weights_source} (sha256 {sha}), "
                f"{self.input_size}px input{f' (centre {self.crop}px)' if self.crop else ''}, mean {list(self.mean)} std {list(self.std)}")
        if self.encoder:
            text = f"encoder {self.encoder!r}: " + text
        text += f", preset {self.preset}, pool {self.pool}, tta {self.tta}, {self.precision}"
        if self.quantization:
            text += f" (quantised graph {self.quantization[:12]})"
        for p in self.preprocessors:
            text += f", preprocess {p['name']}={p['arg']} ({str(p['fingerprint'])[:12]})"
        return text


    def preset_changes(self) -> list[str]:
        """The fields set away from the preset's values (``--pool`` and the like given with ``--preset``)."""
        want = PRESETS.get(self.preset, {})
        out = []
        for name in PRESET_FIELDS:
            value, default = getattr(self, name), want.get(name)
            if name == "precision" and default == "auto":
                continue
            if (parse_pool(default) if name == "pool" else default) != value:
                out.append(f"{name} {value}")
        return out

    def preset_text(self) -> str:
        """``preset discovery`` or, with fields overridden, ``preset ulisse with pool centre:3``."""
        changes = self.preset_changes()
        return f"preset {self.preset}" + (f" with {', '.join(changes)}" if changes else "")


def check_compatible(index_spec: EncoderSpec, offered: EncoderSpec, where: str) -> None:
    """Raise :class:`EncoderMismatch` unless ``offered`` gives the same vectors as ``index_spec``."""
    if not index_spec.compatible_with(offered):
        raise EncoderMismatch(
            f"{where}: encoder mismatch ({', '.join(index_spec.differences(offered))} differ): the index was built "
            f"with {index_spec.describe()}; this encoder is {offered.describe()}")
