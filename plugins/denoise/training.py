"""Training a denoiser: supervised from noisy/clean pairs, or self-supervised from noisy images alone.

* Supervised: mean squared error between the network's output on a noisy crop
  and the clean crop of the same object (files paired by stem).
* Self-supervised (Noise2Void / Noise2Self blind spot, :mod:`.blindspot`): a
  stratified ``mask_fraction`` of the pixels of each noisy crop is replaced by a
  random neighbour and the loss is the squared error on those pixels only,
  against their own noisy values. The network never sees the value it must
  predict, so with pixel-independent, zero-mean noise the best it can do is the
  clean value: no clean truth is needed, as in real surveys.

FITS fluxes are normalised image by image (:mod:`.noise`: minus the sky level,
over the sky sigma, per band), so the network always sees sky noise of unit
size; 8-bit images are divided by the training set's median noise sigma.

Training works on random crops (``crop`` px, flipped and rotated), so cutouts of
any size (at least ``crop``) can be mixed; 10 % of the images (at least one) are
held out and the weights with the lowest held-out loss are kept.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ulisse.encoder import resolve_device
from ulisse.errors import InputError

from .blindspot import REPLACEMENTS, blind_spot_loss
from .images import EIGHT_BIT, Image, check_consistent, cutout_files, make_folder, pair_by_stem, read_image
from .model import BlobsAutoencoder, Denoiser, DenoiserConfig, build_network, image_key
from .noise import normalisers

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """How long and how a denoiser trains.

    Attributes:
        steps, batch_size, crop: optimiser steps of ``batch_size`` random ``crop`` px crops (flipped, rotated).
        width, depth: the network's first-block channels and number of halving levels.
        lr: the one-cycle schedule's peak learning rate (Adam).
        mask_fraction: self-supervised: the share of pixels hidden per band (one per ``box x box`` cell).
        replacement: self-supervised: what a hidden pixel shows: ``neighbour`` (a random other pixel of its
            5 x 5 window, Noise2Void) or ``mean`` (its 8 neighbours' mean).
        residual: the network predicts the noise (output = input - prediction) rather than the image; None:
            the noise for supervised training (it keeps the central flux: 0.998 of the clean image's on held-out
            faint galaxies, against 0.959 when predicting the image, which scores 4.5 dB more PSNR;
            benchmarks/denoise.md), the image for self-supervised training.
        validate_every: steps between held-out evaluations (the best weights are kept).
        seed: crops, masks and initial weights.
    """

    steps: int = 800
    batch_size: int = 16
    crop: int = 48
    width: int = 16
    depth: int = 2
    lr: float = 2e-3
    mask_fraction: float = 1 / 32
    replacement: str = "neighbour"
    residual: bool | None = None
    validate_every: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.replacement not in REPLACEMENTS:
            raise InputError(f"replacement must be one of {', '.join(REPLACEMENTS)}, not {self.replacement!r}")
        if not 0 < self.mask_fraction <= 0.25:
            raise InputError(f"mask_fraction must be in (0, 0.25], not {self.mask_fraction}")


def estimate_noise(data: np.ndarray) -> np.ndarray:
    """Per-channel noise sigma of a ``C x H x W`` image (wavelet MAD, scikit-image's estimator)."""
    from skimage.restoration import estimate_sigma

    clean = np.nan_to_num(data.astype(np.float64))
    return np.array([estimate_sigma(band) for band in clean])


def noise_scale(images: Sequence[Image]) -> tuple[float, ...]:
    """The median noise sigma per channel over ``images`` (the scale the network's inputs are divided by)."""
    sig = np.median(np.stack([estimate_noise(im.data) for im in images]), axis=0)
    floor = 1.0 / 255.0 if images[0].domain == "8bit" else np.finfo(np.float32).tiny * 1e6
    if not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        fallback = np.array([np.nanstd(np.stack([im.data[c] for im in images])) for c in range(images[0].channels)])
        sig = np.where(np.isfinite(sig) & (sig > 0), sig, fallback)
    return tuple(float(max(s, floor)) for s in sig)


def load_training_set(noisy, clean=None) -> tuple[list[Image], list[Image] | None]:
    """Read the noisy images (and their clean partners, paired by stem).

    Raises:
        InputError: nothing to train on, mixed formats or channels, or pairs of different shapes.
    """
    noisy_files = cutout_files([noisy] if isinstance(noisy, (str, Path)) else noisy, "noisy")
    if clean is None:
        noisy_images = [read_image(f) for f in noisy_files]
        check_consistent(noisy_images, "the training set")
        return noisy_images, None
    clean_files = cutout_files([clean] if isinstance(clean, (str, Path)) else clean, "clean")
    pairs = pair_by_stem(noisy_files, clean_files)
    unpaired = len(noisy_files) - len(pairs)
    if unpaired:
        LOG.warning("%d noisy file(s) have no clean file of the same name; training on %d pair(s)", unpaired, len(pairs))
    noisy_images, clean_images = [], []
    for nf, cf in pairs:
        n, c = read_image(nf), read_image(cf)
        if n.data.shape != c.data.shape or n.domain != c.domain:
            raise InputError(f"{cf}: {c.domain} {tuple(c.data.shape)} does not match its noisy partner {nf} "
                             f"({n.domain} {tuple(n.data.shape)})")
        noisy_images.append(n)
        clean_images.append(c)
    check_consistent(noisy_images, "the training set")
    return noisy_images, clean_images


class CropSampler:
    """Random crops (same place in noisy and clean), with the 8 flips and right-angle rotations."""

    def __init__(self, noisy: list[np.ndarray], clean: list[np.ndarray] | None, crop: int, rng: np.random.Generator):
        self.noisy, self.clean, self.crop, self.rng = noisy, clean, crop, rng

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray | None]:
        xs, ys = [], []
        for i in self.rng.integers(0, len(self.noisy), size):
            a = self.noisy[i]
            _, h, w = a.shape
            y0, x0 = self.rng.integers(0, h - self.crop + 1), self.rng.integers(0, w - self.crop + 1)
            k, flip = int(self.rng.integers(0, 4)), bool(self.rng.integers(0, 2))

            def cut(arr):
                c = np.rot90(arr[:, y0:y0 + self.crop, x0:x0 + self.crop], k, axes=(1, 2))
                return c[:, :, ::-1] if flip else c

            xs.append(cut(a))
            if self.clean is not None:
                ys.append(cut(self.clean[i]))
        x = np.ascontiguousarray(np.stack(xs), dtype=np.float32)
        return x, (np.ascontiguousarray(np.stack(ys), dtype=np.float32) if ys else None)


def _loss(network: BlobsAutoencoder, x: torch.Tensor, y: torch.Tensor | None, options: TrainOptions,
          generator: torch.Generator, per_channel: bool) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        if y is not None:
            return nn.functional.mse_loss(network(x).float(), y)
        return blind_spot_loss(network, x, options.mask_fraction, generator, per_channel=per_channel,
                               replacement=options.replacement)


def normalised_arrays(noisy: Sequence[Image], clean: Sequence[Image] | None, scale, per_image: bool):
    """The training arrays in the network's units: per image and band ``(x - sky) / sigma`` of the noisy image
    (its clean partner with the same two numbers), or divided by the global ``scale``."""
    if per_image:
        off, div = normalisers([im.data for im in noisy], scale)
    else:
        off = np.zeros((len(noisy), len(scale)), np.float32)
        div = np.broadcast_to(np.asarray(scale, np.float32), off.shape)
    norm = lambda a, i: np.nan_to_num((a - off[i][:, None, None]) / div[i][:, None, None]).astype(np.float32)  # noqa: E731
    return ([norm(im.data, i) for i, im in enumerate(noisy)],
            [norm(im.data, i) for i, im in enumerate(clean)] if clean else None)


def train(noisy, clean=None, *, self_supervised: bool = False, options: TrainOptions = TrainOptions(),
          device: str = "auto", out: str | Path | None = None, progress: bool = True) -> Denoiser:
    """Train a denoiser and (with ``out``) save it there.

    Args:
        noisy: a folder of noisy cutouts, or a list of files and folders.
        clean: their clean versions (same file stems), for supervised training.
        self_supervised: train from ``noisy`` alone with the blind-spot objective (``clean`` must be None).
        options: steps, batch size, crop size, network width and depth, learning rate, seed.
        device: ``auto``, ``cpu`` or ``cuda``.
        out: the model folder to write (``model.safetensors`` + ``config.json``).

    Raises:
        InputError: both or neither of ``clean`` and ``self_supervised``; unusable images; an ``out`` folder that
            cannot be made (said before training).

    Example:
        >>> den = train("sim/noisy_png", "sim/clean_png", out="models/png")   # doctest: +SKIP
    """
    if self_supervised == (clean is not None):
        raise InputError("give clean images (--clean DIR) or ask for --self-supervised training, not both or neither")
    dev = resolve_device(device)
    made = make_folder(out) if out is not None else False
    try:
        denoiser = _train(noisy, clean, self_supervised, options, dev, progress)
    except BaseException:
        if made:
            try:
                Path(out).rmdir()  # the empty folder made for this training (kept if anything is in it)
            except OSError:
                pass
        raise
    if out is not None:
        denoiser.save(out)
    return denoiser


def _train(noisy, clean, self_supervised: bool, options: TrainOptions, dev: torch.device, progress: bool) -> Denoiser:
    t0 = time.perf_counter()
    noisy_images, clean_images = load_training_set(noisy, clean)
    domain, channels = check_consistent(noisy_images, "the training set")
    side = min(min(im.data.shape[1:]) for im in noisy_images)
    multiple = 2 ** options.depth
    crop = min(options.crop, side) // multiple * multiple
    if crop != options.crop:
        LOG.info("crop %d px: the smallest training image is %d px and a depth-%d network needs a multiple of %d, "
                 "so the crops are %d px", options.crop, side, options.depth, multiple, crop)
    if crop < multiple * 2:
        raise InputError(f"the smallest training image is {side} px; a depth-{options.depth} denoiser needs at least "
                         f"{multiple * 2} px")
    scale = noise_scale(noisy_images)
    per_image = domain != EIGHT_BIT
    residual = (not self_supervised) if options.residual is None else options.residual
    config = DenoiserConfig(channels, domain, scale, options.width, options.depth, residual=residual,
                            objective="self-supervised" if self_supervised else "supervised",
                            normalise="sky" if per_image else "global")
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    noisy_arrays, clean_arrays = normalised_arrays(noisy_images, clean_images, scale, per_image)
    order = rng.permutation(len(noisy_arrays))
    n_val = max(1, len(order) // 10) if len(order) > 1 else 0
    val_idx, train_idx = order[:n_val], order[n_val:] if n_val else order
    pick = lambda arrays, idx: [arrays[i] for i in idx] if arrays is not None else None  # noqa: E731
    sampler = CropSampler(pick(noisy_arrays, train_idx), pick(clean_arrays, train_idx), crop, rng)
    val_sampler = CropSampler(pick(noisy_arrays, val_idx), pick(clean_arrays, val_idx), crop,
                              np.random.default_rng(options.seed + 1)) if n_val else None
    val_batches = [val_sampler.batch(options.batch_size) for _ in range(4)] if val_sampler else []

    network = build_network(config).to(dev)
    if dev.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=options.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.lr, total_steps=options.steps,
                                                   pct_start=0.1)
    gen = torch.Generator(device=dev).manual_seed(options.seed)
    best, best_state, best_step, last_train = math.inf, None, 0, math.nan
    from ulisse.progress import progress_bar

    bar = progress_bar(total=options.steps, desc=f"training ({config.objective})", unit="step", enabled=progress)
    running = []
    for step in range(1, options.steps + 1):
        bar.update(1)
        network.train()
        x, y = sampler.batch(options.batch_size)
        xt, yt = _tensors(x, y, dev)
        loss = _loss(network, xt, yt, options, gen, per_image)
        if not torch.isfinite(loss):
            LOG.warning("step %d: the loss is %s; batch skipped", step, loss.item())
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running.append(loss.item())
        if step % options.validate_every == 0 or step == options.steps:
            last_train = float(np.mean(running)) if running else math.nan
            running = []
            val = _validate(network, val_batches, options, dev, per_image) if val_batches else last_train
            bar.set_postfix(train=f"{last_train:.4g}", val=f"{val:.4g}")
            LOG.debug("step %d: train loss %.5g, held-out loss %.5g", step, last_train, val)
            if val < best:
                best, best_step = val, step
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    bar.close()
    if best_state is not None:
        network.load_state_dict(best_state)
    seconds = time.perf_counter() - t0
    keys = [image_key(im.data) for im in noisy_images]
    training = {"images": len(train_idx), "held_out": int(n_val), "steps": options.steps, "batch_size": options.batch_size,
                "crop": crop, "lr": options.lr, "seed": options.seed, "best_step": best_step,
                "held_out_loss": best, "final_train_loss": last_train, "seconds": round(seconds, 1),
                "device": str(dev), "threads": torch.get_num_threads() if dev.type == "cpu" else None,
                **({"mask_fraction": options.mask_fraction, "replacement": options.replacement}
                   if self_supervised else {}),
                "train_keys": sorted(keys[i] for i in train_idx), "held_out_keys": sorted(keys[i] for i in val_idx)}
    config = DenoiserConfig(**{**config.__dict__, "training": training})
    denoiser = Denoiser(network, config, dev)
    LOG.info("trained a %s %s denoiser on %d image(s) in %.0f s (held-out loss %.4g at step %d)",
             config.objective, domain, len(train_idx), seconds, best, best_step)
    return denoiser


def _tensors(x: np.ndarray, y: np.ndarray | None, dev: torch.device):
    xt = torch.from_numpy(x).to(dev)
    yt = torch.from_numpy(y).to(dev) if y is not None else None
    if dev.type == "cuda":
        xt = xt.contiguous(memory_format=torch.channels_last)
    return xt, yt


@torch.no_grad()
def _validate(network, batches, options: TrainOptions, dev, per_channel: bool) -> float:
    network.eval()
    gen = torch.Generator(device=dev).manual_seed(options.seed + 7)  # the same masks at every validation
    losses = [float(_loss(network, *_tensors(x, y, dev), options, gen, per_channel)) for x, y in batches]
    return float(np.mean(losses))
