"""The public UI kit: what a web UI page needs, over the Python API (``ulisse.ui.kit``).

A page is a short Streamlit script; plugins register it with ``register_ui_pages``::

    import streamlit as st
    from ulisse.ui import kit

    kit.page_setup("My page")
    index = kit.current_index()              # the index chosen in the sidebar (opened once per process)
    table = index.derived_table().head(24).assign(id=[index.id_of(r) for r in range(24)])
    kit.tile_grid(table, index, key="mine")  # click a tile: it becomes the prototype (Search page)
    kit.object_detail(index, table["id"].iloc[0])
    kit.download_buttons(table, "my-table")  # CSV / VOTable, built only when clicked

The state that makes a view (index, page, prototypes, k, label column, combine)
lives in the URL (``st.query_params``): a reload or a shared URL restores it.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import streamlit as st

import ulisse
from ulisse.errors import UlisseError
from ulisse.indexes import store
from ulisse.labels import NOT_LABELS
from ulisse.ui import INDEX_ENV, MAX_UPLOAD_MB  # noqa: F401 (public here: pages read the upload limit from the kit)
from ulisse.ui.kit import _images, _sky

__all__ = ["page_setup", "current_index", "tile_grid", "object_detail", "download_buttons", "prototypes",
           "set_prototypes", "add_prototype", "use_as_prototype", "index_key", "index_from_key", "index_lock",
           "with_encoder", "go_to_page", "sync_url", "choose_label", "label_columns", "slider", "fractions_view",
           "show_table", "display_table", "display_png", "thumbnail_png", "number_text"]

display_png = _images.display_png  # an RGB cutout as PNG for the page (small ones enlarged, crisp pixels)

SEARCH_PAGE = "Search"
MAX_CLASSES = 50  # a metadata column with more distinct values is not offered as class labels
OTHER_INDEX = "Other directory…"
PROTOS = "ulisse.protos"  # session key: the prototype ids (the URL's ``proto``)
DETAIL = "ulisse.detail"  # session key: the object in the detail panel (the URL's ``detail``)
# URL parameter -> session-state key. ``proto`` repeats, one per prototype.
URL_STATE = {"index": "index_path", "page": "page", "proto": PROTOS, "k": "search.k", "label": "search.label",
             "combine": "search.combine", "detail": DETAIL}
INT_PARAMS = ("k",)
NONE_TEXT = "(none)"  # in the URL: a choice of "none" (no label column), not a missing parameter
# Widget values that survive a change of page (Streamlit forgets widgets a run does not draw).
PERSISTENT_KEYS = ("index.choice", "index.other", "search.mode", "search.id", "search.position", "search.radius",
                   "search.k", "search.label", "search.combine", "expand.k", "expand.iterations", "expand.budget",
                   "expand.label", "anomalies.method", "anomalies.k", "anomalies.top", "anomalies.label")

STYLE = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.5rem; }
[data-testid="stImageCaption"] { line-height: 1.3; white-space: pre-line; }
div[class*="st-key-ulisse-tile-"] { position: relative; border-radius: 6px; }
div[class*="st-key-ulisse-tile-"]:hover { outline: 2px solid #c8102e; }
div[class*="st-key-ulisse-pick-"] { position: absolute; inset: 0; z-index: 3; width: 100% !important; }
div[class*="st-key-ulisse-pick-"] div { position: static !important; }
div[class*="st-key-ulisse-pick-"] button { position: absolute; inset: 0; width: 100%; height: 100%; opacity: 0;
  cursor: pointer; }
div[class*="st-key-ulisse-tools-"] button { padding: 0 0.3rem; min-height: 1.6rem; }
</style>"""


# -- page setup ----------------------------------------------------------------

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


