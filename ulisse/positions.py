"""Sky positions as astronomers type them: the one parser of the command line, the API, the UI and catalogues.

One coordinate (:func:`angle_degrees`, :func:`parse_ra`, :func:`parse_dec`) is decimal degrees
(``189.2``), a number with a unit (``189.2deg``, ``12.6h``, ``3.3rad``) or sexagesimal in the usual
forms (``12h36m49.4s``, ``+62d12m58s``, ``62°12′58″``, ``03:32:40.5``, ``-27:46:13.7``,
``12 36 49.4``); a sexagesimal RA without ``d``/``°`` is in hours, a Dec always in degrees. A
position as one text (:func:`parse_position`) is two such coordinates (``150.1 2.2``,
``150.1, 2.2``, ``10:00:24 +02:12:00``, ``12 36 49.4 +62 12 58``) or an object name, resolved by
CDS Sesame through astropy when online (:func:`resolve_name`).

Example:
    >>> round(parse_ra("12h36m49.4s"), 5), round(parse_dec("+62d12m58s"), 5)
    (189.20583, 62.21611)
    >>> round(parse_ra("03:32:40.5"), 5), round(parse_dec("-27:46:13.7"), 5)
    (53.16875, -27.77047)
    >>> c = parse_position("10:00:24.0 +02:12:00")
    >>> round(float(c.ra.deg), 3), round(float(c.dec.deg), 3)
    (150.1, 2.2)
    >>> format_separation(0.36), format_separation(150.0), format_separation(7300.0)
    ('0.36 arcsec', '2.5 arcmin', '2.03 deg')
"""

from __future__ import annotations

import math
import numbers
import re

from .errors import InputError

NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
DECIMAL = re.compile(rf"^\s*{NUMBER}\s*$")
SEXAGESIMAL = re.compile(r"[:hdms°'\"′″]", re.IGNORECASE)  # characters only a coordinate (not a name) has
DEGREE_MARKS = ("d", "°", "deg")
EXAMPLES = {"ra": "degrees such as 189.2 or 189.2deg, or hours such as 12h36m49.4s, 12:36:49.4 or 12 36 49.4",
            "dec": "degrees such as -27.77, +62d12m58s, -27:46:13.7 or -27 46 13.7"}
PAIR_EXAMPLES = "e.g. 150.1 2.2, 10:00:24 +02:12:00 or 12h36m49.4s +62d12m58s, or an object name"
RANGES = {"ra": (0.0, 360.0, "ra must be within 0..360 degrees"),
          "dec": (-90.0, 90.0, "dec must be within -90..90 degrees")}


class ResolveError(InputError):
    """A name could not be resolved to a position (unknown name, or no network)."""


