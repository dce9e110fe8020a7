"""Marks: the labelling loop. Objects marked relevant or not (under any tile), and "more like my marks".

Marks are kept with the index (``derived/marks.parquet``, with their time). The
ranking is :func:`ulisse.plugins.feedback.rank`: a logistic regression on the
vectors' signed square roots, standardised over the index, trained on the marks and the prototypes; it shows
only objects not yet marked. Runs inside the app or alone:
``ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/feedback/page.py``.
"""

import streamlit as st

from ulisse.errors import UlisseError
from ulisse.plugins.feedback import clear_marks, export_marks, marks, marks_table, rank
import ulisse.ui.kit as kit


@st.cache_data(max_entries=32, show_spinner="Ranking by your marks…")
def more_like(path: str, generation: int, positives: tuple, negatives: tuple, k: int):
    index = kit.index_from_key((path, generation))
    with kit.index_lock(index):
        return rank(index, list(positives), list(negatives), k)


def clear(key: tuple) -> None:
    clear_marks(kit.index_from_key(key))
    st.session_state["marks.clear_sure"] = False  # the next clearing asks again


kit.page_setup("Marks", url_state={"marks_k": ("marks.k", int)})
index = kit.current_index()
k = kit.slider("Objects to show", 1, max(1, min(100, len(index) - 1)), 16, key="marks.k")
kit.sync_url()

st.title("More like my marks")
st.caption("Mark objects **Relevant** or **Not relevant** under any tile (here, on Search, Expand or Anomalies); "
           "the ranking learns from the marks and the prototypes (logistic regression on the feature vectors) and "
           "shows only objects not yet marked. While nothing is marked not relevant, random objects stand in as "
           "negatives. **Unmark** under a marked tile removes that one mark.")
table = marks(index)
table = table[table["id"].isin(set(index.ids))]
protos = kit.known_prototypes(index, "Learning from the marks and the other prototypes.")
positives = list(dict.fromkeys(protos + list(table.loc[table["relevant"], "id"])))
negatives = [i for i in table.loc[~table["relevant"], "id"] if i not in positives]
with st.container(horizontal=True, wrap=True, gap="large"):
    st.metric("Prototypes", len(protos), width="content")
    st.metric("Marked relevant", int(table["relevant"].sum()), width="content")
    st.metric("Marked not relevant", int((~table["relevant"]).sum()), width="content")

if not positives:
    st.info("Nothing to learn from yet: choose a prototype on the Search page or mark an object Relevant.")
else:
    try:
        ranked = more_like(*kit.index_key(index), tuple(positives), tuple(negatives), k)
    except UlisseError as exc:
        st.error(str(exc))
    else:
        st.subheader(f"{len(ranked)} objects most like your marks")
        if len(positives) + len(negatives) < 10:
            st.caption(f"With {len(positives) + len(negatives)} marks the relevance ranks the objects but is not a "
                       "probability to trust (close values are close calls): mark more to sharpen it.")
        kit.tile_grid(ranked, index, key="rerank", per_page=48, actions=True,
                      caption=lambda row: kit.tile_caption(row, score_name="relevance"))
        kit.download_buttons(ranked, "ulisse-more-like-my-marks", index=index, key="marks.ranked")

st.subheader("Your marks")
if table.empty:
    st.caption("No marks yet.")
else:
    for relevant, title in ((True, "Relevant"), (False, "Not relevant")):
        part = table[table["relevant"] == relevant]
        if part.empty:
            continue
        st.markdown(f"**{title}** · {len(part)}")
        kit.tile_grid(part.sort_values("time", ascending=False), index, key=f"marked-{relevant}", actions=True,
                      per_page=16, caption=lambda row: f"{row['id']}  \n{str(row['time']).replace('T', ' ')}")
    kit.show_table(marks_table(index))  # with each object's metadata, as exported
    buttons = st.container(horizontal=True, wrap=True)
    key = kit.index_key(index)
    buttons.download_button("Marks as CSV", lambda: export_marks(kit.index_from_key(key), "csv"), "ulisse-marks.csv",
                            "text/csv", key="marks.csv", on_click="ignore", icon=":material/download:")
    buttons.download_button("Marks as VOTable", lambda: export_marks(kit.index_from_key(key), "votable"),
                            "ulisse-marks.xml", "application/x-votable+xml", key="marks.votable", on_click="ignore",
                            icon=":material/download:")
    st.divider()  # apart from the downloads: clearing cannot be undone, so it asks first
    sure = st.checkbox(f"I want to delete all {len(table)} marks (this cannot be undone; the CSV or VOTable above "
                       "keeps a copy)", key="marks.clear_sure")
    st.button(f"Delete all {len(table)} marks", key="marks.clear", on_click=clear, args=(key,), disabled=not sure,
              type="secondary")
