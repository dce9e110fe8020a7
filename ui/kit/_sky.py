"""Sky positions as astronomers type them, and links to the object in sky viewers (links only, nothing fetched).

Example:
    >>> c = parse_position("10:00:24.0 +02:12:00")
    >>> round(c.ra.deg, 3), round(c.dec.deg, 3)
    (150.1, 2.2)
    >>> parse_position("150.1, 2.2").ra.deg
    150.1
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from ulisse.errors import InputError

SDSS_OBJID = re.compile(r"^1237\d{14,15}$")  # SDSS photometric object ids (DR8 and later)
NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
DECIMAL_PAIR = re.compile(rf"^\s*({NUMBER})\s*[,;\s]\s*({NUMBER})\s*$")
SEXAGESIMAL = re.compile(r"[:hdms°'\"]", re.IGNORECASE)


class ResolveError(InputError):
    """A name could not be resolved to a position (unknown name, or no network)."""


def parse_position(text: str, resolve_names: bool = True):
    """A sky position from text: decimal degrees, sexagesimal, or an object name (Sesame, online only).

    Decimal pairs are degrees (``150.1 2.2``, ``150.1, 2.2``); sexagesimal RA is in hours
    (``10:00:24 +02:12:00``, ``10h00m24s +2d12m00s``). Anything else is a name resolved by
    CDS Sesame through astropy (``SkyCoord.from_name``), which needs the internet.

    Returns:
        astropy.coordinates.SkyCoord (ICRS).

    Raises:
        InputError: empty, out of range, or not a position; ResolveError: a name that did not resolve.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    text = (text or "").strip()
    if not text:
        raise InputError("position: empty (type RA and Dec, e.g. 150.1 2.2 or 10:00:24 +02:12:00, or a name)")
    m = DECIMAL_PAIR.match(text)
    if m:
        ra, dec = float(m.group(1)), float(m.group(2))
        if not (math.isfinite(ra) and 0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
            raise InputError(f"position {text!r}: RA must be in [0, 360) and Dec in [-90, 90] degrees")
        return SkyCoord(ra * u.deg, dec * u.deg)
    if re.match(r"^[+-]?\d", text):  # sexagesimal (RA in hours), or a name such as "3C 273"
        try:
            return SkyCoord(text.replace(",", " "), unit=(u.hourangle, u.deg))
        except Exception as exc:  # astropy raises ValueError and its own unit errors
            if not resolve_names or SEXAGESIMAL.search(text.replace("h", "").replace("m", "")):
                raise InputError(f"position {text!r}: not a sky position ({exc})") from None
    if not resolve_names:
        raise ResolveError(f"{text!r}: name resolution is off")
    return resolve_name(text)


def resolve_name(name: str):
    """An object name to a position through CDS Sesame (astropy). Raises ResolveError offline or when unknown."""
    from astropy.coordinates import SkyCoord
    from astropy.coordinates.name_resolve import NameResolveError

    try:
        return SkyCoord.from_name(name)
    except NameResolveError as exc:
        text = str(exc)
        if "Unable to find coordinates" in text:
            raise ResolveError(f"{name!r}: Sesame does not know this name") from None
        raise ResolveError(f"{name!r}: name resolution needs the internet (Sesame could not be reached); "
                           "type the position instead, e.g. 150.1 2.2 or 10:00:24 +02:12:00") from None
    except Exception as exc:  # socket errors, timeouts: offline
        raise ResolveError(f"{name!r}: name resolution needs the internet (Sesame: {type(exc).__name__}); "
                           "type the position instead, e.g. 150.1 2.2 or 10:00:24 +02:12:00") from None


def format_position(ra: float, dec: float) -> str:
    """``ra, dec`` in degrees and sexagesimal, for a caption: ``150.10000 +2.20000 (10:00:24.00 +02:12:00.0)``."""
    from astropy import units as u
    from astropy.coordinates import Angle

    hms = Angle(ra, u.deg).to_string(unit=u.hourangle, sep=":", precision=2, pad=True)
    dms = Angle(dec, u.deg).to_string(unit=u.deg, sep=":", precision=1, alwayssign=True, pad=True)
    return f"{ra:.5f} {dec:+.5f} ({hms} {dms})"


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
