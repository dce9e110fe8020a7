"""``ulisse features``: top objects of a feature, an object's strongest features, labelled rankings, rebuild."""

from __future__ import annotations

import logging
from pathlib import Path

import click

import ulisse
from ulisse.options import device_option, format_option, output_option

from ._display import BY, feature_view, object_features, rank_features
from ._observer import rebuild_lists
from ._store import DEFAULT_TOP

LOG = logging.getLogger(__name__)

FORMATS = ("table", "csv", "json")


def _count(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ulisse.QueryError(f"{option} {value}: not a whole number") from None
    if n < 1:
        raise ulisse.QueryError(f"{option} {n}: must be at least 1")
    return n


def _png_path(out: str | None) -> Path | None:
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise ulisse.InputError(f"--out {out}: the picture is a PNG (name it *.png)")
    if not path.parent.is_dir():
        raise ulisse.InputError(f"--out {out}: no such folder {path.parent}")
    return path


def _echo(table, fmt: str, extra: dict, output: str | None = None, verb: str = "features") -> None:
    """The table on standard output and, with ``output``, in that file (any export format, with the record)."""
    from ulisse.record import query_record
    from ulisse.results import check_output, emit

    out_fmt = check_output(output) if output else None
    record = query_record(extra.get("index"), verb, **{k: v for k, v in extra.items() if k != "index"})
    emit(table, fmt, output=output, out_fmt=out_fmt, meta=extra, extra=extra, record=record)


def _write_grid(png: Path | None, panels: list, columns: int, title: str) -> None:
    from ulisse.plot import thumbnail_grid

    if png is not None:
        thumbnail_grid(panels, png, columns=max(1, min(columns, len(panels))), title=title)


def _picture_options(what: str):
    """``--out PNG``, ``--output FILE``, ``--format`` and ``--device``, shared by the verbs that draw maps."""
    def decorate(f):
        f = device_option(format_option(FORMATS)(output_option()(f)))
        return click.option("--out", default=None, help=f"write a PNG: {what}")(f)
    return decorate


@click.group("features")
def features_group():
    """Feature-activation browsing: the objects that light up each feature, and where (ULISSE Fig. 1)."""


@features_group.command("top")
@click.argument("index_dir", type=click.Path())
@click.option("--feature", required=True, metavar="N", help="feature number (0 to 1279 for EfficientNet-B0)")
@click.option("--n", "n", default=None, metavar="N",
              help=f"how many of its most active objects (default: all stored, {DEFAULT_TOP})")
@click.option("--recompute", is_flag=True, help="recompute the maps from the cutouts instead of the stored ones")
@_picture_options("a grid of the objects with the feature's map overlaid")
def top_command(index_dir, feature, n, recompute, out, output, fmt, device):
    """The objects of an index that activate one feature most (rows: rank, id, activation, z_score)."""
    png = _png_path(out)
    if output:
        from ulisse.results import check_output

        check_output(output)  # before any work
    index = ulisse.open_index(index_dir, device=device)
    view = feature_view(index, feature, _count(n, "--n"), recompute=recompute)
    for note in view.notes:
        LOG.warning("%s", note)
    _echo(view.table, fmt, {"feature": view.feature, "mean": view.mean, "std": view.std, "index": str(index.path)},
          output, "features top")
    panels = [(im, f"#{row.rank} {row.id}\na = {row.activation:.3g}", False)
              for im, row in zip(view.overlays, view.table.itertuples(index=False))]
    _write_grid(png, panels, 5, f"{index.path.name}: feature {view.feature}, top {len(panels)} objects")


@features_group.command("object")
@click.argument("index_dir", type=click.Path())
@click.option("--id", "object_id", required=True, help="an object of the index")
@click.option("--n", "n", default="10", show_default=True, metavar="N", help="how many features")
@click.option("--by", type=click.Choice(BY), default="activation", show_default=True,
              help="rank by activation, or by z-score against the whole index (moderated: a feature active on "
                   "a few objects only does not rank first for a faint activation)")
@_picture_options("the cutout, then its maps of these features overlaid")
def object_command(index_dir, object_id, n, by, out, output, fmt, device):
    """The features most active on one object (rows: rank, feature, activation, z_score)."""
    png = _png_path(out)
    if output:
        from ulisse.results import check_output

        check_output(output)  # before any work
    index = ulisse.open_index(index_dir, device=device)
    found = object_features(index, object_id, _count(n, "--n"), by=by)
    _echo(found.table, fmt, {"id": found.object_id, "by": by, "index": str(index.path)}, output, "features object")
    panels = [(found.image, found.object_id, True)]
    panels += [(im, f"feature {row.feature}\na = {row.activation:.3g}, z = {row.z_score:.2f}", False)
               for im, row in zip(found.overlays, found.table.itertuples(index=False))]
    _write_grid(png, panels, 6, f"{index.path.name}: {found.object_id}, strongest features by {by}")


@features_group.command("rank")
@click.argument("index_dir", type=click.Path())
@click.option("--label", required=True, help="metadata column of classes")
@click.option("--value", required=True, help="the class to look for (e.g. agn)")
@click.option("--n", "n", default=None, metavar="N", help="top objects per feature considered (default: all stored)")
@click.option("--limit", default="20", show_default=True, metavar="N", help="how many features to list")
@format_option(FORMATS)
@output_option()
def rank_command(index_dir, label, value, n, limit, fmt, output):
    """Features ranked by the fraction of one class among their most active objects."""
    if output:
        from ulisse.results import check_output

        check_output(output)  # before any work
    index = ulisse.open_index(index_dir, device="cpu")
    table = rank_features(index, label, value, _count(n, "--n"))
    _echo(table.head(_count(limit, "--limit")), fmt, {"label": label, "value": value, "index": str(index.path)},
          output, "features rank")


@features_group.command("rebuild")
@click.argument("index_dir", type=click.Path())
@click.option("--top-n", default=str(DEFAULT_TOP), show_default=True, metavar="N", help="objects kept per feature")
@click.option("--batch-size", default=None, metavar="N", help="cutouts per forward pass (default: the encoder's)")
@device_option
def rebuild_command(index_dir, top_n, batch_size, device):
    """Compute the feature lists of an index in one pass over its cutouts (indexes built without them)."""
    from ulisse.cli import progress_enabled

    index = ulisse.open_index(index_dir, device=device)
    lists = rebuild_lists(index, _count(top_n, "--top-n"), _count(batch_size, "--batch-size"),
                          progress=progress_enabled())
    LOG.info("stored the top %d objects of %d features (%d objects) in %s", lists.top_n, lists.channels,
             lists.count, Path(index.path) / "derived" / "features")
