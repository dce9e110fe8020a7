"""The networks of fine-tuned heads: the index's encoder cut in a frozen prefix and a trained trunk.

The encoder is rebuilt from the index's :class:`~ulisse.EncoderSpec` (its weights
checked by sha256, in fp32 whatever precision the index was embedded at) and cut
at a stage boundary. For timm's EfficientNets (the default Lite0 and B0) the
stages are the stem, ``blocks[0]`` ... ``blocks[6]`` and the head convolution:

* ``finetune="all"``: every stage is trained (the whole network);
* ``finetune="last"``: the stem and ``blocks[:train_from]`` stay as pretrained (the
  *prefix*, run once per cutout and view and cached), ``blocks[train_from:]``, the
  head convolution and its batch norm are trained (the *trunk*).

After the trunk: the spatial mean of the final map (1280 numbers for Lite0), then a
:class:`~ulisse.plugins.heads.models.GaussianMLP` with a mean and a variance output.
Only the trunk is stored (``member{m}.`` + its state-dict keys); the prefix comes back
from the index's encoder.

The pixels are the index's cutouts read again from their ``source`` files
(:func:`read_pixels`), through the spec's preprocessing steps, resized to the head's
input size (bilinear) and normalised with the weights' mean and std. Views are the
eight rotations and flips of the square (:func:`view`).

Example:
    >>> VIEWS["rot-flip"], VIEWS["none"]
    (8, 1)
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ulisse.errors import InputError

from .models import GaussianMLP

LOG = logging.getLogger(__name__)

VIEWS = {"rot-flip": 8, "none": 1}  # views per cutout an augmentation draws from
READ_CHUNK = 256  # cutouts read and resized at a time


# -- pixels ------------------------------------------------------------------------------------

def read_pixels(index, rows, size: int) -> np.ndarray:
    """uint8 ``N x size x size x 3`` cutouts of ``rows``, read again from their ``source`` files.

    Raises:
        InputError: an object has no source file, or it cannot be read.
    """
    from ulisse._pooling import resize_cutout
    from ulisse.cutouts import read_cutout
    from ulisse.encoder import load_preprocessors
    from ulisse.errors import CutoutError

    spec = index.encoder_spec
    steps = load_preprocessors([(p["name"], p["arg"]) for p in spec.preprocessors])[0] if spec.preprocessors else []
    meta = index.metadata
    if "source" not in meta.columns:
        raise InputError(f"{index.path}: the index keeps no source files; a fine-tuned head needs its cutouts")
    sources, ids = meta["source"].to_numpy(), meta["id"].astype(str).to_numpy()
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), size, size, 3), np.uint8)
    for start in range(0, len(rows), READ_CHUNK):
        chunk = rows[start:start + READ_CHUNK]
        images = []
        for r in chunk:
            src = sources[r]
            if not isinstance(src, str) or not src:
                raise InputError(f"{ids[r]}: no source file (a fine-tuned head reads the cutouts again)")
            path = Path(src) if Path(src).is_absolute() else Path(index.path) / src
            try:
                images.append(read_cutout(path, index.rgb).image)
            except CutoutError as exc:
                raise InputError(f"{ids[r]}: its cutout cannot be read ({exc})") from None
        for step in steps:
            images = [np.asarray(im, dtype=np.uint8) for im in step(images)]
        for i, im in enumerate(images):
            out[start + i] = resize_cutout(im, size, spec.interpolation)
    return out


def normalise(batch: np.ndarray | torch.Tensor, mean, std, device="cpu") -> torch.Tensor:
    """uint8 ``N x S x S x 3`` -> float ``N x 3 x S x S``, ``(x / 255 - mean) / std``."""
    x = torch.as_tensor(batch).to(device).permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def view(x: torch.Tensor, v: int) -> torch.Tensor:
    """View ``v`` (0-7) of ``N x C x H x W`` images: ``v % 4`` quarter turns, then a left-right flip if ``v >= 4``."""
    if v % 4:
        x = torch.rot90(x, v % 4, dims=(2, 3))
    if v >= 4:
        x = torch.flip(x, dims=(3,))
    return x


def views_of(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Each image ``i`` of the batch in its own view ``which[i]``."""
    if int(which.max()) == 0:
        return x
    out = torch.empty_like(x)
    for v in torch.unique(which).tolist():
        sel = which == v
        out[sel] = view(x[sel], v)
    return out


