"""The ``ulisse`` command line.

Core verbs live here (embed, index build/add/info, plugins); every other verb
(query, expand, anomalies, demo...) comes from a plugin through the
``register_commands`` hook. The global options (``--device``, ``--plugins-dir``,
``-q``, ``-v``) are read once into the run's :class:`~ulisse.registry.Config`,
which every hook call receives. A user's mistake ends with one line
``ulisse: error: ...`` and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .errors import UlisseError
from .options import DEVICES, device_option, encoder_options, lupton_option

LOG = logging.getLogger("ulisse")


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger("ulisse")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ulisse: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ulisse")
@click.option("-q", "--quiet", is_flag=True, help="No progress, notes or summaries: warnings and errors only.")
@click.option("-v", "--verbose", is_flag=True, help="More detail in the log.")
@click.option("--plugins-dir", type=click.Path(file_okay=False), multiple=True,
              help="load every *.py file of this folder as a plugin (also ULISSE_PLUGINS_DIR)")
@click.option("--device", "run_device", type=click.Choice(DEVICES), default="auto", show_default=True,
              envvar="ULISSE_DEVICE", help="the device of every verb that does not name its own (--device after the verb)")
@click.pass_context
def cli(ctx, quiet, verbose, plugins_dir, run_device):
    """ulisse: one-shot similarity search in astronomical surveys (ULISSE, Doorenbos et al. 2022)."""
    ctx.ensure_object(dict)
    ctx.obj["progress"] = not quiet
    _setup_logging(quiet, verbose)


def progress_enabled() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("progress", True))


def _report(report, what: str) -> None:
    for note in report.notes:
        LOG.info("%s", note)
    for path, reason in report.skipped:
        LOG.warning("skipped %s: %s", path, reason)
    LOG.info("%s %d object(s) in %.1f s; the index holds %d; %d skipped",
             what, report.added, report.seconds, report.total, len(report.skipped))


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="output .npz with arrays ids and vectors")
@click.option("--catalog", type=click.Path(), help="catalogue (CSV, FITS, VOTable) naming or filtering the cutouts")
@encoder_options
@device_option
@click.option("--batch-size", type=click.IntRange(1, 65536), default=None,
              help="cutouts per forward pass [default: measured per runtime: 8 for ONNX Runtime and OpenVINO, 4 for torch on a CPU, 256 on CUDA]")
@click.option("--skip-bad", is_flag=True, help="skip unusable cutouts and report them instead of stopping")
def embed(inputs, out, catalog, encoder_options, device, batch_size, skip_bad):
    """Embed cutouts (files or folders) into feature vectors (.npz: ids, vectors, encoder spec)."""
    check_paths(inputs, catalog)
    from .results import check_writable

    check_writable(out, "--out", (".npz",))  # before the work: a bad path fails at once
    import io

    import numpy as np

    from .embedding import embed_files
    from .encoder import Encoder
    from .inputs import gather
    from ._io import atomic_write

    gathered = gather(inputs, catalog, skip_bad=skip_bad)
    for note in gathered.notes:
        LOG.info("%s", note)
    encoder = Encoder.load(device=device, **encoder_options)
    emb = embed_files(encoder, gathered.paths, skip_bad=skip_bad, progress=progress_enabled(), batch_size=batch_size)
    for path, reason in gathered.skipped + emb.skipped:
        LOG.warning("skipped %s: %s", path, reason)
    buf = io.BytesIO()
    np.savez(buf, ids=np.array(emb.ids, dtype=str), vectors=emb.vectors,
             encoder=np.array(json.dumps(encoder.spec.to_dict())))
    atomic_write(out, buf.getvalue())
    LOG.info("wrote %d vectors of dimension %d to %s", len(emb.ids), emb.vectors.shape[1], out)


@cli.group("index")
def index_group():
    """Build, extend, describe, check and maintain index directories."""


def search_options(f):
    """``--nprobe``, ``--ef`` and ``--rerank``: search settings overriding those in the index's manifest."""
    f = click.option("--rerank", type=click.IntRange(0), default=None,
                     help="re-rank the best N approximate candidates exactly from the stored raw vectors "
                          "(default: the manifest's; 0: none)")(f)
    f = click.option("--ef", type=click.IntRange(1), default=None, help="HNSW efSearch (default: the manifest's)")(f)
    f = click.option("--nprobe", type=click.IntRange(1), default=None,
                     help="IVF lists probed (default: the manifest's; 'ulisse index info' shows it)")(f)
    return f


