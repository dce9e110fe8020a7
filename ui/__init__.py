"""The Streamlit web UI (thin pages over the Python API).

``ulisse ui`` serves :mod:`ulisse.ui.app`: a sidebar lists the pages that
plugins register with the ``register_ui_pages`` hook, and runs the chosen
page script. Page scripts use the public UI kit, :mod:`ulisse.ui.kit`, and the
Python API. Each page lives with its plugin (``plugins/<name>/page.py``) and also runs on its own::

    ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/prototype/page.py

The shell imports no plugin: pages reach it only through the hook.

This module imports nothing heavy (no Streamlit).
"""

from __future__ import annotations

from pathlib import Path

INDEX_ENV = "ULISSE_UI_INDEX"  # the index the app opens first (``ulisse ui --index DIR`` sets it)
DASK_ENV = "ULISSE_UI_DASK"  # the Dask cluster sharded indexes are searched on (``ulisse ui --dask SPEC`` sets it)
MAX_UPLOAD_MB = 20  # the largest cutout upload (Streamlit's server.maxUploadSize, checked again in code)
UI_DIR = Path(__file__).resolve().parent
APP = UI_DIR / "app.py"
