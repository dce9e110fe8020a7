"""One-shot prototype queries: neighbours of one or several prototypes, with class fractions.

A prototype is an object of the index (its id, or the object nearest to a sky
position) or an outside cutout (an image or FITS file, or an RGB array).
Several prototypes combine by their mean vector (``combine="mean"``) or as the
union of their neighbour lists (``combine="union"``, ranked by the smallest
distance to any prototype).

Where the index has a label column, the result carries ULISSE's *retrieval
efficiency*: the fraction of each class among the first ``n`` neighbours, for
each ``n`` asked for, beside the class's base rate over the whole index.

Example:
    >>> from ulisse.plugins.prototype import query
    >>> r = query(index, ["1237648720693755918"], k=89, n=[16, 89], label="bpt_class")   # doctest: +SKIP
    >>> r.fractions                                                                      # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import click
import numpy as np
import pandas as pd

import ulisse
from ulisse.errors import QueryError
from ulisse.index import DEFAULT_RADIUS_ARCSEC, Index
from ulisse.labels import class_fractions, labels_of
from ulisse.registry import QueryStrategy
from ulisse.results import Neighbours

COMBINE = ("mean", "union")


@dataclass(frozen=True)
class Prototype:
    """One prototype: ``kind`` is ``id``, ``sky``, ``image`` or ``vector``."""

    kind: str
    value: object
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC

    @classmethod
    def of(cls, x) -> "Prototype":
        """Read a prototype from a plain value: an id (str), a path, an (ra, dec) pair, an image or a vector."""
        if isinstance(x, Prototype):
            return x
        if isinstance(x, (str, np.str_)):
            return cls("id", str(x))
        if isinstance(x, os.PathLike):
            return cls("image", Path(x))
        if isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, (int, float)) for v in x):
            return cls("sky", (float(x[0]), float(x[1])))
        a = np.asarray(x)
        if a.ndim == 1:
            return cls("vector", a.astype(np.float32))
        if a.ndim in (2, 3):
            return cls("image", a)
        raise QueryError(f"cannot use {type(x).__name__} as a prototype")

    def describe(self) -> str:
        if self.kind == "image":
            return f"image={self.value}" if isinstance(self.value, Path) else "image"
        if self.kind == "sky":
            return f"ra={self.value[0]} dec={self.value[1]}"
        return f"{self.kind}={self.value}" if self.kind == "id" else "vector"


@dataclass
class Resolved:
    prototype: Prototype
    vector: np.ndarray
    row: int | None  # the index object it is, if any
    id: str | None


def resolve(index: Index, prototype) -> Resolved:
    """A prototype's vector, and the index object it is (for ids and sky positions)."""
    p = Prototype.of(prototype)
    if p.kind == "id":
        row = index.row_of(p.value)
    elif p.kind == "sky":
        row = index.nearest_object(p.value[0], p.value[1], p.radius_arcsec)
    elif p.kind == "image":
        return Resolved(p, index.embed_image(p.value), None, None)
    else:
        if p.value.shape != (index.encoder_spec.dim,):
            raise QueryError(f"prototype vector has shape {p.value.shape}, the index dimension {index.encoder_spec.dim}")
        return Resolved(p, p.value, None, None)
    return Resolved(p, index.vectors_of_rows([row])[0], row, index.metadata["id"].iloc[row])


@dataclass
class PrototypeResult(Neighbours):
    """Neighbours of one or more prototypes, with class fractions where labels exist.

    Attributes:
        prototypes: the resolved prototypes' descriptions.
        label: the label column used for fractions, or None.
        fractions: rows = classes, columns = ``n`` values and ``base_rate``.
    """

    prototypes: list[str] = field(default_factory=list)
    label: str | None = None
    fractions: pd.DataFrame | None = None

    def summary(self) -> dict:
        """Fractions and base rates as JSON-ready dicts: ``{"fractions": {n: {class: f}}, "base_rate": {...}}``."""
        if self.fractions is None:
            return {}
        f = self.fractions
        return {
            "label": self.label,
            "fractions": {str(n): {str(c): float(f.loc[c, n]) for c in f.index} for n in f.columns if n != "base_rate"},
            "base_rate": {str(c): float(f.loc[c, "base_rate"]) for c in f.index},
            "n_used": self.info.get("n_used", {}),
        }


