"""Search: the nearest neighbours of one or more prototypes, with sky context, marks and downloads.

A prototype is an object of the index (by id, by sky position, or by clicking its
tile) or an uploaded cutout (PNG, JPEG, FITS). Several prototypes combine with a
registered query strategy (mean, union...). The view lives in the URL. Runs inside
the app or alone: ``ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/prototype/page.py``.
"""

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from ulisse.errors import UlisseError
from ulisse.prototypes import DEFAULT_RADIUS_ARCSEC, Prototype, match_position
from ulisse.registry import query_strategies, tile_actions
import ulisse.ui.kit as kit
from ulisse.ui.kit import MAX_UPLOAD_MB, UploadError, decode_upload, display_png, format_position, parse_position

MODES = ("Object id", "Sky position", "Pick a thumbnail", "Upload a cutout")
PICK_PAGE = 24


@st.cache_data(max_entries=64, show_spinner="Searching…")
def neighbours(path: str, generation: int, protos: tuple, k: int, combine: str, label: str | None, _image=None,
               image_key: str | None = None):
    index = kit.index_from_key((path, generation))
    with kit.index_lock(index):
        if _image is not None:
            kit.with_encoder(index)
            protos = (Prototype("image", _image),)
        strategy = query_strategies()[combine]
        return strategy.run(index, list(protos), k=k, label=label)


def follow_prototypes(switch_mode: bool = True) -> None:
    """Show the prototypes chosen elsewhere (a tile click, a shared URL, another index) as the typed ids.

    Call it before the widgets it sets are drawn (or from a callback); ``switch_mode``
    also turns the prototype choice to "Object id" when there are prototypes.
    """
    protos = kit.prototypes()
    shown = st.session_state.get("search.shown")
    if shown == protos or (shown is None and not protos):
        st.session_state["search.shown"] = protos
        return
    st.session_state["search.shown"] = protos
    st.session_state["search.id"] = ", ".join(protos)
    if switch_mode and protos:
        st.session_state["search.mode"] = MODES[0]


def on_ids_typed() -> None:
    typed = [p.strip() for p in st.session_state.get("search.id", "").split(",") if p.strip()]
    kit.set_prototypes(typed, page=None)
    follow_prototypes()


kit.page_setup("Search")
index = kit.current_index()
path, generation = kit.index_key(index)
k = kit.slider("Neighbours (k)", 1, max(1, min(100, len(index) - 1)), 12, key="search.k")
label = kit.choose_label(index, key="search.label")
strategies = query_strategies()
combines = [name for name in ("mean", "union") if name in strategies] + \
    [name for name in strategies if name not in ("mean", "union")]
if st.session_state.get("search.combine") not in combines:
    st.session_state["search.combine"] = combines[0]
combine = st.sidebar.selectbox("Combine prototypes", combines, key="search.combine",
                               help="How several prototypes make one query (the query strategies plugins register): "
                                    + "; ".join(f"{n}: {strategies[n].description}" for n in combines))

st.title("Search")
st.caption("One-shot similarity search: the objects nearest to a prototype in the feature space of an "
           "ImageNet EfficientNet (ULISSE). Click a tile to make it the prototype; ＋ adds it to the prototypes.")

follow_prototypes()
if "search.mode" not in st.session_state:
    st.session_state["search.mode"] = MODES[0]
mode = st.radio("Prototype", MODES, key="search.mode", horizontal=True)
protos = [p for p in kit.prototypes() if kit.has_object(index, p)]
image = None
prototype_png = None
if mode == "Object id":
    if not protos and not st.session_state.get("search.id"):
        kit.set_prototypes([index.id_of(0)], page=None)
        follow_prototypes(switch_mode=False)
        protos = kit.prototypes()
    st.text_input("Object id(s)", key="search.id", on_change=on_ids_typed,
                  help="One object of the index, or several separated by commas (left out of the results).")
    typed = [p.strip() for p in st.session_state.get("search.id", "").split(",") if p.strip()]
    protos = typed or protos
    st.session_state[kit.PROTOS] = st.session_state["search.shown"] = protos
