"""The denoising autoencoder and its saved form (safetensors weights + JSON config).

The network follows the "Blobs Finder" design (convolutional autoencoders
used to denoise ALMA cubes): an encoder of strided 3x3 convolution blocks
(convolution, batch norm, leaky ReLU) that halve the image ``depth`` times, and a
decoder that doubles it back, alternating transposed convolutions and
bilinear upsampling followed by a convolution block. Skip connections join each
decoder level to the encoder level of the same size (U-Net style), so that
sharp features (a nucleus, a star) are not lost in the bottleneck.

Inputs are normalised so that the network sees noise of unit size in any units:
flux models (``normalise="sky"``) measure each image's sky level and sky sigma
per band (:mod:`.noise`) and feed ``(x - sky) / sigma``, mapping the output back
with the same two numbers; 8-bit models (``normalise="global"``) divide by
``scale``, the training images' typical noise sigma per channel.

Example:
    >>> den = Denoiser.load("models/sdss-denoiser")         # doctest: +SKIP
    >>> clean = den.denoise_arrays([noisy_cube])[0]          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ulisse._io import atomic_write, sha256_file
from ulisse.errors import InputError

from .images import DOMAINS, EIGHT_BIT
from .noise import normalisers

FORMAT = "ulisse-denoiser"
VERSION = 2  # 2: fingerprinted by its network (weights + settings); 1: by the config file's bytes (still read)
READABLE_VERSIONS = (1, 2)
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
OBJECTIVES = ("supervised", "self-supervised")
NORMALISATIONS = ("global", "sky")
LEAK = 0.1


@dataclass(frozen=True)
class DenoiserConfig:
    """What a saved denoiser is: its inputs, its network, how it was trained.

    Attributes:
        channels: 1 (one band, grey) or 3 (g, r, i or RGB).
        domain: ``"flux"`` (FITS floats) or ``"8bit"`` (PNG/JPEG, 0..1 inside the model).
        scale: per-channel divisor applied before the network (the noise sigma of the training data); with
            ``normalise="sky"`` only where an image's own sky sigma cannot be measured.
        width: channels of the first block (doubled at each level).
        depth: number of strided (halving) levels; images are padded to a multiple of 2**depth.
        residual: the network predicts the noise (output = input - noise) rather than the image.
        objective: ``"supervised"`` (noisy/clean pairs) or ``"self-supervised"`` (blind-spot masking).
        training: what the training saw and reached (informational: not part of the network nor of its
            fingerprint). From ulisse's config version 2 it also names the images it trained on (``train_keys``)
            and held out (``held_out_keys``) by :func:`image_key`, so that reports can leave them out.
        normalise: ``"sky"``: each image minus its sky level, over its sky sigma, per band (flux models);
            ``"global"``: divided by ``scale`` (8-bit models, and models saved before this option).
    """

    channels: int
    domain: str
    scale: tuple[float, ...]
    width: int = 16
    depth: int = 3
    residual: bool = True
    objective: str = "supervised"
    training: dict = field(default_factory=dict)
    normalise: str = "global"

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise InputError(f"denoiser config: channels must be 1 or 3, not {self.channels}")
        if self.domain not in DOMAINS:
            raise InputError(f"denoiser config: domain must be one of {', '.join(DOMAINS)}, not {self.domain!r}")
        if len(self.scale) != self.channels or not all(np.isfinite(s) and s > 0 for s in self.scale):
            raise InputError(f"denoiser config: scale must be {self.channels} positive number(s), not {list(self.scale)}")
        if not (1 <= self.depth <= 6 and 1 <= self.width <= 512):
            raise InputError(f"denoiser config: depth 1-6 and width 1-512, not {self.depth} and {self.width}")
        if self.objective not in OBJECTIVES:
            raise InputError(f"denoiser config: objective must be one of {', '.join(OBJECTIVES)}")
        if self.normalise not in NORMALISATIONS:
            raise InputError(f"denoiser config: normalise must be one of {', '.join(NORMALISATIONS)}")

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **asdict(self), "scale": [float(s) for s in self.scale]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "DenoiserConfig":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{source}: not a ulisse denoiser config (no \"format\": \"{FORMAT}\")")
        if d.get("version") not in READABLE_VERSIONS:
            raise InputError(f"{source}: denoiser config version {d.get('version')!r}; this ulisse reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
        try:
            return cls(channels=int(d["channels"]), domain=str(d["domain"]), scale=tuple(float(s) for s in d["scale"]),
                       width=int(d["width"]), depth=int(d["depth"]), residual=bool(d["residual"]),
                       objective=str(d["objective"]), training=dict(d.get("training") or {}),
                       normalise=str(d.get("normalise", "global")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: damaged denoiser config ({exc.__class__.__name__}: {exc})") from None

    @property
    def multiple(self) -> int:
        return 2 ** self.depth


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (``stride`` 1 or 2), batch norm, leaky ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(LEAK, inplace=True))


class UpBlock(nn.Module):
    """Double the size (transposed convolution, or bilinear upsampling + convolution), join the skip, convolve."""

    def __init__(self, cin: int, cout: int, transposed: bool):
        super().__init__()
        if transposed:
            self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                                    nn.LeakyReLU(LEAK, inplace=True))
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    conv_block(cin, cout))
        self.merge = conv_block(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([self.up(x), skip], dim=1))


class BlobsAutoencoder(nn.Module):
    """Strided-convolution encoder, upsampling/transposed-convolution decoder, skips between equal sizes.

    Input and output: ``N x C x H x W`` with H and W multiples of ``2**depth``.
    """

    def __init__(self, channels: int, width: int = 16, depth: int = 3, residual: bool = True):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.residual = residual
        self.stem = conv_block(channels, width)
        self.down = nn.ModuleList(nn.Sequential(conv_block(widths[i], widths[i + 1], stride=2),
                                                conv_block(widths[i + 1], widths[i + 1])) for i in range(depth))
        self.up = nn.ModuleList(UpBlock(widths[i + 1], widths[i], transposed=(i % 2 == 0))
                                for i in reversed(range(depth)))
        self.head = nn.Conv2d(width, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            y = block(y, skips.pop())
        y = self.head(y)
        return x - y if self.residual else y


def build_network(config: DenoiserConfig) -> BlobsAutoencoder:
    return BlobsAutoencoder(config.channels, config.width, config.depth, config.residual)


class Denoiser:
    """A trained denoiser: the network, its config, and a fingerprint of both.

    Use :meth:`load` for a saved one; :func:`ulisse.plugins.denoise.train` makes new ones.
    """

    def __init__(self, network: BlobsAutoencoder, config: DenoiserConfig, device: str | torch.device = "cpu",
                 fingerprint: str | None = None):
        self.network = network.eval().to(device)
        self.config = config
        self.device = torch.device(device)
        self.fingerprint = fingerprint or self._fingerprint_of_state()
        if self.device.type == "cuda":
            self.network.to(memory_format=torch.channels_last)

    def __repr__(self) -> str:
        c = self.config
        return (f"Denoiser({c.objective}, {c.domain}, {c.channels} channel(s), width {c.width}, depth {c.depth}, "
                f"fingerprint {self.fingerprint[:12]})")

    def _fingerprint_of_state(self) -> str:
        return network_fingerprint(self.config, self.network.state_dict())

    # -- saving and loading -------------------------------------------------

    def save(self, model_dir: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``model_dir`` (atomically, each)."""
        from safetensors.torch import save_file

        out = Path(model_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        atomic_write(out / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata={"format": FORMAT}))
        atomic_write(out / CONFIG_FILE, json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n")
        self.fingerprint = fingerprint_of(out)
        return out

    @classmethod
    def load(cls, model_dir: str | Path, device: str | torch.device = "cpu") -> "Denoiser":
        """Read a saved denoiser.

        Raises:
            InputError: no model there, or its files are damaged or do not fit each other.
        """
        d = Path(model_dir)
        raw, config, state = read_model(d)
        network = build_network(config)
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InputError(f"{d / WEIGHTS_FILE}: weights do not fit the config "
                             f"({str(exc).splitlines()[0][:160]})") from None
        fingerprint = legacy_fingerprint(d) if raw.get("version") == 1 else network_fingerprint(config, state)
        return cls(network, config, device, fingerprint)

    # -- denoising ----------------------------------------------------------

    @torch.inference_mode()
    def denoise_arrays(self, arrays: Sequence[np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
        """Denoise float32 ``C x H x W`` arrays (in the config's units: flux, or 0..1 for 8-bit).

        NaNs are replaced by 0 for the network and put back afterwards; 8-bit
        outputs are clipped to 0..1. Arrays of different sizes are fine.
        """
        out: list[np.ndarray | None] = [None] * len(arrays)
        by_shape: dict[tuple, list[int]] = {}
        for i, a in enumerate(arrays):
            a = np.asarray(a)
            if a.ndim != 3 or a.shape[0] != self.config.channels:
                raise InputError(f"array {i}: shape {tuple(a.shape)}, but this denoiser takes "
                                 f"{self.config.channels} x H x W")
            by_shape.setdefault(a.shape, []).append(i)
        for shape, members in by_shape.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start:start + batch_size]
                stack = np.stack([np.asarray(arrays[i], dtype=np.float32) for i in chunk])
                bad = ~np.isfinite(stack)
                result = self._run(stack)
                result[bad] = np.nan
                for i, r in zip(chunk, result):
                    out[i] = r
        return out  # type: ignore[return-value]

    def normalisers(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, divisors), each ``N x C``, that bring ``batch`` (NaNs allowed) to the network's units."""
        n, c = batch.shape[:2]
        if self.config.normalise == "sky":
            return normalisers(batch, self.config.scale)
        scale = np.asarray(self.config.scale, dtype=np.float32)
        return np.zeros((n, c), np.float32), np.broadcast_to(scale, (n, c)).copy()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n, c, h, w = batch.shape
        m = self.config.multiple
        ph, pw = (-h) % m, (-w) % m
        off, div = (torch.from_numpy(v).to(self.device).view(n, c, 1, 1) for v in self.normalisers(batch))
        x = torch.nan_to_num((torch.from_numpy(batch).to(self.device) - off) / div, nan=0.0, posinf=0.0, neginf=0.0)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        y = (self.network(x).float()[:, :, :h, :w] * div + off).cpu().numpy()
        if self.config.domain == EIGHT_BIT:
            np.clip(y, 0.0, 1.0, out=y)
        return y


def network_fingerprint(config: DenoiserConfig, state) -> str:
    """sha256 of what decides a denoiser's output: its settings and every tensor of its weights.

    The config's ``training`` notes (wall time, device, threads, losses, the images seen) are left out, so two
    identical seeded trainings give the same fingerprint, and a model is the same model wherever it is kept.
    """
    settings = {k: v for k, v in config.to_dict().items() if k not in ("training", "format", "version")}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def legacy_fingerprint(model_dir: str | Path) -> str:
    """The fingerprint of a version 1 model (and what indexes built with one recorded): sha256 over the weights
    file's sha256 and the config file's bytes, training notes included."""
    d = Path(model_dir)
    h = hashlib.sha256(sha256_file(d / WEIGHTS_FILE).encode())
    h.update((d / CONFIG_FILE).read_bytes())
    return h.hexdigest()


def read_model(model_dir: str | Path) -> tuple[dict, DenoiserConfig, dict]:
    """``(raw config, config, weights)`` of the saved model in ``model_dir``.

    Raises:
        InputError: no model there, or its files are damaged.
    """
    from safetensors.torch import load_file

    d = Path(model_dir)
    cfg_path, weights_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    missing = [p.name for p in (cfg_path, weights_path) if not p.is_file()]
    if missing:
        reason = "no such denoiser model folder" if not d.is_dir() else f"not a denoiser model folder ({missing[0]} is missing)"
        raise InputError(f"{d}: {reason}")
    try:
        raw = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{cfg_path}: not valid JSON ({exc})") from None
    config = DenoiserConfig.from_dict(raw, str(cfg_path))
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise InputError(f"{weights_path}: not a readable safetensors file ({str(exc).splitlines()[0][:160]})") from None
    return raw, config, state


def fingerprint_of(model_dir: str | Path) -> str:
    """The fingerprint of the saved model in ``model_dir``: changes whenever its output would.

    Models saved by this ulisse (config version 2) are fingerprinted by :func:`network_fingerprint`; version 1
    models keep the fingerprint they had (:func:`legacy_fingerprint`), so indexes built with them still open.

    Raises:
        InputError: no model there, or its files are damaged.
    """
    raw, config, state = read_model(model_dir)
    return legacy_fingerprint(model_dir) if raw.get("version") == 1 else network_fingerprint(config, state)


def image_key(data: np.ndarray) -> str:
    """A short content hash of an image's pixels (float32 ``C x H x W``): how a model's config names the images
    it trained on, whatever their file names."""
    a = np.ascontiguousarray(data, dtype=np.float32)
    return hashlib.sha256(f"{a.shape}".encode() + a.tobytes()).hexdigest()[:16]
