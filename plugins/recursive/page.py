"""Expand: ULISSE's recursive expansion, iteration by iteration, against direct kNN.

From one prototype take its k nearest neighbours, then query again with every
new object, for a few iterations. Each object found shows which object found it
(its provenance). Runs inside the app or alone:
``ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/recursive/page.py``.
"""

import altair as alt
import streamlit as st

from ulisse.errors import UlisseError
from ulisse.plugins.recursive import expand, marks_state
import ulisse.ui.kit as kit

TILES_PER_PAGE = 12  # per iteration; paged beyond, the table holds every object
FOLLOW = ("Every object found", "Objects marked relevant")


@st.cache_data(max_entries=32, show_spinner="Expanding…")
def expansion(path: str, generation: int, object_id: str, k: int, iterations: int, budget: int | None,
              label: str | None, follow_marks: bool = False, relevance: bool = False, min_confirmed: float = 0.0,
              marked: tuple = ()):  # marked: the marks' state, so that a new mark expands again
    index = kit.index_from_key((path, generation))
    with kit.index_lock(index):
        return expand(index, object_id, k=k, iterations=iterations, budget=budget, label=label,
                      follow_marks=follow_marks, relevance=relevance and follow_marks,
                      min_confirmed=min_confirmed if follow_marks else 0.0)


STOPPED = {"iterations": "the iterations asked for", "budget": "the budget", "exhausted": "nothing new found",
           "unconfirmed": "no confirmed object left to follow"}


def follow_choice(text: str) -> str:
    return text if text in FOLLOW else FOLLOW[0]


kit.page_setup("Expand", url_state={"expand_k": ("expand.k", int), "iterations": ("expand.iterations", int),
                                     "budget": ("expand.budget", int), "expand_label": "expand.label",
                                     "follow": ("expand.follow", follow_choice),
                                     "most_relevant": ("expand.relevance", kit.url_bool),
                                     "min_confirmed": ("expand.min_confirmed", int)})
index = kit.current_index()
k = kit.slider("Neighbours per object (k)", 1, max(1, min(50, len(index) - 1)), 8, key="expand.k")
iterations = kit.slider("Iterations", 1, 10, 3, key="expand.iterations")
if not isinstance(st.session_state.get("expand.budget"), int) or st.session_state["expand.budget"] < 0:
    st.session_state["expand.budget"] = 0
budget = st.sidebar.number_input("Budget (0: none)", min_value=0, step=10, key="expand.budget",
                                 help="Stop once this many objects are found.")
label = kit.choose_label(index, key="expand.label")
follow = st.sidebar.radio("Follow", FOLLOW, key="expand.follow",
                          help="Confirmed expansion: only objects marked Relevant (on any page) become new prototypes.")
follow_marks = follow == FOLLOW[1]
relevance = st.sidebar.checkbox("Most relevant first", key="expand.relevance", disabled=not follow_marks,
                                help="Each iteration shows the neighbours of relevant objects that the marks' "
                                     "relevance model ranks highest (learned from the marks and what was found).")
if not isinstance(st.session_state.get("expand.min_confirmed"), int) or \
        not 0 <= st.session_state["expand.min_confirmed"] <= 100:
    st.session_state["expand.min_confirmed"] = 0  # the widget's value comes from here (no default beside it)
min_confirmed = st.sidebar.slider("Stop a branch below (% confirmed)", 0, 100, step=5, key="expand.min_confirmed",
                                  disabled=not follow_marks,
                                  help="An object's finds are followed only when at least this share of them is "
                                       "marked relevant.")
kit.sync_url()

st.title("Recursive expansion")
st.caption("Neighbours become new prototypes: from one object, query again with every object found, "
           "never visiting one twice. Compare with the direct kNN of the prototype. Click a tile to search from it.")
default = kit.default_prototype(index)
protos = kit.known_prototypes(index, f"Expanding from {default} instead ({kit.default_prototype_reason(index)}).")
if not protos:
    if not kit.prototypes():
        kit.set_prototypes([default], page=None)
    protos = [default]
