"""The ulisse web app: the sidebar lists the pages plugins register and runs the chosen one.

Pages come from the ``register_ui_pages`` hook (:func:`ulisse.registry.ui_pages`):
Search, Marks, Expand and Anomalies from the first-party plugins, and whatever
other plugins add. The chosen page is part of the URL (``?page=``), with the rest
of the view (see :mod:`ulisse.ui.kit`). Run it with ``ulisse ui [--index DIR]``.
"""

import os
import runpy

import streamlit as st

from ulisse.errors import UlisseError
from ulisse.registry import Config, ui_pages
from ulisse.ui import DASK_ENV
import ulisse.ui.kit as kit

kit.page_setup("ulisse")
pages = ui_pages(config=Config(device="auto"))
if not pages:
    st.error("No page is registered: no plugin implements the register_ui_pages hook (see `ulisse plugins`).")
    st.stop()
titles = [page.title for page in pages]
if st.session_state.get("page") not in titles:  # started with --dask: the first page for sharded indexes
    first = next((p for p in pages if p.sharded), pages[0]) if os.environ.get(DASK_ENV) else pages[0]
    st.session_state["page"] = first.title
st.sidebar.title("ulisse")
title = st.sidebar.radio("Page", titles, key="page", label_visibility="collapsed")
st.sidebar.divider()
try:
    with kit.progress_shown():  # long work of any page: a progress bar with the time left
        runpy.run_path(str(pages[titles.index(title)].script), run_name="__main__")
except UlisseError as exc:  # a ulisse error a page lets through: a message, not a traceback
    st.error(str(exc))
finally:
    kit.sync_url()
