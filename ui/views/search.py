"""Search: the nearest neighbours of one prototype, with class fractions and downloads.

The prototype is an object of the index (by id, by sky position, or picked from
its thumbnails) or an uploaded cutout (PNG, JPEG, FITS). Runs inside the app or
alone: ``ULISSE_UI_INDEX=indexes/hdf-demo streamlit run ui/views/search.py``.
"""

import math

import numpy as np
import streamlit as st

from ulisse.errors import UlisseError
from ulisse.index import DEFAULT_RADIUS_ARCSEC
from ulisse.plugins.prototype import Prototype, query
from ulisse.ui import common

MODES = (common.MODE_ID, "Sky position", "Pick a thumbnail", "Upload a cutout")
PICK_PAGE = 24


@st.cache_data(max_entries=64, show_spinner="Searching…")
def neighbours(ref: common.IndexRef, prototype: Prototype, k: int, label: str | None):
    with common.exclusive(ref) as index:
        if prototype.kind == "image":
            common.with_encoder(index)
        return query(index, prototype, k, label=label)


common.page_config("Search")
ref = common.index_sidebar()
index = ref.open()
k = common.slider("Neighbours (k)", 1, common.max_k(index), 12, key="search.k")
label = common.choose_label(ref, key="search.label")

st.title("Search")
st.caption("One-shot similarity search: the objects nearest to a prototype in the feature space of an "
           "ImageNet EfficientNet (ULISSE).")

common.default("search.mode", MODES[0])
mode = st.radio("Prototype", MODES, key="search.mode", horizontal=True)
prototype = None
prototype_png = None
prototype_caption = None
if mode == common.MODE_ID:
    common.default("search.id", common.first_id(index))
    object_id = st.text_input("Object id", key="search.id", help="An object of the index (left out of its results).")
    prototype = Prototype("id", object_id.strip()) if object_id.strip() else None
elif mode == "Sky position":
    placed = index.metadata[["ra", "dec"]].dropna()
    if placed.empty:
        st.warning("This index has no sky positions (ra, dec) for its objects: choose a prototype another way.")
    else:
        common.default("search.ra", float(placed["ra"].iloc[0]))
        common.default("search.dec", float(placed["dec"].iloc[0]))
        common.default("search.radius", DEFAULT_RADIUS_ARCSEC)
        ra_col, dec_col, radius_col = st.columns(3)
        ra = ra_col.number_input("RA (deg)", min_value=0.0, max_value=360.0, format="%.6f", key="search.ra")
        dec = dec_col.number_input("Dec (deg)", min_value=-90.0, max_value=90.0, format="%.6f", key="search.dec")
        radius = radius_col.number_input("Radius (arcsec)", min_value=0.01, format="%.2f", key="search.radius")
        prototype = Prototype("sky", (float(ra), float(dec)), float(radius))
elif mode == "Pick a thumbnail":
    pages = max(1, math.ceil(len(index) / PICK_PAGE))
    common.default("search.browse", 1)
    st.session_state["search.browse"] = min(max(int(st.session_state["search.browse"]), 1), pages)
    page_col, note_col = st.columns([1, 4], vertical_alignment="bottom")
    page = page_col.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key="search.browse")
    note_col.caption("Click **use** under a cutout to make it the prototype.")
    ids = index.metadata["id"].iloc[(page - 1) * PICK_PAGE: page * PICK_PAGE]
    common.tile_grid(ref, [common.Tile(i, i) for i in ids], columns=8, action=("use", common.use_as_prototype),
                     key="pick")
else:
    upload = st.file_uploader(f"A cutout: PNG, JPEG or FITS (at most {common.MAX_UPLOAD_MB} MB)",
                              max_upload_size=common.MAX_UPLOAD_MB, key="search.upload")
    if upload is not None:
        try:
            image = common.decode_upload(upload.name, upload.getvalue(), index.rgb)
        except common.UploadError as exc:
            st.error(str(exc))
        else:
            prototype = Prototype("image", image)
            prototype_png = common.display_png(image, framed=True)
            prototype_caption = upload.name

if prototype is None:
    st.stop()
try:
    result = neighbours(ref, prototype, k, label)
except UlisseError as exc:
    st.error(str(exc))
    st.stop()
if result.prototype_id is not None:
    st.session_state["last_prototype_id"] = result.prototype_id
    prototype_png = common.thumbnail_png(ref, result.prototype_id, framed=True)

st.divider()
proto_col, grid_col = st.columns([1, 5], gap="large")
with proto_col:
    st.markdown("**Prototype**")
    if prototype_png is not None:
        st.image(prototype_png, caption=prototype_caption or result.prototype, width="stretch")
    else:
        st.caption(result.prototype)
    if result.prototype_id is not None:
        st.button("Expand", key="search.expand", help="Recursive expansion from this prototype",
                  on_click=common.expand_from, args=(result.prototype_id,), icon=":material/account_tree:",
                  width="stretch")
with grid_col:
    metric = index.manifest.get("metric", "L2")
    st.markdown(f"**{len(result)} nearest neighbours** · distance in feature space ({metric})")
    tiles = [common.Tile(row.id, f"#{row.rank} {row.id}  \nd = {common.distance_text(row.distance)}")
             for row in result.table.itertuples(index=False)]
    common.tile_grid(ref, tiles, columns=6, action=("use as prototype", common.use_as_prototype), key="neighbour")

if result.fractions is not None:
    st.subheader(f"Class fractions ({label})")
    common.fractions_view(result.fractions, label, {n: f"first {n}" for n in result.fractions.columns
                                                    if isinstance(n, (int, np.integer))})

st.subheader("Neighbours")
st.dataframe(common.display_table(result.table), hide_index=True)
common.download_buttons(result.table, {"prototype": result.prototype, "index": ref.path, "k": k},
                        f"ulisse-neighbours-{result.prototype_id or 'upload'}", key="search.download")
