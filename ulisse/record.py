"""The record of a query that every export carries, and what each result column means (units, UCDs).

A verb or a UI page builds a :class:`QueryRecord` with :func:`query_record` and
passes it to :func:`ulisse.results.render`: the VOTable gets it as PARAMs (and
an INFO with the creation time), the FITS table as header keywords with
comments, the ECSV as its ``meta``, a CSV file as ``#`` comment lines, JSON as
its ``query`` object. The columns get units and IVOA UCDs from
:func:`column_annotation` (``ra``: ``deg``, ``pos.eq.ra;meta.main``...).

Example:
    >>> column_annotation("ra")
    ColumnAnnotation(unit='deg', ucd='pos.eq.ra;meta.main', description='Right ascension (ICRS)')
    >>> r = QueryRecord("query", {"prototype": "obj004", "k": 5}, created="2026-01-01T00:00:00")
    >>> [f.name for f in r.fields()][:4]
    ['verb', 'prototype', 'k', 'created']
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ColumnAnnotation:
    """What a result column holds: its unit (astropy/VOUnit text), UCD and a one-line description."""

    unit: str | None = None
    ucd: str | None = None
    description: str | None = None


# By column name (lower case); then by pattern (:data:`COLUMN_PATTERNS`).
COLUMNS = {
    "ra": ColumnAnnotation("deg", "pos.eq.ra;meta.main", "Right ascension (ICRS)"),
    "dec": ColumnAnnotation("deg", "pos.eq.dec;meta.main", "Declination (ICRS)"),
    "raj2000": ColumnAnnotation("deg", "pos.eq.ra", "Right ascension (J2000)"),
    "dej2000": ColumnAnnotation("deg", "pos.eq.dec", "Declination (J2000)"),
    "id": ColumnAnnotation(None, "meta.id;meta.main", "Object identifier in the index"),
    "rank": ColumnAnnotation(None, "meta.number", "Rank in the result (1 = first)"),
    "distance": ColumnAnnotation(None, "arith.diff", "Distance between feature vectors (not a sky separation)"),
    "score": ColumnAnnotation(None, "stat.value", "Anomaly or ranking score (larger: more unusual / more relevant)"),
    "label": ColumnAnnotation(None, "src.class", "Class label from the catalogue"),
    "class": ColumnAnnotation(None, "src.class", "Class label"),
    "source": ColumnAnnotation(None, "meta.file", "Cutout file, relative to the index directory"),
    "z": ColumnAnnotation(None, "src.redshift", "Redshift"),
    "redshift": ColumnAnnotation(None, "src.redshift", "Redshift"),
    "iteration": ColumnAnnotation(None, "meta.number", "Expansion iteration that found the object"),
    "finder": ColumnAnnotation(None, "meta.id.cross", "The object whose neighbour this one is"),
    "mark": ColumnAnnotation(None, "meta.code", "User's mark"),
    "separation": ColumnAnnotation("arcsec", "pos.angDistance", "Angular separation on the sky"),
}
COLUMN_PATTERNS = (
    (re.compile(r".*_arcsec$"), ColumnAnnotation("arcsec", "pos.angDistance", None)),
    (re.compile(r".*_deg$"), ColumnAnnotation("deg", None, None)),
    # SDSS's band magnitudes u g r i (z is the redshift above; y and x are pixel positions more often than
    # a y-band magnitude, so they get nothing)
    (re.compile(r"^(mag_|.*_mag$|[ugri]$)"), ColumnAnnotation("mag", "phot.mag", None)),
    (re.compile(r"^(prob|fraction)|.*_(prob|fraction)$"), ColumnAnnotation(None, "stat.probability", None)),
    (re.compile(r"^(score|anomaly)|.*_score$"), ColumnAnnotation(None, "stat.value", None)),
    (re.compile(r"^distance|^dist_|.*_distance$"), ColumnAnnotation(None, "arith.diff", None)),
    (re.compile(r".*_ra$"), ColumnAnnotation("deg", "pos.eq.ra", None)),
    (re.compile(r".*_dec$"), ColumnAnnotation("deg", "pos.eq.dec", None)),
)


def column_annotation(name: str, notes: dict | None = None) -> ColumnAnnotation:
    """The unit, UCD and description of a result column: the core's own columns by name, then ``notes``
    (what the index keeps of its catalogue and derived columns: :func:`index_column_notes`), then by the
    name's pattern; empty for an unknown column."""
    key = str(name).lower()
    if key in COLUMNS:
        return COLUMNS[key]
    if notes and name in notes:
        return notes[name]
    for pattern, annotation in COLUMN_PATTERNS:
        if pattern.match(key):
            return annotation
    return ColumnAnnotation()


