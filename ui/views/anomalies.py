"""Anomalies: the objects of the index farthest from their neighbours (no prototype needed).

Scores are computed once per index and method, and stored with the index
(``derived/``). Runs inside the app or alone:
``ULISSE_UI_INDEX=indexes/hdf-demo streamlit run ui/views/anomalies.py``.
"""

import streamlit as st

from ulisse.errors import UlisseError
from ulisse.plugins.anomalies import DEFAULT_K, METHODS, rank_anomalies
from ulisse.ui import common

METHOD_NAMES = {"kth": "distance to the k-th neighbour", "mean": "mean distance to the k nearest",
                "iforest": "Isolation Forest on the vectors"}


@st.cache_data(max_entries=32, show_spinner="Scoring the objects of the index…")
def ranking(ref: common.IndexRef, top: int, method: str, k: int, label: str | None):
    with common.exclusive(ref) as index:
        return rank_anomalies(index, top=top, method=method, k=k, label=label, progress=False)


common.page_config("Anomalies")
ref = common.index_sidebar()
index = ref.open()
common.default("anomalies.method", METHODS[0])
method = st.sidebar.selectbox("Score", METHODS, key="anomalies.method", format_func=lambda m: METHOD_NAMES.get(m, m))
k = common.slider("Neighbours (k)", 1, common.max_k(index, 50), DEFAULT_K, key="anomalies.k",
                  disabled=method == "iforest")
top = common.slider("Objects shown", 1, min(len(index), 120), 24, key="anomalies.top")
label = common.choose_label(ref, key="anomalies.label")

st.title("Anomalies")
st.caption(f"The {top} objects of the index with the highest anomaly score ({METHOD_NAMES.get(method, method)}"
           + ("" if method == "iforest" else f", k = {k}") + "): most anomalous first.")
if len(index) < 2:
    st.info("The index needs at least two objects for anomaly scores.")
    st.stop()
try:
    ranked = ranking(ref, top, method, k, label)
except UlisseError as exc:
    st.error(str(exc))
    st.stop()

tiles = [common.Tile(row.id, f"#{row.rank} {row.id}  \nscore {common.distance_text(row.score)}")
         for row in ranked.table.itertuples(index=False)]
common.tile_grid(ref, tiles, columns=6, action=("search similar", common.use_as_prototype), key="anomaly")

if ranked.precision is not None:
    import pandas as pd

    st.subheader(f"Classes at the top ({label})")
    fractions = pd.DataFrame({f"top {len(ranked)}": ranked.precision, "base_rate": ranked.base_rate})
    fractions.index.name = label
    common.fractions_view(fractions, label)

st.subheader("Ranking")
st.dataframe(common.display_table(ranked.table), hide_index=True)
common.download_buttons(ranked.table, {"method": method, "k": ranked.k or "", "index": ref.path},
                        f"ulisse-anomalies-{method}", key="anomalies.download")
