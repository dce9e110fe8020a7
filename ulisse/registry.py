"""What plugins register (the objects the hooks of :mod:`ulisse.hookspecs` return), and lookups.

Every lookup calls its hook with the run's :class:`Config` (the one the command
line set with :func:`use_config`, else one read from the environment).

Example:
    >>> from ulisse.registry import query_strategies
    >>> sorted(query_strategies())                     # doctest: +SKIP
    ['mean', 'recursive', 'union']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, Protocol, Sequence, TypeVar

import numpy as np

from .errors import InputError

CACHE_ENV = "ULISSE_CACHE_DIR"
DEVICE_ENV = "ULISSE_DEVICE"


def default_cache_dir() -> Path:
    """``$ULISSE_CACHE_DIR``, else the user cache folder (platformdirs: ``$XDG_CACHE_HOME/ulisse`` on Linux)."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("ulisse"))


@dataclass(frozen=True)
class Config:
    """The run's context, passed to every hook as ``config`` (as datasette passes ``datasette``).

    Attributes:
        device: ``auto``, ``cpu`` or ``cuda`` (``ulisse --device``, ``$ULISSE_DEVICE``).
        options: the global options of the command line (``quiet``, ``verbose``).
        plugins_dirs: folders of one-off plugin files (``--plugins-dir``, ``$ULISSE_PLUGINS_DIR``).
        cache_dir: where plugins may cache downloads and exported models (:func:`default_cache_dir`).

    Example:
        >>> Config(device="cpu").device
        'cpu'
    """

    device: str = "auto"
    options: dict = field(default_factory=dict)
    plugins_dirs: tuple[str, ...] = ()
    cache_dir: Path = field(default_factory=default_cache_dir)

    @classmethod
    def from_env(cls, **changes) -> "Config":
        """A config from the environment (``ULISSE_DEVICE``, ``ULISSE_PLUGINS_DIR``, ``ULISSE_CACHE_DIR``), then ``changes``."""
        dirs = tuple(d for d in os.environ.get("ULISSE_PLUGINS_DIR", "").split(os.pathsep) if d)
        return replace(cls(device=os.environ.get(DEVICE_ENV) or "auto", plugins_dirs=dirs), **changes)


_CONFIG: list[Config] = []


def use_config(config: Config | None) -> None:
    """Make ``config`` the run's config, passed to every hook from now on (``None``: read the environment again)."""
    _CONFIG[:] = [config] if config is not None else []


def current_config() -> Config:
    """The run's config: the one given to :func:`use_config`, else :meth:`Config.from_env`."""
    return _CONFIG[0] if _CONFIG else Config.from_env()


@dataclass(frozen=True)
class QueryStrategy:
    """A named way to answer a query from prototypes.

    ``run(index, prototypes, k=..., **options)`` returns a result object with a
    ``table`` (rank, id, distance, metadata) and an ``info`` dict. ``page``: the title of the web UI
    page that runs the strategy with settings of its own (the Search page then leaves it out of its
    choices and points there).
    """

    name: str
    description: str
    run: Callable[..., Any]
    page: str | None = None


@dataclass(frozen=True)
class EncoderEntry:
    """A named encoder (as timm's ``register_model``).

    ``load(device="auto", weights=None, input_size=224, **options)`` returns a
    :class:`ulisse.Encoder`; ``Encoder.load(encoder=name)`` records ``name`` in
    its spec (``spec.encoder``), so an index built with it is reopened with it.
    ``record_name=False`` is for encoders whose spec already says how to rebuild
    them: the core's timm encoders, recorded by model name and weights and
    reopened through the ``timm`` entry.
    """

    name: str
    description: str
    load: Callable[..., Any]
    record_name: bool = True


class PreprocessStep(Protocol):
    """One loaded preprocessing step: uint8 RGB cutouts in, uint8 RGB cutouts of the same shape out."""

    fingerprint: str  # changes whenever the step's output would change (a model's sha256, say)

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Preprocessor:
    """A step applied to cutouts before embedding, chosen by ``name`` and an argument string.

    ``load(arg)`` returns a :class:`PreprocessStep`. The index's encoder spec
    records ``{"name", "arg", "fingerprint"}``, so queries and adds apply it too.
    """

    name: str
    description: str
    load: Callable[[str], PreprocessStep]


