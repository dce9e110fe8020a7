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
the plain ranking, paged (as ``ulisse anomalies --no-marks``: the artefacts setting applies to it too). Runs inside the app or alone:
``ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/anomalies/page.py``.
"""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from ulisse.errors import UlisseError
from ulisse.progress import duration_text
from ulisse.plugins.anomalies import DEFAULT_K, anomaly_scores, default_method, knn_space
from ulisse.plugins.anomalies.feedback import ARTEFACT_MODES, check_text, discover, next_unmarked
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
def ranking(path: str, generation: int, top: int, method: str, k: int, label: str | None, artefacts: str):
    """The plain ranking, as ``ulisse anomalies --no-marks --artefacts MODE`` gives it (artefacts hidden by
    default), and every object's score with whether the ranking shows it (for the histogram)."""
    index = kit.index_from_key((path, generation))
    with kit.index_lock(index):
        ranked = discover(index, top=top, method=method, k=k, use_marks=False, artefacts=artefacts, label=label,
                          progress=False, check=False, morphology=False)  # no marks: nothing to learn shapes for
        scores = anomaly_scores(index, method=method, k=k, progress=False)["score"]
        shown = np.isin(np.asarray(index.ids, dtype=object), ranked.table["id"].astype(str).to_numpy())
    return ranked, scores.to_numpy(), shown


