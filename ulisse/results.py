"""Typed query results and their export.

The export formats are registered (``register_export_formats``): the core's
(text table, CSV, JSON, VOTable, FITS, ECSV) in :mod:`ulisse._builtins` with the
writers below, a plugin's beside them; :func:`render` and
:func:`format_for_path` look them up by name and by file extension.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


class TableResult:
    """What every typed result with a ``table`` of objects offers: its length, its ids, and its export as
    the command line writes it (units, UCDs, the query's record)."""

    table: pd.DataFrame
    verb = "result"  # the record's verb: ``query``, ``expand``, ``anomalies``...

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        return list(self.table["id"])

    def record_params(self) -> dict:
        """What was asked, for the record (a subclass names its own)."""
        return {}

    def to_astropy(self, index=None):
        """An astropy Table: each column with its unit, UCD and description (with ``index``, the index the result
        came from, also those of its catalogue and derived columns) and the query's record in ``meta`` (verb,
        parameters; with ``index``, its fingerprint and encoder). For a FITS file use :meth:`write`: it gives
        the record 8-character keywords."""
        from .record import index_column_notes, query_record

        table = self.table.drop(columns=["row"], errors="ignore").copy()
        if index is not None:
            table.attrs["column_notes"] = index_column_notes(index.path)
        return to_astropy(table, meta=query_record(index, self.verb, **self.record_params()).as_dict())

    def write(self, path: str | os.PathLike, index=None) -> Path:
        """Write the table to ``path`` (atomically) in the format its extension names: ``.fits``, ``.vot`` or
        ``.xml`` (VOTable), ``.ecsv``, ``.csv``, ``.json``..., as ``--output`` writes it: units, UCDs, and the
        query's record (with ``index``, the index the result came from, also its columns' units and its
        fingerprint and encoder). Returns the path.

        Raises:
            InputError: an unknown extension, or a place that cannot be written (a folder, inside an index).
        """
        from ._io import atomic_write
        from .record import query_record

        fmt = check_output(path, "path")
        meta = {"index": str(index.path)} if index is not None else None
        data = render(self.table.drop(columns=["row"], errors="ignore"), fmt, meta,
                      record=query_record(index, self.verb, **self.record_params()))
        return atomic_write(path, data)


@dataclass
class Neighbours(TableResult):
    """The answer to a one-shot query.

    Attributes:
        prototype: what was asked (``id=...``, ``image=...``, ``ra,dec=...``).
        prototype_id: the index object used as prototype, if any.
        table: one row per neighbour: ``rank`` (1 = nearest), ``id``, ``distance``, then metadata.
        info: extra values (plugins add summaries such as class fractions here).
    """

    prototype: str
    prototype_id: str | None
    table: pd.DataFrame
    info: dict = field(default_factory=dict)

    verb = "query"

    def record_params(self) -> dict:
        return {"prototype": self.prototype, "k": self.info.get("k")}

    def to_records(self) -> list[dict]:
        return records(self.table)


def records(table: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts (NaN -> null)."""
    out = []
    for row in table.to_dict(orient="records"):
        out.append({k: _plain(v) for k, v in row.items()})
    return out


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if v is pd.NA or v is None:
        return None
    return v


def to_astropy(table: pd.DataFrame, meta: dict | None = None):
    """An astropy Table of the result, each known column with its unit, UCD and description
    (:func:`ulisse.record.column_annotation`: ``ra``/``dec`` in ``deg``, ``pos.eq.ra;meta.main``...)."""
    import astropy.units as u
    from astropy.table import Table

    from .record import column_annotation

    df = table.copy()
    for c in df.columns:
        if df[c].dtype == object or str(df[c].dtype).startswith("string"):
            df[c] = df[c].astype(str)
    t = Table.from_pandas(df)
    notes = table.attrs.get("column_notes") or {}
    for name in t.colnames:
        note = column_annotation(name, notes)
        if note.unit:
            try:
                t[name].unit = u.Unit(note.unit, parse_strict="silent")
            except (ValueError, TypeError):
                pass  # a unit astropy cannot read stays out (its description still goes)
        if note.ucd:
            t[name].meta["ucd"] = note.ucd
        if note.description:
            t[name].description = note.description
    if meta:
        t.meta.update(meta)
    return t


def emit(table: pd.DataFrame, fmt: str, *, output=None, out_fmt: str | None = None, meta: dict | None = None,
         extra: dict | None = None, record=None, head: str = "", notes: str = "") -> None:
    """A verb's answer, the one output path of every verb: ``table`` on standard output in ``fmt`` and, with
    ``output``, in that file too (in ``out_fmt``; written atomically, before anything is printed, so that a
    failed write leaves no half-done output). ``head`` and ``notes`` are text lines shown above and below a
    text table (and kept in a text file); with any other format they go to standard error as ``ulisse:``
    lines, so that standard output stays data a program can read."""
    import click

    from ._io import atomic_write

    text = render(table, fmt, meta, extra=extra, record=record, stream=True)
    if output:
        data = render(table, out_fmt or fmt, meta, extra=extra, record=record)
        atomic_write(output, head + data + notes if (out_fmt or fmt) == "table" else data)
        logging.getLogger("ulisse").info("wrote %s", output)
    if fmt == "table":
        click.echo(head + text + notes, nl=False)
        return
    click.echo(text, nl=False)
    side = [line.removeprefix("# ").strip() for line in (head + notes).splitlines()]
    if any(side):
        click.echo("".join(f"ulisse: {line}\n" for line in side if line), err=True, nl=False)


def render(table: pd.DataFrame, fmt: str, meta: dict | None = None, extra: dict | None = None, *,
           record=None, stream: bool = False) -> str | bytes:
    """The table in the registered export format ``fmt`` (``table``, ``csv``, ``json``, ``votable``, ``fits``...).

    The one export path of the verbs and the UI's downloads. ``record`` (a
    :class:`ulisse.record.QueryRecord`) says what the table answers; every format
    that has room writes it (VOTable PARAMs, FITS keywords, ECSV meta, JSON's ``query``),
    before the entries of ``meta``. A CSV stays a bare table everywhere: TOPCAT's CSV reader and the
    defaults of astropy and pandas take no comment lines, so the record (and the units) go in the ECSV,
    a CSV with a header that they all read. ``stream``: the text goes to standard output.

    A ``source`` column is written relative to the index directory when ``meta`` names it (``meta["index"]``),
    as every verb's does, and ``meta["index"]`` itself as the directory's name: an export carries no absolute
    paths of this machine.

    Raises:
        InputError: no plugin registers ``fmt``.
    """
    from .registry import export_format

    meta = dict(meta or {})
    if meta.get("index"):  # the units and descriptions of the index's columns, for the formats that keep them
        from .record import index_column_notes

        table = table.copy()
        table.attrs["column_notes"] = index_column_notes(meta["index"])
    if meta.get("index") and "source" in table.columns:
        table = table.assign(source=[relative_source(meta["index"], s) for s in table["source"]])
    if meta.get("index"):
        meta["index"] = Path(str(meta["index"])).name or str(meta["index"])
    if record is not None:
        meta = {**record.as_dict(), **{k: v for k, v in meta.items() if k != "index"}}
        if extra is not None:
            extra = {**extra, "query": record.as_dict()}
    if fmt == "csv":
        meta = {}  # a bare table that every reader takes; ECSV is the CSV that carries the record
    return export_format(fmt).write(table, meta, extra)


def write_csv(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """Comma-separated values with a header line, after ``# name: value`` lines of ``meta`` if any.

    :func:`render` gives no ``meta`` (TOPCAT's CSV reader and the defaults of astropy and pandas take
    no comment lines); the ECSV, VOTable and FITS exports carry the query's record and the units."""
    head = "".join(f"# {k}: {_one_line(v)}\n" for k, v in (meta or {}).items())
    return head + table.to_csv(index=False)


def _one_line(value) -> str:
    return " ".join(str(value).split())


def write_json(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """The rows as a JSON list, or ``{**extra, "rows": [...]}`` when the verb gives ``extra``."""
    rows = records(table)
    return json.dumps(rows if extra is None else {**extra, "rows": rows}, indent=2, default=str) + "\n"


def write_votable(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """An IVOA VOTable (BINARY2 serialisation): columns with units and UCDs, ``meta`` (the query's record) as
    PARAMs with UCDs and descriptions, its creation time also as an INFO."""
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info, Param

    from .record import fits_card

    meta = meta or {}
    votable = from_table(to_astropy(table))
    resource = votable.resources[0]
    vtable = resource.tables[0]
    if meta.get("verb"):
        vtable.description = f"ulisse {meta['verb']}" + (f" of {meta['prototype']}" if meta.get("prototype") else "")
    for name, value in meta.items():
        _key, text, ucd = fits_card(name)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            kind = {"datatype": "char", "arraysize": "*", "value": _one_line(value)}
        else:
            kind = {"datatype": "long" if isinstance(value, (int, np.integer)) else "double", "value": value}
        param = Param(votable, name=str(name), ID=_xml_id(name), ucd=ucd, **kind)
        param.description = text
        vtable.params.append(param)
    for name in ("created", "software"):
        if meta.get(name):
            resource.infos.append(Info(name=name, value=_one_line(meta[name])))
    buf = io.BytesIO()
    # BINARY2, not TABLEDATA: astropy's C TABLEDATA writer (astropy <= 8.0.2 at least) writes its
    # end-of-row NUL one byte past its buffer when a row's text is exactly the buffer's size
    # (256, 512, ... bytes) and corrupts the heap (benchmarks/ui-soak.md has the reproduction).
    votable.to_xml(buf, tabledata_format="binary2")
    return buf.getvalue().decode()


def _xml_id(name) -> str:
    text = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in str(name))
    return "param_" + text


def write_fits(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> bytes:
    """A FITS binary table: ``TUNITn`` and ``TUCDn``/``TCOMMn`` of the columns, ``meta`` (the query's record)
    as header keywords with comments (``QPROTO``, ``QK``, ``ENCMODEL``, ``DATE``...; another key: its name cut
    to 8 characters)."""
    from astropy.io import fits

    from .record import fits_card

    t = to_astropy(table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a unit outside the FITS standard: written below as it is
        hdu = fits.table_to_hdu(t)
    for i, name in enumerate(t.colnames, start=1):
        if t[name].unit is not None and f"TUNIT{i}" not in hdu.header:  # nanomaggy...: the catalogue's text
            _card(hdu.header, f"TUNIT{i}", t[name].unit.to_string(), f"unit of {name}")
        if t[name].meta.get("ucd"):
            _card(hdu.header, f"TUCD{i}", t[name].meta["ucd"], f"UCD of {name}")
        if t[name].description:
            hdu.header[f"TCOMM{i}"] = t[name].description[:68]
    for name, value in (meta or {}).items():
        key, text, _ucd = fits_card(name)
        if isinstance(value, (np.integer, np.floating)):
            value = value.item()
        elif not isinstance(value, (int, float, bool)):
            value = _one_line(value)
        _card(hdu.header, key, value, text)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()


def _card(header, key: str, value, comment: str) -> None:
    """A header card, its comment cut to what fits beside the value (a long string: CONTINUE cards, no comment)."""
    shown = max(len(value.replace("'", "''")) + 2, 20) if isinstance(value, str) else 20
    room = 80 - 10 - shown - 3
    header[key] = (value, comment[:room]) if shown <= 68 and room > 0 else value


def write_ecsv(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """Astropy's Enhanced CSV: CSV with a YAML header of column types, units, UCDs and ``meta``."""
    buf = io.StringIO()
    to_astropy(table, meta).write(buf, format="ascii.ecsv")
    return buf.getvalue()


def write_text(table: pd.DataFrame, meta: dict | None = None, extra: dict | None = None) -> str:
    """The aligned text table of :func:`text_table` (``meta`` is not written)."""
    return text_table(table)


POSITION_COLUMNS = ("ra", "dec")
# one number of decimals per column kind: every row of a column alike, the decimal points aligned
DECIMALS = {
    "position": 6,  # degrees: 1e-6 deg = 0.0036 arcsec, objects 0.01 arcsec apart are told apart
    "distance": 4,  # distances between vectors, sky separations
    "score": 4,  # anomaly scores, probabilities, fractions
}
SIGNIFICANT = 5  # any other float column: decimals for 5 significant digits of its largest value (0 to 6)


def column_kind(column: str) -> str | None:
    """``position``, ``distance``, ``score`` or None (another column), from a column's name."""
    name = str(column).lower()
    if name in POSITION_COLUMNS or name in ("raj2000", "dej2000") or name.endswith(("_ra", "_dec")):
        return "position"
    if name.startswith(("distance", "separation", "dist_")) or name.endswith(("_distance", "_separation", "_arcsec")):
        return "distance"
    if name.startswith(("score", "anomaly", "prob", "fraction")) or name.endswith(("_score", "_prob", "_fraction")):
        return "score"
    return None


def column_decimals(column: str, values) -> int | None:
    """The decimals of a float column in a text table: by its kind (:data:`DECIMALS`), else enough for
    :data:`SIGNIFICANT` significant digits of its largest value (0 for whole numbers); None: scientific
    notation (values below 1e-3 or from 1e9 on)."""
    kind = column_kind(column)
    if kind is not None:
        return DECIMALS[kind]
    v = np.abs(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    if len(v) == 0 or not v.any() or np.all(v == np.round(v)):
        return 0
    top = float(v.max())
    if top < 1e-3 or top >= 1e9:
        return None
    return int(min(6, max(0, SIGNIFICANT - 1 - math.floor(math.log10(top)))))


def format_number(value, column: str = "", decimals: int | None | str = "kind") -> str:
    """One value as text tables write it: floats with ``decimals`` (default: the column kind's, see
    :data:`DECIMALS`; None: scientific notation), integers as they are, missing values as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if decimals == "kind":
            decimals = column_decimals(column, [value])
        return f"{float(value):.4e}" if decimals is None else f"{float(value):.{decimals}f}"
    return str(value)


def text_table(table: pd.DataFrame) -> str:
    """A result table as aligned text: every column, ids and values never truncated, one number of
    decimals per column (:func:`column_decimals`)."""
    table = table.drop(columns=[c for c in ("source", "row") if c in table.columns])  # long paths: not for the eye
    cells = {}
    for c in table.columns:
        values = table[c].tolist()
        floats = pd.api.types.is_float_dtype(table[c])
        decimals = column_decimals(str(c), table[c].to_numpy()) if floats else "kind"
        cells[c] = [format_number(v, str(c), decimals) for v in values]
    widths = {c: max([len(str(c))] + [len(x) for x in cells[c]]) for c in table.columns}
    numeric = {c: pd.api.types.is_numeric_dtype(table[c]) for c in table.columns}
    head = "  ".join(str(c).rjust(widths[c]) if numeric[c] else str(c).ljust(widths[c]) for c in table.columns)
    lines = [head.rstrip()]
    for i in range(len(table)):
        lines.append("  ".join(cells[c][i].rjust(widths[c]) if numeric[c] else cells[c][i].ljust(widths[c])
                               for c in table.columns).rstrip())
    return "\n".join(lines) + "\n"


def relative_source(index, source):
    """A ``source`` path relative to the index directory ``index`` (an :class:`~ulisse.Index` or its path):
    exports never carry this machine's absolute paths. Relative paths and non-strings are kept."""
    if not isinstance(source, str) or not source or index is None:
        return source
    base = Path(index if isinstance(index, (str, os.PathLike)) else index.path).resolve()
    path = Path(source)
    if not path.is_absolute():
        return source
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive
        return path.name


def export_table(table: pd.DataFrame, index=None) -> pd.DataFrame:
    """The table as exported: no ``row`` column, ``source`` relative to the index (:func:`relative_source`)."""
    out = table.drop(columns=["row"], errors="ignore").copy()
    if "source" in out.columns and index is not None:
        out["source"] = [relative_source(index, s) for s in out["source"]]
    return out


def check_output(path: str | os.PathLike, option: str = "--output") -> str:
    """The export format for an output file, checked before any work: a registered extension, an existing
    folder to write into, and not a folder itself. Returns the format's name.

    Raises:
        InputError: one line naming the option and the problem.
    """
    from .errors import InputError

    fmt = format_for_path(path)
    check_writable(path, option)
    return fmt


def check_writable(path: str | os.PathLike, option: str, suffixes: tuple[str, ...] = ()) -> None:
    """A file to be written later (an export, a ``--png`` grid), checked before any work: not a folder, in an
    existing, writable folder that is not an index's (nor inside one), and with one of ``suffixes`` if given.

    Raises:
        InputError: one line naming the option and the problem.
    """
    from .errors import InputError

    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {path}: is a folder (give a file name)")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: no such folder {parent}")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{option} {path}: the folder {parent} is not writable")
    index = _index_around(parent)
    if index is not None:
        raise InputError(f"{option} {path}: inside the index {index} (a file written there could replace one of "
                         "the index's own); write it outside")
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: expected a {' or '.join(suffixes)} file name")


def _index_around(folder: Path) -> Path | None:
    """The index directory ``folder`` is (or lies in), or None: a folder whose manifest.json is an index's."""
    import json

    for d in (folder.resolve(), *folder.resolve().parents):
        manifest = d / "manifest.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and "segments" in data and "dim" in data:
                return d
    return None


def format_for_path(path: str | os.PathLike) -> str:
    """The name of the registered export format for ``path``'s extension (``r.xml`` -> ``votable``).

    Raises:
        InputError: no registered format has that extension.
    """
    from .registry import export_format_for_path

    return export_format_for_path(path).name
