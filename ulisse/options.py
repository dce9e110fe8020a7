"""Click option decorators shared by every verb (core and plugins), declared once.

Example::

    from ulisse.options import device_option, format_option

    @cli.command()
    @device_option
    @format_option()
    def my_verb(device, fmt): ...
"""

from __future__ import annotations

import click

DEVICES = ("auto", "cpu", "cuda")
RESULT_FORMATS = ("table", "csv", "json", "votable", "fits")

WEIGHTS_HELP = ("encoder weights: a checkpoint FILE (timm or EfficientNet-PyTorch), 'hub', 'lite0' or 'random'; "
                "default: timm's pretrained weights from the hub or its cache, else the offline Lite0 default")


def device_option(f):
    """``--device auto|cpu|cuda`` (auto: CUDA when present, else CPU)."""
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                        help="where to compute: auto (CUDA when present, else CPU), cpu or cuda")(f)


def format_option(formats=RESULT_FORMATS, default: str = "table"):
    """``--format`` for result tables (passed as ``fmt``)."""
    return click.option("--format", "fmt", type=click.Choice(list(formats)), default=default, show_default=True,
                        help="output format")


def skip_bad_option(f):
    """``--skip-bad``: skip unusable cutouts and report them instead of stopping."""
    return click.option("--skip-bad", is_flag=True, help="skip unusable cutouts and report them instead of stopping")(f)


def where_option(f):
    """``--where "COL OP VALUE [and|or ...]"``: filter objects on metadata and derived columns (parsed, never pasted)."""
    return click.option("--where", default=None, metavar="EXPR",
                        help="keep only objects matching e.g. \"z_pred < 0.1 and type == 'galaxy'\" "
                             "(metadata and derived columns; comparisons joined by and/or)")(f)
