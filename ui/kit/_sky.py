"""Links to an object in sky viewers (links only, nothing fetched); positions come from the core's one parser.

:func:`parse_position`, :func:`resolve_name`, :func:`format_position` and :class:`ResolveError` are
:mod:`ulisse.positions`' (the command line, the API and catalogues read positions the same way).

Example:
    >>> c = parse_position("10:00:24.0 +02:12:00")
    >>> round(float(c.ra.deg), 3), round(float(c.dec.deg), 3)
    (150.1, 2.2)
    >>> float(parse_position("150.1, 2.2").ra.deg)
    150.1
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from ulisse.positions import ResolveError, format_position, parse_position, resolve_name  # noqa: F401 (the kit's names)

SDSS_OBJID = re.compile(r"^1237\d{14,15}$")  # SDSS photometric object ids (DR8 and later)


@dataclass(frozen=True)
class ViewerLink:
    """A link to the object in an outside sky viewer."""

    name: str
    url: str


def has_position(ra, dec) -> bool:
    try:
        return math.isfinite(float(ra)) and math.isfinite(float(dec))
    except (TypeError, ValueError):
        return False


def viewer_links(ra, dec, object_id: str | None = None) -> list[ViewerLink]:
    """Links to a position in SkyServer (Navigate, Explore), the Legacy Surveys viewer and Aladin Lite.

    Empty for an object without a position. SkyServer Explore opens the SDSS object
    itself when ``object_id`` is an SDSS objid, else the object nearest the position.
    """
    if not has_position(ra, dec):
        return []
    ra, dec = float(ra), float(dec)
    pos = {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}"}
    skyserver = "https://skyserver.sdss.org/dr18/VisualTools"
    explore = {"id": object_id} if object_id and SDSS_OBJID.match(str(object_id)) else pos
    return [
        ViewerLink("SkyServer Navigate", f"{skyserver}/navi?{urlencode({**pos, 'scale': '0.2'})}"),
        ViewerLink("SkyServer Explore", f"{skyserver}/explore/summary?{urlencode(explore)}"),
        ViewerLink("Legacy Surveys", f"https://www.legacysurvey.org/viewer?{urlencode({**pos, 'layer': 'ls-dr10', 'zoom': '16'})}"),
        ViewerLink("Aladin Lite", "https://aladin.cds.unistra.fr/AladinLite/?target="
                   + quote(f"{ra:.6f} {dec:+.6f}") + "&fov=0.02&survey=" + quote("P/SDSS9/color", safe="")),
    ]