elif mode == "Sky position":
    placed = pd.DataFrame({c: index.metadata_column(c) for c in ("ra", "dec")}).dropna()
    if placed.empty:
        st.warning("This index has no sky positions (ra, dec) for its objects: choose a prototype another way.")
        protos = []
    else:
        with st.form("search.sky", border=False):
            pos_col, radius_col, button_col = st.columns([4, 1, 1], vertical_alignment="bottom")
            if "search.position" not in st.session_state:
                st.session_state["search.position"] = f"{placed['ra'].iloc[0]:.6f} {placed['dec'].iloc[0]:+.6f}"
            if "search.radius" not in st.session_state:
                st.session_state["search.radius"] = DEFAULT_RADIUS_ARCSEC
            pos_col.text_input("Position: RA Dec in degrees or sexagesimal (10:00:24 +02:12:00), or a name",
                               key="search.position")
            radius_col.number_input("Radius (arcsec)", min_value=0.01, format="%.2f", key="search.radius")
            asked = button_col.form_submit_button("Search", icon=":material/search:", width="stretch")
        if asked:
            try:
                coord = parse_position(st.session_state["search.position"])
                row, sep = match_position(index, float(coord.ra.deg), float(coord.dec.deg),
                                          float(st.session_state["search.radius"]))
            except UlisseError as exc:
                st.session_state["search.sky_match"] = {"error": str(exc)}
            else:
                matched = index.id_of(row)
                st.session_state["search.sky_match"] = {
                    "id": matched, "sep": sep, "asked": format_position(float(coord.ra.deg), float(coord.dec.deg))}
                kit.set_prototypes([matched], page=None)
                follow_prototypes(switch_mode=False)
        match = st.session_state.get("search.sky_match")
        if match and "error" in match:
            st.error(match["error"])
            protos = []
        elif match:
            st.success(f"Matched **{match['id']}** at {match['sep']:.2f} arcsec from {match['asked']}.")
            protos = [match["id"]]
        else:
            st.info("Type a position and press **Search**.")
            protos = []
elif mode == "Pick a thumbnail":
    st.caption("Click a cutout to make it the prototype.")
    kit.tile_grid(pd.DataFrame({c: index.metadata_column(c) for c in ("id", "ra", "dec")}), index, key="pick",
                  columns=8, per_page=PICK_PAGE)
    protos = []
else:
    upload = st.file_uploader(f"A cutout: PNG, JPEG or FITS (at most {MAX_UPLOAD_MB} MB)",
                              max_upload_size=MAX_UPLOAD_MB, key="search.upload")
    protos = []
    if upload is not None:
        try:
            image = decode_upload(upload.name, upload.getvalue(), index.rgb)
        except UploadError as exc:
            st.error(str(exc))
        else:
            prototype_png = display_png(image, framed=True)
kit.sync_url()

if not protos and image is None:
    st.stop()
if image is not None and combine not in ("mean", "union"):
    combine = "mean"
try:
    result = neighbours(path, generation, tuple(protos), k, combine, label, _image=image,
                        image_key=None if image is None else hashlib.sha256(image.tobytes()).hexdigest())
except UlisseError as exc:
    st.error(str(exc))
    st.stop()

st.divider()
proto_col, grid_col = st.columns([1, 5], gap="large")
with proto_col:
    st.markdown("**Prototype**" if len(protos) < 2 else f"**{len(protos)} prototypes** ({combine})")
    if prototype_png is not None:
        st.image(prototype_png, caption=upload.name, width="stretch")
    for i, pid in enumerate(protos):
        png = kit.thumbnail_png(index, pid, framed=True)
        if png is not None:
            st.image(png, caption=pid, width="stretch")
        else:
            st.caption(pid)
        if len(protos) > 1:
            st.button("remove", key=f"search.remove.{i}", on_click=kit.set_prototypes,
                      args=([p for p in protos if p != pid], None), type="tertiary")
    if len(protos) == 1 and "Expand" in [p.title for p in kit.registered_pages()]:  # the recursive plugin's page
        st.button("Expand", key="search.expand", help="Recursive expansion from this prototype",
                  on_click=kit.go_to_page, args=("Expand",), icon=":material/account_tree:", width="stretch")
with grid_col:
    detail = st.session_state.get(kit.DETAIL)
    if detail and kit.has_object(index, detail):
        with st.container(border=True):
            head, close = st.columns([6, 1])
            head.markdown(f"**Details** · {detail}")
            close.button("Close", key="search.detail.close", on_click=kit.show_detail, args=(None,), type="tertiary")
            kit.object_detail(index, detail, key="search.detail")
    metric = index.manifest.get("metric", "L2")
    actions = " · ".join(f"{a.label} {a.help.replace('{id}', 'an object').lower()}" for a in tile_actions().values())
    st.markdown(f"**{len(result)} nearest neighbours** · distance in feature space ({metric})"
                + (f" · {actions}" if actions else ""))
    kit.tile_grid(result.table, index, key="neighbour", columns=6, per_page=48, actions=True)

fractions = getattr(result, "fractions", None)
if fractions is not None:
    st.subheader(f"Class fractions ({label})")
    kit.fractions_view(fractions, label, {n: f"first {n}" for n in fractions.columns if isinstance(n, (int, np.integer))})

st.subheader("Neighbours")
kit.show_table(result.table)
kit.download_buttons(result.table, f"ulisse-neighbours-{'-'.join(protos[:3]) or 'upload'}", index=index,
                     meta={"prototype": result.prototype, "k": k, "combine": combine}, key="search.download")