WAIT_HELP = "seconds to wait for another writer of the index (default: stop at once with a message)"
METRICS = click.Choice(["L2", "IP", "cosine"])


@index_group.command("build")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="index directory to write")
@click.option("--catalog", type=click.Path(), help="catalogue (CSV, FITS, VOTable): id, ra, dec and extra columns")
@click.option("--factory", default="auto", show_default=True,
              help="FAISS index factory string (Flat, IVF256,Flat, HNSW32, IVF1024,PQ64...) or 'auto' "
                   "(chosen from the count, the dimension and --memory; 'ulisse index info' says why)")
@click.option("--memory", default="8GB", show_default=True, help="memory budget of the index for --factory auto")
@click.option("--metric", type=METRICS, default="L2", show_default=True,
              help="distances: L2 (Euclidean), IP (negative inner product), cosine (1 - cosine similarity)")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="how the raw vectors are stored")
@click.option("--nprobe", type=click.IntRange(1), default=None, help="IVF lists probed by default (kept in the manifest)")
@click.option("--ef", type=click.IntRange(1), default=None, help="HNSW efSearch by default (kept in the manifest)")
@click.option("--whiten", default="auto", show_default=True,
              help="search space: auto (the preset's: discovery PCA-whitens to 64 dimensions fitted on the index, "
                   "ulisse searches the raw vectors), none, or a number of dimensions")
@device_option
@encoder_options
@lupton_option
@click.option("--skip-bad", is_flag=True, help="skip unusable cutouts and report them instead of stopping")
@click.option("--overwrite", is_flag=True, help="replace an existing index at --index (atomically)")
@click.option("--wait", type=click.FloatRange(0), default=0.0, help=WAIT_HELP)
def index_build(inputs, index_dir, catalog, factory, memory, metric, dtype, nprobe, ef, whiten, encoder_options,
                rgb, device, skip_bad, overwrite, wait):
    """Embed cutouts and write a new index directory."""
    check_paths(inputs, catalog)  # before the heavy imports: a missing folder fails as fast as --help
    from .encoder import Encoder
    from .index import build_index, check_new_index_path
    from .indexes import auto, space

    check_new_index_path(index_dir, overwrite)
    auto.parse_memory(memory)
    gathered = _check_before_embedding(inputs, catalog, skip_bad, factory)
    space.resolve_whiten(whiten, None, len(gathered), 10**6)  # a bad --whiten fails before the model loads
    encoder = Encoder.load(device=device, **encoder_options)
    space.resolve_whiten(whiten, encoder.spec.preset, len(gathered), encoder.spec.dim)
    idx, report = build_index(inputs, index_dir, catalog, factory=factory, metric=metric, encoder=encoder, rgb=rgb,
                              gathered=gathered, skip_bad=skip_bad, overwrite=overwrite, progress=progress_enabled(), device=device,
                              memory=memory, dtype=dtype, nprobe=nprobe, ef=ef, whiten=whiten, wait=wait)
    _report(report, f"built {index_dir} ({idx.manifest['factory']}):")


def check_paths(inputs, catalog=None) -> None:
    """Inputs and catalogue exist: checked first, with nothing heavy imported (torch, faiss, pandas...).

    Raises:
        InputError: ``PATH: no such file or folder`` (the message :func:`ulisse.inputs.gather` gives).
    """
    from .errors import InputError

    for item in inputs:
        if not Path(item).exists():
            raise InputError(f"{item}: no such file or folder")
    if catalog is not None and not Path(catalog).is_file():
        raise InputError(f"{catalog}: catalogue not found")


def _check_before_embedding(inputs, catalog, skip_bad: bool, factory: str, dim: int = 1280):
    """Inputs, catalogue and the factory's training needs, checked before any model loads or cutout is embedded.

    Returns the gathered inputs, which the build then uses (the folders are read once).
    """
    from .indexes import faiss_backend
    from .inputs import gather

    gathered = gather(inputs, catalog, skip_bad=skip_bad)
    if factory == "auto":
        return gathered
    index = faiss_backend.new_faiss_index(factory, dim)  # a bad factory string fails here
    need = faiss_backend._min_training(index) if not index.is_trained else 0
    if need > len(gathered):
        raise UlisseError(f"--factory {factory}: needs at least {need} vectors to train, and there are "
                          f"{len(gathered)} cutouts; use a smaller index (e.g. Flat) or --factory auto")
    return gathered


