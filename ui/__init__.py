"""The Streamlit web UI (thin pages over the Python API).

``ulisse ui`` serves :mod:`ulisse.ui.app`: a sidebar lists the pages that
plugins register with the ``register_ui_pages`` hook, and runs the chosen
page script. Page scripts use the public UI kit, :mod:`ulisse.ui.kit`, and the
Python API. Each page script (``ui/views/*.py``) also runs on its own::

    ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run ui/views/search.py

This module imports nothing heavy (no Streamlit).
"""

from __future__ import annotations

from pathlib import Path

INDEX_ENV = "ULISSE_UI_INDEX"  # the index the app opens first (``ulisse ui --index DIR`` sets it)
MAX_UPLOAD_MB = 20  # the largest cutout upload (Streamlit's server.maxUploadSize, checked again in code)
UI_DIR = Path(__file__).resolve().parent
APP = UI_DIR / "app.py"
VIEWS = UI_DIR / "views"  # not "pages": Streamlit would turn a pages/ folder into its own navigation


def view(name: str) -> Path:
    """The path of a first-party page script, e.g. ``view("search")``."""
    return VIEWS / f"{name}.py"
