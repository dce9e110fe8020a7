"""Anomalies: the objects of the index farthest from their neighbours (no prototype needed).

Scores are derived columns (``index.derived("anomaly")``: ``anomaly_kth``,
``anomaly_mean``; ``anomaly_iforest``), computed once per index and stored with
it. The page shows their histogram and the ranked objects, paged. Runs inside
the app or alone: ``ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/anomalies/page.py``.
"""

import altair as alt
import pandas as pd
import streamlit as st

from ulisse.errors import UlisseError
from ulisse.plugins.anomalies import DEFAULT_K, METHODS, rank_anomalies
import ulisse.ui.kit as kit

METHOD_NAMES = {"kth": "distance to the k-th neighbour", "mean": "mean distance to the k nearest",
                "iforest": "Isolation Forest on the vectors"}
PER_PAGE = 24


@st.cache_data(max_entries=32, show_spinner="Scoring the objects of the index…")
def ranking(path: str, generation: int, top: int, method: str, k: int, label: str | None):
    index = kit.index_from_key((path, generation))
    with kit.index_lock(index):
        ranked = rank_anomalies(index, top=top, method=method, k=k, label=label, progress=False)
        if method == "iforest":
            scores = index.derived("anomaly_iforest")["anomaly_iforest"]
        else:
            scores = index.derived("anomaly", k=k)[f"anomaly_{method}"]
    return ranked, scores.to_numpy()


kit.page_setup("Anomalies")
index = kit.current_index()
if "anomalies.method" not in st.session_state:
    st.session_state["anomalies.method"] = METHODS[0]
method = st.sidebar.selectbox("Score", METHODS, key="anomalies.method", format_func=lambda m: METHOD_NAMES.get(m, m))
k = kit.slider("Neighbours (k)", 1, max(1, min(50, len(index) - 1)), DEFAULT_K, key="anomalies.k",
               disabled=method == "iforest")
top = kit.slider("Objects ranked", 1, max(1, min(len(index), 1000)), min(len(index), 120), key="anomalies.top",
                 help=f"The grid shows {PER_PAGE} per page.")
label = kit.choose_label(index, key="anomalies.label")
kit.sync_url()

st.title("Anomalies")
st.caption(f"The {top} objects of the index with the highest anomaly score ({METHOD_NAMES.get(method, method)}"
           + ("" if method == "iforest" else f", k = {k}") + "): most anomalous first. Click a tile to search "
           "for objects like it.")
if len(index) < 2:
    st.info("The index needs at least two objects for anomaly scores.")
    st.stop()
try:
    ranked, scores = ranking(*kit.index_key(index), top, method, k, label)
except UlisseError as exc:
    st.error(str(exc))
    st.stop()

threshold = float(ranked.table["score"].min())
hist = pd.DataFrame({"score": scores, "shown": scores >= threshold})
st.altair_chart(alt.Chart(hist).mark_bar().encode(
    x=alt.X("score:Q", bin=alt.Bin(maxbins=50), title=f"anomaly score ({method})"),
    y=alt.Y("count():Q", title="objects"),
    color=alt.Color("shown:N", scale=alt.Scale(domain=[False, True], range=["#a7a7a7", "#c8102e"]),
                    legend=alt.Legend(title=f"in the top {top}", orient="right")),
).properties(height=180), width="stretch")

kit.tile_grid(ranked.table, index, key="anomaly", columns=6, per_page=PER_PAGE)

if ranked.precision is not None:
    st.subheader(f"Classes at the top ({label})")
    fractions = pd.DataFrame({f"top {len(ranked)}": ranked.precision, "base_rate": ranked.base_rate})
    fractions.index.name = label
    kit.fractions_view(fractions, label)

st.subheader("Ranking")
kit.show_table(ranked.table)
kit.download_buttons(ranked.table, f"ulisse-anomalies-{method}", index=index,
                     meta={"method": method, "k": ranked.k or ""}, key="anomalies.download")