@dataclass
class EmbeddingBatch:
    """What an embedding observer sees of one batch.

    Attributes:
        ids: the batch's object ids.
        maps: float32 ``N x C x h x w``, the encoder's final feature maps (before pooling).
        vectors: float32 ``N x dim``, the vectors stored in the index.
    """

    ids: list[str]
    maps: np.ndarray
    vectors: np.ndarray


class Observer(Protocol):
    """A live observer of one embedding run (see :class:`EmbeddingObserver`)."""

    def observe(self, batch: EmbeddingBatch) -> None: ...

    def finish(self, index) -> None: ...


@dataclass(frozen=True)
class EmbeddingObserver:
    """Something that watches embedding and stores its results with the index.

    ``create(index)`` returns an :class:`Observer` for one run; ``index`` is the
    index being extended (``None`` for a new build), so results can be merged.
    """

    name: str
    description: str
    create: Callable[[Any], Observer]


@dataclass(frozen=True)
class DerivedColumns:
    """Per-object values computed from an index (anomaly scores, head predictions...).

    ``compute(index, **options)`` returns a :class:`pandas.DataFrame` with one row
    per object in row order, whose columns are the values (their names must not
    clash with the index's metadata). ``options`` are the defaults; the options a
    set was computed with are stored beside it and reused when it is recomputed.

    A stored set is recomputed when the index's vectors change. When the values
    also depend on something else (a plugin's trained models, say), give
    ``state(index)``: a short string that changes whenever that does; a set
    stored under another state is recomputed the next time it is read.
    ``columns``: the column names the set makes, when known in advance; a
    ``--where`` naming one of them computes the set on first use.
    ``per_object``: each object's values depend on that object alone (its
    cutout and metadata; not the vectors, not the other objects). Then
    ``compute(index, rows=ROWS, checkpoint=FN, **options)`` must answer for just
    those rows (in that order), and after an add only the new objects are computed
    (:meth:`ulisse.derived.DerivedMixin.derived_pending`). It may call
    ``FN(part)`` as it goes, ``part`` the rows done so far (a table, or a function
    making it): the core stores them now and then, so that a long computation
    stopped half-way resumes where it was.
    ``update``: for a set whose values depend on the vectors (not on the
    cutouts alone) and that can be brought up to date after an add for less
    than computing it again (kNN anomaly scores, predictions from the vectors):
    ``update(index, kept, rows, **options)`` returns every object's values
    from ``kept`` (the stored table of the objects there were, whose vectors
    are unchanged) and ``rows`` (the rows added since). It is called instead of
    ``compute`` when the index grew by adds (:attr:`ulisse.indexes.manifest.Manifest.content`)
    and the state and options are those stored.
    ``describe(index)``: ``{column: {"unit", "ucd", "description"}}`` of the set's columns, stored beside
    the set each time it is stored; every export of a table with those columns carries them (FITS
    ``TUNIT``/``TCOMM``, VOTable, ECSV).
    """

    name: str
    description: str
    compute: Callable[..., Any]
    options: dict = field(default_factory=dict)
    state: Callable[..., str] | None = None
    columns: tuple[str, ...] = ()
    per_object: bool = False
    update: Callable[..., Any] | None = None
    describe: Callable[..., dict] | None = None


@dataclass(frozen=True)
class AnomalyMethod:
    """A named anomaly score (``ulisse anomalies --method NAME``).

    ``score(index, k=..., progress=..., recompute=...)`` returns a float array of
    one score per object in row order, higher meaning more anomalous; a method
    that stores its scores does so as derived columns. ``uses_k``: the score
    depends on ``k`` neighbours (the UI's k slider applies to it).
    """

    name: str
    description: str
    score: Callable[..., np.ndarray]
    uses_k: bool = True