def index_column_notes(index_dir: str | Path) -> dict[str, ColumnAnnotation]:
    """The units, UCDs and descriptions an index directory keeps: its catalogues' (the manifest's
    ``column_notes``) and its derived columns' (each stored set's ``column_notes``: head predictions...).
    Unreadable files give nothing (an export is never stopped by its annotations)."""
    import json

    from ulisse.indexes.manifest import MANIFEST
    from ulisse.indexes.store import SIDE_DIR

    base, raw = Path(index_dir), {}
    for f in [*sorted((base / SIDE_DIR).glob("*.json")), base / MANIFEST]:
        try:
            found = json.loads(f.read_text()).get("column_notes")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(found, dict):
            raw.update(found)
    return {str(name): ColumnAnnotation(*(str(n[k]) if n.get(k) else None for k in ("unit", "ucd", "description")))
            for name, n in raw.items() if isinstance(n, dict)}


@dataclass(frozen=True)
class RecordField:
    """One entry of a record: ``name`` (VOTable PARAM, ECSV meta key), ``fits_key`` (8 characters),
    ``value`` (str, int or float) and a description (the FITS comment)."""

    name: str
    value: object
    fits_key: str
    description: str
    ucd: str | None = None


# the query parameters: name | FITS key | UCD | description (the FITS comment); another parameter gets its name
# cut to 8 characters as its key
_PARAM_TABLE = """
verb       | QVERB    | meta.code   | what made the table (ulisse verb or UI page)
prototype  | QPROTO   | meta.id     | the prototype(s) of the query
prototypes | QPROTOS  | meta.id     | every prototype, comma-separated
k          | QK       | meta.number | neighbours asked for
combine    | QCOMBINE | meta.code   | how several prototypes combine
method     | QMETHOD  | meta.code   | anomaly scoring method
iterations | QITER    | meta.number | expansion iterations
budget     | QBUDGET  | meta.number | expansion budget (objects)
top        | QTOP     | meta.number | rows asked for
where      | QWHERE   | meta.query  | metadata filter
label      | QLABEL   | meta.code   | class column reported
head       | QHEAD    | meta.code   | ranking head
"""
PARAMS = {name: (key, text, ucd) for name, key, ucd, text in
          ([cell.strip() for cell in line.split("|")] for line in _PARAM_TABLE.strip().splitlines())}
INDEX_FIELDS = (
    ("index", "INDEX", "index (directory name)", "meta.dataset"),
    ("index_fingerprint", "IDXFPRNT", "index fingerprint (changes with its vectors)", "meta.version"),
    ("index_count", "IDXCOUNT", "objects in the index", "meta.number"),
)
ENCODER_FIELDS = (  # (record name, EncoderSpec attribute, FITS key, description)
    ("encoder_model", "model_name", "ENCMODEL", "encoder: timm model"),
    ("encoder_weights", "weights_source", "ENCWGHTS", "encoder: weights"),
    ("encoder_weights_sha256", "weights_sha256", "ENCWSHA", "encoder: sha256 of the weights"),
    ("encoder_preset", "preset", "ENCPRSET", "encoder: preset"),
    ("encoder_pool", "pool", "ENCPOOL", "encoder: pooling of the feature map"),
    ("encoder_tta", "tta", "ENCTTA", "encoder: test-time augmentation"),
    ("encoder_input_size", "input_size", "ENCSIZE", "encoder: input size (pixels)"),
    ("encoder_precision", "precision", "ENCPREC", "encoder: numeric precision"),
)


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0, tzinfo=None).isoformat()


