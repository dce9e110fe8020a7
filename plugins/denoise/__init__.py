"""Autoencoder denoisers for survey cutouts: trained, applied alone, or applied before embedding.

Commands (``ulisse denoise --help``)::

    ulisse denoise train --noisy DIR --clean DIR --out MODEL_DIR          # supervised, pairs by file stem
    ulisse denoise train --noisy DIR --self-supervised --out MODEL_DIR    # blind spot (Noise2Void): noisy data alone
    ulisse denoise apply MODEL_DIR INPUT... --out DIR                     # same names and formats out
    ulisse denoise report MODEL_DIR --noisy DIR --clean DIR --out DIR     # PSNR/SSIM against classical denoisers
    ulisse denoise relink INDEX MODEL_DIR                                 # an index's denoiser has moved

FITS fluxes are normalised per image and band by their own sky (sigma-clipped median and MAD, :mod:`.noise`), and
the self-supervised objective hides a stratified 1/32 of the pixels per band behind random neighbours
(:mod:`.blindspot`): on held-out faint galaxies it keeps the central aperture flux (benchmarks/denoise.md).

Before embedding, the ``denoise`` preprocessor (``Encoder.load(preprocess=[("denoise", MODEL_DIR)])``)
denoises every cutout; its absolute folder and fingerprint (of its weights and settings, not of when or where
it was trained) are recorded in the index's encoder spec, so that queries by image and adds apply the same
model from any working directory (``relink`` records a moved model's new folder).

Python API::

    from ulisse.plugins import denoise
    den = denoise.train("noisy/", "clean/", out="models/d")      # -> Denoiser
    den = denoise.load("models/d")
    denoise.apply(den, ["cutouts/"], out="denoised/")
    r = denoise.report(den, "test/noisy", "test/clean", out="report/")
    denoise.relink("indexes/hdf-clean", "/data/models/d")      # the index's model has moved there
"""

from __future__ import annotations

from ulisse._lazy import lazy_api

# The API loads on first use (torch with it): the plugin's hooks, in plugin.py, import none of it,
# so ``ulisse --help`` and queries that embed nothing stay free of torch.
__getattr__, __dir__ = lazy_api(__name__, {'ApplyReport': 'applying', 'DenoiseStep': 'applying', 'apply': 'applying', 'denoise_images': 'applying', 'load': 'applying', 'load_step': 'applying', 'EIGHT_BIT': 'images', 'Image': 'images', 'read_image': 'images', 'write_image': 'images', 'BlobsAutoencoder': 'model', 'Denoiser': 'model', 'DenoiserConfig': 'model', 'fingerprint_of': 'model', 'DenoiseReport': 'reporting', 'display_rgb': 'reporting', 'report': 'reporting', 'TrainOptions': 'training', 'train': 'training', 'relink': 'relinking', 'Relinked': 'relinking'})


__all__ = ["train", "apply", "report", "load", "denoise_images", "Denoiser", "DenoiserConfig", "DenoiseStep",
           "TrainOptions", "DenoiseReport", "ApplyReport", "BlobsAutoencoder", "Image", "read_image", "write_image",
           "EIGHT_BIT", "fingerprint_of", "display_rgb", "relink", "Relinked"]
