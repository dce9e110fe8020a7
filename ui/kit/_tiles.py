"""Thumbnails: the tile grid (click to make the prototype, the plugins' tile actions) and one object's detail."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import streamlit as st

import ulisse
from ulisse.errors import UlisseError
from ulisse.registry import TileAction, tile_actions
from ulisse.ui.kit import _images, _samp, _sky
from ulisse.ui.kit._index import _open_index, has_object, index_key, open_path
from ulisse.ui.kit._state import DETAIL, TILE_SIZE, add_prototype, set_prototypes, show_detail
from ulisse.ui.kit._tables import distance_text, relative_source, show_table


@st.cache_data(max_entries=20_000, show_spinner=False)
def _thumbnail(path: str, generation: int, object_id: str, framed: bool) -> bytes | None:
    index = _open_index(path, generation)
    image = ulisse.plot.thumbnail(index, object_id)
    return None if image is None else _images.display_png(image, framed)


def thumbnail_png(index: ulisse.Index, object_id: str, framed: bool = False) -> bytes | None:
    """The cutout of an index object as PNG for the page (None when its file is gone)."""
    return _thumbnail(*index_key(index), str(object_id), framed)


def tile_caption(row: dict, score_name: str = "score") -> str:
    """``#rank id`` / ``d = distance`` (or ``score_name`` and the score) / ``RA° Dec°``: what a tile says about
    its object."""
    head = f"#{row['rank']} {row['id']}" if pd.notna(row.get("rank", np.nan)) else str(row["id"])
    lines = [head]
    if pd.notna(row.get("distance", np.nan)):
        lines.append(f"d = {distance_text(float(row['distance']))}"
                     + (f" ← {row['found_by']}" if isinstance(row.get("found_by"), str) else ""))
    elif pd.notna(row.get("score", np.nan)):
        lines.append(f"{score_name} {distance_text(float(row['score']))}")
    if _sky.has_position(row.get("ra"), row.get("dec")):
        lines.append(f"{float(row['ra']):.5f}° {float(row['dec']):+.5f}°")  # RA, Dec in degrees
    return "  \n".join(lines)


def run_tile_action(action: TileAction, index_path: str, object_id: str, undo: bool = False) -> None:
    """Run a plugin's tile action (or its undo) on one object (a button callback); a ulisse error is a message."""
    try:
        (action.undo if undo else action.run)(open_path(index_path), object_id)
    except UlisseError as exc:
        st.error(f"{action.undo_label if undo else action.label} {object_id}: {exc}")


TILE_SIZES = {"Small": 132, "Medium": 172, "Large": 236}  # a tile's width in px: the grid reflows to the window
BADGE_COLOURS = ("green", "red", "blue", "violet", "orange")  # the badges of the 1st, 2nd... action that marks


def tile_width() -> int:
    """The tiles' width in px, from the sidebar's "Tile size" (drawn once per run)."""
    run = st.session_state.get("_kit.run")
    if st.session_state.get(TILE_SIZE) not in TILE_SIZES:
        st.session_state[TILE_SIZE] = "Medium"
    if st.session_state.get("_kit.tile_size_run") != run:
        st.session_state["_kit.tile_size_run"] = run
        st.sidebar.select_slider("Tile size", list(TILE_SIZES), key=TILE_SIZE,
                                 help="The thumbnails' size: the grid fits as many per row as the window holds.")
    return TILE_SIZES[st.session_state[TILE_SIZE]]


def _badges(index: ulisse.Index, actions: Sequence[TileAction]) -> dict[str, tuple[TileAction, str, int]]:
    """Object id -> (the action that marked it, the badge's text, the action's place among those that mark)."""
    out: dict[str, tuple[TileAction, str, int]] = {}
    marking = [a for a in actions if a.badge is not None]
    for n, action in enumerate(marking):
        try:
            marked = action.badge(index) or {}
        except UlisseError:
            continue
        for oid, text in marked.items():
            out.setdefault(str(oid), (action, str(text), n % len(BADGE_COLOURS)))
    return out


def badges_of(index: ulisse.Index, ids: Sequence[str]) -> dict[str, str]:
    """Object id -> its badge's text ("Relevant", "Not relevant": what the tile actions marked it) for the ids
    marked: the prototype's caption on the Search page says its mark as the tiles do."""
    marked = _badges(index, list(tile_actions().values()))
    return {str(i): marked[str(i)][1] for i in ids if str(i) in marked}


