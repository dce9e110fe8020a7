"""``ulisse denoise``: train, apply, report, relink."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ulisse.errors import InputError
from ulisse.options import device_option, skip_bad_option

LOG = logging.getLogger("ulisse")
# The defaults of TrainOptions (training.py), repeated here so that ``--help`` loads no torch; a test keeps them equal.
DEFAULTS = {"steps": 800, "batch_size": 16, "crop": 48, "width": 16, "depth": 2, "lr": 2e-3, "mask_fraction": 1 / 32,
            "replacement": "neighbour"}


def _progress() -> bool:
    from ulisse.cli import progress_enabled

    return progress_enabled()


@click.group("denoise")
def denoise_group():
    """Autoencoder denoisers: train (supervised or self-supervised), apply, report; relink an index to a moved one."""


@denoise_group.command("train")
@click.option("--noisy", required=True, type=click.Path(), help="folder of noisy cutouts (PNG/JPEG or FITS)")
@click.option("--clean", type=click.Path(), default=None,
              help="folder of the same cutouts without noise (paired by file name): supervised training")
@click.option("--self-supervised", is_flag=True,
              help="train from the noisy cutouts alone (blind spot, Noise2Void: a stratified few per cent of the "
                   "pixels hidden from the network and predicted from their neighbours)")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="model folder to write")
@click.option("--steps", type=click.IntRange(1, 10_000_000), default=DEFAULTS["steps"], show_default=True,
              help="optimiser steps (the time grows with steps x batch size x crop area: minutes on a few CPU "
                   "cores; after the first steps the log says how long the whole run will take)")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=DEFAULTS["batch_size"], show_default=True)
@click.option("--crop", type=click.IntRange(16, 4096), default=DEFAULTS["crop"], show_default=True,
              help="training crop side (px)")
@click.option("--width", type=click.IntRange(4, 256), default=DEFAULTS["width"], show_default=True,
              help="channels of the first block")
@click.option("--depth", type=click.IntRange(1, 6), default=DEFAULTS["depth"], show_default=True,
              help="strided (halving) levels")
@click.option("--lr", type=click.FloatRange(1e-6, 1.0), default=DEFAULTS["lr"], show_default=True,
              help="peak learning rate")
@click.option("--mask-fraction", type=click.FloatRange(0.005, 0.25), default=DEFAULTS["mask_fraction"],
              show_default="1/32", help="self-supervised: share of the pixels hidden per step (one per cell of a grid)")
@click.option("--replacement", type=click.Choice(["neighbour", "mean"]), default=DEFAULTS["replacement"],
              show_default=True, help="self-supervised: a hidden pixel shows a random neighbour (5 x 5) or the mean "
                                      "of its 8 neighbours")
@click.option("--predict", type=click.Choice(["auto", "noise", "image"]), default="auto", show_default=True,
              help="what the network outputs: the noise (subtracted from the input) or the image; auto: the noise "
                   "for supervised training (keeps the flux), the image for self-supervised training")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace a model already in --out")
@device_option
def train_command(noisy, clean, self_supervised, out, steps, batch_size, crop, width, depth, lr, mask_fraction,
                  replacement, predict, seed, overwrite, device):
    """Train a denoiser on noisy/clean pairs, or on noisy cutouts alone (--self-supervised).

    Training takes minutes on a CPU at the defaults (about 3.5 min for ~1,000 64 px cutouts on 2 busy cores; a GPU
    is much faster): after the first steps the log says how long the whole run will take, and every progress
    line the time left. On a CPU shared with other jobs the ``ulisse`` command sets OMP_WAIT_POLICY=PASSIVE
    unless the environment sets it, so torch's threads do not spin (4x faster there in benchmarks/denoise.md).
    """
    from .model import CONFIG_FILE
    from .training import TrainOptions, train

    if (Path(out) / CONFIG_FILE).exists() and not overwrite:
        raise InputError(f"{out}: a denoiser is there already (use --overwrite to replace it)")
    options = TrainOptions(steps=steps, batch_size=batch_size, crop=crop, width=width, depth=depth, lr=lr,
                           mask_fraction=mask_fraction, replacement=replacement, seed=seed,
                           residual=None if predict == "auto" else predict == "noise")
    den = train(noisy, clean, self_supervised=self_supervised, options=options, device=device, out=out,
                progress=_progress())
    t = den.config.training
    click.echo(f"{out}: {den.config.objective} {den.config.domain} denoiser ({den.config.channels} channel(s)), "
               f"{t['images']} training image(s), held-out loss {t['held_out_loss']:.4g}, "
               f"fingerprint {den.fingerprint[:12]}")


@denoise_group.command("apply")
@click.argument("model_dir", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="folder for the denoised cutouts (same names and formats as the inputs)")
@skip_bad_option
@device_option
def apply_command(model_dir, inputs, out, skip_bad, device):
    """Denoise cutout files or folders into --out (PNG -> PNG, FITS -> FITS float with its header)."""
    from .applying import apply, load

    result = apply(load(model_dir, device), inputs, out, skip_bad=skip_bad)
    click.echo(f"{out}: {len(result.written)} denoised cutout(s) written, {len(result.skipped)} skipped")


@denoise_group.command("report")
@click.argument("model_dir", type=click.Path())
@click.option("--noisy", required=True, type=click.Path(), help="folder of noisy cutouts")
@click.option("--clean", required=True, type=click.Path(), help="folder of their clean versions (same file names)")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="folder for report.md, summary.csv, metrics.csv and before_after.png")
@click.option("--limit", type=click.IntRange(1, 10_000_000), default=None, help="compare on the first N pairs only")
@click.option("--include-training", is_flag=True,
              help="also score the pairs the model was trained on (left out by default; the report counts them)")
@device_option
def report_command(model_dir, noisy, clean, out, limit, include_training, device):
    """PSNR and SSIM of the input, a best-sigma Gaussian, non-local means, wavelets and the model.

    Pairs whose noisy cutout the model was trained on are left out (the model's config names its training
    cutouts by content): the report says how many, or that the model does not record them.
    """
    from .applying import load
    from .reporting import report

    r = report(load(model_dir, device), noisy, clean, out, limit=limit, include_training=include_training)
    click.echo(r.markdown, nl=False)
    click.echo(f"{out}: report.md, summary.csv, metrics.csv, before_after.png")


@denoise_group.command("relink")
@click.argument("index_dir", type=click.Path())
@click.argument("model_dir", type=click.Path())
@click.option("--wait", type=click.FloatRange(0), default=0.0,
              help="seconds to wait for another writer of the index (default: stop at once with a message)")
def relink_command(index_dir, model_dir, wait):
    """Point an index built with --denoise at its denoiser's new folder (the model must be the same one).

    The index records the model's absolute folder; after moving the model (or for an index that recorded a
    folder relative to where it was built), this records MODEL_DIR instead, if the model there has the
    fingerprint the index recorded. Adds, queries by image and feature rebuilds then load it from there.
    """
    from .relinking import relink

    done = relink(index_dir, model_dir, wait=wait)
    if done.changed:
        click.echo(f"{done.index}: the denoise step now loads {done.after} (was {', '.join(done.before)})")
    else:
        click.echo(f"{done.index}: the denoise step loads {done.after} already; nothing changed")
