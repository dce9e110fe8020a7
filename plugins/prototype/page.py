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
from ulisse.registry import query_strategies
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
    if switch_mode and protos and shown is not None:  # chosen elsewhere now (not a link's, which names its mode)
        st.session_state["search.mode"] = MODES[0]


def on_ids_typed() -> None:
    typed = [p.strip() for p in st.session_state.get("search.id", "").split(",") if p.strip()]
    kit.set_prototypes(typed, page=None)
    follow_prototypes()


kit.page_setup("Search", url_state={"mode": "search.mode", "position": "search.position",
                                     "radius": ("search.radius", float), "upload": "search.upload_hash",
                                     "sort": "search.pick_sort"})
index = kit.current_index()
path, generation = kit.index_key(index)
k = kit.slider("Neighbours (k)", 1, max(1, min(100, len(index) - 1)), 12, key="search.k")
label = kit.choose_label(index, key="search.label")
strategies = {name: s for name, s in query_strategies().items() if not s.page}  # the others have their own page
combines = [name for name in ("mean", "union") if name in strategies] + \
    [name for name in strategies if name not in ("mean", "union")]
kit.valid_choice("search.combine", combines, combines[0], "Combine prototypes")
combine = st.sidebar.selectbox("Combine prototypes", combines, key="search.combine",
                               help="How several prototypes make one query (the query strategies plugins register): "
                                    + "; ".join(f"{n}: {strategies[n].description}" for n in combines)
                                    + "".join(f". {s.name} ({s.description}) is on the {s.page} page"
                                              for s in query_strategies().values() if s.page))

st.title("Search")
st.caption("One-shot similarity search: the objects nearest to a prototype in the feature space of an "
           "ImageNet EfficientNet (ULISSE). Click a tile to make it the prototype; **Add** adds it to the prototypes.")

follow_prototypes()
if st.session_state.get("search.mode") not in MODES:
    st.session_state["search.mode"] = MODES[0]
mode = st.radio("Prototype", MODES, key="search.mode", horizontal=True)
if mode != MODES[3]:
    st.session_state["search.upload_hash"] = None  # the URL names an upload only while one is the prototype
image = None
prototype_png = None
upload_name = None
if mode == "Object id":
    if not kit.prototypes() and not st.session_state.get("search.id"):
        kit.set_prototypes([kit.default_prototype(index)], page=None)
        follow_prototypes(switch_mode=False)
        st.caption(f"Starting from {kit.prototypes()[0]}, {kit.default_prototype_reason(index)} of the index.")
    st.text_input("Object id(s)", key="search.id", on_change=on_ids_typed,
                  help="One object of the index, or several separated by commas (left out of the results).")
    typed = [p.strip() for p in st.session_state.get("search.id", "").split(",") if p.strip()]
    st.session_state[kit.PROTOS] = st.session_state["search.shown"] = typed or kit.prototypes()
    protos = kit.known_prototypes(index, "Searching with the others." if len(kit.prototypes()) > 1 else
                                  "Type an id of this index, or pick a thumbnail.")
elif mode == "Sky position":
    placed = pd.DataFrame({c: index.metadata_column(c) for c in ("ra", "dec")}).dropna() \
        if {"ra", "dec"} <= set(index.metadata_columns) else pd.DataFrame()
    protos = []
    if placed.empty:
        st.warning("This index has no sky positions (ra, dec) for its objects: choose a prototype another way.")
    else:
        with st.form("search.sky", border=False):
            pos_col, radius_col, button_col = st.columns([4, 1, 1], vertical_alignment="bottom")
            if not st.session_state.get("search.position"):
                first = index.row_of(kit.default_prototype(index))
                st.session_state["search.position"] = format_position(float(index.metadata_column("ra").iloc[first]),
                                                                      float(index.metadata_column("dec").iloc[first]))
            if not st.session_state.get("search.radius"):
                st.session_state["search.radius"] = DEFAULT_RADIUS_ARCSEC
            pos_col.text_input("Position: RA Dec in degrees or sexagesimal (10:00:24 +02:12:00), or a name",
                               key="search.position")
            radius_col.number_input("Radius (arcsec)", min_value=0.01, format="%.2f", key="search.radius")
            asked = button_col.form_submit_button("Search", width="stretch")
        if asked:
            typed_position, where = st.session_state["search.position"], None
            try:
                coord = parse_position(typed_position)
                where = (float(coord.ra.deg), float(coord.dec.deg))
                row, sep = match_position(index, *where, float(st.session_state["search.radius"]),
                                          text=typed_position.strip())
            except UlisseError as exc:
                st.session_state["search.sky_match"] = {"error": str(exc), "where": where}
            else:
                matched = index.id_of(row)
                st.session_state["search.sky_match"] = {
                    "id": matched, "sep": sep, "asked": typed_position.strip()}
                kit.set_prototypes([matched], page=None)
                follow_prototypes(switch_mode=False)
        match = st.session_state.get("search.sky_match")
        if match and "error" in match:
            st.error(match["error"])
            footprint = kit.sky_footprint_png(index, mark=match.get("where"))
            if footprint is not None:
                st.image(footprint, width=420)
                st.caption("Where this index lies on the sky (red) and the position you asked for (blue ×).")
        elif match:
            st.success(f"Matched **{match['id']}** at {match['sep']:.2f} arcsec from {match['asked']}.")
            protos = [match["id"]]
        else:
            st.info("Type a position and press **Search**.")