def query(index: Index, prototypes, k: int = 16, *, combine: str = "mean", n: Sequence[int] | None = None,
          label: str | None = None) -> PrototypeResult:
    """The neighbours of one or several prototypes.

    Args:
        index: an open index.
        prototypes: one prototype or a list (ids, paths, (ra, dec) pairs, images, vectors, or :class:`Prototype`).
        k: neighbours per query (for ``union``, per prototype).
        combine: ``mean`` (query once with the mean vector) or ``union`` (merge each prototype's list).
        n: the list lengths at which to report class fractions (default: k).
        label: a metadata column holding classes; fractions are computed when given.

    Index objects used as prototypes are left out of the results.

    Raises:
        QueryError: no prototype, k < 1, bad ``combine``, unknown id or label column.
    """
    if isinstance(prototypes, (str, os.PathLike, tuple, Prototype)) or (isinstance(prototypes, np.ndarray) and prototypes.ndim == 1):
        prototypes = [prototypes]
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise QueryError(f"k={k}: must be at least 1")
    if combine not in COMBINE:
        raise QueryError(f"combine={combine!r}: expected one of {', '.join(COMBINE)}")
    resolved = [resolve(index, p) for p in prototypes]
    if not resolved:
        raise QueryError("give at least one prototype")
    all_labels = labels_of(index, label) if label else None
    own_rows = [r.row for r in resolved if r.row is not None]
    if combine == "mean" or len(resolved) == 1:
        q = np.mean([r.vector for r in resolved], axis=0, dtype=np.float64).astype(np.float32)
        D, I = index.search(q[None], int(k), exclude=[own_rows])
        table = index.neighbour_table(I[0], D[0])
    else:
        vectors = np.stack([r.vector for r in resolved])
        D, I = index.search(vectors, int(k), exclude=[own_rows] * len(resolved))
        best: dict[int, tuple[float, int]] = {}
        for p, (drow, irow) in enumerate(zip(D, I)):
            for d, i in zip(drow, irow):
                if i >= 0 and (i not in best or d < best[i][0]):
                    best[int(i)] = (float(d), p)
        order = sorted(best, key=lambda i: best[i][0])
        table = index.neighbour_table(np.array(order, dtype=np.int64), np.array([best[i][0] for i in order]))
        table.insert(3, "found_by", [resolved[best[i][1]].id or resolved[best[i][1]].prototype.describe() for i in order])
    descs = [r.id or r.prototype.describe() for r in resolved]
    result = PrototypeResult(prototype=", ".join(descs) if len(descs) < 6 else f"{len(descs)} prototypes ({combine})",
                             prototype_id=resolved[0].id if len(resolved) == 1 else None, table=table,
                             prototypes=descs, label=label)
    if label:
        ns = sorted(set(int(x) for x in (n or [k])))
        if ns[0] < 1:
            raise QueryError(f"n={ns[0]}: must be at least 1")
        result.fractions, used = class_fractions(labels_of(index, label).iloc[table["row"]].tolist(), all_labels, ns)
        result.info.update(n_used=used)
    return result


def _strategy(combine):
    return lambda index, prototypes, k=16, **kw: query(index, prototypes, k, combine=combine, **kw)


@ulisse.hookimpl
def register_query_strategies():
    return [QueryStrategy("mean", "nearest neighbours of the prototypes' mean vector", _strategy("mean")),
            QueryStrategy("union", "union of each prototype's nearest neighbours, by smallest distance", _strategy("union"))]