@st.cache_data(max_entries=32, show_spinner="Choosing the next objects…")
def next_batch(path: str, generation: int, method: str | None, k: int, artefacts: str, positives: tuple,
               negatives: tuple, leave_out: tuple, shapes: bool | None):
    """A batch's objects, from the marks as they were when it was chosen (``positives``, ``negatives``: the
    key holds them, so a batch chosen with other marks, in this session or another, is never served again)
    and without ``leave_out`` (objects shown before; the marks, when they are not learned from).
    ``shapes`` False: the relevance from the vectors alone (the shapes are still being measured)."""
    index = kit.index_from_key((path, generation))
    with kit.index_lock(index):
        return next_unmarked(index, NEXT, method=method, k=k, artefacts=artefacts, positives=list(positives),
                             negatives=list(negatives), use_marks=False, leave_out=list(leave_out),
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
    expected = duration_text(SECONDS_PER_CUTOUT * pending / workers(pending))  # until the bar's own estimate
    return kit.start_job(key, lambda: morphology_table(index),
                         f"Measuring the shapes of {pending} cutouts (statmorph)"
                         + (f"; {stored} are stored" if stored else "") + f"; about {expected} expected")


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


LOOK = "anomalies.look"  # session key: the Look next batch (its setting, the marks it was chosen with, what was seen)


def next_twenty() -> None:
    """"Next 20": the objects just shown join those left out, and the next batch is chosen with the marks of then."""
    look = st.session_state.get(LOOK)
    if look:
        look.update(batch=look["batch"] + 1, seen=look["seen"] + look["shown"], marks=None, shapes=None)


def start_again() -> None:
    look = st.session_state.get(LOOK)
    if look:
        look.update(batch=look["batch"] + 1, seen=(), marks=None, shapes=None)


kit.page_setup("Anomalies", url_state={"method": "anomalies.method", "anomaly_k": ("anomalies.k", int),
                                        "top": ("anomalies.top", int), "anomaly_label": "anomalies.label",
                                        "artefacts": "anomalies.artefacts", "learn": ("anomalies.marks", kit.url_bool),
                                        "ranking_page": ("anomaly.page", int)})
index = kit.current_index()
methods = anomaly_methods()
kit.valid_choice("anomalies.method", methods, default_method(), "Score")  # the command line's default
method = st.sidebar.selectbox("Score", list(methods), key="anomalies.method",
                              format_func=lambda m: f"{m}: {methods[m].description}")
uses_k = methods[method].uses_k
k = kit.slider("Neighbours (k)", 1, max(1, min(50, len(index) - 1)), DEFAULT_K, key="anomalies.k",
               disabled=not uses_k)
top = kit.slider("Objects ranked", 1, max(1, min(len(index), 1000)), min(len(index), 120), key="anomalies.top",
                 help=f"The grid shows {PER_PAGE} per page.")
label = kit.choose_label(index, key="anomalies.label")
kit.valid_choice("anomalies.artefacts", ARTEFACT_MODES, "hide", "Artefacts")
artefacts = st.sidebar.radio("Artefacts", ARTEFACT_MODES, key="anomalies.artefacts",
                             format_func=ARTEFACT_LABELS.get, horizontal=True,
                             help="Satellite trails, bleed columns, diffraction spikes, chip edges, bad columns, "
                                  "saturation: flagged from each cutout's pixels. Hidden by default in Look next "
                                  "and in the ranking, as `ulisse anomalies` hides them.")
st.session_state.setdefault("anomalies.marks", True)
use_marks = st.sidebar.toggle("Learn from my marks", key="anomalies.marks",
                              help="Re-rank Look next by the Relevant / Not relevant marks.")
kit.sync_url()

st.title("Anomalies")
st.caption(f"The {top} objects of the index with the highest anomaly score ({methods[method].description}"
           + (f", k = {k}" if uses_k else "") + "): most anomalous first. Click a tile to search "
           "for objects like it; mark it Relevant or Not relevant to teach Look next (and the Marks page).")
if len(index) < 2:
    st.info("The index needs at least two objects for anomaly scores.")
    st.stop()
try:
    ranked, scores, in_ranking = ranking(*kit.index_key(index), top, method, k, label, artefacts)
except UlisseError as exc:
    st.error(str(exc))
    st.stop()

st.subheader("Look next")
stored = marks(index)
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
# A batch keeps what it was chosen with (the marks of then, the shapes or not), so that marking it does not
# reshuffle it; a new setting, "Next 20" or a new session chooses again with the marks as they are now.
setting = (*kit.index_key(index), method, k, artefacts, bool(use_marks))
look = st.session_state.get(LOOK)
if not look or look.get("setting") != setting:
    look = st.session_state[LOOK] = {"setting": setting, "batch": 0, "marks": None, "seen": (), "shown": (),
                                     "shapes": None}
if look["marks"] is None:
    look["marks"] = tuple(zip(stored["id"].astype(str), stored["relevant"].astype(bool)))
    look["shapes"] = shapes
marked_then = look["marks"]
positives = tuple(i for i, r in marked_then if r) if use_marks else ()
negatives = tuple(i for i, r in marked_then if not r) if use_marks else ()
leave_out = look["seen"] + (() if use_marks else tuple(i for i, _ in marked_then))
try:
    with kit.progress_shown():  # here, not at the top: the anomaly scores are computed on first use
        upcoming = next_batch(*kit.index_key(index), method, k, artefacts, positives, negatives, leave_out,
                              look["shapes"])
except UlisseError as exc:
    st.error(str(exc))
else:
    look["shown"] = tuple(upcoming.table["id"].astype(str))
    f = upcoming.feedback
    if f["combine"]:
        through = ("their vectors" if not f.get("morphology") else "their vectors and shapes"
                   if (f.get("morphology_weight") or 0) > 0 else "their vectors; their shapes weighted 0")
        taught = (f"re-ranked by your {f['positives']} Relevant and {f['negatives']} Not relevant marks ({through})"
                  f", score {upcoming.method}")
    elif not use_marks and marked_then:
        taught = f"your {len(marked_then)} marks not learned from: the most anomalous first"
    elif marked_then:
        taught = "only Not relevant marks so far: the most anomalous first"
    else:
        taught = "no marks yet: the most anomalous first"
    marked_ids = {i for i, _ in marked_then}
    seen = sum(i not in marked_ids for i in look["seen"])
    left = (f"{len(marked_then)} marked" + (f", {seen} shown before" if seen else "")
            + f" left out; {f['left_out']} {'clean objects' if f.get('artefacts') == 'only' else 'flagged artefacts'}"
            " passed over on the way")
    checked = check_text(f.get("check"))
    since = len(set(stored["id"].astype(str)) - marked_ids)
    marks_text = f"{since} mark{'s' if since > 1 else ''}"
    if since and not marked_then:  # marks made on this batch: it stays as chosen, the next one learns from them
        taught = f"chosen before your {marks_text}, which Next {NEXT} uses: the most anomalous first"
    elif since:
        taught += f"; your {marks_text} since are used by Next {NEXT}"
    st.caption(f"The next {len(upcoming)} unmarked objects ({taught}; {left}). Mark them, then choose the next "
               f"{NEXT}: " + ("they learn from every mark so far and" if use_marks else "they") + " leave out what was "
               "shown."
               + (f" What your marks teach: {checked}." if checked else ""))
    score_name = ("anomaly percentile × relevance" if f["combine"] == "product" else f"{f['combine']} score" if f["combine"]
                  else f"{upcoming.method} score")
    if len(upcoming):
        kit.tile_grid(upcoming.table, index, key="next", per_page=NEXT, actions=True,
                      caption=lambda row: f"next {row['rank']} · {row['id']}  \n{score_name} = {row['score']:.3g}"
                      + (f" · {row['artefact_kind']}" if row.get("artefact_kind") else ""))
        st.button(f"Next {NEXT}", key="anomalies.next", on_click=next_twenty, type="primary",
                  help=f"{len(stored)} marks so far; the next objects leave out every marked one and those shown.")
    else:
        st.info("Every object has been shown or marked in this session.")
        st.button("Start again", key="anomalies.again", on_click=start_again,
                  help="Show the unmarked objects again, re-ranked by every mark so far.")

st.subheader("Ranking by anomaly score")
hidden = ranked.feedback["left_out"]
space = ("between the raw vectors (the Search page's distances are in the index's search space: another scale)"
         if knn_space(index) == "raw" else "in the index's search space, as the Search page's distances")
st.caption(f"The plain anomaly score, marks not learned from (`ulisse anomalies {index.path} --no-marks`)"
           + (f"; its distances are measured {space}" if uses_k else "")
           + (f"; {hidden} {'clean objects' if artefacts == 'only' else 'flagged artefacts'} passed over"
              if hidden else "") + ".")
IN_TOP, BELOW = f"in the top {len(ranked)}", "not shown"
hist = pd.DataFrame({"score": scores, "shown": np.where(in_ranking, IN_TOP, BELOW)})
st.altair_chart(alt.Chart(hist).mark_bar().encode(
    x=alt.X("score:Q", bin=alt.Bin(maxbins=50), title=f"anomaly score ({methods[method].description})"),
    y=alt.Y("count():Q", title="objects"),
    color=alt.Color("shown:N", scale=alt.Scale(domain=[BELOW, IN_TOP], range=["#a7a7a7", "#c8102e"]),
                    legend=alt.Legend(title="objects", orient="right")),
).properties(height=180), width="stretch")

kit.tile_grid(ranked.table, index, key="anomaly", per_page=PER_PAGE, actions=True,
              caption=lambda row: kit.tile_caption(row, score_name=f"{method} score")
              + (f" · {row['artefact_kind']}" if row.get("artefact_kind") else ""))

if ranked.precision is not None:
    st.subheader(f"Classes at the top ({label})")
    fractions = pd.DataFrame({f"top {len(ranked)}": ranked.precision, "base_rate": ranked.base_rate})
    fractions.index.name = label
    kit.fractions_view(fractions, label)

st.subheader("Ranking")
kit.show_table(ranked.table)
kit.download_buttons(ranked.table, f"ulisse-anomalies-{method}", index=index,
                     meta={"method": method, "k": ranked.k or "", "artefacts": artefacts}, key="anomalies.download")
kit.samp_buttons(ranked.table, index=index, meta={"method": method, "k": ranked.k or "", "artefacts": artefacts},
                 key="anomalies", name=f"ulisse anomalies ({method})")