elif mode == "Pick a thumbnail":
    protos = []
    if st.session_state.get("search.pick_sort") not in kit.PICK_SORTS:
        st.session_state["search.pick_sort"] = kit.PICK_SORTS[0]
    sort_col, note_col = st.columns([1, 2], vertical_alignment="bottom")
    order = sort_col.selectbox("Order", kit.PICK_SORTS, key="search.pick_sort",
                               help="Brightest: a flux or magnitude column (else the most typical); typical: "
                                    "nearest the mean feature vector of the index.")
    note_col.caption("Click a cutout to make it the prototype.")
    kit.tile_grid(kit.sort_for_picking(index, order), index, key="pick", per_page=PICK_PAGE)
else:
    upload = st.file_uploader(f"A cutout: PNG, JPEG or FITS (at most {MAX_UPLOAD_MB} MB)",
                              max_upload_size=MAX_UPLOAD_MB, key="search.upload")
    protos = []
    data = None
    if upload is not None:
        upload_name, data = upload.name, upload.getvalue()
        st.session_state["search.upload_hash"] = kit.remember_upload(upload_name, data)
        kit.set_prototypes([], page=None)  # the upload is the prototype: the URL names it, not the last object
        follow_prototypes(switch_mode=False)
    elif st.session_state.get("search.upload_hash"):
        kept = kit.recall_upload(st.session_state["search.upload_hash"])
        if kept is None:
            st.warning(f"This link's uploaded cutout (content hash {st.session_state['search.upload_hash']}) is no "
                       "longer kept by this server: upload it again to restore the view.")
        else:
            upload_name, data = kept
            st.caption(f"The cutout this link names: {upload_name} (kept by the server since it was uploaded).")
    if data is not None:
        try:
            image = decode_upload(upload_name, data, index.rgb)
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
kit.detail_dialog(index, key="search.detail")
proto_col, grid_col = st.columns([1, 5], gap="medium")
with proto_col, st.container(key="search-prototype"):
    st.markdown("**Prototype**" if len(protos) < 2 else f"**{len(protos)} prototypes** ({combine})")
    if prototype_png is not None:
        st.image(prototype_png, caption=upload_name, width="stretch")
    badges = kit.badges_of(index, protos)  # a marked prototype says so, as a marked tile does
    for i, pid in enumerate(protos):
        png = kit.thumbnail_png(index, pid, framed=True)
        text = pid + (f" · {badges[pid]}" if pid in badges else "")
        if png is not None:
            st.image(png, caption=text, width="stretch")
        else:
            st.caption(text)
        if len(protos) > 1:
            st.button("Remove", key=f"search.remove.{i}", on_click=kit.set_prototypes,
                      args=([p for p in protos if p != pid], None), type="tertiary")
    if len(protos) == 1 and "Expand" in [p.title for p in kit.registered_pages()]:  # the recursive plugin's page
        st.button("Expand", key="search.expand", help="Recursive expansion from this prototype",
                  on_click=kit.go_to_page, args=("Expand",), width="stretch")
with grid_col:
    metric = index.manifest.get("metric", "L2")
    st.markdown(f"**{len(result)} nearest neighbours** · distance in feature space ({metric}) · click a tile to "
                "search from it")
    kit.tile_grid(result.table, index, key="neighbour", per_page=48, actions=True)

fractions = getattr(result, "fractions", None)
if fractions is not None:
    st.subheader(f"Class fractions ({label})")
    kit.fractions_view(fractions, label, {n: f"first {n}" for n in fractions.columns if isinstance(n, (int, np.integer))})

st.subheader("Neighbours")
kit.show_table(result.table)
named = result.prototype  # an upload: its file name and content hash, as the URL names it
if image is not None:
    named = f"upload {upload_name} (sha256 {st.session_state.get('search.upload_hash') or '?'})" + \
        (f" and {', '.join(protos)}" if protos else "")
kit.download_buttons(result.table, f"ulisse-neighbours-{'-'.join(protos[:3]) or 'upload'}", index=index,
                     meta={"prototype": named, "k": k, "combine": combine}, key="search.download")
kit.samp_buttons(result.table, index=index, meta={"prototype": named, "k": k, "combine": combine},
                 key="search", name=f"ulisse neighbours of {upload_name if image is not None else result.prototype}")

footprint = kit.sky_footprint_png(index)
if footprint is not None:
    st.subheader("Where the index lies on the sky")
    st.image(footprint, width=420)
    st.caption(f"{len(index):,} objects (red), all-sky Mollweide projection, RA increasing to the left.")
