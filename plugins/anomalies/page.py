"""Anomalies: the objects of the index farthest from their neighbours (no prototype needed).

The scores are the registered anomaly methods (``register_anomaly_methods``: this
plugin's ``kth``, ``mean`` and ``iforest``, stored with the index as derived columns,
and any other plugin's). "Look next" shows the next 20 unmarked objects, re-ranked by the
marks (Relevant / Not relevant under any tile) and with artefacts hidden
(:func:`ulisse.plugins.anomalies.feedback.next_unmarked`); it stays as it is while you mark,
and "Next 20" chooses again with every mark so far. The marks teach through the cutouts' shapes too
(statmorph's statistics, :mod:`ulisse.plugins.morphology`): where they are not yet stored with the index,
they are measured in the background, with a progress bar, and Look next uses the vectors until they are
there (more than ``AUTO_MAX`` to measure: only when asked, by the button the page then offers). Below, the histogram of the scores and
the plain ranking, paged. Runs inside the app or alone:
``ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/anomalies/page.py``.
"""

import altair as alt
import pandas as pd
import streamlit as st

from ulisse.errors import UlisseError
from ulisse.progress import duration_text
from ulisse.plugins.anomalies import DEFAULT_K, anomaly_scores, default_method, rank_anomalies
from ulisse.plugins.anomalies.feedback import ARTEFACT_MODES, check_text, next_unmarked
from ulisse.plugins.feedback import marks
from ulisse.plugins.morphology import (AUTO_MAX, SET, cutouts_to_measure, has_cutouts, is_measured, morphology_table,
                                      use_morphology)
from ulisse.plugins.morphology.stats import SECONDS_PER_CUTOUT, workers
from ulisse.registry import anomaly_methods
import ulisse.ui.kit as kit

PER_PAGE = 24
NEXT = 20  # objects per "Next 20"
ARTEFACT_LABELS = {"hide": "Hide", "show": "Show", "only": "Only artefacts"}


@st.cache_data(max_entries=32, show_spinner="Scoring the objects of the index…")
def ranking(path: str, generation: int, top: int, method: str, k: int, label: str | None):
    index = kit.index_from_key((path, generation))
    with kit.index_lock(index):
        ranked = rank_anomalies(index, top=top, method=method, k=k, label=label, progress=False)
        scores = anomaly_scores(index, method=method, k=k, progress=False)["score"]
    return ranked, scores.to_numpy()


@st.cache_data(max_entries=32, show_spinner="Choosing the next objects…")
def next_batch(path: str, generation: int, batch: int, method: str | None, k: int, artefacts: str, use_marks: bool,
               shapes: bool | None):
    """The batch's objects: computed once per batch number, so marking them does not reshuffle them.
    ``shapes`` False: the relevance from the vectors alone (the shapes are still being measured)."""
    index = kit.index_from_key((path, generation))
    with kit.index_lock(index):
        return next_unmarked(index, NEXT, method=method, k=k, artefacts=artefacts, use_marks=use_marks,
                             progress=False, morphology=shapes)


def measure_shapes(index, asked: bool = False) -> kit.Job | None:
    """The background job that measures the cutouts' shapes for the marks to teach through (started here
    where discovery uses them, or where the user ``asked``), or None: no cutouts, or more than
    :data:`~ulisse.plugins.morphology.AUTO_MAX` to measure and not asked for (nor started by the button)."""
    path, generation = kit.index_key(index)
    key = f"morphology:{path}:{generation}"
    if not (asked and has_cutouts(index)) and not use_morphology(index):
        return kit.job(key)
    pending, stored = cutouts_to_measure(index), index.derived_pending(SET).start
    return kit.start_job(key, lambda: morphology_table(index),
                         f"Measuring the shapes of {pending} cutouts (statmorph)"
                         + (f"; {stored} are stored" if stored else ""))


def shapes_offer(index) -> None:
    """Where the shapes are too many to measure unasked: say so, with the time it would take, and a button that
    measures them in the background."""
    pending = cutouts_to_measure(index)
    n = workers(pending)
    took = duration_text(SECONDS_PER_CUTOUT * pending / n)
    st.caption(f"Look next learns from the vectors alone: the shapes of {pending} cutouts are not measured "
               f"(more than {AUTO_MAX} are measured only when asked: about {took} here, "
               f"{n} {'process' if n == 1 else 'processes'}; or `ulisse morphology {index.path}`).")
    st.button(f"Measure the shapes of {pending} cutouts in the background", key="anomalies.measure",
              on_click=measure_shapes, args=(index, True),
              help="statmorph's statistics of every cutout not measured yet, stored with the index; the page "
                   "stays usable meanwhile, and Next 20 learns from the shapes once they are stored.")