@index_group.command("add")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="index directory to extend")
@click.option("--catalog", type=click.Path(), help="catalogue for the new cutouts")
@click.option("--weights", default=None, help="the weights file the index was built with, if it has moved")
@device_option
@click.option("--skip-bad", is_flag=True, help="skip unusable cutouts and report them instead of stopping")
@click.option("--wait", type=click.FloatRange(0), default=0.0,
              help="seconds to wait for another writer of the index before embedding (default: 30 s, then stop "
                   "with a message); once the cutouts are embedded the add waits up to 10 minutes rather than "
                   "lose them")
def index_add(inputs, index_dir, catalog, weights, device, skip_bad, wait):
    """Embed more cutouts with the index's own encoder and add them as a new segment."""
    check_paths(inputs, catalog)
    from .index import open_index

    idx = open_index(index_dir, device=device, weights=weights)
    report = idx.add(inputs, catalog, skip_bad=skip_bad, progress=progress_enabled(), wait=wait)
    _report(report, f"added to {index_dir}:")


def _described(idx) -> dict:
    """The plugins' lines about an index (the ``describe_index`` hook), label -> text; a broken one is skipped."""
    from .plugin_manager import call_hook, get_plugin_manager

    out: dict = {}
    for lines in call_hook(get_plugin_manager(), "describe_index", index=idx):
        if isinstance(lines, dict):
            out.update({str(k): str(v) for k, v in lines.items()})
    return out