@dataclass(frozen=True)
class ExportFormat:
    """A file format for result tables (``--format NAME``, ``--output FILE.EXT``, the UI's downloads).

    ``write(table, meta, extra)`` returns ``str`` (a text format) or ``bytes``:
    ``table`` is the result table, ``meta`` a flat dict of short strings about it
    (prototype, index...), ``extra`` a JSON-ready dict of everything the verb
    knows (formats that hold structure, like JSON, write it; ``None``: only rows).

    Attributes:
        extensions: file suffixes (``.csv``), lower case; the first is the one to save under.
        media_type: the MIME type of a download.
        binary: ``write`` returns bytes (never printed to a terminal).
    """

    name: str
    description: str
    extensions: tuple[str, ...]
    media_type: str
    write: Callable[..., str | bytes]
    binary: bool = False


@dataclass(frozen=True)
class UIPage:
    """A Streamlit page script that the web UI shows under ``title``.

    Attributes:
        title: the page's name in the sidebar (and in the URL: ``?page=TITLE``).
        script: the page script (it also runs on its own: ``streamlit run SCRIPT``).
        order: the page's place in the sidebar, lowest first.
        url_state: the page's view in the URL, restored by a reload or a shared URL:
            URL parameter -> session-state key (a text value; ``""`` and ``(none)``
            come back as None), or -> ``(key, convert)`` where ``convert(text)`` gives
            the value back (``int``, say; a value it rejects is ignored).
        persistent_keys: widget keys whose values survive a visit to another page
            (Streamlit forgets the widgets a run does not draw).
        accepts_prototypes: "use as the prototype" (a tile click) opens this page;
            the first such page in sidebar order is chosen.
        sharded: the page searches sharded indexes on a Dask cluster; the app opens on the first
            such page when started with ``ulisse ui --dask``.

    Example:
        >>> UIPage("Search", Path("page.py"), order=10, url_state={"k": ("search.k", int)},
        ...        persistent_keys=("search.k",), accepts_prototypes=True)        # doctest: +SKIP
    """

    title: str
    script: Path
    order: int = 100
    url_state: dict = field(default_factory=dict)
    persistent_keys: tuple[str, ...] = ()
    accepts_prototypes: bool = False
    sharded: bool = False


@dataclass(frozen=True)
class TileAction:
    """A button under the result tiles of the web UI (:func:`ulisse.ui.kit.tile_grid` with ``actions=True``).

    ``run(index, object_id)`` acts on the tile's object (marks it, say); ``label`` is
    the button's text (a word or two, not a glyph: "Relevant"); ``help`` its tooltip, where
    ``{id}`` stands for the object's id. ``name`` names the action (and its
    buttons' widget keys: ``GRID.NAME.N``).

    An action that leaves a trace on its objects (a mark) says so with ``badge(index)``:
    object id -> the text of the badge its tile shows ("Relevant"); such a tile shows,
    instead of the action's button, one labelled ``undo_label`` that calls
    ``undo(index, object_id)`` (remove that one mark).
    """

    name: str
    label: str
    run: Callable[[Any, str], Any]
    help: str = ""
    badge: Callable[[Any], Mapping[str, str]] | None = None
    undo: Callable[[Any, str], Any] | None = None
    undo_label: str = "Undo"


def _collect(hook_name: str, pm=None, config: Config | None = None) -> list:
    from .plugin_manager import call_hook, get_plugin_manager

    pm = pm or get_plugin_manager()
    items = []
    for result in call_hook(pm, hook_name, config=config or current_config()):
        items.extend(result or [])
    return items


def _by_name(items, what):
    out = {}
    for item in items:
        if item.name in out:
            raise InputError(f"two plugins register the {what} {item.name!r}")
        out[item.name] = item
    return out


T = TypeVar("T")