def angle_degrees(value, which: str = "ra", unit=None) -> float:
    """One coordinate in degrees (not range-checked): ``which`` is ``ra`` or ``dec``.

    Numbers (and numeric strings) are degrees, or ``unit`` (an astropy unit or its name, such as a
    catalogue column's ``hourangle``) when given; strings may carry their own unit or be sexagesimal
    (RA in hours unless marked ``d``/``°``).

    Raises:
        ValueError: not an angle.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an angle")
    if isinstance(value, numbers.Real):  # Python and numpy numbers
        return _scaled(float(value), unit)
    text = str(value).strip()
    if DECIMAL.match(text):
        return _scaled(float(text), unit)
    if not text:
        raise ValueError("empty")
    from astropy import units as u
    from astropy.coordinates import Angle

    default = u.hourangle if which == "ra" and not any(m in text.lower() for m in DEGREE_MARKS) else u.deg
    try:
        return float(Angle(text, unit=default).deg)
    except (ValueError, TypeError, u.UnitsError) as exc:
        raise ValueError(str(exc).splitlines()[0] if str(exc) else f"{text!r} is not an angle") from None


def _scaled(v: float, unit) -> float:
    if unit in (None, "", "None", "deg"):
        return v
    from astropy import units as u

    return float((v * u.Unit(unit)).to_value(u.deg))


def check_coordinate(deg: float, which: str) -> str | None:
    """Why ``deg`` is not a valid ``ra``/``dec`` in degrees, or None when it is."""
    lo, hi, rule = RANGES[which]
    if not math.isfinite(deg):
        return "is not a sky coordinate"
    if not (lo <= deg < hi if which == "ra" else lo <= deg <= hi):
        return f"is out of range ({rule})"
    return None


def parse_coordinate(value, which: str, option: str | None = None) -> float:
    """``ra`` or ``dec`` in degrees from any notation :func:`angle_degrees` reads, range-checked.

    Raises:
        InputError: ``--ra TEXT: not an angle (e.g. ...)`` or out of range, one line.
    """
    name = option or f"--{which}"
    try:
        deg = angle_degrees(value, which)
    except ValueError:
        raise InputError(f"{name} {value}: not {'an RA' if which == 'ra' else 'a Dec'} (expected {EXAMPLES[which]})") from None
    problem = check_coordinate(deg, which)
    if problem:
        raise InputError(f"{name} {value}: {problem.removeprefix('is ')}")
    return deg


def parse_ra(value, option: str = "--ra") -> float:
    """An RA in degrees (0..360) from degrees, a unit or sexagesimal hours (``12h36m49.4s``, ``12:36:49.4``)."""
    return parse_coordinate(value, "ra", option)


def parse_dec(value, option: str = "--dec") -> float:
    """A Dec in degrees (-90..90) from degrees, a unit or sexagesimal degrees (``+62d12m58s``, ``-27:46:13.7``)."""
    return parse_coordinate(value, "dec", option)


def check_position(ra, dec) -> tuple[float, float]:
    """``(ra, dec)`` in degrees from numbers or strings in any notation, range-checked.

    Raises:
        InputError: a value that is not a coordinate or is out of range (one line, naming ``--ra``/``--dec``).
    """
    return parse_ra(ra), parse_dec(dec)


def split_pair(text: str) -> tuple[str, str] | None:
    """``(ra text, dec text)`` of a position typed as one text, or None when it is not two coordinates' worth.

    A comma separates them; else the Dec starts at the first later word with a sign, else halfway.
    """
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
        return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None
    words = text.split()
    if len(words) < 2:
        return None
    signed = next((i for i in range(1, len(words)) if words[i][0] in "+-"), None)
    cut = signed if signed is not None else (len(words) // 2 if len(words) % 2 == 0 else None)
    if cut is None:
        return None
    return " ".join(words[:cut]), " ".join(words[cut:])


def parse_position(text: str, resolve_names: bool = True):
    """A sky position from one text: two coordinates (see the module), or an object name (Sesame, online only).

    Returns:
        astropy.coordinates.SkyCoord (ICRS).

    Raises:
        InputError: empty, out of range, or not a position; ResolveError: a name that did not resolve.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    text = (text or "").strip()
    if not text:
        raise InputError(f"position: empty (type RA and Dec, {PAIR_EXAMPLES})")
    pair = split_pair(text.replace(";", ","))
    if pair is not None:
        try:
            ra, dec = angle_degrees(pair[0], "ra"), angle_degrees(pair[1], "dec")
        except ValueError as exc:
            looks_numeric = re.match(r"^[+-]?[\d.]", text) and not re.search(r"[a-zA-Z]{2,}", text)
            if looks_numeric and (SEXAGESIMAL.search(text) or not resolve_names):
                raise InputError(f"position {text!r}: not a sky position ({exc}; {PAIR_EXAMPLES})") from None
        else:
            if check_coordinate(ra, "ra") or check_coordinate(dec, "dec"):
                raise InputError(f"position {text!r}: RA must be in [0, 360) and Dec in [-90, 90] degrees")
            return SkyCoord(ra * u.deg, dec * u.deg)
    if pair is None and re.fullmatch(r"[+-]?\d[\d.:]*\s*", text):  # a number is no object's name
        raise InputError(f"position {text!r}: one coordinate; type RA and Dec ({PAIR_EXAMPLES})")
    if not resolve_names:
        raise ResolveError(f"{text!r}: name resolution is off")
    return resolve_name(text)


def resolve_name(name: str):
    """An object name to a position through CDS Sesame (astropy). Raises ResolveError offline or when unknown."""
    from astropy.coordinates import SkyCoord
    from astropy.coordinates.name_resolve import NameResolveError

    hint = f"type the position instead, {PAIR_EXAMPLES.rsplit(',', 1)[0]}"
    try:
        return SkyCoord.from_name(name)
    except NameResolveError as exc:
        if "Unable to find coordinates" in str(exc):
            raise ResolveError(f"{name!r}: Sesame does not know this name") from None
        raise ResolveError(f"{name!r}: name resolution needs the internet (Sesame could not be reached); {hint}") from None
    except Exception as exc:  # socket errors, timeouts: offline
        raise ResolveError(f"{name!r}: name resolution needs the internet (Sesame: {type(exc).__name__}); {hint}") from None


def format_position(ra: float, dec: float) -> str:
    """``ra, dec`` in degrees and sexagesimal, for a caption: ``150.10000 +2.20000 (10:00:24.00 +02:12:00.0)``."""
    from astropy import units as u
    from astropy.coordinates import Angle

    hms = Angle(ra, u.deg).to_string(unit=u.hourangle, sep=":", precision=2, pad=True)
    dms = Angle(dec, u.deg).to_string(unit=u.deg, sep=":", precision=1, alwayssign=True, pad=True)
    return f"{ra:.5f} {dec:+.5f} ({hms} {dms})"


def format_separation(arcsec: float, beside: float | None = None) -> str:
    """An angular distance in the unit that suits it: arcsec below 1 arcmin, arcmin below 1 deg, else deg.

    With ``beside`` (another distance in arcsec, a match radius), decimals are added until the two
    read differently: ``format_separation(0.1004, beside=0.1)`` is ``0.1004 arcsec``, never ``0.10``.
    """
    if not math.isfinite(arcsec):
        return "an unknown distance"
    value, unit, decimals = ((arcsec, "arcsec", 2) if arcsec < 60.0 else
                             (arcsec / 60.0, "arcmin", 1) if arcsec < 3600.0 else (arcsec / 3600.0, "deg", 2))
    if beside is not None and beside != arcsec:
        other = beside * value / arcsec if arcsec else beside
        while decimals < 6 and f"{value:.{decimals}f}" == f"{other:.{decimals}f}":
            decimals += 1
    return f"{value:.{decimals}f} {unit}"
