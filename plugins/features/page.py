"""Features: the objects that light up each of the encoder's features, with the feature's map overlaid.

Pick a feature (or arrive with ``?feature=F``, or ``?id=ID`` from an object's
detail), see its most active objects with the map drawn over each cutout, click
one to search by it. Runs inside the app or alone:
``ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/features/page.py``.
"""

import streamlit as st

from ulisse.errors import UlisseError
from ulisse.plugins import features
import ulisse.ui.kit as kit

COLUMNS = 6
OBJECT_FEATURES = 10


@st.cache_data(max_entries=256, show_spinner="Overlaying the feature's maps…")
def feature_tiles(key: tuple, feature: int, n: int):
    index = kit.index_from_key(key)
    with kit.index_lock(index):
        view = features.feature_view(index, feature, n)
    pngs = [None if im is None else kit.display_png(im) for im in view.overlays]
    return view.table, pngs, view.mean, view.std, view.notes


@st.cache_data(max_entries=64, show_spinner="Computing the object's feature maps…")
def object_tiles(key: tuple, object_id: str, n: int, by: str):
    index = kit.index_from_key(key)
    with kit.index_lock(index):
        found = features.object_features(kit.with_encoder(index), object_id, n, by=by)
    return found.table, kit.display_png(found.image, framed=True), [kit.display_png(im) for im in found.overlays]


@st.cache_data(max_entries=32, show_spinner="Ranking the features…")
def ranked(key: tuple, label: str, value: str):
    return features.rank_features(kit.index_from_key(key), label, value)


def show_feature(feature: int) -> None:
    """Button callback: show a feature's top objects."""
    st.session_state["features.feature"] = int(feature)


def show_object(object_id: str) -> None:
    """Button callback: show an object's strongest features."""
    st.session_state["features.id"] = object_id


def stored_or_offer(index):
    """The stored lists; else a message and a button that computes them (one pass over the cutouts)."""
    try:
        return features.stored_lists(index)
    except UlisseError as exc:
        st.warning(str(exc))
    if st.button("Compute the feature lists now", key="features.rebuild", icon=":material/calculate:",
                 help=f"One pass over the {len(index):,} cutouts with the index's encoder."):
        with st.spinner("Computing the feature lists…"), kit.index_lock(index):
            try:
                features.rebuild_lists(kit.with_encoder(index), progress=False)
            except UlisseError as exc:
                st.error(str(exc))
                st.stop()
        st.rerun()
    st.stop()


def overlay_tiles(table, pngs) -> None:
    """The top objects with the map overlaid; a click on a tile makes its object the prototype (kit's tiles)."""
    rows = list(zip(table.itertuples(index=False), pngs))
    for start in range(0, len(rows), COLUMNS):
        for col, (i, (row, png)) in zip(st.columns(COLUMNS, gap="small"), enumerate(rows[start:start + COLUMNS], start)):
            with col:
                caption = f"#{row.rank} {row.id}  \na = {row.activation:.3g} · z = {row.z_score:.2f}"
                with st.container(key=f"ulisse-tile-features-{i}"):
                    if png is None:
                        st.caption(f"(no image) {caption}")
                    else:
                        st.image(png, caption=caption, width="stretch")
                    st.button(f"Use {row.id} as the prototype", key=f"ulisse-pick-features-{i}",
                              on_click=kit.use_as_prototype, args=(row.id,), help=f"Search the neighbours of {row.id}")
                st.button("its features", key=f"features.of.{i}", on_click=show_object, args=(row.id,),
                          type="tertiary", width="stretch", help=f"The features most active on {row.id}")


kit.page_setup("Features", url_state={"feature": "features.url_feature", "id": "features.url_id"})
index = kit.current_index()
key = kit.index_key(index)
st.title("Features")
st.caption("Which objects light up each feature of the encoder, and where: a feature's activation on an object is "
           "the mean of its final map (ULISSE, Fig. 1); the map is drawn over each cutout.")
lists = stored_or_offer(index)

if "features.id" not in st.session_state:
    arrived = st.session_state.get("features.url_id") or st.session_state.get(kit.DETAIL)
    if arrived:
        st.session_state["features.id"] = str(arrived)
