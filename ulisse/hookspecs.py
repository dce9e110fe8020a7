"""Every hook a ulisse plugin can implement. This file is the plugin API (version 2).

A plugin is a module (or object) with functions marked ``@ulisse.hookimpl``
whose names are hooks below. The application's own features are plugins too,
written the same way: the core's defaults (the EfficientNet encoders, the
export formats) in ``ulisse._builtins``, and the first-party plugins
(``ulisse.plugins.*``, the web UI's ``ulisse.ui.plugin``), all listed in
:data:`ulisse.plugin_manager.DEFAULT_PLUGINS` and loaded first, as datasette
loads its ``DEFAULT_PLUGINS``. Third-party plugins are registered through the
``ulisse`` entry-point group in their package's ``pyproject.toml``::

    [project.entry-points.ulisse]
    my_plugin = "my_package.my_plugin"

or, for a one-off file, ``ulisse --plugins-dir DIR ...``. ``ulisse plugins``
lists what loaded, and what failed to load with its error (a broken plugin is
disabled; everything else keeps working). ``ULISSE_TRACE_PLUGINS=1`` logs every
hook call.

Hooks receive context as named arguments, as datasette's do; pluggy passes only
the arguments an implementation names, so a plugin written for fewer arguments
keeps working when a hook gains one. ``register_*`` hooks return a list (the
lists of all plugins are concatenated). The objects they return are defined in
:mod:`ulisse.registry`. Each hook has a docstring with an example; a test fails
when one is missing, and ``docs/plugins.md`` is generated from them
(``python -m ulisse.docs``).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ulisse")


@hookspec
def register_commands(cli, config):
    """Add click commands or groups to the ``ulisse`` command-line group ``cli``.

    ``config`` is the run's :class:`~ulisse.registry.Config` (read from the global
    options before the verbs are added).

    Example::

        @ulisse.hookimpl
        def register_commands(cli):
            @cli.command("hello")
            def hello():
                click.echo("hello from a plugin")
    """


@hookspec
def register_encoders(config):
    """Return a list of EncoderEntry: named encoders for ``ulisse index build --encoder NAME``.

    ``config`` is the :class:`~ulisse.registry.Config` of this run (device, options,
    plugin folders, cache folder), as in every ``register_*`` hook.
    An entry's ``load(device=..., weights=..., input_size=...)`` returns a
    :class:`ulisse.Encoder`; its spec's ``encoder`` field names the entry so that
    an index built with it is reopened with it.

    Example::

        @ulisse.hookimpl
        def register_encoders(config):
            return [EncoderEntry("tiny", "a 16-d test encoder", load=load_tiny_encoder)]
    """


@hookspec
def register_preprocessors(config):
    """Return a list of Preprocessor: steps applied to every cutout before embedding.

    A step is chosen by name and argument (``ulisse index build --preprocess NAME=ARG``,
    e.g. ``--denoise MODEL_DIR``); its fingerprint is recorded in the index's encoder
    spec, so every later query by image and every add applies the same step.

    Example::

        @ulisse.hookimpl
        def register_preprocessors(config):
            return [Preprocessor("invert", "255 - pixel", load=lambda arg: InvertStep())]
    """


@hookspec
def register_embedding_observers(config):
    """Return a list of EmbeddingObserver: objects that see each batch's feature maps while embedding.

    During ``build`` and ``add`` every observer gets ``observe(batch)`` with the
    batch's ids, final feature maps (``N x C x h x w``) and vectors, then
    ``finish(index)`` after the commit to store its results with the index (the
    feature browser keeps per-feature top objects this way, with no second pass).

    Example::

        @ulisse.hookimpl
        def register_embedding_observers(config):
            return [EmbeddingObserver("count", "counts objects", create=lambda index: Counter(index))]
    """


@hookspec
def register_derived_columns(config):
    """Return a list of DerivedColumns: per-object values computed from an index.

    The core stores them in the index directory (``derived/NAME.parquet``), tied to
    the vectors' fingerprint, recomputes them when stale, joins them into every result
    table, export and UI grid, and lets ``--where`` filter on them. A set whose values
    depend on each object alone (its cutout: artefact flags, morphology) says
    ``per_object=True`` and takes ``rows`` and ``checkpoint``: after an add, only the new
    objects are computed, and a long computation stopped half-way resumes where it was.
    A set that depends on the vectors but can be brought up to date after an add for less
    than computing it again (kNN anomaly scores, a head's predictions) gives
    ``update(index, kept, rows, **options)``: the stored rows of the objects there were and
    the rows added, in; every object's values, out.

    Example::

        @ulisse.hookimpl
        def register_derived_columns(config):
            return [DerivedColumns("norm", "vector norm", compute=lambda index, **opt:
                    pd.DataFrame({"norm": np.linalg.norm(index.all_vectors(), axis=1)}))]
    """


@hookspec
def register_query_strategies(config):
    """Return a list of QueryStrategy: named ways to turn prototypes into ranked neighbours.

    ``ulisse query --combine NAME`` and the web UI offer every registered strategy.

    Example::

        @ulisse.hookimpl
        def register_query_strategies(config):
            return [QueryStrategy("first", "neighbours of the first prototype only", run=run_first)]
    """


@hookspec
def register_anomaly_methods(config):
    """Return a list of AnomalyMethod: named per-object anomaly scores for ``ulisse anomalies --method NAME``.

    ``score(index, k=..., progress=..., recompute=...)`` returns one score per
    object in row order, higher meaning more anomalous; the anomalies verb and
    the web UI's Anomalies page offer every registered method.

    Example::

        @ulisse.hookimpl
        def register_anomaly_methods(config):
            return [AnomalyMethod("norm", "vector norm", uses_k=False,
                                  score=lambda index, **opt: np.linalg.norm(index.all_vectors(), axis=1))]
    """


@hookspec
def register_export_formats(config):
    """Return a list of ExportFormat: file formats for result tables (``--format NAME``, ``--output FILE.EXT``).

    ``write(table, meta, extra)`` returns the table as text or bytes; the verbs'
    ``--output`` picks the format by the file's extension and the web UI's
    download buttons by name.

    Example::

        @ulisse.hookimpl
        def register_export_formats(config):
            return [ExportFormat("tsv", "tab-separated values", (".tsv",), "text/tab-separated-values",
                                 write=lambda table, meta, extra: table.to_csv(sep="\\t", index=False))]
    """


@hookspec
def register_ui_pages(config):
    """Return a list of UIPage: Streamlit page scripts that ``ulisse ui`` adds to the web app.

    Pages are short scripts over the Python API and the public UI kit
    (:mod:`ulisse.ui.kit`: tile grid with click-to-prototype, object detail,
    downloads, cached index and encoder). A page declares what the kit keeps for
    it: ``url_state`` (its view in the URL), ``persistent_keys`` (widget values kept
    across pages) and ``accepts_prototypes`` (a tile click opens it).

    Example::

        @ulisse.hookimpl
        def register_ui_pages(config):
            return [UIPage("Heads", Path(__file__).with_name("heads_page.py"), order=50,
                           url_state={"head": "heads.head"}, persistent_keys=("heads.head",))]
    """


@hookspec
def register_tile_actions(config):
    """Return a list of TileAction: buttons under the result tiles of the web UI.

    The kit's tile grid (:func:`ulisse.ui.kit.tile_grid` with ``actions=True``: the
    Search neighbours, the Marks ranking) shows each action's ``label`` under every
    tile; a click calls ``run(index, object_id)``. The feedback plugin's "Relevant" /
    "Not relevant" (with a badge and an undo) are tile actions.

    Example::

        @ulisse.hookimpl
        def register_tile_actions(config):
            return [TileAction("star", "⭐", run=lambda index, object_id: stars.add(object_id), help="Star {id}")]
    """


@hookspec
def describe_index(index):
    """Return a dict of lines about what a plugin keeps with an open index, for ``ulisse index info``.

    Each key is a short label (at most 10 characters) and each value one line of text; return None when
    the plugin keeps nothing with this index. The lines follow the core's own (size, encoder, derived
    columns) in the text output, and are under ``"described"`` in ``--format json``. The feedback
    plugin's line counts the marks stored with the index.

    Example::

        @ulisse.hookimpl
        def describe_index(index):
            n = len(my_notes(index))
            return {"notes": f"{n} notes ('ulisse notes {index.path.name}' lists them)"} if n else None
    """

