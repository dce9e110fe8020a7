"""The ulisse web app: the sidebar lists the pages plugins register and runs the chosen one.

Pages come from the ``register_ui_pages`` hook (:func:`ulisse.registry.ui_pages`):
Search, Expand and Anomalies from the first-party plugins, and whatever other
plugins add. Run it with ``ulisse ui [--index DIR]``.
"""

import streamlit as st

from ulisse.ui import common

common.page_config("ulisse")
pages = common.registered_pages()
if not pages:
    st.error("No page is registered: no plugin implements the register_ui_pages hook (see `ulisse plugins`).")
    st.stop()
titles = [page.title for page in pages]
asked = st.query_params.get("page")
if "page" not in st.session_state or st.session_state["page"] not in titles:
    st.session_state["page"] = asked if asked in titles else titles[0]
st.sidebar.title(":material/travel_explore: ulisse")
title = st.sidebar.radio("Page", titles, key="page", label_visibility="collapsed")
st.sidebar.divider()
common.run_page(pages[titles.index(title)].script)