@dataclass(frozen=True)
class QueryRecord:
    """What a result table answers: the verb, its parameters, the index and its encoder, when, by what.

    Attributes:
        verb: ``query``, ``expand``, ``anomalies``, ``rank``... or a UI page (``ui:Search``).
        params: the query's parameters in order (``prototype``, ``k``, ``combine``...); None values are left out.
        index: the index directory's name (never this machine's absolute path), its fingerprint and size.
        encoder: the encoder spec's model, weights, preset, pooling, TTA, input size and precision.
        created: UTC time, ISO 8601 (FITS ``DATE``).
    """

    verb: str
    params: dict = field(default_factory=dict)
    index: dict = field(default_factory=dict)
    encoder: dict = field(default_factory=dict)
    created: str = field(default_factory=_utc_now)
    software: str = ""

    def fields(self) -> list[RecordField]:
        """The record as flat named fields, in the order every format writes them."""
        items = [("verb", self.verb), *((k, v) for k, v in self.params.items() if k != "verb"),
                 *self.index.items(), *self.encoder.items(), ("created", self.created), ("software", self.software)]
        out = []
        for name, value in items:
            if value is None or value == "":
                continue
            out.append(RecordField(name, _value(value), *fits_card(name)))
        return out

    def as_dict(self) -> dict:
        """``{name: value}`` of :meth:`fields` (ECSV ``meta``, JSON ``query``)."""
        return {f.name: f.value for f in self.fields()}

    def comment_lines(self) -> list[str]:
        """``# name: value`` lines (a CSV file's header; readers skip them with ``comment="#"``)."""
        return [f"# {f.name}: {f.value}" for f in self.fields()]


def _value(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _software() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ulisse {version('ulisse')}"
    except PackageNotFoundError:
        return "ulisse"


def fits_card(name: str) -> tuple[str, str, str | None]:
    """``(fits_key, description, ucd)`` of a record field or another meta key by its name (another key: its
    name in capitals cut to 8 characters)."""
    if name in PARAMS:
        return PARAMS[name]
    for fname, key, text, ucd in INDEX_FIELDS:
        if fname == name:
            return key, text, ucd
    for fname, _attr, key, text in ENCODER_FIELDS:
        if fname == name:
            return key, text, None
    return {"created": ("DATE", "UTC time the table was made", "time.creation"),
            "software": ("CREATOR", "software that made the table", "meta.software")}.get(
        name, (re.sub(r"[^A-Z0-9_-]", "", str(name).upper())[:8] or "QPARAM", str(name), None))


def query_record(index=None, verb: str = "query", **params) -> QueryRecord:
    """The record of a query on ``index`` (an :class:`~ulisse.Index`, an index directory or None).

    Example:
        >>> query_record(None, "anomalies", method="kth", k=10).params
        {'method': 'kth', 'k': 10}
    """
    index_info, encoder = {}, {}
    if index is not None:
        path = Path(index if isinstance(index, (str, Path)) else index.path)
        index_info["index"] = path.resolve().name or str(path)
        if not isinstance(index, (str, Path)):
            try:
                index_info["index_fingerprint"] = str(index.fingerprint)
                index_info["index_count"] = int(len(index))
                spec = index.encoder_spec
                encoder = {name: getattr(spec, attr) for name, attr, _k, _t in ENCODER_FIELDS}
            except (AttributeError, KeyError, TypeError, ValueError):  # a stand-in or a sharded index's view
                pass
    params = {k: v for k, v in params.items() if v is not None}
    return QueryRecord(verb, params, index_info, encoder, software=_software())
