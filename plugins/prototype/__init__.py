"""One-shot prototype queries: the ``ulisse query`` verb, the ``mean``/``union`` strategies and the Search page.

The query itself is the core's one query API, :func:`ulisse.prototypes.query` (re-exported
here as :func:`query`): neighbours of one or several prototypes, combined by their mean
vector or as the union of their neighbour lists, with class fractions where labels exist.

Example:
    >>> from ulisse.plugins.prototype import query
    >>> r = query(index, ["1237648720693755918"], k=89, n=[16, 89], label="bpt_class")   # doctest: +SKIP
    >>> r.fractions                                                                      # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import click

import ulisse
from ulisse.labels import fractions_text as _fractions_text
from ulisse.positions import format_separation
# the core's prototype pipeline and query API, public here too (``from ulisse.plugins.prototype import query``)
from ulisse.prototypes import (COMBINE, DEFAULT_RADIUS_ARCSEC, Prototype, PrototypeResult, Resolved,  # noqa: F401
                               query, resolve)
from ulisse.registry import QueryStrategy


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
    """Class fractions as a few readable lines (for the table output), as every verb shows them."""
    return _fractions_text(result.fractions, result.label, result.info.get("n_used"))


def header_lines(result, index) -> str:
    """What was asked and what it matched: the lines above a query's table."""
    lines = [f"# {index.path}: {len(result.table)} nearest neighbour(s) of {result.prototype}"]
    for m in result.info.get("matched", []):
        row = index.row_of(m["id"])
        pos = index.metadata_rows([row]).iloc[0]
        ra, dec = pos["ra"], pos["dec"]
        asked = f" from {m['asked']}" if m.get("asked") else ""  # the position as typed
        lines.append(f"# sky position matched {m['id']} at ra={ra:.6f} dec={dec:.6f}, "
                     f"{format_separation(m['separation_arcsec'])} away{asked}")
    return "\n".join(lines) + "\n"


def sky_prototypes(ras, decs, positions=(), radius: float = DEFAULT_RADIUS_ARCSEC) -> list[Prototype]:
    """The ``--ra``/``--dec`` pairs and ``--position`` texts as sky prototypes, read by the core's one
    position parser (:mod:`ulisse.positions`; a ``--position`` may be an object name, resolved online)."""
    from ulisse.positions import parse_position

    if len(ras) != len(decs):
        raise ulisse.QueryError("--ra and --dec go together (one --dec for each --ra)")
    if not math.isfinite(radius) or radius <= 0:
        raise ulisse.QueryError(f"--radius {radius:g}: must be a positive number of arcsec")
    protos = [Prototype.sky(ra, dec, radius) for ra, dec in zip(ras, decs)]
    for text in positions:
        c = parse_position(text)
        protos.append(Prototype("sky", (float(c.ra.deg), float(c.dec.deg)), radius, text.strip()))
    return protos


def _check_query_args(ids, images, skies, k, ns, combine):
    """Every argument of ``ulisse query`` checked before the index or any model is loaded."""
    from ulisse.registry import query_strategies

    if k < 1:
        raise ulisse.QueryError(f"-k {k}: must be at least 1")
    for im in images:
        if not Path(im).is_file():
            raise ulisse.InputError(f"{im}: no such file")
    if not (ids or images or skies):
        raise ulisse.QueryError("give a prototype: --id, --image, --ra with --dec, or --position")
    n_list = parse_ns(ns)
    if n_list and max(n_list) > k:
        raise ulisse.QueryError(f"--n {ns}: {max(n_list)} is larger than -k {k}; ask for -k {max(n_list)} or more")
    strategies = query_strategies()
    if combine not in strategies:
        raise ulisse.QueryError(f"--combine {combine}: no such query strategy (registered: {', '.join(sorted(strategies))})")
    return n_list, strategies[combine]


