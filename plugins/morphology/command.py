"""``ulisse morphology DIR``: measure statmorph's statistics of every object once, and summarise them.

Example::

    ulisse morphology indexes/hdf-demo
    ulisse morphology indexes/hdf-demo --sort shape_asymmetry --top 10 --output disturbed.csv
"""

from __future__ import annotations

import logging
import time

import click

import ulisse

LOG = logging.getLogger(__name__)


def add_morphology_command(cli) -> None:
    """Add ``ulisse morphology`` to the ``cli`` group."""
    from ulisse.options import output_option

    from .stats import STATISTICS

    @cli.command()
    @click.argument("index_dir", type=click.Path())
    @click.option("--sort", type=click.Choice(STATISTICS), default=None,
                  help="list the objects with the highest values of this statistic")
    @click.option("--top", type=int, default=10, show_default=True, help="how many objects --sort lists")
    @output_option("the listed objects (every object without --sort)", also=False)
    @click.option("--recompute", is_flag=True, help="measure again even if fresh statistics are stored")
    def morphology(index_dir, sort, top, output, recompute):
        """Measure statmorph's morphology of every cutout (Gini, M20, asymmetry, deviation...), stored with the index."""
        from ulisse._io import atomic_write
        from ulisse.record import query_record
        from ulisse.results import check_output, render

        from . import SET, has_cutouts, morphology_table

        if top < 1:
            raise ulisse.QueryError(f"--top {top}: must be at least 1")
        out_fmt = check_output(output) if output else None
        index = ulisse.open_index(index_dir)
        if not has_cutouts(index):
            raise ulisse.InputError(f"{index.path}: the index keeps no cutouts (no source column) to measure")
        start = time.perf_counter()
        pending = len(index) if recompute else len(index.derived_pending(SET))  # objects (those without a cutout too)
        table = morphology_table(index, recompute=recompute)
        LOG.info("morphology of %d objects%s: %.1f s (stored in %s)", len(table),
                 f" ({pending} measured now, the others were stored)" if pending < len(table) else "",
                 time.perf_counter() - start, index.derived_dir)
        measured = int((table["morph_flag"] >= 0).sum())
        good = int((table["morph_flag"] == 0).sum())
        click.echo(f"{index.path}: {len(table)} objects, {measured} measured ({good} with statmorph flag 0, "
                   f"{len(table) - measured} without a source)")
        listed = index.metadata[["id"]].reset_index(drop=True).join(table)
        if sort is not None:
            listed = listed.dropna(subset=[sort]).nlargest(top, sort).reset_index(drop=True)
            click.echo(f"highest {sort}:")
            click.echo(listed[["id", sort, "morph_flag"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if output:
            record = query_record(index, "morphology", sort=sort, top=top if sort else None)
            atomic_write(output, render(listed, out_fmt, {"index": str(index.path)}, record=record))
            LOG.info("wrote %s", output)