def page_setup(title: str) -> None:
    """Wide layout, the page title and icon, the view restored from the URL, widget values kept across pages.

    Call it first in every page script.
    """
    st.set_page_config(page_title=f"{title} · ulisse", page_icon=_icon(), layout="wide")
    st.html(STYLE)
    st.session_state["_kit.run"] = st.session_state.get("_kit.run", 0) + 1
    if not st.session_state.get("_kit.restored"):
        restore_from_url()
        st.session_state["_kit.restored"] = True
    for key in PERSISTENT_KEYS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def restore_from_url() -> None:
    """Put the URL's view (``?index=&page=&proto=&k=&label=&combine=&detail=``) into the session state."""
    params = st.query_params
    for name, key in URL_STATE.items():
        if name not in params:
            continue
        if name == "proto":
            st.session_state[key] = [p for p in params.get_all("proto") if p]
        elif name in INT_PARAMS:
            try:
                st.session_state[key] = int(params[name])
            except ValueError:
                pass
        else:
            st.session_state[key] = None if params[name] in ("", NONE_TEXT) else params[name]
    if st.session_state.get(PROTOS):
        st.session_state["search.mode"] = "Object id"
        st.session_state["search.id"] = ", ".join(st.session_state[PROTOS])


def sync_url() -> None:
    """Write the view's state into the URL (only what changed), so that it can be reloaded or shared."""
    for name, key in URL_STATE.items():
        value = st.session_state.get(key)
        if name == "proto":
            value = [str(v) for v in value or []]
            if value != st.query_params.get_all("proto"):
                if value:
                    st.query_params["proto"] = value
                else:
                    st.query_params.pop("proto", None)
            continue
        if value is None and key in st.session_state and name == "label":
            value = NONE_TEXT  # chosen: no label column
        text = "" if value is None else str(value)
        if st.query_params.get(name, "") != text:
            if text:
                st.query_params[name] = text
            else:
                st.query_params.pop(name, None)


def go_to_page(title: str) -> None:
    """Switch the app's page (a no-op when a page script runs on its own)."""
    from ulisse.registry import ui_pages

    if "page" in st.session_state and title in [p.title for p in ui_pages()]:
        st.session_state["page"] = title


# -- prototypes ----------------------------------------------------------------

def prototypes() -> list[str]:
    """The ids of the current prototypes (shared by every page and kept in the URL)."""
    return list(st.session_state.get(PROTOS) or [])


def set_prototypes(ids: Sequence[str], page: str | None = SEARCH_PAGE) -> None:
    """Make ``ids`` the prototypes (and go to ``page``); usable as a widget callback."""
    ids = [str(i) for i in dict.fromkeys(ids) if str(i)]
    st.session_state[PROTOS] = ids
    _set_widget("search.mode", "Object id")
    _set_widget("search.id", ", ".join(ids))
    if page:
        go_to_page(page)


