"""SAMP buttons: "Send to TOPCAT / Aladin" for a result table, "Show in Aladin" for an object.

Over :mod:`ulisse.samp` (the hub of the machine that runs ``ulisse ui``): the
table goes as a VOTable with units, UCDs and the query's record, the position
as ``coord.pointAt.sky``. Without a hub the page says how to start one.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ulisse.samp import SampError, point_at, send_table
from ulisse.ui.kit._tables import export_table, page_record


def samp_buttons(table: pd.DataFrame, record=None, *, index=None, meta: dict | None = None, key: str = "samp",
                 name: str = "ulisse result") -> None:
    """A "Send to TOPCAT / Aladin" button for a result table (``record``: its
    :class:`~ulisse.record.QueryRecord`, else the page's, from ``meta``); the outcome is one line below it."""
    if index is None and st.session_state.get("index_path"):
        index = st.session_state["index_path"]
    if st.button("Send to TOPCAT / Aladin", key=f"{key}.samp.table", icon=":material/send:",
                 help="Send this table over SAMP to TOPCAT, Aladin or another tool running on this machine",
                 width="content"):
        try:
            report = send_table(export_table(table, index), record or page_record(index, meta), name=name)
        except SampError as exc:
            st.warning(str(exc), icon=":material/info:")
        else:
            st.success(report.text().capitalize(), icon=":material/check:")


def show_in_aladin(ra, dec, *, key: str = "samp") -> None:
    """A "Show in Aladin" button: the SAMP sky viewers (Aladin...) move to ``ra``, ``dec`` (degrees)."""
    if st.button("Show in Aladin", key=f"{key}.samp.point", icon=":material/my_location:",
                 help="Point Aladin (or another SAMP sky viewer on this machine) at this object", width="content"):
        try:
            report = point_at(float(ra), float(dec))
        except SampError as exc:
            st.warning(str(exc), icon=":material/info:")
        else:
            st.success(report.text().capitalize(), icon=":material/check:")