class Lookup(Generic[T]):
    """A lookup of the registry: every item the plugins return from one ``register_*`` hook, by name.

    Called as a function, ``lookup(pm=None, config=None)``: the process-wide plugin manager and the
    run's config by default. Two plugins registering one name is an :class:`~ulisse.errors.InputError`.

    Example:
        >>> encoders.hook, encoders.label
        ('register_encoders', 'encoders')
    """

    def __init__(self, hook: str, what: str, label: str):
        self.hook, self.what, self.label = hook, what, label
        self.__doc__ = f"Every registered {what} by name (the ``{hook}`` hook)."

    def __call__(self, pm=None, config: Config | None = None) -> dict[str, T]:
        return _by_name(_collect(self.hook, pm, config), self.what)

    def __repr__(self) -> str:
        return f"<registry lookup {self.label}: {self.hook}>"


encoders: Lookup[EncoderEntry] = Lookup("register_encoders", "encoder", "encoders")
anomaly_methods: Lookup[AnomalyMethod] = Lookup("register_anomaly_methods", "anomaly method", "anomaly methods")
export_formats: Lookup[ExportFormat] = Lookup("register_export_formats", "export format", "export formats")
query_strategies: Lookup[QueryStrategy] = Lookup("register_query_strategies", "query strategy", "query strategies")
preprocessors: Lookup[Preprocessor] = Lookup("register_preprocessors", "preprocessing step", "preprocessors")
embedding_observers: Lookup[EmbeddingObserver] = Lookup("register_embedding_observers", "embedding observer",
                                                        "embedding observers")
derived_columns: Lookup[DerivedColumns] = Lookup("register_derived_columns", "derived column set", "derived columns")
tile_actions: Lookup[TileAction] = Lookup("register_tile_actions", "tile action", "tile actions")
LOOKUPS = (encoders, anomaly_methods, export_formats, query_strategies, preprocessors, embedding_observers,
           derived_columns, tile_actions)


def ui_pages(pm=None, config: Config | None = None) -> list[UIPage]:
    """Every registered web UI page, in display order."""
    return sorted(_collect("register_ui_pages", pm, config), key=lambda p: (p.order, p.title))


def export_format(name: str, pm=None, config: Config | None = None) -> ExportFormat:
    """The export format ``name``.

    Raises:
        InputError: no plugin registers it.
    """
    formats = export_formats(pm, config)
    if name not in formats:
        raise InputError(f"--format {name}: expected one of {', '.join(formats)}")
    return formats[name]


def export_format_for_path(path: str | os.PathLike, pm=None, config: Config | None = None) -> ExportFormat:
    """The export format whose extension ends ``path`` (the longest that fits: ``.fits.gz`` before ``.gz``).

    Raises:
        InputError: no registered format has that extension.
    """
    name = Path(path).name.lower()
    fits = [(len(ext), f) for f in export_formats(pm, config).values() for ext in f.extensions if name.endswith(ext)]
    if not fits:
        known = ", ".join(ext for f in export_formats(pm, config).values() for ext in f.extensions)
        raise InputError(f"{path}: unknown output format (use {known})")
    return max(fits, key=lambda x: x[0])[1]


# what ``ulisse plugins`` says each register_* hook provides
PROVIDES = {**{lookup.hook: lookup.label for lookup in LOOKUPS}, "register_ui_pages": "pages"}


def item_name(item) -> str:
    """What a registered item is called: its ``name``, or a page's ``title``."""
    return str(getattr(item, "name", None) or getattr(item, "title", ""))


def provided_by(pm=None, config: Config | None = None) -> dict[str, dict[str, list[str]]]:
    """What each plugin registers: ``{plugin: {"encoders": [names], "pages": [titles], ...}}``.

    Example:
        >>> provided_by()["prototype"]["query strategies"]   # doctest: +SKIP
        ['mean', 'union']
    """
    from .plugin_manager import get_plugin_manager, iter_hook

    pm = pm or get_plugin_manager()
    out: dict[str, dict[str, list[str]]] = {}
    for hook_name, what in PROVIDES.items():
        if not hasattr(pm.hook, hook_name):
            continue
        for plugin, items in iter_hook(pm, hook_name, config=config or current_config()):
            out.setdefault(plugin, {}).setdefault(what, []).extend(item_name(i) for i in items or [])
    return out