def _set_widget(key: str, value) -> None:
    """Set a widget's value; outside a callback, a widget already drawn in this run keeps its own."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.session_state[key] = value
    except StreamlitAPIException:
        pass


def use_as_prototype(object_id: str) -> None:
    """Make ``object_id`` the only prototype and open the Search page (a widget callback)."""
    set_prototypes([object_id])


def add_prototype(object_id: str) -> None:
    """Add ``object_id`` to the prototypes (the query combines them)."""
    set_prototypes(prototypes() + [object_id])


def show_detail(object_id: str | None) -> None:
    st.session_state[DETAIL] = object_id


# -- the index -----------------------------------------------------------------

@st.cache_resource(max_entries=4, show_spinner="Opening the index…")
def _open_index(path: str, generation: int) -> ulisse.Index:
    return ulisse.open_index(path)


@st.cache_resource(max_entries=2, show_spinner="Loading the encoder…")
def _load_encoder(spec_json: str, device: str):
    import json

    from ulisse.encoder import Encoder, EncoderSpec

    return Encoder.from_spec(EncoderSpec.from_dict(json.loads(spec_json)), device=device)


def with_encoder(index: ulisse.Index) -> ulisse.Index:
    """The index with its encoder loaded: one model per encoder spec for the whole process."""
    import json

    spec = json.dumps(index.encoder_spec.to_dict(), sort_keys=True)
    index.use_encoder(_load_encoder(spec, index.device))
    return index


@st.cache_resource(show_spinner=False)
def _lock(path: str) -> threading.Lock:
    return threading.Lock()


@contextmanager
def index_lock(index: ulisse.Index):
    """One search at a time on an index: sessions share it (a GPU index or an encoder is not thread-safe)."""
    with _lock(str(index.path)):
        yield index


def index_key(index: ulisse.Index) -> tuple[str, int]:
    """``(path, generation)``: a hashable key of the index as it is now, for ``st.cache_data`` functions."""
    return str(Path(index.path).resolve()), int(index.manifest.get("generation", 0))


def index_from_key(key: tuple[str, int]) -> ulisse.Index:
    """The open index of a key from :func:`index_key` (inside cached functions)."""
    return _open_index(*key)


def _open(path: str) -> ulisse.Index:
    resolved = Path(path).expanduser().resolve()
    manifest = store.read_manifest(resolved)
    return _open_index(str(resolved), int(manifest.get("generation", 0)))


def index_candidates(root: str | os.PathLike | None = None) -> list[str]:
    """Index directories under ``root/indexes`` and ``root/ulisse-demo`` (default: the working directory)."""
    found = set()
    for base in ("indexes", "ulisse-demo"):
        folder = Path(root or Path.cwd()) / base
        for pattern in (store.MANIFEST, f"*/{store.MANIFEST}", f"*/*/{store.MANIFEST}"):
            found.update(p.parent.resolve() for p in folder.glob(pattern))
    return [str(p) for p in sorted(found)]


def _short_path(path: str) -> str:
    if path == OTHER_INDEX:
        return path
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def current_index() -> ulisse.Index:
    """The index chosen in the sidebar, open (cached per path and generation, shared by every session).

    Its first choice is the URL's ``?index=``, then ``ULISSE_UI_INDEX`` (``ulisse ui --index DIR``),
    then the index directories under ``./indexes`` and ``./ulisse-demo``. Stops the page with a
    message when there is no usable index. The chooser is drawn once per run; later calls reuse it.
    """
    run = st.session_state.get("_kit.run")
    done = st.session_state.get("_kit.index_run")
    if done and done[0] == run:
        return _open(done[1])
    first = st.session_state.get("index_path") or os.environ.get(INDEX_ENV)
    first = str(Path(first).expanduser().resolve()) if first else None
    options = list(dict.fromkeys(([first] if first else []) + index_candidates())) + [OTHER_INDEX]
    if st.session_state.get("index.choice") not in options:
        st.session_state.pop("index.choice", None)
    choice = st.sidebar.selectbox("Index", options, key="index.choice", format_func=_short_path,
                                  help="An index directory (built by `ulisse index build` or `ulisse demo`).")
    path = st.sidebar.text_input("Index directory", key="index.other", placeholder="path/to/index") \
        if choice == OTHER_INDEX else choice
    if not path:
        st.info("Choose an index in the sidebar. No index yet? `ulisse demo` builds one from the Hubble Deep Field.")
        st.stop()
    try:
        index = _open(path)
    except UlisseError as exc:
        st.error(str(exc))
        st.stop()
    resolved = str(Path(index.path).resolve())
    previous = st.session_state.get("index_path")
    if previous and str(Path(previous).expanduser().resolve()) != resolved:  # another index: its ids, not the last one's
        for key in (PROTOS, DETAIL, "search.id"):
            st.session_state.pop(key, None)
    st.session_state["index_path"] = resolved
    st.session_state["_kit.index_run"] = (run, resolved)
    st.sidebar.caption(f"{len(index):,} objects · {index.encoder_spec.model_name} · "
                       f"{index.manifest.get('factory', '?')} · generation {index.manifest.get('generation', 0)}")
    return index


def has_object(index: ulisse.Index, object_id: str) -> bool:
    try:
        index.row_of(object_id)
    except UlisseError:
        return False
    return True


# -- small controls --------------------------------------------------------------

def slider(label: str, low: int, high: int, value: int, key: str, **kwargs) -> int:
    """An integer sidebar slider whose remembered value (or the URL's) is kept inside ``[low, high]``."""
    if high <= low:
        st.sidebar.caption(f"{label}: {low}")
        return low
    if key not in st.session_state:
        st.session_state[key] = value
    st.session_state[key] = int(min(max(int(st.session_state[key]), low), high))
    return int(st.sidebar.slider(label, low, high, key=key, **kwargs))


def label_columns(index: ulisse.Index) -> list[str]:
    """Metadata columns that look like classes: not floats, at most ``MAX_CLASSES`` distinct values."""
    out = []
    for col in index.metadata_columns:
        if col in NOT_LABELS or col in ("ra", "dec"):
            continue
        values = index.metadata_column(col)  # one column at a time, kept by the index
        if pd.api.types.is_float_dtype(values):
            continue
        if 1 <= values.nunique(dropna=True) <= MAX_CLASSES:
            out.append(col)
    return out


def choose_label(index: ulisse.Index, key: str) -> str | None:
    """A sidebar choice of the label column for class fractions (None: no fractions)."""
    columns = label_columns(index)
    if not columns:
        st.sidebar.caption("No class column in this index (class fractions need a metadata column of classes).")
        return None
    options = [None] + columns
    if key not in st.session_state or st.session_state[key] not in options:
        st.session_state[key] = columns[0]
    return st.sidebar.selectbox("Class labels", options, key=key, format_func=lambda c: "(none)" if c is None else c,
                                help="A metadata column of classes: its fractions among the results "
                                     "beside its base rate over the whole index.")


# -- numbers and tables ---------------------------------------------------------------

def number_text(x) -> str:
    """A number in full for the eye: integers as they are, others to 10 significant digits (183321.3333)."""
    if isinstance(x, (bool, np.bool_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "" if x is None else str(x)
    if not np.isfinite(v):
        return ""
    return f"{v:.10g}"


def distance_text(d: float) -> str:
    """A distance (or score) for a caption: two decimals, or three significant digits when small."""
    return f"{d:.2f}" if abs(d) >= 1 else f"{d:.3g}"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """A result table for the eye: numbers written in full, no row numbers, paths or empty columns."""
    empty = [c for c in table.columns if table[c].isna().all() and c not in ("rank", "id")]
    out = table.drop(columns=[c for c in ("row", "source") if c in table.columns] + empty)
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(number_text)
    return out


def show_table(table: pd.DataFrame, **kwargs) -> None:
    """``st.dataframe`` of :func:`display_table` (numbers as full text: a narrow column never cuts digits)."""
    st.dataframe(display_table(table), hide_index=True, **kwargs)


def fractions_view(fractions: pd.DataFrame, label: str, names: dict | None = None) -> None:
    """Class fractions (rows = classes, columns = lists compared with the base rate): a table and a bar chart."""
    import altair as alt

    names = names or {}
    shown = fractions.rename(columns=lambda c: names.get(c, "base rate" if c == "base_rate" else
                                                        (f"first {c}" if isinstance(c, (int, np.integer)) else str(c))))
    shown.index = shown.index.astype(str)
    shown.index.name = fractions.index.name or "class"
    left, right = st.columns([2, 3], gap="large")
    with left:
        st.dataframe(shown, column_config={c: st.column_config.NumberColumn(format="percent") for c in shown.columns})
    lists = list(shown.columns)
    long = shown.rename_axis("class").reset_index().melt(id_vars="class", var_name="list", value_name="fraction")
    palette = ["#c8102e", "#2f6db5", "#e69f00", "#009e73"]
    colours = [("#a7a7a7" if c == "base rate" else palette[i % len(palette)]) for i, c in enumerate(lists)]
    with right:
        st.altair_chart(alt.Chart(long).mark_bar().encode(
            x=alt.X("class:N", sort=list(shown.index), title=label, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("list:N", sort=lists),
            y=alt.Y("fraction:Q", title="fraction", axis=alt.Axis(format="%")),
            color=alt.Color("list:N", sort=lists, scale=alt.Scale(domain=lists, range=colours),
                            legend=alt.Legend(title=None, orient="bottom")),
            tooltip=[alt.Tooltip("class:N", title=label), "list:N", alt.Tooltip("fraction:Q", format=".1%")],
        ).properties(height=240), width="stretch")


# -- thumbnails ------------------------------------------------------------------

@st.cache_data(max_entries=20_000, show_spinner=False)
def _thumbnail(path: str, generation: int, object_id: str, framed: bool) -> bytes | None:
    index = _open_index(path, generation)
    image = ulisse.plot.thumbnail(index, object_id)
    return None if image is None else _images.display_png(image, framed)


def thumbnail_png(index: ulisse.Index, object_id: str, framed: bool = False) -> bytes | None:
    """The cutout of an index object as PNG for the page (None when its file is gone)."""
    return _thumbnail(str(Path(index.path).resolve()), int(index.manifest.get("generation", 0)), str(object_id), framed)


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


def _mark(index_path: str, object_id: str, relevant: bool) -> None:
    from ulisse.plugins.feedback import mark

    mark(ulisse.open_index(index_path), [object_id], relevant)
    st.session_state["ulisse.marks_changed"] = st.session_state.get("ulisse.marks_changed", 0) + 1


def tile_grid(table: pd.DataFrame, index: ulisse.Index, *, key: str, columns: int = 6, per_page: int = 24,
              caption: Callable[[dict], str] | None = None, marks: bool = False, framed: Sequence[str] = ()) -> None:
    """Thumbnails of the objects of ``table`` (a column ``id``; ``rank``, ``distance``/``score``, ``ra``, ``dec`` shown).

    Clicking a tile makes its object the prototype (and opens the Search page); under
    each tile, ``+`` adds it to the prototypes, ``ⓘ`` opens it in the detail panel and,
    with ``marks=True``, 👍/👎 mark it relevant or not (kept with the index). More
    than ``per_page`` objects are paged.
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
                    if marks:
                        st.button("👍", key=f"{key}.yes.{n}", on_click=_mark, args=(index_path, oid, True),
                                  help=f"Mark {oid} relevant", type="tertiary")
                        st.button("👎", key=f"{key}.no.{n}", on_click=_mark, args=(index_path, oid, False),
                                  help=f"Mark {oid} not relevant", type="tertiary")


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


# -- downloads ---------------------------------------------------------------------------

def relative_source(index: ulisse.Index | str | None, source):
    """A ``source`` path relative to the index directory (never the server's absolute path)."""
    if not isinstance(source, str) or not source or index is None:
        return source
    base = Path(index if isinstance(index, (str, os.PathLike)) else index.path).resolve()
    path = Path(source)
    if not path.is_absolute():
        return source
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive
        return path.name


def export_table(table: pd.DataFrame, index: ulisse.Index | str | None = None) -> pd.DataFrame:
    """The table as downloaded: no ``row`` column, ``source`` relative to the index."""
    out = table.drop(columns=["row"], errors="ignore").copy()
    if "source" in out.columns:
        out["source"] = [relative_source(index, s) for s in out["source"]]
    return out


def download_buttons(table: pd.DataFrame, name: str, *, index: ulisse.Index | None = None,
                     meta: dict | None = None, key: str | None = None) -> None:
    """CSV and VOTable download buttons; the files are made only when a button is clicked.

    ``source`` paths are written relative to ``index`` (the current index by default).
    """
    from ulisse.results import render
    from ulisse.ui.kit._uploads import safe_stem

    if index is None and st.session_state.get("index_path"):
        index = st.session_state["index_path"]
    out = export_table(table, index)
    info = {k: str(v) for k, v in (meta or {}).items()}
    stem = safe_stem(name)
    key = key or f"download.{stem}"
    csv_col, vot_col, _ = st.columns([1, 1, 3])
    csv_col.download_button("Download CSV", lambda: render(out, "csv", info), f"{stem}.csv", "text/csv",
                            key=f"{key}.csv", on_click="ignore", icon=":material/download:", width="stretch")
    vot_col.download_button("Download VOTable", lambda: render(out, "votable", info), f"{stem}.xml",
                            "application/x-votable+xml", key=f"{key}.votable", on_click="ignore",
                            icon=":material/download:", width="stretch")