@ulisse.hookimpl
def register_commands(cli):
    from ulisse.cli import search_options
    from ulisse.options import device_option, format_option, output_option, where_option

    @cli.command("query")
    @click.argument("index_dir", type=click.Path())
    @click.option("--id", "ids", multiple=True, help="prototype: an object of the index (left out of the results); repeatable")
    @click.option("--image", "images", multiple=True, type=click.Path(), help="prototype: an outside cutout (PNG, JPEG, FITS); repeatable")
    @click.option("--ra", "ras", multiple=True, metavar="RA",
                  help="prototype: the index object nearest to this RA, in degrees (189.2, 189.2deg) or hours "
                       "(12h36m49.4s, 12:36:49.4, '12 36 49.4'); repeatable, paired with --dec")
    @click.option("--dec", "decs", multiple=True, metavar="DEC",
                  help="... and Dec, in degrees (62.216, +62d12m58s, -27:46:13.7)")
    @click.option("--position", "positions", multiple=True, metavar="TEXT",
                  help="prototype: the index object nearest to a position given as one text "
                       "('12h36m49.4s +62d12m58s', '150.1 2.2') or an object name (CDS Sesame, online); repeatable")
    @click.option("--radius", type=float, default=DEFAULT_RADIUS_ARCSEC, show_default=True,
                  help="match radius for --ra/--dec and --position (arcsec)")
    @click.option("--combine", default="mean", show_default=True,
                  help="how several prototypes combine: a registered query strategy (mean, union, or a plugin's)")
    @click.option("-k", "k", type=int, default=16, show_default=True, help="number of neighbours (per prototype with --combine union)")
    @click.option("--n", "ns", default=None, help="list lengths for class fractions, e.g. 16,89 (default: k; none larger than k)")
    @click.option("--label", default=None, help="metadata column with classes: report their fractions beside the base rate")
    @where_option
    @format_option()
    @output_option()
    @click.option("--png", type=click.Path(dir_okay=False), help="write a thumbnail grid of the prototype and its neighbours")
    @click.option("--weights", default=None, help="the weights file the index was built with, if it has moved")
    @device_option
    @search_options
    @click.option("--dask", default=None, metavar="local:N|tcp://HOST:8786",
                  help="search a sharded index (or this index as one shard) on Dask, each shard resident on a worker")
    @click.option("--partial", is_flag=True,
                  help="with --dask: the answer of the shards that answered, naming the others (shards that could "
                       "not be opened, lost workers, no answer in time)")
    def query_command(index_dir, ids, images, ras, decs, positions, radius, combine, k, ns, label, where, fmt, output,
                      png, weights, device, nprobe, ef, rerank, dask, partial):
        """One-shot query: the k nearest neighbours of one prototype (or several)."""
        from ulisse.indexes.shards import is_sharded
        from ulisse.record import query_record
        from ulisse.results import check_output, check_writable, emit

        out_fmt = check_output(output) if output else None
        if png:
            check_writable(png, "--png", (".png",))
        if dask or is_sharded(index_dir):  # shards on Dask workers (ulisse.indexes.dask_search)
            return _sharded_query(index_dir, ids, k, ns, label, where, fmt, output, out_fmt, png, dask, partial,
                                  {"nprobe": nprobe, "ef": ef, "rerank": rerank})
        skies = sky_prototypes(ras, decs, positions, radius)
        n_list, strategy = _check_query_args(ids, images, skies, k, ns, combine)
        if where is not None:
            from ulisse.filters import parse_where

            parse_where(where)
        protos = [Prototype("id", i) for i in ids] + [Prototype("image", Path(p)) for p in images] + skies
        index = ulisse.open_index(index_dir, device=device, weights=weights, nprobe=nprobe, ef=ef, rerank=rerank)
        options = {"n": n_list, "label": label, "where": where} if combine in COMBINE else {}
        result = strategy.run(index, protos, k=k, **options)
        if not isinstance(result, PrototypeResult):  # another plugin's strategy: a Neighbours-like result
            result = PrototypeResult(getattr(result, "prototype", combine), getattr(result, "prototype_id", None),
                                     result.table, getattr(result, "info", {}))
        table = result.table.drop(columns=["row"], errors="ignore")
        meta = {"prototype": result.prototype, "index": str(index.path)}
        extra = {"prototype": result.prototype, "prototypes": result.prototypes, **result.summary(),
                 "matched": result.info.get("matched", [])}
        record = query_record(index, "query", prototype=result.prototype, prototypes=result.prototypes, k=k,
                              combine=combine, where=where, label=label)
        emit(table, fmt, output=output, out_fmt=out_fmt, meta=meta, extra=extra, record=record,
             head=header_lines(result, index), notes=fractions_text(result))
        if "note" in result.info:
            click.echo(f"ulisse: note: {result.info['note']}", err=True)
        if png:
            proto_img = None
            first = protos[0]
            if first.kind == "image":
                proto_img = ulisse.read_cutout(first.value, index.rgb).image
            ulisse.plot.neighbour_grid(index, result, png, prototype_image=proto_img,
                                       title=f"{index.path.name}: {result.prototype}")


# options of `ulisse query` a sharded query does not use: given, they are refused (never silently ignored)
_NOT_SHARDED = {"images": ("--image", "the prototype is one --id of the index"),
                "ras": ("--ra", "the prototype is one --id of the index"),
                "decs": ("--dec", "the prototype is one --id of the index"),
                "positions": ("--position", "the prototype is one --id of the index"),
                "radius": ("--radius", "the prototype is one --id of the index"),
                "combine": ("--combine", "one --id is searched, nothing combined"),
                "weights": ("--weights", "nothing is encoded: the shards hold the vectors"),
                "device": ("--device", "the shards are searched on the Dask workers' CPUs")}


