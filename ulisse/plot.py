"""Thumbnail grids: a prototype and its neighbours, or any ranked list of objects."""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

LOG = logging.getLogger(__name__)

def thumbnail(index, object_id: str) -> np.ndarray | None:
    """The RGB cutout of an index object, read from its ``source`` file (None if gone)."""
    from .cutouts import read_cutout, source_path
    from .errors import CutoutError

    path = source_path(index.path, index.metadata["source"].iloc[index.row_of(object_id)])
    if path is None:
        return None
    try:
        return read_cutout(path, index.rgb).image
    except CutoutError:
        return None


def thumbnail_grid(panels: Sequence[tuple[np.ndarray | None, str, bool]], path: str | os.PathLike,
                   columns: int = 5, title: str | None = None) -> Path:
    """Write a PNG grid (atomically) of ``(image, caption, highlighted)`` panels, in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._io import atomic_write as write_atomic

    missing = sum(img is None for img, _, _ in panels)
    if missing:
        LOG.warning("%s: %d of %d tiles show no image (their cutout files are missing, or were moved)",
                    Path(path).name, missing, len(panels))
    rows = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.0, rows * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, caption, highlighted) in zip(axes.flat, panels):
        if img is not None:
            ax.imshow(img, origin="upper", interpolation="nearest")
        else:
            ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(caption, fontsize=8, color="crimson" if highlighted else "black")
        if highlighted:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_edgecolor("crimson")
                s.set_linewidth(3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    LOG.info("wrote %s", path)
    return Path(path)


def neighbour_grid(index, result, path: str | os.PathLike, prototype_image: np.ndarray | None = None,
                   columns: int = 5, title: str | None = None) -> Path:
    """Write a PNG: the prototype first (framed), then the neighbours in rank order with their distances."""
    if prototype_image is None and result.prototype_id is not None:
        prototype_image = thumbnail(index, result.prototype_id)
    panels = [(prototype_image, f"prototype\n{result.prototype_id or result.prototype}", True)]
    for row in result.table.itertuples(index=False):
        panels.append((thumbnail(index, row.id), f"#{row.rank} {row.id}\nd = {row.distance:.3g}", False))
    return thumbnail_grid(panels, path, columns, title)
