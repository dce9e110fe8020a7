"""Heads: regression heads of the index (training status, report plots, predictions on tiles and in detail).

A head predicts a catalogue quantity from the vectors with an error bar
(``ulisse head train``, or the form below). Runs inside the app or alone:
``ULISSE_UI_INDEX=indexes/lenses streamlit run plugins/heads/page.py``.
"""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from ulisse.errors import UlisseError
from ulisse.plugins.heads import METHODS, head_report, list_heads, predict_head, train_head
import ulisse.ui.kit as kit

PER_PAGE = 24


def numeric_columns(index) -> list[str]:
    return [c for c in index.metadata_columns if c not in ("row", "id", "ra", "dec", "source")
            and pd.to_numeric(index.metadata_column(c), errors="coerce").notna().sum() >= 8]


def train_form(index) -> None:
    columns = numeric_columns(index)
    with st.expander("Train a head", expanded=not list_heads(index).shape[0]):
        if not columns:
            st.caption("The catalogue has no numeric column with at least 8 values to learn.")
            return
        with st.form("heads.train"):
            target = st.selectbox("Target column", columns, key="heads.target")
            name = st.text_input("Name", value="", key="heads.name", placeholder="TARGET_pred",
                                 help="Its predictions become the columns NAME, NAME_std, NAME_std_aleatoric, "
                                      "NAME_std_epistemic. Empty: the target column's name and _pred.")
            method = st.selectbox("Method", METHODS, key="heads.method")
            members = st.number_input("Ensemble members", 1, 20, 5, key="heads.members")
            overwrite = st.checkbox("Replace the head of that name (--overwrite)", key="heads.overwrite",
                                    help="Without it, a name already trained is refused before any training.")
            go = st.form_submit_button("Train")
        if go:
            name = name.strip() or f"{target}_pred"  # the default follows the target chosen
            try:
                with st.spinner(f"Training {name}…"), kit.index_lock(index):
                    trained = train_head(index, target, name, method=method, members=int(members),
                                         overwrite=overwrite)
            except UlisseError as exc:
                st.error(str(exc))
                return
            v = trained.metrics["validation"]
            st.success(f"Trained {trained.name}: validation RMSE {v['rmse']:.4g}, 68 % coverage "
                       f"{100 * v['coverage_68']:.0f} %, 95 % coverage {100 * v['coverage_95']:.0f} %.")


def report_charts(rep) -> None:
    t = rep.table
    name = rep.name
    left, right = st.columns(2)
    pit = pd.DataFrame({"PIT": t["pit"]})
    left.altair_chart(alt.Chart(pit).mark_bar().encode(
        x=alt.X("PIT:Q", bin=alt.Bin(extent=[0, 1], step=0.1), title="PIT (uniform when calibrated)"),
        y=alt.Y("count():Q", title="objects")).properties(height=260, title="PIT histogram"), width="stretch")
    pts = pd.DataFrame({"true": t[rep.truth], "predicted": t[name], "low": t[name] - t[f"{name}_std"],
                        "high": t[name] + t[f"{name}_std"], "id": t["id"]})
    lo, hi = float(np.nanmin(pts[["true", "predicted"]])), float(np.nanmax(pts[["true", "predicted"]]))
    base = alt.Chart(pts).encode(x=alt.X("true:Q", title=f"true {rep.truth}"))
    line = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(color="black", strokeDash=[4, 4]) \
        .encode(x="x:Q", y="y:Q")
    right.altair_chart((base.mark_rule(opacity=0.3).encode(y="low:Q", y2="high:Q")
                        + base.mark_circle(size=18).encode(y=alt.Y("predicted:Q", title=f"{name} (±1σ)"),
                                                           tooltip=["id", "true", "predicted"])
                        + line).properties(height=260, title="Predicted against true"), width="stretch")


kit.page_setup("Heads")
index = kit.current_index()
kit.sync_url()
st.title("Heads")
st.caption("Regression heads learn a catalogue quantity from the vectors, with error bars: aleatoric (the noise "
           "each network predicts) and epistemic (how much networks disagree).")

train_form(index)
heads = list_heads(index)
if heads.empty:
    st.info("No heads yet. Train one above or with `ulisse head train DIR --target COLUMN --name NAME`.")
    st.stop()

st.subheader("Training status")
kit.show_table(heads)
name = st.sidebar.selectbox("Head", list(heads["name"]), key="heads.head")
info = heads.set_index("name").loc[name]

try:
    preds = predict_head(index, name)
except UlisseError as exc:
    st.error(str(exc))
    st.stop()

truth_options = numeric_columns(index)
default = truth_options.index(info["target"]) if info["target"] in truth_options else 0
if truth_options:
    st.subheader("Report")
    truth = st.selectbox("Truth column", truth_options, index=default, key="heads.truth")
    try:
        rep = head_report(index, name, truth)
    except UlisseError as exc:
        st.warning(str(exc))
    else:
        m = rep.metrics
        st.caption(f"Scores on {rep.note}" + ("" if str(m["n"]) in rep.note else f": {m['n']} objects") + ".")
        cols = st.columns(5)
        for col, (label, value) in zip(cols, [("RMSE", f"{m['rmse']:.4g}"), ("NLL", f"{m['nll']:.3f}"),
                                              ("68 % coverage", f"{100 * m['coverage_68']:.0f} %"),
                                              ("95 % coverage", f"{100 * m['coverage_95']:.0f} %"),
                                              ("mean σ", f"{m['mean_std']:.3g}")]):
            col.metric(label, value)
        report_charts(rep)

st.subheader("Predictions")
order = st.radio("Order", ["highest first", "lowest first", "most uncertain first"], horizontal=True,
                 key="heads.order")
key = {"highest first": (name, False), "lowest first": (name, True),
       "most uncertain first": (f"{name}_std", False)}[order]
ranked = preds.sort_values(key[0], ascending=key[1], kind="stable").reset_index(drop=True)
ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
truth_values = pd.to_numeric(index.metadata_column(info["target"]), errors="coerce").to_numpy(np.float64) \
    if info["target"] in index.metadata_columns else None


def caption(row: dict) -> str:
    return f"#{row['rank']} {row['id']}\n{name} = {row[name]:.3g} ± {row[f'{name}_std']:.2g}"


kit.tile_grid(ranked, index, key="heads", columns=6, per_page=PER_PAGE, caption=caption)

detail = st.selectbox("Object", list(ranked["id"][:200]), key="heads.detail")
if detail:
    row = ranked.set_index("id").loc[detail]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(name, f"{row[name]:.4g}")
    c2.metric("σ total", f"{row[f'{name}_std']:.3g}")
    c3.metric("σ aleatoric", f"{row[f'{name}_std_aleatoric']:.3g}")
    c4.metric("σ epistemic", f"{row[f'{name}_std_epistemic']:.3g}")
    if truth_values is not None and np.isfinite(truth_values[index.row_of(detail)]):
        st.caption(f"catalogue {info['target']} = {truth_values[index.row_of(detail)]:.4g}")
    kit.object_detail(index, detail, key="heads.object")

kit.download_buttons(ranked, f"ulisse-head-{name}", index=index, meta={"head": name}, key="heads.download")