@index_group.command("info")
@click.argument("index_dir", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--verify", is_flag=True, help="also re-hash every file (as 'ulisse index verify')")
def index_info(index_dir, fmt, verify):
    """Describe an index: size, factory (and why), search parameters, segments, encoder, derived columns, history."""
    from .index import open_index
    from .indexes import space

    idx = open_index(index_dir, device="cpu", verify=verify)
    m = idx.manifest
    described = _described(idx)
    if fmt == "json":
        click.echo(json.dumps({**m, "columns": idx.metadata_columns, "described": described}, indent=2, default=str))
        return
    enc = idx.encoder_spec
    segs = m.get("segments", [])
    disk = sum(e["bytes"] for s in segs for e in (s["vectors"], s["metadata"], s.get("faiss")) if e)
    lines = [
        f"index      {idx.path}",
        f"format     {m.get('format_version', 1)}" + ("  (read-only: 'ulisse index upgrade' rewrites it)" if idx.read_only else ""),
        f"objects    {len(idx)}",
        f"factory    {m['factory']} (metric {m['metric']}, dim {m['dim']}, vectors {m.get('dtype', 'float32')})",
    ]
    if m.get("auto"):
        lines.append(f"auto       {m['auto']['reason']}")
    search = idx.search_parameters()
    lines += [
        f"search     {', '.join(f'{k} {v}' for k, v in search.items()) or 'exact (no parameters)'}",
        f"segments   {len(segs)}" + (f", {disk / 1e6:.1f} MB" if segs else "") + (
            "  ('ulisse index compact' merges them)" if len(segs) > 8 else ""),
        f"encoder    {enc.model_name}, {enc.input_size}px{f' (centre {enc.crop}px)' if enc.crop else ''}, mean {list(enc.mean)}, std {list(enc.std)}",
        f"preset     {enc.preset_text().removeprefix('preset ')}",
        f"space      {space.space_text(m.get('space'))}",
        f"vectors    pool {enc.pool}, tta {enc.tta}, precision {enc.precision}"
        + (f", preprocessors {', '.join(p['name'] + (':' + str(p['arg']) if p.get('arg') else '') for p in enc.preprocessors)}"
           if enc.preprocessors else ", no preprocessors"),
        f"weights    {enc.weights_source} (sha256 {enc.weights_sha256})",
        f"FITS       Lupton RGB q {idx.rgb.q:g}, stretch {idx.rgb.stretch:g}, minimum {idx.rgb.minimum:g}, "
        f"i,r,g scales {','.join(f'{v:g}' for v in idx.rgb.scales)}; first row "
        + ("at the bottom (a north-up WCS shows north up)" if idx.rgb.fits_rows == "bottom-up" else
           "on top (as the index was built: FITS shown as stored)"),
        f"columns    {', '.join(idx.metadata_columns)}",
        f"created    {m.get('created')}  updated {m.get('updated', '-')}  generation {m['generation']}",
        f"versions   {', '.join(f'{k} {v}' for k, v in m.get('versions', {}).items())}",
        f"checksums  {'verified (every file re-hashed)' if verify else 'sizes checked (--verify re-hashes)'}",
    ]
    if m.get("positions"):
        lines.append(f"positions  {m['positions']}")
    lines += [f"derived    {idx.derived_status(name)}" for name in idx.derived_names()]
    lines += [f"{label[:10]:<10} {text}" for label, text in described.items()]
    history = m.get("history", [])
    for h in history[-10:]:
        what = ", ".join(f"{k} {v}" for k, v in h.items() if k not in ("action", "time", "count") and v is not None)
        count = f": {h['count']} objects" if h.get("count") is not None else ""
        lines.append(f"history    {h.get('time', '?')}  {h.get('action', '?')}{count}" + (f" ({what[:150]})" if what else ""))
    if len(history) > 10:
        lines.append(f"history    ... {len(history) - 10} earlier entries ('--format json' lists them all)")
    click.echo("\n".join(lines))


@index_group.command("verify")
@click.argument("index_dir", type=click.Path())
def index_verify(index_dir):
    """Re-hash every file of an index against the sha256 sums recorded when it was written."""
    from .index import verify_index

    problems = verify_index(index_dir)
    if problems:
        for p in problems:
            click.echo(f"ulisse: {index_dir}: {p}", err=True)
        raise UlisseError(f"{index_dir}: {len(problems)} damaged file(s)")
    click.echo(f"{index_dir}: every file matches its sha256")


@index_group.command("shards")
@click.argument("sharded_dir", type=click.Path(file_okay=False))
@click.argument("shards", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="replace the shard list of an existing sharded index")
def index_shards(sharded_dir, shards, overwrite):
    """Make SHARDED_DIR a sharded index of existing indexes (same encoder, metric and search space), searched
    on Dask with `ulisse query SHARDED_DIR --id X --dask SCHEDULER` and `ulisse ui --index SHARDED_DIR --dask ...`."""
    from .indexes.shards import create_sharded

    m = create_sharded(sharded_dir, list(shards), overwrite=overwrite)
    click.echo(f"{sharded_dir}: {len(m.shards)} shards ({', '.join(m.shards)})")


@index_group.command("compact")
@click.argument("index_dir", type=click.Path())
@click.option("--wait", type=click.FloatRange(0), default=0.0, help=WAIT_HELP)
def index_compact(index_dir, wait):
    """Merge an index's segments into one (the vectors, metadata and FAISS parts)."""
    from .index import compact_index
    from .indexes import store

    before = len(store.read_manifest(index_dir).get("segments", []))
    m = compact_index(index_dir, wait=wait)
    LOG.info("%s: %d segment(s) -> %d, generation %d", index_dir, before, len(m.get("segments", [])), m["generation"])


@index_group.command("upgrade")
@click.argument("index_dir", type=click.Path())
@click.option("--wait", type=click.FloatRange(0), default=0.0, help=WAIT_HELP)
def index_upgrade(index_dir, wait):
    """Rewrite a format 1 index in format 2 (append-only segments); give segments written before
    id-hash tables existed their table (fast lookups by id)."""
    from .index import upgrade_index

    m = upgrade_index(index_dir, wait=wait)
    LOG.info("%s: format %d, generation %d", index_dir, m.get("format_version"), m["generation"])


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="short for --format json")
def plugins(fmt, as_json):
    """List the plugins and what each provides (encoders, formats, verbs...); failed ones with their errors."""
    from .plugin_manager import get_plugin_manager

    info = plugins_report(get_plugin_manager())
    if fmt == "json" or as_json:
        click.echo(json.dumps(info, indent=2))
        return
    rows = []
    for p in info:
        if p["status"] == "failed":
            rows.append((p["name"], "FAILED", p["error"]))
            continue
        ver = f"{p['distribution']} {p['version']}" if p["distribution"] else "(registered directly)"
        provides = "; ".join(f"{what} {', '.join(names)}" for what, names in p["provides"].items() if names)
        rows.append((p["name"], ver, provides or "hooks " + ", ".join(p["hooks"])))
    widths = [max((len(r[i]) for r in rows), default=0) for i in (0, 1)]
    for name, ver, what in rows:
        click.echo(f"{name:<{widths[0]}}  {ver:<{widths[1]}}  {what}")