# -- networks ----------------------------------------------------------------------------------

def base_network(spec) -> nn.Module:
    """The index's encoder network in fp32 on the CPU, weights checked against the spec's sha256."""
    from ulisse.encoder import Encoder

    enc = Encoder.from_spec(replace(spec, precision="fp32", quantization=None), device="cpu", runtime="torch")
    return enc.model.float().eval()


def stages_of(model: nn.Module) -> int:
    """How many ``blocks`` stages the network has (a timm EfficientNet / MobileNet layout is needed)."""
    if not all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise InputError(f"{type(model).__name__}: fine-tuning knows timm's EfficientNet layout (conv_stem, "
                         "blocks, conv_head); this encoder has another")
    return len(model.blocks)


class Prefix(nn.Module):
    """The frozen stages: the stem and ``blocks[:train_from]`` (nothing with ``train_from=None``: mode all)."""

    def __init__(self, model: nn.Module, train_from: int | None):
        super().__init__()
        self.layers = (nn.Sequential() if train_from is None else
                       nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:train_from]))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Trunk(nn.Module):
    """The trained stages, the spatial mean of the final map, then a Gaussian MLP: ``(mean, variance)``."""

    def __init__(self, model: nn.Module, train_from: int | None, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        stem = [] if train_from is not None else [model.conv_stem, model.bn1]
        first = 0 if train_from is None else train_from
        self.layers = copy.deepcopy(nn.Sequential(*stem, *model.blocks[first:], model.conv_head, model.bn2))
        self.layers.requires_grad_(True)
        self.mlp = GaussianMLP(int(model.num_features), hidden, dropout)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h).float().mean((2, 3))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mlp(self.features(h))


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on the CPU."""
    import contextlib

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prefix_maps(prefix: Prefix, images: np.ndarray, spec, views: int, device: torch.device,
                batch: int = 64, dtype=torch.float16) -> torch.Tensor:
    """The prefix's maps of every view of every cutout: ``views x N x C x h x w`` (``dtype``, on ``device``).

    With mode all (an empty prefix) the normalised pixels themselves.
    """
    out = None
    with torch.no_grad(), autocast(device):
        for start in range(0, len(images), batch):
            x = normalise(images[start:start + batch], spec.mean, spec.std, device)
            for v in range(views):
                h = prefix(view(x, v)).to(dtype)
                if out is None:
                    out = torch.empty((views, len(images), *h.shape[1:]), dtype=dtype, device=device)
                out[v, start:start + len(h)] = h
    return out


def predict_maps(trunks: list[Trunk], maps: torch.Tensor, mc: tuple[int, int] | None = None, batch: int = 128
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, aleatoric var, epistemic var) of every object, standardised units, from its views' prefix maps.

    Each network's (or MC-dropout draw's) mean and variance are averaged over the views (test-time
    symmetry), then the networks are combined as a mixture: mean of means, mean of variances (aleatoric),
    variance of means (epistemic). ``mc=(samples, seed)``: one network, ``samples`` dropout draws.
    """
    from .models import mc_dropout_draws

    n_views, n = maps.shape[0], maps.shape[1]
    device = maps.device
    draws = mc[0] if mc else len(trunks)
    means = np.zeros((draws, n))
    varis = np.zeros((draws, n))
    with torch.no_grad(), autocast(device):
        for t in trunks:
            t.eval()
        for start in range(0, n, batch):
            for v in range(n_views):
                h = maps[v, start:start + batch].float()
                for k, trunk in enumerate(trunks):
                    f = trunk.features(h.contiguous(memory_format=torch.channels_last))
                    if mc:
                        m, s = mc_dropout_draws(trunk.mlp.cpu().float(), f.float().cpu().numpy(), mc[0], mc[1])
                        means[:, start:start + len(h)] += m / n_views
                        varis[:, start:start + len(h)] += s / n_views
                        trunk.mlp.to(device)
                    else:
                        m, s = trunk.mlp(f.float())
                        means[k, start:start + len(h)] += m.double().cpu().numpy() / n_views
                        varis[k, start:start + len(h)] += s.double().cpu().numpy() / n_views
    return means.mean(0), varis.mean(0), means.var(0)
