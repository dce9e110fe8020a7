"""The public UI kit: what a web UI page needs, over the Python API (``ulisse.ui.kit``).

A page is a short Streamlit script; plugins register it with ``register_ui_pages``::

    import streamlit as st
    import ulisse.ui.kit as kit

    kit.page_setup("My page", url_state={"rows": ("mine.rows", int)})  # the page's own view, in the URL
    index = kit.current_index()              # the index chosen in the sidebar (opened once per process)
    rows = kit.slider("Rows", 1, 48, 24, key="mine.rows")
    table = index.derived_table().head(rows).assign(id=[index.id_of(r) for r in range(rows)])
    kit.tile_grid(table, index, key="mine", actions=True)  # tiles that reflow; Use as prototype, Add, Details, marks
    kit.download_buttons(table, "my-table")  # VOTable / FITS / CSV / ECSV, built only when clicked

The state that makes a view lives in the URL (``st.query_params``), so that a
reload or a shared URL restores it: the kit's own (index, page, prototypes,
detail, tile size), what each page declares in its :class:`~ulisse.registry.UIPage`
(``url_state``; ``persistent_keys`` are the widget values kept across pages) and
what a page declares in :func:`page_setup` (in the URL while that page is shown).
An id the index does not hold is reported the same way on every page
(:func:`known_prototypes`). The buttons under result tiles come from the
``register_tile_actions`` hook; an action with a ``badge`` marks its tiles
(a coloured outline and badge) and its ``undo`` removes one mark.
"""

from __future__ import annotations

import functools

import streamlit as st

from ulisse.ui import DASK_ENV, INDEX_ENV, MAX_UPLOAD_MB  # noqa: F401 (public here: pages read them from the kit)
from ulisse.ui.kit import _images
from ulisse.ui.kit._background import Job, job, job_status, start_job  # noqa: F401
from ulisse.ui.kit._index import (OTHER_INDEX, current_index, has_object, index_candidates,  # noqa: F401
                                  index_from_key, index_key, index_lock, known_prototypes, with_encoder)
from ulisse.ui.kit._overview import (PICK_SORTS, default_prototype, default_prototype_reason,  # noqa: F401
                                     sky_footprint_png, sort_for_picking)
from ulisse.ui.kit._samp import samp_buttons, show_in_aladin  # noqa: F401
from ulisse.ui.kit._sky import ResolveError, format_position, parse_position, viewer_links  # noqa: F401
from ulisse.ui.kit._state import (DETAIL, NONE_TEXT, PROTOS, PROTOTYPE_PAGE, add_prototype, url_bool,  # noqa: F401
                                  declare_url_state, go_to_page, recall_upload, remember_upload, keep_widget_values, persistent_keys, prototype_page, prototypes,
                                  registered_pages, restore_from_url, set_prototypes, show_detail, sync_url,
                                  url_state, use_as_prototype)
from ulisse.ui.kit._tables import (display_table, distance_text, download_buttons, export_table,  # noqa: F401
                                   fractions_view, number_text, relative_source, show_table)
from ulisse.ui.kit._tiles import (badges_of, detail_dialog, object_detail, run_tile_action, thumbnail_png,  # noqa: F401
                                  tile_caption, tile_grid, tile_width)
from ulisse.ui.kit._uploads import UploadError, decode_upload  # noqa: F401
from ulisse.ui.kit._widgets import (MAX_CLASSES, choose_label, label_columns, progress_shown, slider,  # noqa: F401
                                    valid_choice)

__all__ = [
    # a page's frame and its index
    "page_setup", "current_index", "has_object", "index_key", "index_from_key", "index_lock", "with_encoder",
    # the view's state: prototypes, detail, pages, URL
    "prototypes", "set_prototypes", "add_prototype", "use_as_prototype", "show_detail", "go_to_page",
    "prototype_page", "registered_pages", "sync_url", "known_prototypes", "PROTOS", "DETAIL",
    # thumbnails and one object
    "tile_grid", "tile_caption", "tile_width", "thumbnail_png", "display_png", "object_detail", "detail_dialog",
    "default_prototype", "default_prototype_reason", "sort_for_picking", "PICK_SORTS", "sky_footprint_png",
    # controls, tables, downloads
    "slider", "choose_label", "label_columns", "fractions_view", "show_table", "display_table", "number_text",
    "download_buttons", "samp_buttons", "show_in_aladin", "viewer_links",
    # long work: a progress bar with the time left; work the page does not wait for
    "progress_shown", "start_job", "job", "job_status", "Job",
    # what a user types or uploads
    "format_position", "parse_position", "decode_upload", "UploadError", "MAX_UPLOAD_MB", "remember_upload",
    "recall_upload",
]

