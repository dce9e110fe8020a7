"""Pooling a final feature map into a vector, the test-time symmetries, and ULISSE's resize.

Example:
    >>> import numpy as np
    >>> pool_maps(np.ones((2, 8, 7, 7), np.float32), "centre:3").shape
    (2, 8)
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def pool_maps(maps: np.ndarray, pool: str) -> np.ndarray:
    """``N x C x h x w`` maps -> ``N x C`` vectors: the spatial mean (``mean``) or the mean of the central N x N cells."""
    if pool == "mean":
        return maps.mean(axis=(2, 3), dtype=np.float32)
    n = int(pool.split(":")[1])
    h, w = maps.shape[2:]
    if n > min(h, w):
        raise InputError(f"--pool {pool}: the final feature map is only {h}x{w}")
    top, left = (h - n) // 2, (w - n) // 2
    return maps[:, :, top:top + n, left:left + n].mean(axis=(2, 3), dtype=np.float32)


def _rot(k: int, flip: bool = False):
    def transform(batch: np.ndarray) -> np.ndarray:  # uint8 N x S x S x 3
        b = batch[:, :, ::-1] if flip else batch
        return np.ascontiguousarray(np.rot90(b, k, axes=(1, 2)))
    return transform


# None is the identity: its maps are the ones returned with the vectors
SYMMETRIES = {
    "none": (None,),
    "rot4": (None, _rot(1), _rot(2), _rot(3)),
    "d4": (None, _rot(1), _rot(2), _rot(3), _rot(0, True), _rot(1, True), _rot(2, True), _rot(3, True)),
}


def resize_cutout(image: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize a uint8 RGB cutout to ``size x size``: bilinear on the 8-bit image with PIL, as ULISSE did."""
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    return np.asarray(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize((size, size), resample))
