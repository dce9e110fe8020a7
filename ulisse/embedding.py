"""Embedding cutout files in batches, with progress, skipping bad files on request.

Decoding runs in a torch ``DataLoader`` (worker processes on a GPU machine) so
that reading files overlaps with the encoder's compute.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .cutouts import RGBConfig, read_cutout
from .encoder import Encoder, resize_cutout
from .errors import CutoutError

LOG = logging.getLogger(__name__)


@dataclass
class Embedded:
    """Vectors of the cutouts that could be read, in input order.

    Attributes:
        ids: object ids of the embedded cutouts.
        vectors: float32 ``N x dim``.
        positions: for each vector, its position in the input list.
        ra, dec: cutout centres from FITS WCS (NaN where unknown).
        skipped: ``(path, reason)`` of every cutout left out (only with ``skip_bad``).
    """

    ids: list[str]
    vectors: np.ndarray
    positions: list[int]
    ra: np.ndarray
    dec: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _CutoutFiles(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[Path], rgb: RGBConfig, size: int, interpolation: str):
        self.paths, self.rgb, self.size, self.interpolation = list(paths), rgb, size, interpolation

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            c = read_cutout(self.paths[i], self.rgb)
            # resized here, in the loader's workers, so that decoding overlaps the encoder's compute
            return i, resize_cutout(c.image, self.size, self.interpolation), None, c.ra, c.dec
        except CutoutError as exc:
            return i, None, exc.reason, math.nan, math.nan


def _collate(items):
    return items


def embed_files(encoder: Encoder, paths: Sequence[str | Path], *, rgb: RGBConfig = RGBConfig(),
                skip_bad: bool = False, progress: bool = True, batch_size: int | None = None,
                workers: int | None = None, desc: str = "embedding") -> Embedded:
    """Embed cutout files with ``encoder``.

    Raises:
        CutoutError: a file cannot be used (unless ``skip_bad``; then it is reported in ``skipped``).
    """
    paths = [Path(p) for p in paths]
    batch_size = batch_size or encoder.default_batch_size
    if workers is None:
        workers = min(8, max(0, (os.cpu_count() or 1) - 1)) if encoder.cuda else 0
    loader = torch.utils.data.DataLoader(
        _CutoutFiles(paths, rgb, encoder.spec.input_size, encoder.spec.interpolation), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_collate, prefetch_factor=4 if workers else None, persistent_workers=False)
    ids, vecs, positions, ras, decs, skipped = [], [], [], [], [], []
    bar = tqdm(total=len(paths), desc=desc, unit="cutout", disable=not progress, mininterval=1.0)
    try:
        for batch in loader:
            good = []
            for i, image, err, ra, dec in batch:
                if err is not None:
                    if not skip_bad:
                        raise CutoutError(paths[i], err)
                    skipped.append((str(paths[i]), err))
                    LOG.warning("skipped %s: %s", paths[i], err)
                    continue
                good.append((i, image, ra, dec))
            if good:
                vecs.append(encoder.embed_images([g[1] for g in good], batch_size=batch_size))
                for i, _, ra, dec in good:
                    positions.append(i)
                    ids.append(_stem(paths[i]))
                    ras.append(ra)
                    decs.append(dec)
            bar.update(len(batch))
    finally:
        bar.close()
    vectors = np.concatenate(vecs).astype(np.float32) if vecs else np.zeros((0, encoder.spec.dim), np.float32)
    return Embedded(ids, vectors, positions, np.asarray(ras, float), np.asarray(decs, float), skipped)


def _stem(p: Path) -> str:
    from .cutouts import cutout_id

    return cutout_id(p)
