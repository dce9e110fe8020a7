"""What plugins register (the objects the hooks of :mod:`ulisse.hookspecs` return), and lookups.

Example:
    >>> from ulisse.registry import query_strategies
    >>> sorted(query_strategies())                     # doctest: +SKIP
    ['mean', 'recursive', 'union']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Config:
    """What a hook may need to know about this run (passed to every ``register_*`` hook as ``config``).

    Attributes:
        device: ``auto``, ``cpu`` or ``cuda``.
        options: free-form settings (``--plugins-dir`` and the like).
    """

    device: str = "auto"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class QueryStrategy:
    """A named way to answer a query from prototypes.

    ``run(index, prototypes, k=..., **options)`` returns a result object with a
    ``table`` (rank, id, distance, metadata) and an ``info`` dict.
    """

    name: str
    description: str
    run: Callable[..., Any]


@dataclass(frozen=True)
class EncoderEntry:
    """A named encoder (as timm's ``register_model``).

    ``load(device="auto", weights=None, input_size=224, **options)`` returns a
    :class:`ulisse.Encoder` whose ``spec.encoder`` is ``name``.
    """

    name: str
    description: str
    load: Callable[..., Any]


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
    """

    name: str
    description: str
    compute: Callable[..., Any]
    options: dict = field(default_factory=dict)
    state: Callable[..., str] | None = None


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


@dataclass(frozen=True)
class TileAction:
    """A button under the result tiles of the web UI (:func:`ulisse.ui.kit.tile_grid` with ``actions=True``).

    ``run(index, object_id)`` acts on the tile's object (marks it, say); ``label`` is
    the button's text (an emoji or a short word); ``help`` its tooltip, where
    ``{id}`` stands for the object's id. ``name`` names the action (and its
    buttons' widget keys: ``GRID.NAME.N``).
    """

    name: str
    label: str
    run: Callable[[Any, str], Any]
    help: str = ""


def _collect(hook_name: str, pm=None, config: Config | None = None) -> list:
    from .plugin_manager import call_hook, get_plugin_manager

    pm = pm or get_plugin_manager()
    items = []
    for result in call_hook(pm, hook_name, config=config or Config()):
        items.extend(result or [])
    return items


def _by_name(items, what):
    out = {}
    for item in items:
        if item.name in out:
            raise InputError(f"two plugins register the {what} {item.name!r}")
        out[item.name] = item
    return out


def query_strategies(pm=None, config: Config | None = None) -> dict[str, QueryStrategy]:
    """Every registered query strategy by name."""
    return _by_name(_collect("register_query_strategies", pm, config), "query strategy")


def encoders(pm=None, config: Config | None = None) -> dict[str, EncoderEntry]:
    """Every registered encoder by name."""
    return _by_name(_collect("register_encoders", pm, config), "encoder")


def preprocessors(pm=None, config: Config | None = None) -> dict[str, Preprocessor]:
    """Every registered preprocessing step by name."""
    return _by_name(_collect("register_preprocessors", pm, config), "preprocessor")


def embedding_observers(pm=None, config: Config | None = None) -> dict[str, EmbeddingObserver]:
    """Every registered embedding observer by name."""
    return _by_name(_collect("register_embedding_observers", pm, config), "embedding observer")


def derived_columns(pm=None, config: Config | None = None) -> dict[str, DerivedColumns]:
    """Every registered set of derived columns by name."""
    return _by_name(_collect("register_derived_columns", pm, config), "derived column set")


def ui_pages(pm=None, config: Config | None = None) -> list[UIPage]:
    """Every registered web UI page, in display order."""
    return sorted(_collect("register_ui_pages", pm, config), key=lambda p: (p.order, p.title))


def tile_actions(pm=None, config: Config | None = None) -> dict[str, TileAction]:
    """Every registered tile action by name, in registration order."""
    return _by_name(_collect("register_tile_actions", pm, config), "tile action")