def next_twenty() -> None:
    st.session_state["anomalies.batch"] = st.session_state.get("anomalies.batch", 0) + 1


kit.page_setup("Anomalies", url_state={"method": "anomalies.method", "anomaly_k": ("anomalies.k", int),
                                        "top": ("anomalies.top", int), "anomaly_label": "anomalies.label",
                                        "artefacts": "anomalies.artefacts"})
index = kit.current_index()
methods = anomaly_methods()
if st.session_state.get("anomalies.method") not in methods:
    st.session_state["anomalies.method"] = default_method()  # the command line's default
method = st.sidebar.selectbox("Score", list(methods), key="anomalies.method",
                              format_func=lambda m: f"{m}: {methods[m].description}")
uses_k = methods[method].uses_k
k = kit.slider("Neighbours (k)", 1, max(1, min(50, len(index) - 1)), DEFAULT_K, key="anomalies.k",
               disabled=not uses_k)
top = kit.slider("Objects ranked", 1, max(1, min(len(index), 1000)), min(len(index), 120), key="anomalies.top",
                 help=f"The grid shows {PER_PAGE} per page.")
label = kit.choose_label(index, key="anomalies.label")
if st.session_state.get("anomalies.artefacts") not in ARTEFACT_MODES:
    st.session_state["anomalies.artefacts"] = "hide"
artefacts = st.sidebar.radio("Artefacts in Look next", ARTEFACT_MODES, key="anomalies.artefacts",
                             format_func=ARTEFACT_LABELS.get, horizontal=True,
                             help="Satellite trails, bleed columns, diffraction spikes, chip edges, bad columns, "
                                  "saturation: flagged from each cutout's pixels.")
st.session_state.setdefault("anomalies.marks", True)
use_marks = st.sidebar.toggle("Learn from my marks", key="anomalies.marks",
                              help="Re-rank Look next by the Relevant / Not relevant marks.")
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

st.subheader("Look next")
stored = marks(index)
batch = st.session_state.get("anomalies.batch", 0)
shapes = None  # stored and fresh, or not used: discover decides
if use_marks and bool(stored["relevant"].any()) and not is_measured(index):
    shapes = False  # this batch learns from the vectors; a later one from the shapes too, once measured
    measuring = measure_shapes(index)
    if measuring is None and has_cutouts(index):
        shapes_offer(index)
    elif measuring is not None and not measuring.done:
        kit.job_status(measuring.key, "Look next learns from the vectors until then; Next 20 uses the shapes too")
    elif measuring is not None and measuring.error:
        st.warning(f"{measuring.text}. Look next learns from the vectors alone.")
    elif measuring is not None:  # measured, but another writer held the index: nothing stored
        st.caption("The shapes were measured but could not be stored (the index was busy); Look next learns from "
                   f"the vectors alone. `ulisse morphology {index.path}` stores them.")
# a batch keeps what it was chosen with: the shapes arriving while it is marked do not reshuffle it
shapes = st.session_state.setdefault("anomalies.shapes", {}).setdefault((*kit.index_key(index), batch), shapes)
try:
    with kit.progress_shown():  # here, not at the top: the anomaly scores are computed on first use
        upcoming = next_batch(*kit.index_key(index), batch, method, k, artefacts, use_marks, shapes)
except UlisseError as exc:
    st.error(str(exc))
else:
    f = upcoming.feedback
    taught = (f"re-ranked by your {f['positives']} Relevant and {f['negatives']} Not relevant marks"
              + (" (their vectors and morphology)" if f.get("morphology") else "") + f", score {upcoming.method}"
              if f["combine"] else "no marks yet: the most anomalous first")
    checked = check_text(f.get("check"))
    st.caption(f"The next {len(upcoming)} unmarked objects ({taught}; {f['left_out']} artefacts or marked objects "
               f"left out). Mark them, then choose the next {NEXT}: they learn from every mark so far."
               + (f" What your marks teach: {checked}." if checked else ""))
    kit.tile_grid(upcoming.table, index, key="next", per_page=NEXT, actions=True,
                  caption=lambda row: f"next {row['rank']} · {row['id']}  \nscore = {row['score']:.3g}"
                  + (f" · {row['artefact_kind']}" if row.get("artefact_kind") else ""))
    st.button(f"Next {NEXT}", key="anomalies.next", on_click=next_twenty, type="primary",
              help=f"{len(stored)} marks so far; the next objects leave out every marked one.")

st.subheader("Ranking by anomaly score")
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
