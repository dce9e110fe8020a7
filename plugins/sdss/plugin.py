"""The SDSS plugin's verbs: ``ulisse sdss index`` and ``ulisse fetch cutouts``.

``ulisse sdss index DIR`` indexes the primary photometric objects of SDSS
imaging fields, chosen by ``--field RUN CAMCOL FIELD`` (repeatable),
``--fields FILE``, ``--region RA DEC RADIUS_DEG`` or ``--catalog FILE``. A
field's objects come from its photoObj catalogue on the Science Archive Server
(SURVEY_PRIMARY detections), a region's from SkyServer's SqlSearch
(``fGetNearbyObjEq`` joined to ``PhotoPrimary``), or either from a TAP service
(``--tap-url``); ``--type``, ``--mag-r-max`` and ``--clean`` filter them. Each
object's g, r, i frames (SAS, cached) are resampled onto one north-up,
east-left TAN grid (``--size`` px at ``--scale`` arcsec/px, ImgCutout's by
default), made RGB as in SDSS's JPEGs, embedded and added to the index with its
catalogue columns; the grid is recorded in the manifest (``cutout_geometry``).
Fields run in this process or on Dask (``--dask local:N`` or ``--dask
tcp://HOST:8786``); a stopped run, run again, goes on where it stopped. See
:mod:`ulisse.plugins.sdss.batch`. The encoder options are those of ``ulisse index
build`` (the shared ``encoder_options``: ``--preset``, ``--pool``, ``--tta``,
``--runtime``, ``--precision``, ``--preprocess``, ``--denoise``...) and the cutouts go
through the same embedding pipeline (:mod:`ulisse.embedding`), on Dask workers too:
the manifest records the spec a folder build with the same options records, and the
embedding observers keep their results (``ulisse features`` answers on the index).

``ulisse fetch cutouts CATALOG --out DIR`` downloads SkyServer ImgCutout JPEGs
(ULISSE's 64 x 64 px at 0.4 arcsec/px) for a coordinate list, rate-limited,
retried and resumable. See :mod:`ulisse.plugins.sdss.imgcutout`.

Examples::

    ulisse sdss index sdss-index --field 756 1 206 --field 756 1 207
    ulisse sdss index sdss-index --field 756 1 206 --pool centre:3 --tta rot4 --metric cosine --device cuda
    ulisse sdss index sdss-index --region 185.0 15.8 0.2 --type galaxy --mag-r-max 19 --dask local:8
    ulisse fetch cutouts targets.csv --out cutouts/ --rate 5

Service URLs come from ``--sas-url``, ``--skyserver-url``, ``--tap-url``, else
from ``ULISSE_SDSS_SAS_URL``, ``ULISSE_SDSS_SKYSERVER_URL``, ``ULISSE_SDSS_TAP_URL``,
else SDSS's own (:class:`~ulisse.plugins.sdss.config.SDSSConfig`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import click

import ulisse
from ulisse.options import device_option, encoder_options

from .config import CUTOUT_SCALE, CUTOUT_SIZE, OBJECT_TYPES
from .errors import BatchIncomplete, EmptyFieldError, SDSSError

LOG = logging.getLogger(__name__)

MAX_IDS_SHOWN = 10


def _service_options(f):
    f = click.option("--skyserver-url", default=None, help="SkyServer base URL (SqlSearch, ImgCutout) "
                     "[env ULISSE_SDSS_SKYSERVER_URL; default https://skyserver.sdss.org/{release}]")(f)
    f = click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="seconds to wait for a service [env ULISSE_SDSS_TIMEOUT; default 60]")(f)
    f = click.option("--backoff", type=click.FloatRange(min=0), default=None,
                     help="seconds before the first retry, doubled for each next one [default 2]")(f)
    f = click.option("--retries", type=click.IntRange(min=0), default=None,
                     help="retries of a failed request or field [env ULISSE_SDSS_RETRIES; default 3]")(f)
    f = click.option("--release", default=None, help="SDSS data release [env ULISSE_SDSS_RELEASE; default dr17]")(f)
    return f


def _check_fields(ctx, param, values):
    """Each ``--field`` is three whole numbers: with two, click takes the next option as the third
    (``--field 756 1 --sas-url URL`` would end in "unexpected extra argument URL")."""
    from .config import Field

    for value in values:
        taken = next((v for v in value if v.startswith("--")), None)
        if taken is not None:
            given = " ".join(value[:value.index(taken)])
            raise ulisse.InputError(f"--field takes RUN CAMCOL FIELD (three whole numbers), got {given!r} then {taken}")
        Field.parse(" ".join(value), "--field")
    return values


def _config(release, **overrides):
    from .config import SDSSConfig

    return SDSSConfig.from_env(release=release, **overrides)


def _tasks(fields, fields_file, region, catalog, object_filter, config):
    """The work units asked for on the command line."""
    from .batch import FieldTask, read_object_catalog, tasks_from_objects
    from .catalog import SqlSearchCatalog, TapCatalog
    from .config import Field, check_region, read_field_list
    from .services import with_retries

    chosen = [Field.parse(" ".join(f), "--field") for f in fields]
    if fields_file:
        chosen += read_field_list(fields_file)
    if region is not None:
        check_region(*region)
    modes = sum([bool(chosen), region is not None])
    if modes > 1:
        raise ulisse.InputError("choose the fields with --field/--fields or with --region, not both")
    if modes == 0 and not catalog:
        raise ulisse.InputError("choose the fields: --field RUN CAMCOL FIELD, --fields FILE, --region RA DEC RADIUS_DEG "
                                "or --catalog FILE")
    if catalog:
        objects = read_object_catalog(catalog)
        if object_filter.sql():
            used = {"type": object_filter.kind is not None, "modelMag_r": object_filter.mag_r_max is not None,
                    "clean": object_filter.clean}
            missing = [c for c, u in used.items() if u and c not in objects]
            if missing:
                raise ulisse.InputError(f"{catalog}: no {', '.join(missing)} column to filter on")
            objects = objects[object_filter.mask(objects)].reset_index(drop=True)
        if region is not None:
            objects = objects[_in_cone(objects, *region)]
            if len(objects) == 0:
                raise EmptyFieldError(f"no object of {catalog} within {region[2]:g} deg of ra={region[0]:g} dec={region[1]:g}")
        return tasks_from_objects(objects, chosen or None)
    if region is not None:
        ra, dec, radius = region
        service = TapCatalog(config) if config.tap else SqlSearchCatalog(config)
        LOG.info("asking %s for the objects within %g deg of ra=%g dec=%g", config.tap or config.sql_search,
                 radius, ra, dec)
        objects = with_retries(lambda: service.objects_in_region(ra, dec, radius, object_filter), config,
                               "region query")
        tasks = tasks_from_objects(objects)
        LOG.info("%d object(s) in %d field(s)", len(objects), len(tasks))
        return tasks
    return [FieldTask(f) for f in sorted(set(chosen))]


def _in_cone(objects, ra, dec, radius):
    """Which objects lie within ``radius`` degrees of (ra, dec)."""
    from ulisse.catalog import separation_arcsec

    return separation_arcsec(ra, dec, objects["ra"], objects["dec"]) <= radius * 3600.0


def _ids(ids) -> str:
    ids = list(ids)
    more = f" ... ({len(ids) - MAX_IDS_SHOWN} more)" if len(ids) > MAX_IDS_SHOWN else ""
    return ", ".join(ids[:MAX_IDS_SHOWN]) + more


def summary_lines(report) -> list[str]:
    """The end-of-run summary of ``ulisse sdss index``."""
    done = report.done
    reused = sum(o.reused for o in done)
    notes = [f"{reused} by an earlier run"] if reused else []
    if report.empty:
        notes.append(f"{len(report.empty)} empty")
    held = f"the index holds {report.total}" if report.written else "no index was written"
    lines = [f"sdss index {report.index_path}: {len(done)} of {len(report.outcomes)} field(s) done"
             + (f" ({', '.join(notes)})" if notes else "") + f", {len(report.failed)} failed "
             f"in {report.seconds:.1f} s",
             f"objects: {report.added} indexed, {report.already} already in the index, "
             f"{len(report.skipped)} skipped; {held}"]
    by_reason = defaultdict(list)
    for oid, reason in report.skipped:
        by_reason[reason].append(oid)
    for reason, ids in sorted(by_reason.items()):
        lines.append(f"skipped {len(ids)} object(s), {reason}: {_ids(ids)}")
    for o in report.empty:
        lines.append(f"empty field {o.field}: {o.empty}")
    for o in report.outcomes:
        if not o.ok:
            lines.append(f"failed field {o.field} ({o.error_type}, {o.attempts} attempt(s)): {o.error}")
    return lines


def check_written(report) -> None:
    """A run without failures that wrote no index ends with one error line saying why.

    Exit status 1 rather than 0: the command's product, the index, does not exist, and a script that
    goes on (``ulisse query DIR``...) would fail later with a less clear message. The fields are
    nonetheless recorded as done, so running the command again is immediate and changes nothing
    unless the fields, the filter or the --edge policy change.

    Raises:
        EmptyFieldError: no index in the folder after the run.
    """
    if report.written or report.failed:
        return
    n = len(report.outcomes)
    if len(report.empty) == n:
        why = (f"the field has no object to index ({report.empty[0].empty})" if n == 1 else
               f"none of the {n} fields has an object to index (first {report.empty[0].field}: {report.empty[0].empty})")
    else:
        why = f"no object to index ({len(report.empty)} empty field(s), {len(report.skipped)} object(s) skipped)"
    raise EmptyFieldError(f"{report.index_path}: no index was written: {why}")


KEPT_FOR_AN_INDEX = {"weights", "runtime"}  # encoder options that still apply to an existing index


def _note_ignored_options(index_dir) -> None:
    """One line for each encoder option given on the command line that an existing index ignores."""
    from click.core import ParameterSource

    from ulisse.indexes import store

    manifest = Path(index_dir) / store.MANIFEST
    if not manifest.is_file():
        return
    ctx = click.get_current_context()
    names = [p.name for p in getattr(encoder_options(lambda **kw: None), "__click_params__", [])]
    given = [n for n in names if n not in KEPT_FOR_AN_INDEX
             and ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)]
    model = ulisse.open_index(index_dir, device="cpu").encoder_spec.model_name if given else None
    for name in given:
        value = ctx.params.get(name)
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        LOG.warning("--%s %s ignored: %s holds an index; its own encoder (%s) is used", name.replace("_", "-"),
                    shown, index_dir, model)


@ulisse.hookimpl
def register_commands(cli):
    @cli.group("sdss")
    def sdss_group():
        """SDSS: index imaging fields from the SAS frames and catalogues."""

    @sdss_group.command("index")
    @click.argument("index_dir", type=click.Path(file_okay=False))
    @click.option("--field", "fields", nargs=3, multiple=True, metavar="RUN CAMCOL FIELD", callback=_check_fields,
                  help="a field to index (its primary objects, from its SAS photoObj file); repeatable")
    @click.option("--fields", "fields_file", type=click.Path(dir_okay=False),
                  help="a text file of fields, one 'RUN CAMCOL FIELD' a line ('#' comments)")
    @click.option("--region", nargs=3, type=float, default=None, metavar="RA DEC RADIUS_DEG",
                  help="the primary objects within RADIUS_DEG degrees of RA, DEC (SkyServer SqlSearch, or --tap-url)")
    @click.option("--catalog", type=click.Path(dir_okay=False),
                  help="take the objects from this catalogue (objid, ra, dec, run, camcol, field, any columns); "
                       "with --field/--fields/--region, only those")
    @click.option("--type", "kind", type=click.Choice(sorted(OBJECT_TYPES)), default=None,
                  help="only galaxies (PhotoType 3) or stars (6)")
    @click.option("--mag-r-max", type=float, default=None, metavar="MAG", help="only objects with modelMag_r <= MAG")
    @click.option("--clean", is_flag=True, help="only objects with clean photometry (clean = 1)")
    @click.option("--edge", type=click.Choice(["skip", "pad"]), default="skip", show_default=True,
                  help="objects whose cutout runs off a frame: skip them, or pad with zeros (fraction in 'padded')")
    @click.option("--size", type=click.IntRange(8, 1024), default=CUTOUT_SIZE, show_default=True,
                  help="cutout side (px)")
    @click.option("--scale", type=click.FloatRange(0.01, 60), default=CUTOUT_SCALE, show_default=True,
                  help="arcsec per pixel of the north-up cutouts (that of 'ulisse fetch cutouts' by default)")
    @click.option("--dask", default=None, metavar="local:N|tcp://HOST:8786",
                  help="run the fields on Dask: a local cluster of N worker processes, or a scheduler "
                       "(whose workers see DIR)")
    @click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
                  help="frame and catalogue cache folder [default DIR/.sdss-cache]")
    @click.option("--prune-cache", is_flag=True, help="delete a field's files from the cache once it is done")
    @click.option("--clean-work", is_flag=True,
                  help="delete the work folder (DIR/.sdss-work) after a run without failures")
    @click.option("--sas-url", default=None, help="Science Archive Server [env ULISSE_SDSS_SAS_URL; default "
                  "https://data.sdss.org/sas]")
    @click.option("--tap-url", default=None, help="take the catalogue from this TAP service instead of the SAS "
                  "and SqlSearch [env ULISSE_SDSS_TAP_URL]")
    @click.option("--table", default=None, help="catalogue table of SqlSearch/TAP queries, an identifier "
                  "[env ULISSE_SDSS_TABLE; default PhotoPrimary]")
    @click.option("--tap-columns", default=None, metavar="NAME=COLUMN,...",
                  help="the TAP table's column names where they differ from SkyServer's, e.g. objid=objID,modelMag_r=r "
                       "[env ULISSE_SDSS_TAP_COLUMNS]")
    @_service_options
    @device_option
    @encoder_options
    @click.option("--factory", default="Flat", show_default=True,
                  help="FAISS index factory of a new index: Flat (exact search), any factory string (IVF256,Flat, "
                       "HNSW32...) or 'auto' (chosen from the objects of the first commit)")
    @click.option("--metric", type=click.Choice(["L2", "IP", "cosine"]), default="L2", show_default=True,
                  help="distances of a new index: L2 (Euclidean), IP (negative inner product), cosine (1 - cosine)")
    def sdss_index(index_dir, fields, fields_file, region, catalog, kind, mag_r_max, clean, edge, size, scale, dask,
                   cache_dir, prune_cache, clean_work, sas_url, tap_url, table, tap_columns, skyserver_url, timeout,
                   backoff, retries, release, encoder_options, device, factory, metric):
        """Index the primary objects of SDSS fields in DIR (created, or extended with its own encoder).

        Each field's primary objects (SAS photoObj; SqlSearch for --region) are
        cut out of its calibrated g, r, i frames (SAS) onto north-up, east-left
        grids, embedded and indexed with their catalogue columns. A stopped run,
        run again, goes on where it stopped; failed fields are retried, then
        reported (exit status 1) after the others are indexed. A field with no
        object left (none, or none passing --type/--mag-r-max/--clean) is done
        and reported as empty. One run at a time uses DIR: a second one stops
        before any download.

        The encoder options are those of 'ulisse index build' (the same spec in
        the manifest, the same vectors and feature lists for the same cutouts); an
        existing index keeps its own encoder (--weights: its weights file if that
        has moved; --runtime applies).
        """
        from ulisse.cli import progress_enabled

        from .batch import clean_work as remove_work, index_fields
        from .config import ObjectFilter
        from .cutting import CutoutGeometry
        from .runlock import run_lock

        progress = progress_enabled()
        config = _config(release, tap_url=tap_url, sas_url=sas_url, skyserver_url=skyserver_url, table=table,
                         tap_columns=tap_columns, timeout=timeout, retries=retries, backoff=backoff)
        object_filter = ObjectFilter(kind=kind, mag_r_max=mag_r_max, clean=clean)
        geometry = CutoutGeometry(size=size, scale=scale)
        if dask:
            from .dask_runner import parse_dask

            parse_dask(dask)
        if Path(index_dir).exists() and not Path(index_dir).is_dir():
            raise ulisse.InputError(f"{index_dir}: exists and is not a directory")
        with run_lock(index_dir):  # before the region query and every download (index_fields takes it again)
            tasks = _tasks(fields, fields_file, region, catalog, object_filter, config)
            runner = None
            if dask:
                from .dask_runner import DaskRunner

                runner = DaskRunner(dask)
            _note_ignored_options(index_dir)
            report = index_fields(index_dir, tasks, config, device=device, encoder_options=encoder_options,
                                  factory=factory, metric=metric, cache_dir=cache_dir, geometry=geometry, edge=edge,
                                  object_filter=object_filter, runner=runner, prune_cache=prune_cache,
                                  progress=progress)
        click.echo("\n".join(summary_lines(report)))
        if report.failed:
            raise BatchIncomplete(report.failed, report.added)
        check_written(report)
        if clean_work:
            remove_work(index_dir)

    fetch_group = cli.commands.get("fetch")
    if fetch_group is None:
        @cli.group("fetch")
        def fetch_group():
            """Download survey data (cutouts) from the archives."""

    @fetch_group.command("cutouts")
    @click.argument("catalog", type=click.Path(dir_okay=False))
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="folder of the {id}.jpg files")
    @click.option("--rate", type=float, default=5.0, show_default=True, help="requests per second, at most")
    @click.option("--scale", type=float, default=CUTOUT_SCALE, show_default=True, help="arcsec per pixel")
    @click.option("--size", type=click.IntRange(8, 2048), default=CUTOUT_SIZE, show_default=True,
                  help="width and height (px)")
    @click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="parallel requests")
    @_service_options
    def fetch_cutouts_command(catalog, out, rate, scale, size, workers, skyserver_url, timeout, backoff, retries,
                              release):
        """Download SkyServer ImgCutout JPEGs ({id}.jpg) for a catalogue (id, ra, dec); resumable."""
        from ulisse.cli import progress_enabled

        from .imgcutout import fetch_cutouts

        config = _config(release, skyserver_url=skyserver_url, timeout=timeout, retries=retries, backoff=backoff)
        if not Path(catalog).is_file():
            raise ulisse.InputError(f"{catalog}: catalogue not found")
        report = fetch_cutouts(catalog, out, config=config, rate=rate, scale=scale, size=size, workers=workers,
                               progress=progress_enabled())
        click.echo(f"fetch cutouts {out}: {report.fetched} fetched, {report.existing} already there, "
                   f"{len(report.failed)} failed in {report.seconds:.1f} s")
        for oid, reason in report.failed:
            click.echo(f"failed {oid}: {reason}")
        if report.failed:
            oid, reason = report.failed[0]
            raise SDSSError(f"{len(report.failed)} cutout(s) failed (first {oid}: {reason}); "
                            "run the command again to retry them")
