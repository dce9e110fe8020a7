"""Numbers and tables for the eye, class-fraction charts, and downloads (VOTable, FITS, CSV, ECSV)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
import streamlit as st

import ulisse
from ulisse.results import export_table, relative_source  # noqa: F401 (the kit's names: one export path)
from ulisse.ui.kit._uploads import safe_stem


def number_text(x) -> str:
    """A number in full for the eye: integers as they are, others to 10 significant digits (183321.3333)."""
    if isinstance(x, (bool, np.bool_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "" if x is None else str(x)
    if not np.isfinite(v):
        return ""
    return f"{v:.10g}"


def distance_text(d: float) -> str:
    """A distance (or score) for a caption: two decimals, or three significant digits when small."""
    return f"{d:.2f}" if abs(d) >= 1 else f"{d:.3g}"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """A result table for the eye: numbers written in full, no row numbers, paths or empty columns."""
    empty = [c for c in table.columns if table[c].isna().all() and c not in ("rank", "id")]
    out = table.drop(columns=[c for c in ("row", "source") if c in table.columns] + empty)
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(number_text)
    return out


def show_table(table: pd.DataFrame, **kwargs) -> None:
    """``st.dataframe`` of :func:`display_table` (numbers as full text: a narrow column never cuts digits)."""
    st.dataframe(display_table(table), hide_index=True, **kwargs)


def fractions_view(fractions: pd.DataFrame, label: str, names: dict | None = None) -> None:
    """Class fractions (rows = classes, columns = lists compared with the base rate): a table and a bar chart."""
    import altair as alt

    names = names or {}
    shown = fractions.rename(columns=lambda c: names.get(c, "base rate" if c == "base_rate" else
                                                        (f"first {c}" if isinstance(c, (int, np.integer)) else str(c))))
    shown.index = shown.index.astype(str)
    shown.index.name = fractions.index.name or "class"
    left, right = st.columns([2, 3], gap="large")
    with left:
        st.dataframe(shown, column_config={c: st.column_config.NumberColumn(format="percent") for c in shown.columns})
    lists = list(shown.columns)
    long = shown.rename_axis("class").reset_index().melt(id_vars="class", var_name="list", value_name="fraction")
    palette = ["#c8102e", "#2f6db5", "#e69f00", "#009e73"]
    colours = [("#a7a7a7" if c == "base rate" else palette[i % len(palette)]) for i, c in enumerate(lists)]
    with right:
        st.altair_chart(alt.Chart(long).mark_bar().encode(
            x=alt.X("class:N", sort=list(shown.index), title=label, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("list:N", sort=lists),
            y=alt.Y("fraction:Q", title="fraction", axis=alt.Axis(format="%")),
            color=alt.Color("list:N", sort=lists, scale=alt.Scale(domain=lists, range=colours),
                            legend=alt.Legend(title=None, orient="bottom")),
            tooltip=[alt.Tooltip("class:N", title=label), "list:N", alt.Tooltip("fraction:Q", format=".1%")],
        ).properties(height=240), width="stretch")


# -- downloads ---------------------------------------------------------------------------

FORMAT_LABELS = {"csv": "CSV", "votable": "VOTable", "json": "JSON", "fits": "FITS", "ecsv": "ECSV"}
DOWNLOAD_FORMATS = ("votable", "fits", "csv", "ecsv")
FORMAT_HELP = {
    "votable": "VOTable: units, UCDs and the query as PARAMs (TOPCAT, Aladin, astropy)",
    "fits": "FITS binary table: TUNIT/TUCD and the query as header keywords",
    "csv": "CSV: a bare table any reader takes (no units, no record: ECSV or VOTable carry those)",
    "ecsv": "astropy's Enhanced CSV: units and the query in its header (astropy, TOPCAT)",
}


def page_record(index=None, meta: dict | None = None, verb: str | None = None):
    """The :class:`ulisse.record.QueryRecord` of a page's result: the page (``ui:Search``), ``meta``'s query
    parameters (prototype, k, combine...), the index and its encoder spec."""
    from ulisse.record import query_record

    if index is None and st.session_state.get("index_path"):
        index = st.session_state["index_path"]
    params = {k: v for k, v in (meta or {}).items() if k not in ("index", "verb")}
    page = st.session_state.get("page") or st.session_state.get("_kit.title") or "page"
    return query_record(index, verb or (meta or {}).get("verb") or f"ui:{page}", **params)


def download_data(table: pd.DataFrame, fmt: str, *, index=None, meta: dict | None = None, record=None):
    """The file a download button gives: ``table`` (as :func:`export_table` makes it) in the export format
    ``fmt`` by :func:`ulisse.results.render`, with ``record`` (else :func:`page_record` of ``meta``)."""
    from ulisse.results import render

    if index is None and st.session_state.get("index_path"):
        index = st.session_state["index_path"]
    index_meta = {"index": str(index if isinstance(index, (str, os.PathLike)) else index.path)} if index else {}
    return render(export_table(table, index), fmt, index_meta, record=record or page_record(index, meta))


def download_buttons(table: pd.DataFrame, name: str, *, index: ulisse.Index | None = None,
                     meta: dict | None = None, key: str | None = None,
                     formats: Sequence[str] = DOWNLOAD_FORMATS, record=None) -> None:
    """Download buttons, one per export format (VOTable, FITS, CSV and ECSV unless told); a file is made only
    when clicked, by :func:`ulisse.results.render`, the command line's own export path.

    ``formats`` are names of registered export formats (``register_export_formats``:
    ``csv``, ``votable``, ``fits``... and any a plugin adds); each gives the file's
    suffix and media type. ``source`` paths are written relative to ``index`` (the
    current index by default). Every file carries the query's record (``record``,
    else :func:`page_record` of ``meta``: prototype, k..., the index and its encoder)
    and the columns' units and UCDs.
    """
    from ulisse.registry import export_format

    if index is None and st.session_state.get("index_path"):
        index = st.session_state["index_path"]
    stem = safe_stem(name)
    key = key or f"download.{stem}"
    chosen = [export_format(f) for f in formats]

    def data(fmt):
        return download_data(table, fmt.name, index=index, meta=meta, record=record)

    # one row of buttons as wide as their labels, wrapping on a narrow window (never a cut label)
    with st.container(horizontal=True, wrap=True, gap="small", key=f"ulisse-downloads-{safe_stem(key)}"):
        for fmt in chosen:
            st.download_button(f"Download {FORMAT_LABELS.get(fmt.name, fmt.name)}",
                               lambda fmt=fmt: data(fmt), f"{stem}{fmt.extensions[0]}",
                               fmt.media_type, key=f"{key}.{fmt.name}", on_click="ignore",
                               icon=":material/download:", width="content", help=FORMAT_HELP.get(fmt.name))
