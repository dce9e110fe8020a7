"""Autoencoder denoisers for survey cutouts: trained, applied alone, or applied before embedding.

Commands (``ulisse denoise --help``)::

    ulisse denoise train --noisy DIR --clean DIR --out MODEL_DIR          # supervised, pairs by file stem
    ulisse denoise train --noisy DIR --self-supervised --out MODEL_DIR    # blind spot: noisy data alone
    ulisse denoise apply MODEL_DIR INPUT... --out DIR                     # same names and formats out
    ulisse denoise report MODEL_DIR --noisy DIR --clean DIR --out DIR     # PSNR/SSIM against classical denoisers

Before embedding, the ``denoise`` preprocessor (``Encoder.load(preprocess=[("denoise", MODEL_DIR)])``)
denoises every cutout; its fingerprint is recorded in the index's encoder spec,
so that queries by image and adds apply the same model.

Python API::

    from ulisse.plugins import denoise
    den = denoise.train("noisy/", "clean/", out="models/d")      # -> Denoiser
    den = denoise.load("models/d")
    denoise.apply(den, ["cutouts/"], out="denoised/")
    r = denoise.report(den, "test/noisy", "test/clean", out="report/")
"""

from __future__ import annotations

import ulisse
from ulisse.registry import Preprocessor, UIPage

from .apply import ApplyReport, DenoiseStep, apply, denoise_images, load, load_step
from .images import Image, read_image, write_image
from .model import BlobsAutoencoder, Denoiser, DenoiserConfig
from .report import DenoiseReport, report
from .train import TrainOptions, train

__all__ = ["train", "apply", "report", "load", "denoise_images", "Denoiser", "DenoiserConfig", "DenoiseStep",
           "TrainOptions", "DenoiseReport", "ApplyReport", "BlobsAutoencoder", "Image", "read_image", "write_image"]

@ulisse.hookimpl
def register_commands(cli):
    from .cli import denoise_group

    cli.add_command(denoise_group)


@ulisse.hookimpl
def register_preprocessors(config):
    return [Preprocessor("denoise", "a ulisse denoiser (MODEL_DIR, trained on 8-bit cutouts) applied to every cutout",
                         load=load_step)]


@ulisse.hookimpl
def register_ui_pages(config):
    from ulisse.ui import view

    return [UIPage("Denoise", view("denoise"), order=70)]
