"""Small sidebar controls: an integer slider that keeps its remembered value in range, the class-label choice."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from types import SimpleNamespace

import pandas as pd
import streamlit as st

import ulisse
from ulisse.labels import MAX_CLASSES, NOT_LABELS  # noqa: F401  (MAX_CLASSES: the kit's, re-exported)
from ulisse.progress import watching


def slider(label: str, low: int, high: int, value: int, key: str, **kwargs) -> int:
    """An integer sidebar slider whose remembered value (or the URL's) is kept inside ``[low, high]``."""
    if high <= low:
        st.sidebar.caption(f"{label}: {low}")
        return low
    if key not in st.session_state:
        st.session_state[key] = value
    st.session_state[key] = int(min(max(int(st.session_state[key]), low), high))
    return int(st.sidebar.slider(label, low, high, key=key, **kwargs))


def label_columns(index: ulisse.Index) -> list[str]:
    """Metadata columns that look like classes: not floats, at most ``MAX_CLASSES`` distinct values."""
    out = []
    for col in index.metadata_columns:
        if col in NOT_LABELS or col in ("ra", "dec"):
            continue
        values = index.metadata_column(col)  # one column at a time, kept by the index
        if pd.api.types.is_float_dtype(values):
            continue
        if 1 <= values.nunique(dropna=True) <= MAX_CLASSES:
            out.append(col)
    return out


def choose_label(index: ulisse.Index, key: str) -> str | None:
    """A sidebar choice of the label column for class fractions (None: no fractions)."""
    columns = label_columns(index)
    if not columns:
        st.sidebar.caption("No class column in this index (class fractions need a metadata column of classes).")
        return None
    options = [None] + columns
    if key not in st.session_state or st.session_state[key] not in options:
        st.session_state[key] = columns[0]
    return st.sidebar.selectbox("Class labels", options, key=key, format_func=lambda c: "(none)" if c is None else c,
                                help="A metadata column of classes: its fractions among the results "
                                     "beside its base rate over the whole index.")


_INNERMOST: contextvars.ContextVar = contextvars.ContextVar("ulisse_ui_progress_area", default=None)


@contextmanager
def progress_shown():
    """Long work inside (anomaly scores, artefact checks, the morphology, embedding...) shows here as a
    progress bar that says what it is doing and the time left (:func:`ulisse.progress.watching`); the bar
    goes once the work is done. The app shows every page's work at the top; a page that wraps its own long
    call shows it there instead (the innermost area draws). Yields what the bar shows last (``.text``,
    ``.fraction``)."""
    area = st.empty()
    shown = SimpleNamespace(text="", fraction=0.0, open=True)
    # The bar is drawn in the context it was made in: work inside an st.cache_data function would otherwise
    # record the bar's updates for replay on a later cache hit, when this bar is long gone.
    here = contextvars.copy_context()

    def draw(state) -> None:
        area.progress(state.fraction, text=state.text)
        shown.text, shown.fraction = state.text, state.fraction

    def show(state) -> None:
        # called in the work's context: draw if this is the innermost area there, and the work not yet done
        if shown.open and _INNERMOST.get() is shown:
            here.run(draw, state)

    token = _INNERMOST.set(shown)
    try:
        with watching(show):
            yield shown
    finally:
        _INNERMOST.reset(token)
        shown.open = False
        area.empty()


def valid_choice(key: str, options, default, what: str) -> None:
    """Before a choice widget: a value of ``key`` (from a shared URL, typed by hand) that is not one of
    ``options`` is replaced by ``default`` with a one-line notice, not silently; ``kth morphology`` (a ``+``
    the URL decoded as a space) is read as ``kth+morphology``."""
    value = st.session_state.get(key)
    options = list(options)
    if value in options:
        return
    if isinstance(value, str) and value.replace(" ", "+") in options:
        st.session_state[key] = value.replace(" ", "+")
        return
    if value is not None:
        st.warning(f"{what} {value!r} is not one of {', '.join(map(str, options))}: showing {default}.")
    st.session_state[key] = default