def _sharded_query(index_dir, ids, k, ns, label, where, fmt, output, out_fmt, png, dask, partial, search):
    """``ulisse query --dask``: one --id over the shards (``--where`` filters each shard before its k nearest;
    ``--label``/``--n`` fractions and ``--png`` from the merged answer)."""
    from click.core import ParameterSource

    from ulisse.indexes.dask_search import cli_query
    from ulisse.labels import MISSING
    from ulisse.record import query_record
    from ulisse.results import emit

    ctx = click.get_current_context()
    for param, (option, why) in _NOT_SHARDED.items():
        if ctx.get_parameter_source(param) == ParameterSource.COMMANDLINE:
            raise ulisse.InputError(f"{option}: not with --dask ({why})")
    n_list = parse_ns(ns) or [k]
    if max(n_list) > k:
        raise ulisse.QueryError(f"--n {ns}: {max(n_list)} is larger than -k {k}; ask for -k {max(n_list)} or more")
    if where is not None:
        from ulisse.filters import parse_where

        parse_where(where)  # a bad filter fails before the cluster starts
    answer = cli_query(index_dir, ids, k, dask, partial, where=where, label=label, **search)
    table = answer.table.drop(columns=["row"], errors="ignore")  # rows within a shard: internal
    table["shard"] = [answer.manifest.label(s) for s in table["shard"]]  # relative names, never absolute paths
    result = PrototypeResult(answer.prototype, ids[0], table, {"where": where}, label=label)
    if label:
        counts = {c: n for c, n in sorted(answer.label_counts.items(), key=lambda cn: -cn[1]) if c != MISSING}
        result.fractions, result.info["n_used"] = _fractions(answer.labels, counts, n_list)
    head = (f"# {index_dir}: {len(table)} nearest neighbour(s) of {answer.prototype} over "
            f"{len(answer.manifest.shards) - len(answer.missing)} of {len(answer.manifest.shards)} shard(s)"
            + (f" (where {where})" if where else "") + "\n")
    meta = {"prototype": answer.prototype, "index": str(index_dir), "missing_shards": answer.missing_text()}
    record = query_record(index_dir, "query", prototype=answer.prototype, k=k, where=where, label=label)
    emit(table, fmt, output=output, out_fmt=out_fmt, meta=meta, extra={"prototype": answer.prototype, **result.summary()},
         record=record, head=head, notes=fractions_text(result))
    if answer.missing:
        click.echo(f"ulisse: warning: partial answer: shards missing: {answer.missing_text()}", err=True)
    if png:
        panels = [(answer.cutout(*answer.prototype_cutout), f"prototype\n{ids[0]}", True)]
        panels += [(answer.cutout(s, src), f"#{r} {i}\nd = {d:.3g}", False) for r, i, d, s, src in
                   zip(table["rank"], table["id"], table["distance"], answer.table["shard"],
                       table["source"] if "source" in table else [None] * len(table))]
        ulisse.plot.thumbnail_grid(panels, png, title=f"{Path(index_dir).name}: {answer.prototype}")


def _fractions(found, counts, ns):
    """Class fractions among the first n neighbours beside the base rate from the shards' class counts, as
    :func:`ulisse.labels.class_fractions` gives them for one index (labelled objects only)."""
    import pandas as pd

    from ulisse.labels import MISSING

    total = sum(counts.values())
    found = pd.Series(list(found), dtype=object)
    out, used = {}, {}
    for n in ns:
        labelled = found.iloc[:n][found.iloc[:n] != MISSING]
        used[str(n)] = {"objects": len(found.iloc[:n]), "labelled": len(labelled)}
        vc = labelled.value_counts()
        out[n] = {c: (vc.get(c, 0) / len(labelled) if len(labelled) else float("nan")) for c in counts}
    table = pd.DataFrame(out, index=list(counts))
    table["base_rate"] = [counts[c] / total for c in counts] if total else float("nan")
    table.index.name = "class"
    return table, used


@ulisse.hookimpl
def register_ui_pages(config):
    """The web UI's Search page (``ulisse ui``)."""
    from ulisse.registry import UIPage

    return [UIPage("Search", Path(__file__).with_name("page.py"), order=10, accepts_prototypes=True,
                   url_state={"k": ("search.k", int), "label": "search.label", "combine": "search.combine"},
                   persistent_keys=("search.mode", "search.id", "search.position", "search.radius", "search.k",
                                    "search.label", "search.combine"))]
