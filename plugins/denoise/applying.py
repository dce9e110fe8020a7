"""Applying a denoiser: to files (same names and formats out), and as a step before embedding."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ulisse.errors import CutoutError, InputError

from .images import (EIGHT_BIT, Image, cutout_files, from_uint8_rgb, make_folder, read_image, to_uint8,
                     write_image)
from .model import Denoiser

LOG = logging.getLogger(__name__)


def load(model_dir: str | Path, device: str = "cpu") -> Denoiser:
    """Load a saved denoiser (``model.safetensors`` + ``config.json``)."""
    from ulisse.encoder import resolve_device

    return Denoiser.load(model_dir, resolve_device(device))


def _as_denoiser(model, device: str = "cpu") -> Denoiser:
    return model if isinstance(model, Denoiser) else load(model, device)


def check_fits(denoiser: Denoiser, image: Image) -> None:
    """:class:`InputError` unless ``image`` is what the denoiser was trained on (format and channels)."""
    c = denoiser.config
    if image.domain != c.domain:
        trained = "FITS flux images" if c.domain != EIGHT_BIT else "8-bit PNG/JPEG images"
        raise CutoutError(image.path or image.id, f"is {'FITS' if image.domain != EIGHT_BIT else 'an 8-bit image'}, "
                                                  f"but the denoiser was trained on {trained}")
    if image.channels != c.channels:
        raise CutoutError(image.path or image.id, f"has {image.channels} channel(s), but the denoiser takes {c.channels}")


def denoise_images(model, images: Sequence[Image], device: str = "cpu") -> list[Image]:
    """Denoised copies of ``images`` (each must fit the model's format and channels)."""
    den = _as_denoiser(model, device)
    for im in images:
        check_fits(den, im)
    return [im.with_data(d) for im, d in zip(images, den.denoise_arrays([im.data for im in images]))]


@dataclass
class ApplyReport:
    """What :func:`apply` wrote."""

    written: list[Path]
    skipped: list[tuple[str, str]]


def apply(model, inputs: Iterable[str | Path], out: str | Path, *, device: str = "cpu", skip_bad: bool = False,
          batch: int = 64) -> ApplyReport:
    """Denoise cutout files into ``out`` under the same names and formats (PNG -> PNG, FITS -> FITS float).

    FITS outputs keep every HDU and header card of their input, plus a HISTORY
    card naming the model's fingerprint. Inputs are never overwritten.

    Raises:
        InputError: an input cannot be read or does not fit the model (unless ``skip_bad``),
            two inputs share a name, or an output would replace an input.
    """
    den = _as_denoiser(model, device)
    files = cutout_files(list(inputs))
    out_dir = Path(out)
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise InputError(f"{f}: two inputs are named {f.name} ({seen[f.name]} too); outputs keep the input names")
        seen[f.name] = f
        if (out_dir / f.name).resolve() == f.resolve():
            raise InputError(f"{f}: the output would overwrite the input; choose another --out folder")
    created = not out_dir.exists()
    make_folder(out_dir)
    try:
        report = _apply_batches(den, files, out_dir, skip_bad, batch)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a failed run leaves no empty folder behind
        raise
    if files and not report.written:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        path, reason = report.skipped[0]
        raise InputError(f"no cutout could be denoised: {len(report.skipped)} skipped ({path}: {reason})")
    return report


def _apply_batches(den, files, out_dir: Path, skip_bad: bool, batch: int) -> ApplyReport:
    history = f"denoised by ulisse denoise ({den.config.objective}, model {den.fingerprint[:16]})"
    report = ApplyReport([], [])
    for start in range(0, len(files), batch):
        images = []
        for f in files[start:start + batch]:
            try:
                im = read_image(f)
                check_fits(den, im)
                images.append(im)
            except CutoutError as exc:
                if not skip_bad:
                    raise
                report.skipped.append((str(f), exc.reason))
                LOG.warning("skipped %s: %s", f, exc.reason)
        if not images:
            continue
        for im, data in zip(images, den.denoise_arrays([im.data for im in images])):
            report.written.append(write_image(im.with_data(data), out_dir / im.path.name, history))
    return report


class DenoiseStep:
    """The denoiser as a preprocessing step of the encoder: uint8 RGB cutouts in, uint8 RGB out, same shapes.

    The model must have been trained on 8-bit images. A one-channel model
    denoises each of R, G and B on its own.
    """

    def __init__(self, denoiser: Denoiser, source: str = ""):
        self.arg = source  # the model folder (an index records it): absolute when made by :func:`load_step`
        if denoiser.config.domain != EIGHT_BIT:
            raise InputError(f"{source or 'denoiser'}: the denoise step before embedding needs a model trained on "
                             "8-bit PNG/JPEG cutouts (this one was trained on FITS fluxes)")
        self.denoiser = denoiser
        self.fingerprint = denoiser.fingerprint

    def __repr__(self) -> str:
        return f"DenoiseStep({self.denoiser!r})"

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = [from_uint8_rgb(np.asarray(im), f"cutout {i}").data for i, im in enumerate(images)]
        flat = [a.ndim == 3 and a.shape[0] == 1 for a in arrays]
        if self.denoiser.config.channels == 1:
            planes = [p[None] for a in arrays for p in (a if a.shape[0] == 3 else a[:1])]
            done = iter(self.denoiser.denoise_arrays(planes))
            arrays = [np.concatenate([next(done) for _ in range(a.shape[0])]) for a in arrays]
        else:
            arrays = self.denoiser.denoise_arrays([np.repeat(a, 3, axis=0) if f else a for a, f in zip(arrays, flat)])
        out = []
        for a, f, im in zip(arrays, flat, images):
            u8 = to_uint8(a).transpose(1, 2, 0)
            out.append(np.ascontiguousarray(u8[..., 0] if f and np.asarray(im).ndim == 2 else u8))
        return out


RELINK = "ulisse denoise relink INDEX NEW_MODEL_DIR"


def load_step(model_dir: str) -> DenoiseStep:
    """``Preprocessor.load``: the step of the model in ``model_dir`` (on the CPU).

    The step's ``arg`` is the folder's absolute, resolved path: what an index built with it records, so that
    the index works from any working directory.

    Raises:
        InputError: no model there (its ``index_hint`` says how an index that recorded it is fixed), or a
            model that cannot be a step before embedding.
    """
    given = Path(model_dir).expanduser()
    where = given.resolve()
    if not where.is_dir():
        exc = InputError(f"{where}: no such denoiser model folder")
        exc.index_hint = (f"move the model back there, or point the index at its new folder: {RELINK}"
                          if given.is_absolute() else
                          "the index recorded it relative to the folder it was built from: run from there, or "
                          "record where it is: ulisse denoise relink INDEX NEW_MODEL_DIR")
        raise exc
    step = DenoiseStep(load(where), str(where))
    step.arg = str(where)
    return step