display_png = _images.display_png  # an RGB cutout as PNG for the page (small ones enlarged, crisp pixels)

STYLE = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.5rem; }
[data-testid="stImageCaption"] { line-height: 1.3; white-space: pre-line; overflow-wrap: normal; word-break: normal;
  font-size: 0.78rem; }
div[class*="st-key-ulisse-card-"] { border-radius: 6px; padding: 3px; }
div[class*="st-key-ulisse-card-"][class*="-mark0"] { outline: 3px solid #2e7d32; }
div[class*="st-key-ulisse-card-"][class*="-mark1"] { outline: 3px solid #c62828; }
div[class*="st-key-ulisse-card-"][class*="-mark"]:not([class*="-mark0"]):not([class*="-mark1"]) {
  outline: 3px solid #2f6db5; }
div[class*="st-key-ulisse-tile-"] { position: relative; border-radius: 6px; }
div[class*="st-key-ulisse-tile-"]:hover { outline: 2px dashed #555; }  /* not a mark colour */
div[class*="st-key-ulisse-pick-"] { position: absolute; inset: 0; z-index: 3; width: 100% !important; }
div[class*="st-key-ulisse-pick-"] div { position: static !important; }
div[class*="st-key-ulisse-pick-"] button { position: absolute; inset: 0; width: 100%; height: 100%; opacity: 0;
  cursor: pointer; }
div[class*="st-key-ulisse-tools-"] { column-gap: 0.6rem; row-gap: 0; }
div[class*="st-key-ulisse-tools-"] button { padding: 0; min-height: 1.4rem; }
div[class*="st-key-ulisse-tools-"] button p { font-size: 0.8rem; }
button p, [data-testid="stMetricValue"] div, [data-testid="stMetricLabel"] p, [data-testid="stCaptionContainer"] code,
[role="radiogroup"] p { white-space: nowrap; overflow-wrap: normal; word-break: normal; }
[data-testid="stMetricValue"] { font-size: 1.6rem; }
[data-testid="stMarkdownContainer"] p, [data-testid="stCaptionContainer"] { overflow-wrap: normal; word-break: normal; }
</style>"""


@functools.lru_cache(maxsize=1)
def _icon():
    """The page icon, drawn here (a named or emoji icon would be fetched from a font server)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    draw.ellipse((4, 4, 60, 60), fill=(20, 32, 64, 255))
    draw.ellipse((22, 22, 42, 42), fill=(240, 200, 80, 255))
    draw.ellipse((46, 12, 52, 18), fill=(255, 255, 255, 255))
    return im


def page_setup(title: str, url_state: dict | None = None) -> None:
    """Wide layout, the page title and icon, the view restored from the URL, widget values kept across pages.

    Call it first in every page script. What the URL holds and which widget values
    are kept come from the registered pages (``UIPage.url_state``, ``UIPage.persistent_keys``)
    and from ``url_state`` here (same form: URL parameter -> session key, or -> ``(key, convert)``):
    the page's own view, restored from a shared link and kept across pages.
    """
    st.set_page_config(page_title=f"{title} · ulisse", page_icon=_icon(), layout="wide")
    st.html(STYLE)
    st.session_state["_kit.run"] = st.session_state.get("_kit.run", 0) + 1
    pages = registered_pages()
    if not st.session_state.get("_kit.restored"):
        restore_from_url(pages)
        st.session_state["_kit.restored"] = True
    st.session_state["_kit.title"] = title
    declare_url_state(title, url_state)
    keep_widget_values(pages)
