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
    """A link to the object in an outside sky viewer, and the survey whose images it shows."""

    name: str
    url: str
    survey: str = ""

    @property
    def label(self) -> str:
        """``"SkyServer Navigate (SDSS DR18)"``: the viewer and the survey, for a link's text."""
        return f"{self.name} ({self.survey})" if self.survey else self.name

    @property
    def markdown(self) -> str:
        """``[SkyServer Navigate](https://...) (SDSS DR18)``: the link, then its survey."""
        return f"[{self.name}]({self.url})" + (f" ({self.survey})" if self.survey else "")


def has_position(ra, dec) -> bool:
    try:
        return math.isfinite(float(ra)) and math.isfinite(float(dec))
    except (TypeError, ValueError):
        return False


def galactic_latitude(ra: float, dec: float) -> float:
    """Galactic latitude b (degrees) of an ICRS position."""
    from astropy.coordinates import SkyCoord

    return float(SkyCoord(ra, dec, unit="deg").galactic.b.deg)


def in_sdss(ra: float, dec: float) -> bool:
    """Inside SDSS imaging, by a simple test: the northern galactic cap (b > 30 deg and Dec > -20 deg), or the
    equatorial Stripe 82 (RA 300..360 or 0..60 deg, |Dec| <= 1.26 deg). Coarse at the edges (SDSS's real
    footprint has holes and the southern stripes 76 and 86); the Aladin HiPS link covers any field."""
    ra = ra % 360.0
    stripe82 = (ra >= 300.0 or ra <= 60.0) and abs(dec) <= 1.26
    return stripe82 or (dec > -20.0 and galactic_latitude(ra, dec) > 30.0)


def in_des(ra: float, dec: float) -> bool:
    """Inside the Dark Energy Survey's wide field, roughly: Dec -65..+5 deg, RA 300..360 or 0..100 deg."""
    ra = ra % 360.0
    return -65.0 <= dec <= 5.0 and (ra >= 300.0 or ra <= 100.0)


LEGACY_MIN_B = 18.0  # the Legacy Surveys image the extragalactic sky: |b| >= ~18 deg (not the Galactic plane)
# Aladin Lite's HiPS by footprint: SDSS colour, DES colour, Pan-STARRS colour (Dec > -30), else DSS2 colour
HIPS = {"sdss": ("P/SDSS9/color", "SDSS9 colour"), "des": ("CDS/P/DES-DR2/ColorIRG", "DES DR2 colour"),
        "panstarrs": ("P/PanSTARRS/DR1/color-z-zg-g", "Pan-STARRS DR1 colour"), "dss": ("P/DSS2/color", "DSS2 colour")}


def _aladin(ra: float, dec: float, hips: str, name: str = "Aladin Lite") -> ViewerLink:
    survey_id, survey = HIPS[hips]
    return ViewerLink(name, "https://aladin.cds.unistra.fr/AladinLite/?target=" + quote(f"{ra:.6f} {dec:+.6f}")
                      + "&fov=0.02&survey=" + quote(survey_id, safe=""), survey)


def viewer_links(ra, dec, object_id: str | None = None) -> list[ViewerLink]:
    """Links to a position in the sky viewers whose surveys cover it, each naming its survey.

    SkyServer (Navigate, Explore) only inside SDSS (:func:`in_sdss`); the Legacy Surveys viewer below
    Dec +84 deg and away from the Galactic plane (:data:`LEGACY_MIN_B`; DR10 south of Dec +32, DR9's
    northern imaging above); DES DR2 in Aladin Lite inside
    DES (:func:`in_des`); Aladin Lite everywhere, with the best HiPS for the field (SDSS, DES,
    Pan-STARRS north of Dec -30, else DSS2). Empty for an object without a position. SkyServer
    Explore opens the SDSS object itself when ``object_id`` is an SDSS objid, else the object
    nearest the position.

    Example:
        >>> [link.label for link in viewer_links(53.16, -27.78)]  # the Hubble Deep Field South: no SDSS
        ['Legacy Surveys (Legacy Surveys DR10)', 'Aladin Lite (DES DR2 colour)']
    """
    if not has_position(ra, dec):
        return []
    ra, dec = float(ra), float(dec)
    pos = {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}"}
    links = []
    sdss = in_sdss(ra, dec)
    if sdss:
        skyserver = "https://skyserver.sdss.org/dr18/VisualTools"
        explore = {"id": object_id} if object_id and SDSS_OBJID.match(str(object_id)) else pos
        links += [ViewerLink("SkyServer Navigate", f"{skyserver}/navi?{urlencode({**pos, 'scale': '0.2'})}", "SDSS DR18"),
                  ViewerLink("SkyServer Explore", f"{skyserver}/explore/summary?{urlencode(explore)}", "SDSS DR18")]
    if dec < 84.0 and abs(galactic_latitude(ra, dec)) >= LEGACY_MIN_B:
        layer, survey = ("ls-dr10", "Legacy Surveys DR10") if dec <= 32.0 else ("ls-dr9", "Legacy Surveys DR9")
        links.append(ViewerLink("Legacy Surveys", "https://www.legacysurvey.org/viewer?"
                                + urlencode({**pos, "layer": layer, "zoom": "16"}), survey))
    if sdss:
        links.append(_aladin(ra, dec, "sdss"))
    elif in_des(ra, dec):
        links.append(_aladin(ra, dec, "des"))
    else:
        links.append(_aladin(ra, dec, "panstarrs" if dec > -30.0 else "dss"))
    return links
