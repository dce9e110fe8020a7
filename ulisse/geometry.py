"""Cutout geometry: how a cutout lies on the sky (size, scale, orientation, projection, bands, colour).

An index records its cutouts' geometry in its manifest (``cutout_geometry``, written by
``ulisse sdss index``); cutout files may say theirs (a PNG text chunk, or a folder's
``cutout_geometry.json`` written by ``ulisse fetch cutouts``). A query whose prototype
was cut another way gets a warning: distances between differently cut images mean little.
"""

from __future__ import annotations

MANIFEST_KEY = "cutout_geometry"


def geometry_warning(index_geometry: dict | None, prototype_geometry: dict | None) -> str | None:
    """A warning when a prototype's cutout geometry differs from the index's (None when they agree or are unknown)."""
    if not index_geometry or not prototype_geometry:
        return None
    keys = ("size", "scale", "orientation", "projection", "bands", "colour")
    differ = [k for k in keys if index_geometry.get(k) != prototype_geometry.get(k)]
    if not differ:
        return None
    what = ", ".join(f"{k} {prototype_geometry.get(k)!r} vs {index_geometry.get(k)!r}" for k in differ)
    return f"the prototype's cutout geometry differs from the index's ({what}): distances may mean little"


PNG_KEY = "ulisse:cutout_geometry"  # the PNG text chunk holding a cutout's geometry (JSON)
SIDECAR = "cutout_geometry.json"  # a folder's cutouts' geometry (written by ``ulisse fetch cutouts``)


def prototype_geometry(path) -> dict | None:
    """The cutout geometry of an image file, if it says: its PNG text chunk, else its folder's sidecar JSON."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                text = im.text.get(PNG_KEY) if hasattr(im, "text") else None
            if text:
                return json.loads(text)
        sidecar = path.parent / SIDECAR
        return json.loads(sidecar.read_text()) if sidecar.is_file() else None
    except (OSError, ValueError):
        return None


def check_prototype(index_manifest: dict, path) -> str | None:
    """The warning for a query whose prototype image ``path`` was cut with another geometry than the index's."""
    return geometry_warning((index_manifest or {}).get(MANIFEST_KEY), prototype_geometry(path))
