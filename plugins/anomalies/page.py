"""Anomalies: the objects of the index farthest from their neighbours (no prototype needed).

The scores are the registered anomaly methods (``register_anomaly_methods``: this
plugin's ``kth``, ``mean`` and ``iforest``, stored with the index as derived columns,
and any other plugin's). The page shows their histogram and the ranked objects, paged. Runs inside
the app or alone: ``ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/anomalies/page.py``.
"""

import altair as alt
import pandas as pd
import streamlit as st

from ulisse.errors import UlisseError
from ulisse.plugins.anomalies import DEFAULT_K, anomaly_scores, rank_anomalies
from ulisse.registry import anomaly_methods
import ulisse.ui.kit as kit

PER_PAGE = 24
DEFAULT_METHOD = "kth"  # this plugin's; other plugins' methods are offered, not chosen first


@st.cache_data(max_entries=32, show_spinner="Scoring the objects of the index…")
def ranking(path: str, generation: int, top: int, method: str, k: int, label: str | None):
    index = kit.index_from_key((path, generation))
    with kit.index_lock(index):
        ranked = rank_anomalies(index, top=top, method=method, k=k, label=label, progress=False)
        scores = anomaly_scores(index, method=method, k=k, progress=False)["score"]
    return ranked, scores.to_numpy()


kit.page_setup("Anomalies", url_state={"method": "anomalies.method", "anomaly_k": ("anomalies.k", int),
                                        "top": ("anomalies.top", int), "anomaly_label": "anomalies.label"})
index = kit.current_index()
methods = anomaly_methods()
if st.session_state.get("anomalies.method") not in methods:
    st.session_state["anomalies.method"] = DEFAULT_METHOD if DEFAULT_METHOD in methods else next(iter(methods))
method = st.sidebar.selectbox("Score", list(methods), key="anomalies.method",
                              format_func=lambda m: f"{m}: {methods[m].description}")
uses_k = methods[method].uses_k
k = kit.slider("Neighbours (k)", 1, max(1, min(50, len(index) - 1)), DEFAULT_K, key="anomalies.k",
               disabled=not uses_k)
top = kit.slider("Objects ranked", 1, max(1, min(len(index), 1000)), min(len(index), 120), key="anomalies.top",
                 help=f"The grid shows {PER_PAGE} per page.")
label = kit.choose_label(index, key="anomalies.label")
kit.sync_url()

st.title("Anomalies")
st.caption(f"The {top} objects of the index with the highest anomaly score ({methods[method].description}"
           + (f", k = {k}" if uses_k else "") + "): most anomalous first. Click a tile to search "
           "for objects like it; mark it Relevant or Not relevant to teach the Marks page.")
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

kit.tile_grid(ranked.table, index, key="anomaly", per_page=PER_PAGE, actions=True)

if ranked.precision is not None:
    st.subheader(f"Classes at the top ({label})")
    fractions = pd.DataFrame({f"top {len(ranked)}": ranked.precision, "base_rate": ranked.base_rate})
    fractions.index.name = label
    kit.fractions_view(fractions, label)

st.subheader("Ranking")
kit.show_table(ranked.table)
kit.download_buttons(ranked.table, f"ulisse-anomalies-{method}", index=index,
                     meta={"method": method, "k": ranked.k or ""}, key="anomalies.download")
kit.samp_buttons(ranked.table, index=index, meta={"method": method, "k": ranked.k or ""}, key="anomalies",
                 name=f"ulisse anomalies ({method})")