def tile_grid(table: pd.DataFrame, index: ulisse.Index, *, key: str, columns: int | None = None, per_page: int = 24,
              caption: Callable[[dict], str] | None = None, actions: bool = False,
              framed: Sequence[str] = ()) -> None:
    """Thumbnails of the objects of ``table`` (a column ``id``; ``rank``, ``distance``/``score``, ``ra``, ``dec`` shown).

    The tiles reflow to the window (their width is the sidebar's "Tile size"; ``columns``
    is kept for old callers and ignored). Clicking a tile makes its object the prototype
    (and opens the page that accepts prototypes), as does its "Use as prototype"; "Add" adds it to the
    prototypes, "Details" opens it in a dialog and, with ``actions=True``, the tile
    actions plugins register (``register_tile_actions``: the feedback plugin's "Relevant" /
    "Not relevant") act on it. A tile an action has marked shows the mark as a badge and
    an undo button. More than ``per_page`` objects are paged.
    """
    detail_dialog(index)
    if table.empty:
        st.caption("(nothing to show)")
        return
    width = tile_width()
    pages = max(1, -(-len(table) // per_page))
    page = 1
    if pages > 1:
        page_key = f"{key}.page"
        if st.session_state.get(page_key, 1) > pages:
            st.session_state[page_key] = 1
        with st.container(horizontal=True, vertical_alignment="bottom", gap="medium"):
            page = int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=page_key,
                                       width=160))
            st.caption(f"Objects {(page - 1) * per_page + 1}–{min(page * per_page, len(table))} of {len(table)}.")
    shown = table.iloc[(page - 1) * per_page: page * per_page]
    caption = caption or tile_caption
    index_path = str(index.path)
    buttons = list(tile_actions().values()) if actions else []
    badges = _badges(index, buttons) if buttons else {}
    with st.container(horizontal=True, wrap=True, gap="small", key=f"ulisse-grid-{key}"):
        for i, row in enumerate(shown.to_dict(orient="records")):
            oid = str(row["id"])
            n = (page - 1) * per_page + i
            marked = badges.get(oid)
            state = f"-mark{marked[2]}" if marked else ""  # the card's outline: the colour of its badge
            with st.container(key=f"ulisse-card-{key}-{n}{state}", width=width, gap="small"):
                with st.container(key=f"ulisse-tile-{key}-{n}"):
                    png = thumbnail_png(index, oid, oid in framed)
                    if png is None:
                        st.caption("(no image)")
                    else:
                        st.image(png, caption=caption(row), width="stretch")
                    st.button(f"Use {oid} as the prototype", key=f"ulisse-pick-{key}-{n}", on_click=set_prototypes,
                              args=([oid],), help=f"Search the neighbours of {oid}")
                if marked:
                    st.markdown(f":{BADGE_COLOURS[marked[2]]}-badge[{marked[1]}]")
                _tile_tools(key, n, oid, index_path, buttons, marked[0] if marked else None)


def _tile_tools(key: str, n: int, oid: str, index_path: str, actions: Sequence[TileAction],
                marked_by: TileAction | None) -> None:
    """The labelled buttons under one tile: Use as prototype, Add, Details, the plugins' actions (Unmark for the
    one that marked it)."""
    with st.container(key=f"ulisse-tools-{key}-{n}", horizontal=True, wrap=True, gap=None):
        st.button("Use as prototype", key=f"{key}.use.{n}", on_click=set_prototypes, args=([oid],),
                  help=f"Search the neighbours of {oid} (a click on the picture does the same)", type="tertiary")
        st.button("Add", key=f"{key}.add.{n}", on_click=add_prototype, args=(oid,),
                  help=f"Add {oid} to the prototypes (the query combines them)", type="tertiary")
        st.button("Details", key=f"{key}.detail.{n}", on_click=show_detail, args=(oid,),
                  help=f"{oid}: a larger view, its metadata and sky-viewer links", type="tertiary")
        for action in actions:
            if marked_by is not None and action.name == marked_by.name and action.undo is not None:
                st.button(action.undo_label, key=f"{key}.{action.name}.undo.{n}", on_click=run_tile_action,
                          args=(action, index_path, oid, True), help=f"Remove this mark from {oid}",
                          type="tertiary")
                continue
            st.button(action.label, key=f"{key}.{action.name}.{n}", on_click=run_tile_action,
                      args=(action, index_path, oid), help=action.help.replace("{id}", oid) or None,
                      type="tertiary")