def parse_ns(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        ns = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ulisse.InputError(f"--n {text}: expected integers separated by commas, like 16,89") from None
    if not ns or min(ns) < 1:
        raise ulisse.InputError(f"--n {text}: every n must be at least 1")
    return ns


def fractions_text(result) -> str:
    """Class fractions as a few readable lines (for the table output)."""
    if result.fractions is None:
        return ""
    f = result.fractions
    ns = [c for c in f.columns if c != "base_rate"]
    head = f"{result.label:<16}" + "".join(f"{'first ' + str(n):>12}" for n in ns) + f"{'base rate':>12}"
    lines = ["", f"class fractions ({result.label}):", head]
    for c in f.index:
        lines.append(f"{str(c):<16}" + "".join(f"{f.loc[c, n]:>12.1%}" for n in ns) + f"{f.loc[c, 'base_rate']:>12.1%}")
    return "\n".join(lines) + "\n"


@ulisse.hookimpl
def register_commands(cli):
    @cli.command("query")
    @click.argument("index_dir", type=click.Path())
    @click.option("--id", "ids", multiple=True, help="prototype: an object of the index (left out of the results); repeatable")
    @click.option("--image", "images", multiple=True, type=click.Path(), help="prototype: an outside cutout (PNG, JPEG, FITS); repeatable")
    @click.option("--ra", "ras", multiple=True, type=float, help="prototype: the index object nearest to this RA (deg); repeatable, paired with --dec")
    @click.option("--dec", "decs", multiple=True, type=float, help="... and Dec (deg)")
    @click.option("--radius", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_RADIUS_ARCSEC, show_default=True, help="match radius for --ra/--dec (arcsec)")
    @click.option("--combine", type=click.Choice(COMBINE), default="mean", show_default=True, help="how several prototypes combine")
    @click.option("-k", "k", type=int, default=16, show_default=True, help="number of neighbours (per prototype with --combine union)")
    @click.option("--n", "ns", default=None, help="list lengths for class fractions, e.g. 16,89 (default: k)")
    @click.option("--label", default=None, help="metadata column with classes: report their fractions beside the base rate")
    @click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "votable"]), default="table", show_default=True)
    @click.option("--output", type=click.Path(dir_okay=False), help="also write the results to a file (.csv, .json, .xml/.vot, .fits, .txt)")
    @click.option("--png", type=click.Path(dir_okay=False), help="write a thumbnail grid of the prototype and its neighbours")
    @click.option("--weights", default=None, help="the weights file the index was built with, if it has moved")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
    def query_command(index_dir, ids, images, ras, decs, radius, combine, k, ns, label, fmt, output, png, weights, device):
        """One-shot query: the k nearest neighbours of one prototype (or several)."""
        from ulisse.results import format_for_path, render, write_atomic

        if k < 1:
            raise ulisse.QueryError(f"-k {k}: must be at least 1")
        if len(ras) != len(decs):
            raise ulisse.QueryError("--ra and --dec go together (one --dec for each --ra)")
        for im in images:
            if not Path(im).is_file():
                raise ulisse.InputError(f"{im}: no such file")
        protos = [Prototype("id", i) for i in ids] + [Prototype("image", Path(p)) for p in images]
        protos += [Prototype("sky", (ra, dec), radius) for ra, dec in zip(ras, decs)]
        if not protos:
            raise ulisse.QueryError("give a prototype: --id, --image, or --ra with --dec")
        n_list = parse_ns(ns)
        out_fmt = format_for_path(output) if output else None
        index = ulisse.open_index(index_dir, device=device, weights=weights)
        result = query(index, protos, k, combine=combine, n=n_list, label=label)
        table = result.table.drop(columns=["row"])
        meta = {"prototype": result.prototype, "index": str(index.path)}
        extra = {"prototype": result.prototype, "prototypes": result.prototypes, **result.summary()}
        text = render(table, fmt, meta, extra=extra)
        click.echo(text + (fractions_text(result) if fmt == "table" else ""), nl=False)
        if fmt in ("csv", "votable") and result.fractions is not None:
            click.echo(fractions_text(result), err=True, nl=False)
        if output:
            data = render(table, out_fmt, meta, extra=extra)
            write_atomic(output, data + fractions_text(result) if out_fmt == "table" else data)
        if png:
            proto_img = None
            first = protos[0]
            if first.kind == "image":
                proto_img = ulisse.read_cutout(first.value, index.rgb).image
            ulisse.plot.neighbour_grid(index, result, png, prototype_image=proto_img,
                                       title=f"{index.path.name}: {result.prototype}")


@ulisse.hookimpl
def register_ui_pages(config):
    """The web UI's Search page (``ulisse ui``), named by path: the plugin does not import the UI."""
    from ulisse.registry import UIPage

    return [UIPage("Search", Path(__file__).resolve().parents[1] / "ui" / "views" / "search.py", order=10)]
