"""Click option decorators shared by every verb (core and plugins), declared once.

Example::

    from ulisse.options import device_option, format_option

    @cli.command()
    @device_option
    @format_option()
    def my_verb(device, fmt): ...
"""

from __future__ import annotations

import functools
import logging
import math

import click

from ._spec import DEFAULT_PRESET, PRESETS

DEVICES = ("auto", "cpu", "cuda")

WEIGHTS_HELP = ("encoder weights: a checkpoint FILE (timm or EfficientNet-PyTorch), 'hub', 'lite0' or 'random'; "
                "default: timm's pretrained weights from the hub or its cache, else the offline Lite0 default")


def _run_device() -> str:
    from .registry import current_config

    return current_config().device


def usable_device(device: str) -> str:
    """``device``, except ``cuda`` where torch sees no CUDA GPU: then ``cpu``, with a one-line note.
    The one fallback of every verb's ``--device``; torch is imported only when ``cuda`` is asked for."""
    if not str(device).startswith("cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return device
    logging.getLogger("ulisse.options").warning("--device %s: no CUDA GPU is visible; computing on the CPU", device)
    return "cpu"


def device_option(f):
    """``--device auto|cpu|cuda`` (auto: CUDA when present, else CPU); by default the run's (``ulisse --device``).

    ``cuda`` on a machine without CUDA gives one note and the CPU (:func:`usable_device`)."""
    return click.option("--device", type=click.Choice(DEVICES), default=_run_device, show_default="auto",
                        callback=lambda ctx, param, value: usable_device(value),
                        help="where to compute: auto (CUDA when present, else CPU), cpu or cuda "
                             "(without CUDA: a note, and the CPU)")(f)


class RegisteredChoice(click.Choice):
    """A ``click.Choice`` whose choices are read from a registry when first needed (after the plugins load).

    Example::

        click.option("--method", type=RegisteredChoice(lambda: list(anomaly_methods())))
    """

    def __init__(self, names, case_sensitive: bool = True):
        self._names = names
        super().__init__((), case_sensitive)

    @property
    def choices(self):
        return tuple(self._names())

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ sets it; the registry is read instead
        pass


def printable_formats() -> list[str]:
    """The registered export formats that write text (those a verb may print), in registration order."""
    from .registry import export_formats

    return [name for name, f in export_formats().items() if not f.binary]


def format_option(formats=None, default: str = "table"):
    """``--format`` for result tables (passed as ``fmt``): ``formats``, or every registered text format."""
    kind = click.Choice(list(formats)) if formats is not None else RegisteredChoice(printable_formats)
    return click.option("--format", "fmt", type=kind, default=default, show_default=True, help="output format")


def output_option(what: str = "the results", also: bool = True):
    """``--output FILE``: write ``what`` to a file in the format of its extension (checked before any work:
    :func:`ulisse.results.check_output`)."""
    return click.option("--output", type=click.Path(dir_okay=False),
                        help=f"{'also ' if also else ''}write {what} to a file, its format from the extension "
                             "(.csv, .json, .xml/.vot, .fits, .ecsv, .txt)")


def lupton_option(f):
    """``--lupton Q,STRETCH[,MINIMUM]``: how FITS bands become the RGB the encoder sees, passed as ``rgb`` (an
    :class:`ulisse.cutouts.RGBConfig`; default SDSS's, for nanomaggies)."""
    def convert(ctx, param, value):
        from .cutouts import RGBConfig

        if value is None:
            return RGBConfig()
        try:
            numbers = [float(v) for v in value.split(",")]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or not all(math.isfinite(n) for n in numbers) or numbers[0] <= 0 or numbers[1] <= 0:
            raise click.BadParameter(f"{value!r}: Q,STRETCH or Q,STRETCH,MINIMUM, Q and STRETCH positive (e.g. 8,0.5)")
        return RGBConfig(q=numbers[0], stretch=numbers[1], minimum=numbers[2] if len(numbers) == 3 else 0.0)

    return click.option("--lupton", "rgb", default=None, callback=convert, metavar="Q,STRETCH[,MIN]",
                        help="the Lupton asinh stretch of FITS cutouts, in their flux units [default: 8,0.5, for "
                             "SDSS nanomaggies; about 10 sky sigmas keeps the sky dark: the build warns when it "
                             "does not suit the data]")(f)


def skip_bad_option(f):
    """``--skip-bad``: skip unusable cutouts and report them instead of stopping."""
    return click.option("--skip-bad", is_flag=True, help="skip unusable cutouts and report them instead of stopping")(f)


def where_option(f):
    """``--where "COL OP VALUE [and|or ...]"``: filter objects on metadata and derived columns (parsed, never pasted)."""
    return click.option("--where", default=None, metavar="EXPR",
                        help="keep only objects matching e.g. \"z_pred < 0.1 and type == 'galaxy'\" "
                             "(metadata and derived columns; comparisons joined by and/or)")(f)


PRESET_HELP = ("the vector's settings: discovery (centre pooling, rotations averaged: finds more rare objects) or "
               "ulisse (ULISSE's exact vector: 224 px, spatial mean, one pass, fp32); --input-size, --pool, --tta "
               "and --precision override the preset's values; recorded in the index")
ENCODER_HELP = "a registered encoder (ulisse plugins lists them) in place of --model/--weights"
POOL_HELP = ("how the final feature map becomes a vector: mean (ULISSE's spatial mean) or centre[:N] "
             "(the mean of the central N x N cells, N = 3 by default)")
TTA_HELP = ("test-time symmetry: none, rot4 (vectors averaged over the 4 rotations) or d4 (rotations and flips, "
            "8 forward passes)")
RUNTIME_HELP = ("inference runtime: auto (ONNX Runtime on a CPU when installed, torch on CUDA), torch, onnx or "
                "openvino; the vectors are the same (checked against torch)")


def _parse_preprocess(value: str) -> tuple[str, str]:
    name, sep, arg = str(value).partition("=")
    if not name.strip():
        raise click.BadParameter(f"{value!r}: expected NAME or NAME=ARG", param_hint="--preprocess")
    return name.strip(), arg


def encoder_options(f):
    """The encoder's options, passed to the command as one ``encoder_options`` dict for ``Encoder.load``.

    ``--preset`` (``discovery``, the default, or ``ulisse``: the paper's exact vector; the options below
    override its fields), ``--model``, ``--weights``, ``--input-size``, ``--crop``, ``--encoder``, ``--pool``,
    ``--tta``, ``--runtime``,
    ``--precision``, ``--preprocess NAME=ARG`` (repeatable, applied in order) and ``--denoise MODEL_DIR``
    (short for ``--preprocess denoise=MODEL_DIR``, applied first). ``--device`` is not included
    (use :func:`device_option`).

    Example::

        @cli.command()
        @encoder_options
        @device_option
        def my_verb(encoder_options, device):
            encoder = Encoder.load(device=device, **encoder_options)
    """
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        preprocess = [_parse_preprocess(p) for p in kwargs.pop("preprocess", ())]
        denoise = kwargs.pop("denoise", None)
        if denoise:
            preprocess.insert(0, ("denoise", denoise))
        precision = kwargs.pop("precision", "auto")
        kwargs["encoder_options"] = {
            "preset": kwargs.pop("preset"), "model_name": kwargs.pop("model"), "weights": kwargs.pop("weights"),
            "input_size": kwargs.pop("input_size"), "crop": kwargs.pop("crop"), "encoder": kwargs.pop("encoder"),
            "pool": kwargs.pop("pool"),
            "tta": kwargs.pop("tta"), "runtime": kwargs.pop("runtime"), "preprocess": preprocess,
            "precision": None if precision == "auto" else precision,
        }
        return f(*args, **kwargs)

    options = [
        click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
                     help=PRESET_HELP),
        click.option("--model", default="efficientnet_b0", show_default=True, help="timm model name"),
        click.option("--weights", default=None, help=WEIGHTS_HELP),
        click.option("--input-size", type=click.IntRange(32, 1024), default=None, show_default="the preset's",
                     help="side the cutouts are resized to"),
        click.option("--crop", type=click.IntRange(0, 1024), default=None, show_default="the preset's",
                     help="side of the centre crop of the resized cutout that the network sees (0: none); "
                          "the objects keep the input size's scale"),
        click.option("--encoder", default=None, metavar="NAME", help=ENCODER_HELP),
        click.option("--pool", default=None, show_default="the preset's", metavar="mean|centre[:N]",
                     help=POOL_HELP),
        click.option("--tta", type=click.Choice(["none", "rot4", "d4"]), default=None, show_default="the preset's",
                     help=TTA_HELP),
        click.option("--runtime", type=click.Choice(["auto", "torch", "onnx", "openvino"]), default="auto",
                     show_default=True, help=RUNTIME_HELP),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
                     help="numeric precision, recorded in the index (auto: the preset's; discovery: bf16 on CUDA "
                          "and on a CPU with bf16 arithmetic and OpenVINO, else fp32; ulisse: fp32)"),
        click.option("--preprocess", multiple=True, metavar="NAME=ARG",
                     help="a registered preprocessing step applied to every cutout before embedding (repeatable)"),
        click.option("--denoise", default=None, metavar="MODEL_DIR", help="short for --preprocess denoise=MODEL_DIR"),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