def _close_detail() -> None:
    show_detail(None)


@st.dialog("Details", width="large", on_dismiss=_close_detail)
def _detail(index: ulisse.Index, object_id: str, key: str) -> None:
    object_detail(index, object_id, key=key)
    if st.session_state.pop("_kit.detail_done", False):  # a button here chose a prototype: the whole page follows
        st.rerun()


def detail_dialog(index: ulisse.Index, key: str = "detail") -> None:
    """The detail panel of the object the URL or a "Details" button chose: a dialog, where the user is.

    Drawn once per run (the first caller's ``key`` names its widgets); closing it clears the URL's ``detail``.
    """
    run = st.session_state.get("_kit.run")
    if st.session_state.get("_kit.detail_run") == run:
        return
    st.session_state["_kit.detail_run"] = run
    object_id = st.session_state.get(DETAIL)
    if not object_id:
        return
    if not has_object(index, object_id):
        st.warning(f"{object_id}: not in this index (from the URL's detail=); no details to show")
        show_detail(None)
        return
    _detail(index, str(object_id), key)


def _chosen(ids: list[str], add: bool = False) -> None:
    """A prototype chosen in the detail dialog: close it and let the page follow."""
    (add_prototype(ids[0]) if add else set_prototypes(ids))
    show_detail(None)
    st.session_state["_kit.detail_done"] = True


# -- one object ------------------------------------------------------------------------

def _stored_derived(index: ulisse.Index, row: int) -> pd.DataFrame | None:
    """The stored derived columns of one object (computing nothing: a set not stored for it is left out)."""
    parts = {}
    for name in index.derived_names():
        try:
            kept = index.derived_kept(name)
        except (UlisseError, OSError):
            continue
        if row < len(kept):
            parts.update(kept.iloc[row].to_dict())
    return pd.DataFrame([parts]) if parts else None


def object_detail(index: ulisse.Index, object_id: str, *, key: str = "detail") -> None:
    """A larger view of one object (FITS: asinh, linear or log stretch), its metadata row and sky-viewer links.

    Links (SkyServer Navigate/Explore, Legacy Surveys, Aladin Lite) appear only for
    objects with a position; they are plain links, nothing is fetched from them.
    """
    if not has_object(index, object_id):
        st.warning(f"{object_id}: not in this index")
        return
    row = index.metadata_rows([index.row_of(object_id)]).iloc[0]
    path = _images.source_path(index, object_id)
    left, right = st.columns([2, 3], gap="large")
    with left:
        image = None
        if _images.is_fits(path) and path.is_file():
            stretch = st.segmented_control("Stretch", _images.STRETCHES, default="asinh", key=f"{key}.stretch")
            image = _images.stretched_fits(path, stretch or "asinh", fits_rows=index.rgb.fits_rows)
        if image is None:
            image = ulisse.plot.thumbnail(index, object_id)
        if image is None:
            st.caption("(no image: the cutout file is gone)")
        else:
            st.image(_images.display_png(image, size=384), caption=object_id, width="stretch")
    with right:
        st.markdown(f"**{object_id}**")
        ra, dec = row.get("ra"), row.get("dec")
        if _sky.has_position(ra, dec):
            st.caption(f"RA, Dec: {_sky.format_position(float(ra), float(dec))}")
            st.markdown(" · ".join(link.markdown for link in _sky.viewer_links(ra, dec, object_id)))
            _samp.show_in_aladin(ra, dec, key=f"detail.{object_id}")
        else:
            st.caption("No sky position for this object (no links to sky viewers).")
        meta = row.drop(labels=[c for c in ("row",) if c in row.index]).to_frame().T
        if "source" in meta.columns:
            meta["source"] = [relative_source(index, meta["source"].iloc[0])]
        show_table(meta, key=f"{key}.meta")
        badge = badges_of(index, [object_id]).get(object_id)
        if badge:
            st.caption(f"Marked: {badge}")
        derived = _stored_derived(index, index.row_of(object_id))
        if derived is not None:
            st.caption("Derived columns (as stored with the index: anomaly scores, flags, predictions...)")
            show_table(derived, key=f"{key}.derived")
        b1, b2 = st.columns(2)
        b1.button("Use as prototype", key=f"{key}.use", on_click=_chosen, args=([object_id],), width="stretch")
        b2.button("Add to the prototypes", key=f"{key}.add", on_click=_chosen, args=([object_id], True),
                  width="stretch")
