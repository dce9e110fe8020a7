"""The ``ulisse benchmark`` command group and every benchmark verb (this package's one plugin module).

Registered through the ``ulisse`` entry-point group by ``ulisse-bench`` (benchmarks/pyproject.toml),
as a third party would register it: the product knows nothing of it. Imports nothing heavy: each
verb loads its module when it runs.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

import ulisse
from ulisse.options import WEIGHTS_HELP, device_option

RUNTIME_CHOICES = "auto|torch|onnx|openvino"


def _command() -> str | None:
    """The command line as typed (for the reports)."""
    return "ulisse " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None


CACHE_HELP = ("<cache> is $ULISSE_CACHE_DIR, else the user cache folder ($XDG_CACHE_HOME/ulisse, by default "
              "~/.cache/ulisse, on Linux)")


def _in_cache(*parts: str):
    """A click default: a folder under the run's cache folder (:attr:`ulisse.registry.Config.cache_dir`, the one
    rule: ``$ULISSE_CACHE_DIR``, else the platform's user cache folder, honouring ``$XDG_CACHE_HOME``)."""
    def default() -> str:
        from ulisse.registry import current_config

        return str(Path(current_config().cache_dir).joinpath(*parts))

    return default


def _progress() -> bool:
    from ulisse.cli import progress_enabled

    return progress_enabled()


def _write(report: str | None, title: str, text: str) -> None:
    """Echo the report; with ``--report FILE`` also write it there under ``# title``."""
    from ulisse._io import atomic_write

    click.echo(text, nl=False)
    if report:
        atomic_write(report, f"# {title}\n\n" + text)


def _report_option(f):
    return click.option("--report", type=click.Path(dir_okay=False), help="write the Markdown report to this file")(f)


def _model_options(f):
    f = click.option("--weights", default=None, help=WEIGHTS_HELP)(f)
    return click.option("--model", default="efficientnet_b0", show_default=True, help="timm model name")(f)