object_id = protos[0]
if len(protos) > 1:
    st.info(f"Expansion starts from one prototype: {object_id} (the first of {len(protos)}).")
try:
    found = expansion(*kit.index_key(index), object_id, k, iterations, int(budget) or None, label, follow_marks,
                      bool(relevance), min_confirmed / 100, marks_state(index) if follow_marks else ())
except UlisseError as exc:
    st.error(str(exc))
    st.stop()

direct_ids = set(found.direct["id"])
both = sum(i in direct_ids for i in found.ids)
with st.container(horizontal=True, wrap=True, gap="large"):
    st.metric("Objects found", len(found), width="content")
    st.metric("Iterations run", int(found.per_iteration["iteration"].max()) if len(found) else 0, width="content")
    st.metric("Stopped by", STOPPED.get(found.stopped, found.stopped), width="content")
    if "confirmed" in found.table.columns:
        st.metric("Followed (marked relevant)", int(found.table["confirmed"].sum()), width="content")
    st.metric("Also in direct kNN", f"{both} of {len(found)}", width="content",
              help=f"Objects among the {len(found.direct)} nearest neighbours of {found.prototype}.")
if len(found) >= len(index) / 2:
    st.warning(f"The expansion found {len(found)} of the {len(index)} objects of the index "
               f"({len(found) / len(index):.0%}): it has swallowed most of the survey and says little about "
               "the prototype. Lower k or the iterations, or set a budget.")
if found.fractions is not None:
    st.subheader(f"Class fractions ({label}) at n = {len(found)}")
    kit.fractions_view(found.fractions, label, {"expansion": "expansion", "direct": "direct kNN"})

proto_col, chart_col = st.columns([1, 5], gap="medium")
with proto_col:
    st.markdown("**Prototype**")
    png = kit.thumbnail_png(index, found.prototype, framed=True) if kit.has_object(index, found.prototype) else None
    if png is not None:
        badge = kit.badges_of(index, [found.prototype]).get(found.prototype)
        st.image(png, caption=found.prototype + (f" · {badge}" if badge else ""), width="stretch")
with chart_col:
    st.markdown("**New objects per iteration**")
    st.altair_chart(alt.Chart(found.per_iteration).mark_bar(color="#2f6db5").encode(
        x=alt.X("iteration:O", axis=alt.Axis(labelAngle=0)), y=alt.Y("new:Q", title="new objects"),
        tooltip=["iteration", "new", "total"]).properties(height=200), width="stretch")

by_iteration, direct_tab, table_tab = st.tabs(["By iteration", "Direct kNN", "Table"])
with by_iteration:
    st.caption(f"d is the distance to the object that found it (after ←), not to {found.prototype}: from iteration 2 "
               "on, the finder is an object found before. Mark tiles Relevant or Not relevant as on Search.")
    for it, group in found.table.groupby("iteration"):
        st.markdown(f"**Iteration {it}** · {len(group)} new")
        kit.tile_grid(group, index, key=f"iteration{it}", per_page=TILES_PER_PAGE, actions=True)
with direct_tab:
    st.caption(f"The {len(found.direct)} nearest neighbours of {found.prototype}; ✓ marks those the expansion found too.")
    found_ids = set(found.ids)
    kit.tile_grid(found.direct, index, key="direct", per_page=TILES_PER_PAGE * 2, actions=True,
                  caption=lambda row: kit.tile_caption(row) + (" ✓" if row["id"] in found_ids else ""))
with table_tab:
    kit.show_table(found.table)
    st.markdown("**Per iteration**")
    st.dataframe(found.per_iteration, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="percent")
                                for c in found.per_iteration.columns if c.startswith(("new_", "all_"))})

kit.download_buttons(found.table, f"ulisse-expansion-{found.prototype}", index=index,
                     meta={"prototype": found.prototype, "k": k, "iterations": iterations}, key="expand.download")
kit.samp_buttons(found.table, index=index, meta={"prototype": found.prototype, "k": k, "iterations": iterations},
                 key="expand", name=f"ulisse expansion of {found.prototype}")
