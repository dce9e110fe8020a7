"""Thumbnails: the tile grid (click to make the prototype, the plugins' tile actions) and one object's detail."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import streamlit as st

import ulisse
from ulisse.errors import UlisseError
from ulisse.registry import TileAction, tile_actions
from ulisse.ui.kit import _images, _sky
from ulisse.ui.kit._index import _open_index, has_object, index_key, open_path
from ulisse.ui.kit._state import add_prototype, set_prototypes, show_detail
from ulisse.ui.kit._tables import distance_text, relative_source, show_table


@st.cache_data(max_entries=20_000, show_spinner=False)
def _thumbnail(path: str, generation: int, object_id: str, framed: bool) -> bytes | None:
    index = _open_index(path, generation)
    image = ulisse.plot.thumbnail(index, object_id)
    return None if image is None else _images.display_png(image, framed)


def thumbnail_png(index: ulisse.Index, object_id: str, framed: bool = False) -> bytes | None:
    """The cutout of an index object as PNG for the page (None when its file is gone)."""
    return _thumbnail(*index_key(index), str(object_id), framed)


def tile_caption(row: dict) -> str:
    """``#rank id`` / ``d = distance`` (or score) / ``RA Dec``: what a tile says about its object."""
    head = f"#{row['rank']} {row['id']}" if pd.notna(row.get("rank", np.nan)) else str(row["id"])
    lines = [head]
    if pd.notna(row.get("distance", np.nan)):
        lines.append(f"d = {distance_text(float(row['distance']))}"
                     + (f" ← {row['found_by']}" if isinstance(row.get("found_by"), str) else ""))
    elif pd.notna(row.get("score", np.nan)):
        lines.append(f"score {distance_text(float(row['score']))}")
    if _sky.has_position(row.get("ra"), row.get("dec")):
        lines.append(f"{float(row['ra']):.5f} {float(row['dec']):+.5f}")
    return "  \n".join(lines)


def run_tile_action(action: TileAction, index_path: str, object_id: str) -> None:
    """Run a plugin's tile action on one object (a button callback); a ulisse error is a message, not a traceback."""
    try:
        action.run(open_path(index_path), object_id)
    except UlisseError as exc:
        st.error(f"{action.label} {object_id}: {exc}")


def tile_grid(table: pd.DataFrame, index: ulisse.Index, *, key: str, columns: int = 6, per_page: int = 24,
              caption: Callable[[dict], str] | None = None, actions: bool = False,
              framed: Sequence[str] = ()) -> None:
    """Thumbnails of the objects of ``table`` (a column ``id``; ``rank``, ``distance``/``score``, ``ra``, ``dec`` shown).

    Clicking a tile makes its object the prototype (and opens the page that accepts
    prototypes); under each tile, ``+`` adds it to the prototypes, ``ⓘ`` opens it in
    the detail panel and, with ``actions=True``, the tile actions plugins register
    (``register_tile_actions``: the feedback plugin's 👍/👎 mark it relevant or not)
    act on it. More than ``per_page`` objects are paged.
    """
    if table.empty:
        st.caption("(nothing to show)")
        return
    pages = max(1, -(-len(table) // per_page))
    page = 1
    if pages > 1:
        page_key = f"{key}.page"
        if st.session_state.get(page_key, 1) > pages:
            st.session_state[page_key] = 1
        page_col, note_col = st.columns([1, 4], vertical_alignment="bottom")
        page = int(page_col.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=page_key))
        note_col.caption(f"Objects {(page - 1) * per_page + 1}–{min(page * per_page, len(table))} of {len(table)}.")
    shown = table.iloc[(page - 1) * per_page: page * per_page]
    caption = caption or tile_caption
    index_path = str(index.path)
    buttons = list(tile_actions().values()) if actions else []
    rows = shown.to_dict(orient="records")
    for start in range(0, len(rows), columns):
        for col, (i, row) in zip(st.columns(columns, gap="small"), enumerate(rows[start:start + columns], start)):
            oid = str(row["id"])
            n = (page - 1) * per_page + i
            with col:
                with st.container(key=f"ulisse-tile-{key}-{n}"):
                    png = thumbnail_png(index, oid, oid in framed)
                    if png is None:
                        st.caption("(no image)")
                    else:
                        st.image(png, caption=caption(row), width="stretch")
                    st.button(f"Use {oid} as the prototype", key=f"ulisse-pick-{key}-{n}", on_click=set_prototypes,
                              args=([oid],), help=f"Search the neighbours of {oid}")
                with st.container(key=f"ulisse-tools-{key}-{n}", horizontal=True, gap="small"):
                    st.button("＋", key=f"{key}.add.{n}", on_click=add_prototype, args=(oid,),
                              help=f"Add {oid} to the prototypes", type="tertiary")
                    st.button("ⓘ", key=f"{key}.detail.{n}", on_click=show_detail, args=(oid,),
                              help=f"Details of {oid}", type="tertiary")
                    for action in buttons:
                        st.button(action.label, key=f"{key}.{action.name}.{n}", on_click=run_tile_action,
                                  args=(action, index_path, oid), help=action.help.replace("{id}", oid) or None,
                                  type="tertiary")


# -- one object ------------------------------------------------------------------------

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
            image = _images.stretched_fits(path, stretch or "asinh")
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
            st.markdown(" · ".join(f"[{link.name}]({link.url})" for link in _sky.viewer_links(ra, dec, object_id)))
        else:
            st.caption("No sky position for this object (no links to sky viewers).")
        meta = row.drop(labels=[c for c in ("row",) if c in row.index]).to_frame().T
        if "source" in meta.columns:
            meta["source"] = [relative_source(index, meta["source"].iloc[0])]
        show_table(meta, key=f"{key}.meta")
        b1, b2 = st.columns(2)
        b1.button("Use as the prototype", key=f"{key}.use", on_click=set_prototypes, args=([object_id],),
                  icon=":material/search:", width="stretch")
        b2.button("Add to the prototypes", key=f"{key}.add", on_click=add_prototype, args=(object_id,),
                  icon=":material/add:", width="stretch")
