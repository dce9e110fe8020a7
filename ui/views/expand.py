"""Expand: ULISSE's recursive expansion, iteration by iteration, against direct kNN.

From one prototype take its k nearest neighbours, then query again with every
new object, for a few iterations. Each object found shows which object found
it (its provenance). Runs inside the app or alone:
``ULISSE_UI_INDEX=indexes/hdf-demo streamlit run ui/views/expand.py``.
"""

import altair as alt
import streamlit as st

from ulisse.errors import UlisseError
from ulisse.plugins.recursive import expand
from ulisse.ui import common

MAX_TILES = 48  # per iteration; the table holds every object


@st.cache_data(max_entries=32, show_spinner="Expanding…")
def expansion(ref: common.IndexRef, object_id: str, k: int, iterations: int, budget: int | None, label: str | None):
    with common.exclusive(ref) as index:
        return expand(index, object_id, k=k, iterations=iterations, budget=budget, label=label)


common.page_config("Expand")
ref = common.index_sidebar()
index = ref.open()
k = common.slider("Neighbours per object (k)", 1, common.max_k(index, 50), 8, key="expand.k")
iterations = common.slider("Iterations", 1, 10, 3, key="expand.iterations")
common.default("expand.budget", 0)
budget = st.sidebar.number_input("Budget (0: none)", min_value=0, step=10, key="expand.budget",
                                 help="Stop once this many objects are found.")
label = common.choose_label(ref, key="expand.label")

st.title("Recursive expansion")
st.caption("Neighbours become new prototypes: from one object, query again with every object found, "
           "never visiting one twice. Compare with the direct kNN of the prototype.")
common.default("expand.id", st.session_state.get("last_prototype_id") or common.first_id(index))
object_id = st.text_input("Prototype id", key="expand.id", help="An object of the index.").strip()
if not object_id:
    st.stop()
try:
    found = expansion(ref, object_id, k, iterations, int(budget) or None, label)
except UlisseError as exc:
    st.error(str(exc))
    st.stop()

direct_ids = set(found.direct["id"])
both = sum(i in direct_ids for i in found.ids)
cols = st.columns(4)
cols[0].metric("Objects found", len(found))
cols[1].metric("Iterations run", int(found.per_iteration["iteration"].max()) if len(found) else 0)
cols[2].metric("Stopped by", found.stopped)
cols[3].metric("Also in direct kNN", f"{both} of {len(found)}",
               help=f"Objects among the {len(found.direct)} nearest neighbours of {found.prototype}.")

proto_col, chart_col = st.columns([1, 5], gap="large")
with proto_col:
    st.markdown("**Prototype**")
    png = common.thumbnail_png(ref, found.prototype, framed=True) if common.has_object(index, found.prototype) else None
    if png is not None:
        st.image(png, caption=found.prototype, width="stretch")
with chart_col:
    st.markdown("**New objects per iteration**")
    st.altair_chart(alt.Chart(found.per_iteration).mark_bar(color="#2f6db5").encode(
        x=alt.X("iteration:O", axis=alt.Axis(labelAngle=0)), y=alt.Y("new:Q", title="new objects"),
        tooltip=["iteration", "new", "total"]).properties(height=200), width="stretch")

by_iteration, direct_tab, table_tab = st.tabs(["By iteration", "Direct kNN", "Table"])
with by_iteration:
    for it, group in found.table.groupby("iteration"):
        st.markdown(f"**Iteration {it}** · {len(group)} new")
        tiles = [common.Tile(row.id, f"{row.id}  \n← {row.found_by} · d = {common.distance_text(row.distance)}")
                 for row in group.head(MAX_TILES).itertuples(index=False)]
        common.tile_grid(ref, tiles, columns=6, key=f"iteration{it}")
        if len(group) > MAX_TILES:
            st.caption(f"… and {len(group) - MAX_TILES} more (see the Table tab).")
with direct_tab:
    st.caption(f"The {len(found.direct)} nearest neighbours of {found.prototype}; ✓ marks those the expansion found too.")
    found_ids = set(found.ids)
    tiles = [common.Tile(row.id, f"#{row.rank} {row.id}" + (" ✓" if row.id in found_ids else "")
                         + f"  \nd = {common.distance_text(row.distance)}")
             for row in found.direct.head(MAX_TILES * 2).itertuples(index=False)]
    common.tile_grid(ref, tiles, columns=6, key="direct")
with table_tab:
    st.dataframe(common.display_table(found.table), hide_index=True)
    st.markdown("**Per iteration**")
    st.dataframe(found.per_iteration, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="percent")
                                for c in found.per_iteration.columns if c.startswith(("new_", "all_"))})

if found.fractions is not None:
    st.subheader(f"Class fractions ({label}) at n = {len(found)}")
    common.fractions_view(found.fractions, label, {"expansion": "expansion", "direct": "direct kNN"})

common.download_buttons(found.table, {"prototype": found.prototype, "index": ref.path, "k": k,
                                      "iterations": iterations}, f"ulisse-expansion-{found.prototype}",
                        key="expand.download")
