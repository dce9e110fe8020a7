"""Reading what the user hands in: cutouts to embed (folders, files, catalogues) and lists of object ids."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .catalog import read_catalog
from .cutouts import cutout_id, is_cutout_file
from .errors import InputError

LOG = logging.getLogger(__name__)

FILE_COLUMNS = ("file", "path", "cutout", "filename")


@dataclass
class AddReport:
    """What a build or add did."""

    added: int
    total: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Inputs:
    """Cutout files in input order with their metadata rows (``id``, ``ra``, ``dec``, ``source``, extras)."""

    paths: list[Path]
    metadata: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    column_notes: dict = field(default_factory=dict)  # the catalogue's units, UCDs, descriptions by column

    def __len__(self) -> int:
        return len(self.paths)


def list_cutout_files(inputs: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Cutout files from files and folders; a folder is read in sorted file-name order.

    Files in a folder that are not cutouts (a catalogue CSV, say) are ignored with a note.
    """
    files, notes = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            entries = sorted(x for x in p.iterdir() if x.is_file() and not x.name.startswith("."))
            others = [x.name for x in entries if not is_cutout_file(x)]
            files.extend(x for x in entries if is_cutout_file(x))
            if others:
                notes.append(f"{p}: ignored {len(others)} file(s) that are not cutouts: {', '.join(others[:5])}"
                             + (" ..." if len(others) > 5 else ""))
        elif p.is_file():
            if not is_cutout_file(p):
                raise InputError(f"{p}: not a cutout file (expected PNG, JPEG or FITS)")
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return files, notes


def gather(inputs: Sequence[str | Path], catalog: str | Path | None = None, skip_bad: bool = False) -> Inputs:
    """Pair cutout files with catalogue rows by id (a catalogue id matches a cutout's file stem).

    A catalogue may also name its cutouts in a ``file`` (or ``path``) column, relative to itself.

    Raises:
        InputError: no cutouts, duplicate ids, or (without ``skip_bad``) a cutout missing from the catalogue.
    """
    files, notes = list_cutout_files(inputs)
    skipped: list[tuple[str, str]] = []
    cat = read_catalog(catalog, skip_bad=skip_bad, skipped=skipped) if catalog is not None else None
    if cat is not None:
        fcol = next((c for c in cat.columns if c.lower() in FILE_COLUMNS), None)
        if fcol is not None:
            base = Path(catalog).parent
            listed = {cutout_id(f) for f in files}
            for v, oid in zip(cat[fcol], cat["id"]):
                if isinstance(v, str) and v and oid not in listed:
                    f = Path(v) if Path(v).is_absolute() else base / v
                    files.append(f)
                    listed.add(oid)
    if not files:
        raise InputError(f"no cutouts found in {', '.join(map(str, inputs)) or 'the catalogue'}")
    ids = [cutout_id(f) for f in files]
    seen: dict[str, Path] = {}
    for oid, f in zip(ids, files):
        if oid in seen:
            raise InputError(f"{f}: id {oid!r} is also the id of {seen[oid]}")
        seen[oid] = f
    meta = pd.DataFrame({"id": ids, "source": [str(Path(f).resolve()) for f in files]})
    if cat is not None:
        known = set(cat["id"])
        missing = [i for i, oid in enumerate(ids) if oid not in known]
        if missing and not skip_bad:
            raise InputError(f"{files[missing[0]]}: id {ids[missing[0]]!r} is not in the catalogue {catalog}"
                             + (f" ({len(missing)} cutouts in all; --skip-bad skips them)" if len(missing) > 1 else ""))
        for i in missing:
            skipped.append((str(files[i]), f"id not in the catalogue {catalog}"))
        keep = [i for i in range(len(ids)) if ids[i] in known]
        files = [files[i] for i in keep]
        meta = meta.iloc[keep].reset_index(drop=True)
        extra = cat.drop(columns=[c for c in cat.columns if c.lower() in FILE_COLUMNS])
        meta = meta.merge(extra, on="id", how="left", validate="one_to_one")
        unused = len(cat) - len(meta)
        if unused:
            notes.append(f"{catalog}: {unused} catalogue row(s) have no cutout")
    else:
        meta["ra"] = np.nan
        meta["dec"] = np.nan
    cols = ["id", "ra", "dec", "source"] + [c for c in meta.columns if c not in ("id", "ra", "dec", "source")]
    column_notes = {} if cat is None else dict(cat.attrs.get("column_notes") or {})
    return Inputs([Path(f) for f in files], meta[cols], notes, skipped, column_notes)


def read_id_list(path: str | os.PathLike) -> list[str]:
    r"""Object ids from a text file, in file order, each once: the one reader of every ``--ids``-like option.

    Rules:

    * UTF-8 text (a byte-order mark is fine); blank lines and lines starting with ``#`` are skipped anywhere.
    * If the first remaining line holds a comma (or else a tab) the file is a CSV (or a tab-separated table):
      that line is the header and must name an
      ``id`` column (any case); every later line is a row (quoted fields allowed) with as many fields as the
      header, and a non-empty id.
    * Otherwise one id per line (surrounding spaces stripped); a first line ``id`` is a header; a later line
      with a comma is an error (a CSV needs its header first).
    * An id given twice counts once, where it first appears.

    Example:
        >>> from pathlib import Path; import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "ids.csv"
        >>> _ = f.write_text("# my AGN\nnote,id\nnice,obj001\n,obj002\n")
        >>> read_id_list(f)
        ['obj001', 'obj002']

    Raises:
        InputError: one line naming the file (and the line, for a bad header or row): no such file, not
            UTF-8 text, a CSV without an ``id`` column, a row with the wrong number of fields or no id, or no
            id at all.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    ids: list[str] = []
    sep = next((c for c in (",", "\t") if lines and c in lines[0][1]), None)  # a CSV, or a tab-separated table
    if sep is not None:
        n, header = lines[0]
        columns = [c.strip() for c in next(csv.reader([header], delimiter=sep))]
        lower = [c.lower() for c in columns]
        if "id" not in lower:
            raise InputError(f"{path}, line {n}: a CSV of ids needs an 'id' column (columns: {', '.join(columns)})")
        col = lower.index("id")
        for n, line in lines[1:]:
            fields = next(csv.reader([line], delimiter=sep))
            if len(fields) != len(columns):
                raise InputError(f"{path}, line {n}: {len(fields)} field(s), the header has {len(columns)}")
            oid = fields[col].strip()
            if not oid:
                raise InputError(f"{path}, line {n}: no id")
            ids.append(oid)
    else:
        if lines and lines[0][1].lower() == "id":
            lines = lines[1:]
        for n, line in lines:
            if "," in line or "\t" in line:
                raise InputError(f"{path}, line {n}: a {'comma' if ',' in line else 'tab'} in a file of one id per "
                                 "line (a table needs a header line with an 'id' column first)")
            ids.append(line)
    if not ids:
        raise InputError(f"{path}: no ids in the file")
    return list(dict.fromkeys(ids))