@ulisse.hookimpl
def register_commands(cli):
    """``ulisse benchmark agn|discovery|morphology|speed|store|lenses|denoise|features|anomalies``."""

    @cli.group("benchmark")
    def benchmark():
        """Labelled benchmarks of the method on simulated data, and speed benchmarks (ulisse-bench)."""

    # ------------------------------------------------------------------ retrieval on simulated sets

    @benchmark.command("agn")
    @click.option("--out", type=click.Path(file_okay=False), default=_in_cache("benchmarks", "agn-retrieval"),
                  show_default="<cache>/benchmarks/agn-retrieval",
                  help=f"working folder: the simulated set and its index (reused when present); {CACHE_HELP}")
    @click.option("--n", "n", type=click.IntRange(50, 1_000_000), default=2000, show_default=True,
                  help="objects to simulate")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--prototypes", type=click.IntRange(1, 1000), default=20, show_default=True)
    @_model_options
    @device_option
    @_report_option
    def agn(out, n, seed, prototypes, model, weights, device, report):
        """AGN retrieval from one prototype on a simulated SDSS-like set (the ULISSE table)."""
        from .agn import run_agn_benchmark

        result = run_agn_benchmark(Path(out).expanduser(), n=n, seed=seed, prototypes=prototypes, model=model,
                                   weights=weights, device=device, progress=_progress(), command=_command())
        _write(report, "AGN retrieval benchmark", result.report)

    def discovery_options(f):
        f = _model_options(device_option(_report_option(f)))
        for option in reversed([
            click.option("--cache", type=click.Path(file_okay=False), default=_in_cache("benchmarks"),
                         show_default="<cache>/benchmarks",
                         help="simulated sets, each setting's vectors and per-setting indexes (reused when present); "
                              + CACHE_HELP),
            click.option("--n", "n", type=click.IntRange(20, 1_000_000), default=2000, show_default=True,
                         help="objects to simulate per task"),
            click.option("--limit", type=click.IntRange(20, 1_000_000), default=None,
                         help="evaluate on the first LIMIT cutouts only (the same set as --n LIMIT)"),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option("--prototypes", type=click.IntRange(1, 1000), default=20, show_default=True,
                         help="random prototypes per class"),
            click.option("--pool", "pools", multiple=True, default=("mean", "centre:3"), show_default=True,
                         help="poolings to compare (mean, centre:N), the encoder's --pool; repeat the option"),
            click.option("--tta", "ttas", multiple=True, default=("none", "rot4", "d4"), show_default=True,
                         help="test-time symmetries to compare, the encoder's --tta; repeat the option"),
            click.option("--runtime", default="auto", show_default=True, metavar=RUNTIME_CHOICES,
                         help="the encoder's inference runtime (as 'ulisse index build --runtime')"),
            click.option("--no-expansion", is_flag=True, help="skip recursive and confirmed expansion"),
        ]):
            f = option(f)
        return f

    def run_discovery(tasks, report, no_expansion, **kw):
        from .discovery import run_discovery as run

        text = run(tasks, expansion=not no_expansion, progress=_progress(), command=_command(), **kw)
        _write(report, "Discovery quality: pooling, symmetry and confirmed expansion", text)

    @benchmark.command("discovery")
    @click.option("--task", "tasks", type=click.Choice(("agn", "morphology")), multiple=True,
                  default=("agn", "morphology"), show_default=True)
    @discovery_options
    def discovery(tasks, **kw):
        """Every pooling x symmetry setting of the encoder against ULISSE's, and confirmed expansion, on labelled
        simulated tasks."""
        run_discovery(tasks, **kw)

    @benchmark.command("morphology")
    @discovery_options
    def morphology(**kw):
        """The extended-morphology task alone (spiral arms and tidal streams against smooth discs)."""
        run_discovery(("morphology",), **kw)

    @benchmark.command("feedback")
    @click.option("--cache", type=click.Path(file_okay=False), default=_in_cache("benchmarks"),
                  show_default="<cache>/benchmarks",
                  help="the simulated AGN set and its default index <set>/indexes/default (reused); " + CACHE_HELP)
    @click.option("--n", "n", type=click.IntRange(50, 1_000_000), default=2000, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True, help="the set's and the prototypes' seed")
    @click.option("--prototypes", type=click.IntRange(1, 1000), default=20, show_default=True)
    @click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True)
    @click.option("--per-round", type=click.IntRange(1, 1000), default=16, show_default=True)
    @click.option("--no-expansion", is_flag=True, help="skip the expansions")
    @click.option("--rebuild", is_flag=True, help="build the index again (after the product's defaults changed)")
    @_report_option
    def feedback(cache, n, seed, prototypes, rounds, per_round, no_expansion, rebuild, report):
        """The labelling loop and confirmed expansion with oracle marks on the simulated AGN set (feedback.md)."""
        from .feedback import run_feedback

        text = run_feedback(Path(cache).expanduser(), n=n, seed=seed, prototypes=prototypes, rounds=rounds,
                            per_round=per_round, expansion=not no_expansion, rebuild=rebuild, progress=_progress(),
                            command=_command())
        _write(report, "The labelling loop and confirmed expansion (oracle marks)", text)

    # ------------------------------------------------------------------ speed and scale

    @benchmark.command("speed")
    @click.option("--images", "n_images", type=click.IntRange(8, 100_000), default=128, show_default=True,
                  help="PNG cutouts embedded")
    @click.option("--vectors", "n_vectors", type=click.IntRange(100, 10_000_000), default=20000, show_default=True,
                  help="vectors in the index searched")
    @click.option("--queries", "n_queries", type=click.IntRange(1, 1_000_000), default=256, show_default=True,
                  help="queries searched")
    @_model_options
    @device_option
    @_report_option
    def speed(n_images, n_vectors, n_queries, model, weights, device, report):
        """Embedding (every runtime against a ULISSE-style reference on a CPU; the CUDA path on a GPU) and the
        index's search against exact kNN in NumPy."""
        from ulisse.encoder import resolve_device

        from .speed import run_gpu_benchmark, run_speed_benchmark, search_benchmark

        dev = resolve_device(device).type
        weights = weights or "lite0"
        if dev == "cuda":
            text, title = run_gpu_benchmark(n_images, weights=weights, model_name=model), "Speed on a GPU"
        else:
            text, title = run_speed_benchmark(n_images, weights=weights, model_name=model), "Speed on CPU"
        spec = ulisse.Encoder.load(model, weights=weights, device="cpu", runtime="torch").spec
        text += "\n" + search_benchmark(spec, n_vectors, n_queries, device=dev)
        command = _command()
        _write(report, title, text + (f"\nCommand: `{command}`\n" if command else ""))

    @benchmark.command("store")
    @click.option("--out", type=click.Path(file_okay=False), default="/tmp/ulisse-store-bench", show_default=True,
                  help="where the indexes are built (needs ~16 GB free at 10^6; deleted afterwards unless --keep)")
    @click.option("--sizes", default="10000,100000,1000000", show_default=True, help="index sizes, comma-separated")
    @click.option("--dim", type=click.IntRange(8, 4096), default=1280, show_default=True)
    @click.option("--keep", is_flag=True, help="keep the indexes")
    @_report_option
    def store(out, sizes, dim, keep, report):
        """The index store at survey scale: adds, cold queries, recall of auto, concurrent writers."""
        import time

        from .store import BLOCK, report as store_report, run_store_benchmark

        try:
            size_list = sorted({int(s) for s in sizes.split(",") if s.strip()})
        except ValueError:
            raise ulisse.InputError(f"--sizes {sizes}: expected integers separated by commas") from None
        if not size_list or any(s % BLOCK for s in size_list):
            raise ulisse.InputError(f"--sizes {sizes}: every size must be a multiple of {BLOCK}")
        t = time.perf_counter()
        results = run_store_benchmark(Path(out), size_list, dim, keep, log=lambda s: click.echo(s, err=True))
        _write(report, "Index store benchmark", store_report(results, _command(), time.perf_counter() - t) + "\n")

    # ------------------------------------------------------------------ the plugins' benchmarks

    @benchmark.command("lenses")
    @click.option("--out", type=click.Path(file_okay=False), default=_in_cache("lens-benchmark"),
                  show_default="<cache>/lens-benchmark",
                  help=f"work folder: the simulated set and its index are kept here and reused; {CACHE_HELP}")
    @click.option("--n", "n", type=click.IntRange(100, 1_000_000), default=8000, show_default=True,
                  help="lenses to simulate")
    @click.option("--test", "n_test", type=click.IntRange(20, 1_000_000), default=2000, show_default=True,
                  help="lenses held out of training (the numbers are measured on them)")
    @click.option("--members", type=int, default=5, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--features", type=click.Choice(["raw", "sqrt"]), default="raw", show_default=True,
                  help="the vectors as they are, or their signed square roots (every method alike)")
    @click.option("--finetune", type=click.Choice(["all", "last", "none"]), default="all", show_default=True,
                  help="also a deep ensemble fine-tuning the encoder (its default settings); none: frozen heads only")
    @_report_option
    @device_option
    def lenses(out, n, n_test, members, seed, features, finetune, report, device):
        """Einstein radii of simulated strong lenses: ensemble, MC dropout and ridge heads on unseen lenses."""
        from ulisse._io import atomic_write

        from .lenses import run_lens_benchmark

        result = run_lens_benchmark(Path(out).expanduser(), n=n, n_test=n_test, members=members, seed=seed,
                                    device=device, features=features, progress=_progress(), command=_command(),
                                    finetune=finetune)
        click.echo(result.report)
        if report:
            atomic_write(report, result.report)

    @benchmark.command("denoise")
    @click.option("--out", type=click.Path(file_okay=False), default=_in_cache("benchmarks", "denoise"),
                  show_default="<cache>/benchmarks/denoise",
                  help=f"working folder: simulated sets, models and indexes (reused when present); {CACHE_HELP}")
    @click.option("--train-n", type=click.IntRange(20, 1_000_000), default=1000, show_default=True)
    @click.option("--test-n", type=click.IntRange(20, 1_000_000), default=200, show_default=True,
                  help="low-S/N AGN benchmark objects (the first --metric-n are the held-out PSNR/SSIM set)")
    @click.option("--metric-n", type=click.IntRange(10, 1_000_000), default=200, show_default=True)
    @click.option("--retrieval-n", type=click.IntRange(0, 1_000_000), default=0, show_default=True,
                  help="objects of the held-out set indexed for AGN retrieval with PNG models (0: FITS models only)")
    @click.option("--dimmer", type=click.FloatRange(0, 10), default=3.0, show_default=True,
                  help="magnitudes fainter than the AGN benchmark's objects")
    @click.option("--steps", type=click.IntRange(1, 10_000_000), default=None, help="[default: the train default]")
    @click.option("--batch-size", type=click.IntRange(1, 4096), default=None)
    @click.option("--crop", type=click.IntRange(16, 4096), default=None)
    @click.option("--width", type=click.IntRange(4, 256), default=None)
    @click.option("--prototypes", type=click.IntRange(1, 1000), default=20, show_default=True)
    @_report_option
    @device_option
    def denoise(out, train_n, test_n, metric_n, retrieval_n, dimmer, steps, batch_size, crop, width, prototypes,
                report, device):
        """Denoisers on held-out faint simulated galaxies: supervised, self-supervised, classical filters."""
        from ulisse.plugins.denoise import TrainOptions

        from .denoise import run_benchmark

        given = {"steps": steps, "batch_size": batch_size, "crop": crop, "width": width}
        options = TrainOptions(**{k: v for k, v in given.items() if v is not None})
        text = run_benchmark(Path(out).expanduser(), train_n=train_n, test_n=test_n, metric_n=metric_n,
                             retrieval_n=retrieval_n, dimmer=dimmer, options=options, prototypes=prototypes,
                             device=device, progress=_progress(), command=_command())
        _write(report, "Denoisers on low-S/N simulated cutouts", text)

    @benchmark.command("features")
    @click.option("--objects", type=click.IntRange(10, 10_000_000), default=10_000, show_default=True)
    @click.option("--folder", type=click.Path(file_okay=False), default="/tmp/features-bench", show_default=True,
                  help="the cutouts and the index (built once, reused)")
    @click.option("--repeats", type=click.IntRange(1, 10_000), default=20, show_default=True)
    @click.option("--embed", type=click.IntRange(0, 10_000_000), default=0, show_default=True,
                  help="also time embedding this many cutouts with and without the features observer")
    @_report_option
    def features(objects, folder, repeats, embed, report):
        """The feature browser's display path on a large index (stored and recomputed maps, one object)."""
        from .features import run

        text = run(Path(folder), objects, repeats, embed)
        command = _command()
        _write(report, "Feature browser on a large index", text + (f"Command: `{command}`\n" if command else ""))

    @benchmark.command("anomalies")
    @click.option("--cache", type=click.Path(file_okay=False), default=_in_cache("benchmarks"),
                  show_default="<cache>/benchmarks", help=f"the simulated set and its index (reused); {CACHE_HELP}")
    @click.option("--n", "n", type=click.IntRange(200, 1_000_000), default=3000, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--population", type=click.Choice(["structured", "smooth"]), default="structured",
                  show_default=True, help="ordinary galaxies with spiral arms and field stars, or all smooth "
                  "(the benchmark's first set; benchmarks/anomalies.md has both)")
    @device_option
    @_report_option
    def anomalies(cache, n, seed, population, device, report):
        """Anomalies with the astronomer's marks and the artefact filter on a simulated rare-object set.

        The report also says what marks teach each interesting kind (5 marked, the kind among the next 20).
        """
        from .anomalies import run_anomaly_benchmark

        text = run_anomaly_benchmark(Path(cache).expanduser(), n=n, seed=seed, device=device, progress=_progress(),
                                     command=_command(), population=population)
        _write(report, "Anomalies with marks and artefact flags on a rare-object set", text)

    from .gpu import gpu_command  # embedding and FAISS search on a GPU (benchmarks/gpu.md)

    benchmark.add_command(gpu_command)