def plugins_report(pm) -> list[dict]:
    """:func:`~ulisse.plugin_manager.plugin_info` of every plugin, with what it provides (``provides``).

    ``provides`` maps a kind (``encoders``, ``export formats``, ``pages``, ``commands``...) to names.
    """
    from .plugin_manager import plugin_info
    from .registry import provided_by

    provided = provided_by(pm)
    commands = getattr(pm, "ulisse_commands", {})
    info = plugin_info(pm)
    for p in info:
        p["provides"] = {**provided.get(p["name"], {}), "commands": commands.get(p["name"], [])}
    return info


def _register_plugin_commands(config) -> None:
    """Every plugin's verbs, added once per process; ``pm.ulisse_commands`` says which plugin added which."""
    global _commands_registered
    if _commands_registered:
        return
    from .plugin_manager import get_plugin_manager, iter_hook

    pm = get_plugin_manager()
    known = set(cli.commands)
    pm.ulisse_commands = {}
    for plugin, _ in iter_hook(pm, "register_commands", cli=cli, config=config):
        pm.ulisse_commands[plugin] = sorted(set(cli.commands) - known)
        known = set(cli.commands)
    _commands_registered = True


_commands_registered = False


# core verbs that need no plugin's verb: plugins' modules load when their hooks are first called, after
# these verbs have checked their inputs (a missing folder fails as fast as --help, without pandas or torch)
CORE_ONLY_VERBS = ("embed", "index")


def _run_config(argv: list[str]):
    """``(config, plugin folders, verb)``: the run's :class:`~ulisse.registry.Config` from the global options
    of a command line and the environment, the folders ``--plugins-dir`` names, and the verb (or None).

    Read before click runs the verb (the plugin folders add verbs); a command line click
    would refuse gives the defaults here, and click's own message later.
    """
    from .registry import Config

    try:
        with cli.make_context("ulisse", list(argv), resilient_parsing=True) as ctx:
            params = dict(ctx.params)
            rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    except click.exceptions.ClickException:
        params, rest = {}, []
    dirs = [str(d) for d in params.get("plugins_dir") or ()]
    for d in dirs:
        if not Path(d).is_dir():
            raise UlisseError(f"--plugins-dir {d}: not a directory")
    env = Config.from_env()
    options = {"quiet": bool(params.get("quiet")), "verbose": bool(params.get("verbose"))}
    config = Config.from_env(device=params.get("run_device") or env.device, options=options,
                             plugins_dirs=tuple(dirs) + env.plugins_dirs)
    return config, dirs, (rest[0] if rest else None)


def _busy() -> bool:
    """Whether other work keeps at least half of this machine's cores busy (1-minute load average)."""
    import os

    try:
        return os.getloadavg()[0] >= 0.5 * (os.cpu_count() or 1)
    except OSError:  # no load average on this system: sleeping threads are the safe choice
        return True


def main(argv=None) -> None:
    """Entry point of the ``ulisse`` command."""
    import os

    # On a busy machine torch's OpenMP threads sleep instead of spinning when they wait: with 2 cores shared with
    # other jobs, spinning threads made a default denoiser train take ~34 min instead of ~4 (benchmarks/denoise.md).
    # On an idle one they keep libgomp's short spin: sleeping made a fine-tuning step 36 % slower (231 -> 315 ms,
    # benchmarks/heads.md). Set OMP_WAIT_POLICY yourself to choose. Only for the command, before torch loads.
    if "OMP_WAIT_POLICY" not in os.environ and _busy():
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    from .registry import use_config

    try:
        args = list(sys.argv[1:] if argv is None else argv)
        config, dirs, verb = _run_config(args)
        if dirs:
            from .plugin_manager import set_plugins_dirs

            set_plugins_dirs(dirs)
        use_config(config)
        if verb not in CORE_ONLY_VERBS:
            _register_plugin_commands(config)
        cli.main(args=args, prog_name="ulisse", standalone_mode=False)
    except UlisseError as exc:
        click.echo(f"ulisse: error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # the machine's answer (a folder that cannot be made, a full disk): one line, with the path
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"ulisse: error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("ulisse: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("ulisse: interrupted", err=True)
        sys.exit(130)
    except click.BadParameter as exc:
        if isinstance(exc, click.MissingParameter):  # a usage mistake: click's usage block says what is needed
            exc.show()
        else:  # a bad value: one line, as every other error
            click.echo(f"ulisse: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    finally:
        use_config(None)  # in-process runs (tests) leave no config behind
    sys.exit(0)
