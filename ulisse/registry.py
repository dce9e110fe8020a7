"""What plugins register, and lookups over everything registered.

Example:
    >>> from ulisse.registry import query_strategies
    >>> sorted(query_strategies())                     # doctest: +SKIP
    ['mean', 'recursive', 'union']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import InputError


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
class ScoreProvider:
    """A per-object score computed from an index (an anomaly score, a regression head...).

    ``compute(index, **options)`` returns a float array, one value per object
    of the index, in row order. Higher means "more" (more anomalous, say).
    """

    name: str
    description: str
    compute: Callable[..., Any]
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class UIPage:
    """A Streamlit page script that the web UI shows under ``title``."""

    title: str
    script: Path
    order: int = 100


def _collect(hook_name: str, pm=None) -> list:
    from .plugin_manager import get_plugin_manager

    pm = pm or get_plugin_manager()
    items = []
    for result in getattr(pm.hook, hook_name)():
        items.extend(result or [])
    return items


def _by_name(items, what):
    out = {}
    for item in items:
        if item.name in out:
            raise InputError(f"two plugins register the {what} {item.name!r}")
        out[item.name] = item
    return out


def query_strategies(pm=None) -> dict[str, QueryStrategy]:
    """Every registered query strategy by name."""
    return _by_name(_collect("register_query_strategies", pm), "query strategy")


def score_providers(pm=None) -> dict[str, ScoreProvider]:
    """Every registered per-object score by name."""
    return _by_name(_collect("register_scores", pm), "score")


def ui_pages(pm=None) -> list[UIPage]:
    """Every registered web UI page, in display order."""
    return sorted(_collect("register_ui_pages", pm), key=lambda p: (p.order, p.title))