if "features.feature" not in st.session_state and st.session_state.get("features.url_feature") is not None:
    try:
        st.session_state["features.feature"] = lists.check_feature(st.session_state["features.url_feature"])
    except UlisseError as exc:
        st.error(str(exc))
if "features.feature" not in st.session_state:
    st.session_state["features.feature"] = 0
st.session_state["features.feature"] = min(max(int(st.session_state["features.feature"]), 0), lists.channels - 1)
feature = int(st.sidebar.number_input(f"Feature (0 to {lists.channels - 1})", min_value=0,
                                      max_value=lists.channels - 1, step=1, key="features.feature"))
n = kit.slider("Objects shown", 1, lists.rows.shape[1], lists.rows.shape[1], key="features.n")
overlaid = st.sidebar.toggle("Overlay the feature's map", value=True, key="features.overlay")
st.session_state["features.url_feature"] = str(feature)
kit.sync_url()

try:
    table, pngs, mean, std, notes = feature_tiles(key, feature, n)
except UlisseError as exc:
    st.error(str(exc))
    st.stop()
st.subheader(f"Feature {feature}")
st.caption(f"Its {len(table)} most active objects of {lists.count:,}; over the index its activation has mean "
           f"{mean:.3g} and standard deviation {std:.3g}. One colour scale (inferno) for the whole row. "
           "Click a tile to search for objects like it.")
for note in notes:
    st.info(note)
if overlaid:
    overlay_tiles(table, pngs)
else:
    kit.tile_grid(table, index, key="features.plain", columns=COLUMNS,
                  caption=lambda row: f"#{row['rank']} {row['id']}  \na = {row['activation']:.3g}")

st.subheader("An object's strongest features")
if "features.id" not in st.session_state:
    st.session_state["features.id"] = str(table["id"].iloc[0])
left, right = st.columns([2, 1])
object_id = left.text_input("Object id", key="features.id").strip()
st.session_state["features.url_id"] = object_id
kit.sync_url()
by = right.radio("Ranked by", features.BY, key="features.by", horizontal=True,
                 format_func=lambda b: {"z": "z-score against the index"}.get(b, b))
if object_id:
    try:
        obj_table, obj_png, obj_overlays = object_tiles(key, object_id, OBJECT_FEATURES, by)
    except UlisseError as exc:
        st.error(str(exc))
    else:
        grid = list(zip(obj_table.itertuples(index=False), obj_overlays))
        for start in range(0, len(grid), COLUMNS - 1):
            cols = st.columns(COLUMNS, gap="small")
            if start == 0:
                cols[0].image(obj_png, caption=object_id, width="stretch")
            for col, (row, png) in zip(cols[1:], grid[start:start + COLUMNS - 1]):
                with col:
                    st.image(png, caption=f"feature {row.feature}  \na = {row.activation:.3g} · z = {row.z_score:.2f}",
                             width="stretch")
                    st.button(f"feature {row.feature}", key=f"features.show.{row.feature}", on_click=show_feature,
                              args=(row.feature,), type="tertiary", width="stretch")
        kit.show_table(obj_table, key="features.object.table")

labels = kit.label_columns(index)
if labels:
    st.subheader("Features that pick out a class")
    label_col, value_col = st.columns(2)
    label = label_col.selectbox("Class labels", labels, key="features.label")
    classes = sorted(index.metadata_column(label).dropna().astype(str).unique())
    value = value_col.selectbox("Class", classes, key="features.value")
    try:
        ranking = ranked(key, label, value)
    except UlisseError as exc:
        st.error(str(exc))
    else:
        st.caption(f"Fraction of {label} = {value} among each feature's {int(ranking['n'].iloc[0])} most active "
                   f"objects (base rate {ranking['base_rate'].iloc[0]:.1%}); ties broken by their mean z-score.")
        for col, f in zip(st.columns(COLUMNS), ranking["feature"].head(COLUMNS)):
            col.button(f"feature {int(f)}", key=f"features.rank.{int(f)}", on_click=show_feature, args=(int(f),),
                       width="stretch")
        kit.show_table(ranking.head(20), key="features.rank.table")
