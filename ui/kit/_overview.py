"""The index at a glance: a sensible first prototype, orders for the thumbnail picker, where it lies on the sky."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st

import ulisse
from ulisse.ui.kit._index import index_from_key, index_key

FLUX_COLUMNS = ("flux", "flux_auto", "flux_r", "petroflux_r", "modelflux_r")  # brighter: larger
MAG_COLUMNS = ("mag", "mag_auto", "r", "r_mag", "mag_r", "rmag", "petromag_r", "modelmag_r", "cmodelmag_r",
               "i_mag", "g_mag")  # brighter: smaller
PICK_SORTS = ("Brightest first", "Most typical first", "Most unusual first", "Id", "RA", "Dec")


def _brightness(index: ulisse.Index) -> pd.Series | None:
    """A brightness per object (larger: brighter) from a flux or magnitude column, or None."""
    columns = {c.lower(): c for c in index.metadata_columns}
    for names, sign in ((FLUX_COLUMNS, 1.0), (MAG_COLUMNS, -1.0)):
        for name in names:
            if name in columns:
                values = pd.to_numeric(index.metadata_column(columns[name]), errors="coerce")
                if values.notna().any():
                    return sign * values.reset_index(drop=True)
    return None


@st.cache_data(max_entries=8, show_spinner=False)
def _typicality(path: str, generation: int) -> np.ndarray:
    """Each object's distance to the index's mean vector (small: typical)."""
    index = index_from_key((path, generation))
    vectors = np.asarray(index.all_vectors(), dtype=np.float32)
    return np.linalg.norm(vectors - vectors.mean(axis=0), axis=1)


@st.cache_data(max_entries=8, show_spinner=False)
def _default_row(path: str, generation: int) -> int:
    index = index_from_key((path, generation))
    bright = _brightness(index)
    if bright is not None:
        return int(np.nanargmax(bright.to_numpy(np.float64)))
    return int(np.argmin(_typicality(path, generation)))


def default_prototype(index: ulisse.Index) -> str:
    """The first prototype of a page nobody has given one: the brightest object (a flux or magnitude
    column), else the most typical (nearest to the index's mean feature vector), not an empty field."""
    return index.id_of(_default_row(*index_key(index)))


def default_prototype_reason(index: ulisse.Index) -> str:
    """Why :func:`default_prototype` chose its object, in a few words."""
    return "the brightest object" if _brightness(index) is not None else "the object nearest the index's mean"


def sort_for_picking(index: ulisse.Index, order: str) -> pd.DataFrame:
    """The index's objects (``id``, ``ra``, ``dec`` where present) in one of :data:`PICK_SORTS`."""
    columns = [c for c in ("id", "ra", "dec") if c in index.metadata_columns]
    table = pd.DataFrame({c: index.metadata_column(c) for c in columns}).reset_index(drop=True)
    if order == "Brightest first":
        bright = _brightness(index)
        if bright is not None:
            return table.iloc[np.argsort(-bright.fillna(-np.inf).to_numpy(np.float64), kind="stable")]
        order = "Most typical first"
    if order in ("Most typical first", "Most unusual first"):
        distance = _typicality(*index_key(index))
        return table.iloc[np.argsort(distance if order == "Most typical first" else -distance, kind="stable")]
    column = {"RA": "ra", "Dec": "dec"}.get(order, "id")
    return table.sort_values(column, kind="stable") if column in table.columns else table


@st.cache_data(max_entries=8, show_spinner=False)
def _footprint(path: str, generation: int, mark: tuple[float, float] | None) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = index_from_key((path, generation))
    if not {"ra", "dec"} <= set(index.metadata_columns):
        return None
    ra = pd.to_numeric(index.metadata_column("ra"), errors="coerce").to_numpy(np.float64)
    dec = pd.to_numeric(index.metadata_column("dec"), errors="coerce").to_numpy(np.float64)
    ok = np.isfinite(ra) & np.isfinite(dec)
    if not ok.any():
        return None

    def x(r):  # RA increases to the left, as on the sky
        return -np.radians(((np.asarray(r) + 180.0) % 360.0) - 180.0)

    fig = plt.figure(figsize=(4.2, 2.4), dpi=110)
    ax = fig.add_subplot(projection="mollweide")
    ax.scatter(x(ra[ok]), np.radians(dec[ok]), s=6, color="#c8102e", label=f"{int(ok.sum()):,} objects")
    if mark is not None:
        ax.scatter(x(mark[0]), np.radians(mark[1]), s=60, marker="x", color="#2f6db5", label="your position")
    ax.set_xticks(np.radians([-120, -60, 0, 60, 120]))
    ax.set_xticklabels(["120°", "60°", "0°", "300°", "240°"], fontsize=6)
    ax.tick_params(axis="y", labelsize=6)
    ax.grid(True, linewidth=0.4)
    ax.legend(loc="lower right", fontsize=6, frameon=False, bbox_to_anchor=(1.05, -0.25))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def sky_footprint_png(index: ulisse.Index, mark: tuple[float, float] | None = None) -> bytes | None:
    """A small all-sky (Mollweide, RA to the left) plot of where the index's objects lie, as PNG.

    ``mark`` adds a position (ra, dec in degrees), the one a user asked for, say. None when
    the index has no sky positions.
    """
    return _footprint(*index_key(index), None if mark is None else (float(mark[0]), float(mark[1])))
