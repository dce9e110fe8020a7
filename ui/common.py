"""Shared pieces of the web UI's pages: index chooser, cached loaders, thumbnail grids, uploads, downloads.

Every page script starts the same way::

    from ulisse.ui import common

    common.page_config("Search")
    ref = common.index_sidebar()      # the chosen index (path + manifest generation)
    index = ref.open()                # opened once per process (st.cache_resource)

The index path comes from the sidebar chooser; its first choice is
``st.session_state["index_path"]``, the ``?index=`` query parameter or the
``ULISSE_UI_INDEX`` environment variable (set by ``ulisse ui --index DIR``),
in that order, then the index directories found under ``./indexes``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import math
import os
import re
import runpy
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import streamlit as st

import ulisse
from ulisse.cutouts import CUTOUT_SUFFIXES, FITS_SUFFIXES, RGBConfig
from ulisse.errors import CutoutError, InputError, UlisseError
from ulisse.indexes import store
from ulisse.labels import NOT_LABELS
from ulisse.ui import INDEX_ENV, MAX_UPLOAD_MB
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
MAX_UPLOAD_PIXELS = 25_000_000  # 5000 x 5000: a cutout, not a survey tile (decompression-bomb guard)
MAX_CLASSES = 50  # a metadata column with more distinct values is not offered as class labels
THUMB_PX = 192  # thumbnails are enlarged (nearest neighbour, crisp pixels) to at least this side
FRAME = (200, 30, 45)  # the prototype's frame
OTHER_INDEX = "Other directory…"

SEARCH_PAGE = "Search"
EXPAND_PAGE = "Expand"
MODE_ID = "Object id"

STYLE = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.5rem; }
[data-testid="stImageCaption"] { line-height: 1.3; }
</style>"""

# Widget values that survive a change of page (Streamlit forgets the state of
# widgets that a run does not draw; writing them back keeps them).
PERSISTENT_KEYS = (
    "index.choice", "index.other",
    "search.mode", "search.id", "search.ra", "search.dec", "search.radius", "search.k", "search.label",
    "search.browse", "expand.id", "expand.k", "expand.iterations", "expand.budget", "expand.label",
    "anomalies.method", "anomalies.k", "anomalies.top", "anomalies.label",
)


# -- page setup ----------------------------------------------------------------

def page_config(title: str) -> None:
    """Wide layout, the page title, and widget values kept across pages."""
    st.set_page_config(page_title=f"{title} · ulisse", page_icon=":material/travel_explore:", layout="wide")
    st.html(STYLE)
    for key in PERSISTENT_KEYS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def default(key: str, value) -> None:
    """Give a widget its first value through the session state (no ``value=`` beside a ``key``)."""
    if key not in st.session_state:
        st.session_state[key] = value


def registered_pages():
    """The pages plugins register (hook ``register_ui_pages``), in display order."""
    from ulisse.registry import ui_pages

    return ui_pages()


def run_page(script: str | os.PathLike) -> None:
    """Run a page script inside the app; a ulisse error it lets through becomes a message."""
    try:
        runpy.run_path(str(script), run_name="__main__")
    except UlisseError as exc:
        st.error(str(exc))


def go_to_page(title: str) -> None:
    """Switch the app's page (a no-op when a page script runs on its own)."""
    if "page" in st.session_state and title in [p.title for p in registered_pages()]:
        st.session_state["page"] = title


def use_as_prototype(object_id: str) -> None:
    """Button callback: search the neighbours of ``object_id`` (on the Search page)."""
    st.session_state["search.mode"] = MODE_ID
    st.session_state["search.id"] = object_id
    st.session_state["last_prototype_id"] = object_id
    go_to_page(SEARCH_PAGE)


def expand_from(object_id: str) -> None:
    """Button callback: a recursive expansion from ``object_id`` (on the Expand page)."""
    st.session_state["expand.id"] = object_id
    st.session_state["last_prototype_id"] = object_id
    go_to_page(EXPAND_PAGE)


# -- the index -----------------------------------------------------------------

@dataclass(frozen=True)
class IndexRef:
    """An index directory at one generation of its manifest: the key of everything cached about it."""

    path: str
    generation: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> "IndexRef":
        """Read the manifest of the index at ``path``.

        Raises:
            IndexNotFound, IndexError_: no index there, or not a ulisse index.
        """
        resolved = Path(path).expanduser().resolve()
        manifest = store.read_manifest(resolved)
        return cls(str(resolved), int(manifest.get("generation", 0)))

    def open(self) -> ulisse.Index:
        """The open index (loaded once per path and generation, shared by every session)."""
        return _open_index(self.path, self.generation)


@st.cache_resource(max_entries=4, show_spinner="Opening the index…")
def _open_index(path: str, generation: int) -> ulisse.Index:
    return ulisse.open_index(path)


@st.cache_resource(max_entries=2, show_spinner="Loading the encoder…")
def _load_encoder(spec_json: str, device: str):
    from ulisse.encoder import Encoder, EncoderSpec

    return Encoder.from_spec(EncoderSpec.from_dict(json.loads(spec_json)), device=device)


def with_encoder(index: ulisse.Index) -> ulisse.Index:
    """The index with its encoder loaded: one model per encoder spec for the whole process."""
    spec = json.dumps(index.encoder_spec.to_dict(), sort_keys=True)
    index.use_encoder(_load_encoder(spec, index.device))
    return index


def index_candidates(root: str | os.PathLike | None = None) -> list[str]:
    """Index directories under ``root/indexes`` (default: the working directory), one or two levels down."""
    base = Path(root or Path.cwd()) / "indexes"
    found = {p.parent.resolve() for pattern in (f"*/{store.MANIFEST}", f"*/*/{store.MANIFEST}") for p in base.glob(pattern)}
    return [str(p) for p in sorted(found)]


def initial_index() -> str | None:
    """The index asked for: session state, ``?index=`` query parameter, or ``ULISSE_UI_INDEX``."""
    for value in (st.session_state.get("index_path"), st.query_params.get("index"), os.environ.get(INDEX_ENV)):
        if value:
            return str(Path(str(value)).expanduser().resolve())
    return None


def short_path(path: str) -> str:
    """A path relative to the working directory where it is under it."""
    if path == OTHER_INDEX:
        return path
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def index_sidebar() -> IndexRef:
    """The index chooser in the sidebar; stops the page with a message when there is no usable index."""
    first = initial_index()
    options = list(dict.fromkeys(([first] if first else []) + index_candidates())) + [OTHER_INDEX]
    if st.session_state.get("index.choice") not in options:
        st.session_state.pop("index.choice", None)
    choice = st.sidebar.selectbox("Index", options, key="index.choice", format_func=short_path,
                                  help="An index directory (built by `ulisse index build` or `ulisse demo`).")
    path = st.sidebar.text_input("Index directory", key="index.other", placeholder="path/to/index") \
        if choice == OTHER_INDEX else choice
    if not path:
        st.info("Choose an index in the sidebar. No index yet? `ulisse demo` builds one from the Hubble Deep Field.")
        st.stop()
    try:
        ref = IndexRef.of(path)
        index = ref.open()
    except UlisseError as exc:
        st.error(str(exc))
        st.stop()
    previous = st.session_state.get("index_path")
    if previous and str(Path(previous).expanduser().resolve()) != ref.path:  # another index: its ids, not the last one's
        for key in ("search.id", "expand.id", "last_prototype_id", "search.browse"):
            st.session_state.pop(key, None)
    st.session_state["index_path"] = ref.path
    st.sidebar.caption(f"{len(index):,} objects · {index.encoder_spec.model_name} · "
                       f"{index.manifest.get('factory', '?')} · generation {ref.generation}")
    return ref


def distance_text(d: float) -> str:
    """A distance (or score) for a caption: two decimals, or three significant digits when small."""
    return f"{d:.2f}" if abs(d) >= 1 else f"{d:.3g}"


def first_id(index: ulisse.Index) -> str:
    """The id of the first object of the index (a default prototype)."""
    return str(index.metadata["id"].iloc[0])


def has_object(index: ulisse.Index, object_id: str) -> bool:
    try:
        index.row_of(object_id)
    except UlisseError:
        return False
    return True


@st.cache_resource(show_spinner=False)
def _lock(path: str) -> threading.Lock:
    return threading.Lock()


@contextmanager
def exclusive(ref: IndexRef):
    """One search at a time on an index: sessions share it (and a GPU index or encoder is not thread-safe)."""
    with _lock(ref.path):
        yield ref.open()


def max_k(index: ulisse.Index, cap: int = 100) -> int:
    """The largest sensible number of neighbours for a slider."""
    return max(1, min(cap, len(index) - 1))


def slider(label: str, low: int, high: int, value: int, key: str, **kwargs) -> int:
    """An integer sidebar slider whose remembered value is kept inside ``[low, high]``."""
    if high <= low:
        st.sidebar.caption(f"{label}: {low}")
        return low
    default(key, value)
    st.session_state[key] = int(min(max(st.session_state[key], low), high))
    return int(st.sidebar.slider(label, low, high, key=key, **kwargs))


def label_columns(index: ulisse.Index) -> list[str]:
    """Metadata columns that look like classes: not floats, at most ``MAX_CLASSES`` distinct values."""
    out = []
    for col in index.metadata.columns:
        if col in NOT_LABELS or col in ("ra", "dec"):
            continue
        values = index.metadata[col]
        if pd.api.types.is_float_dtype(values):
            continue
        if 1 <= values.nunique(dropna=True) <= MAX_CLASSES:
            out.append(col)
    return out


@st.cache_data(max_entries=16, show_spinner=False)
def _label_columns(ref: IndexRef) -> list[str]:
    return label_columns(ref.open())


def choose_label(ref: IndexRef, key: str) -> str | None:
    """A sidebar choice of the label column for class fractions (None: no fractions)."""
    columns = _label_columns(ref)
    if not columns:
        st.sidebar.caption("No class column in this index (class fractions need a metadata column of classes).")
        return None
    options = [None] + columns
    if st.session_state.get(key, columns[0]) not in options:
        st.session_state.pop(key)
    default(key, columns[0])
    return st.sidebar.selectbox("Class labels", options, key=key, format_func=lambda c: "(none)" if c is None else c,
                                help="A metadata column of classes: its fractions among the results "
                                     "beside its base rate over the whole index.")


# -- thumbnails ----------------------------------------------------------------

def display_png(rgb: np.ndarray, framed: bool = False, size: int = THUMB_PX) -> bytes:
    """An RGB cutout as PNG for the page: small cutouts enlarged with crisp pixels, the prototype framed."""
    from PIL import Image, ImageOps

    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    side = max(im.size)
    if side < size:
        factor = math.ceil(size / side)
        im = im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
    elif side > 2 * size:
        im.thumbnail((2 * size, 2 * size), Image.Resampling.LANCZOS)
    if framed:
        im = ImageOps.expand(im, border=max(4, max(im.size) // 24), fill=FRAME)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@st.cache_data(max_entries=20_000, show_spinner=False)
def thumbnail_png(ref: IndexRef, object_id: str, framed: bool = False) -> bytes | None:
    """The cutout of an index object as PNG (None when its file is gone)."""
    image = ulisse.plot.thumbnail(ref.open(), object_id)
    return None if image is None else display_png(image, framed)


@dataclass(frozen=True)
class Tile:
    """One thumbnail of a grid: an index object and the caption under it."""

    object_id: str
    caption: str
    framed: bool = False


def tile_grid(ref: IndexRef, tiles: Sequence[Tile], *, columns: int = 6,
              action: tuple[str, Callable[[str], None]] | None = None, key: str = "grid") -> None:
    """Thumbnails in rows of ``columns``, in order, each with its caption.

    ``action=(label, callback)`` puts a button under each thumbnail; clicking it
    calls ``callback(object_id)``.
    """
    for start in range(0, len(tiles), columns):
        row = tiles[start:start + columns]
        for col, tile in zip(st.columns(columns, gap="small"), row):
            with col:
                png = thumbnail_png(ref, tile.object_id, tile.framed)
                if png is None:
                    st.caption(f"(no image) {tile.caption}")
                else:
                    st.image(png, caption=tile.caption, width="stretch")
                if action is not None:
                    label, callback = action
                    st.button(label, key=f"{key}.{start}.{tile.object_id}", on_click=callback, args=(tile.object_id,),
                              type="tertiary", width="stretch")


# -- uploads -------------------------------------------------------------------

class UploadError(InputError):
    """An uploaded cutout cannot be used; the message says why (for the page to show)."""


def upload_suffix(name: str) -> str | None:
    """The cutout suffix of a file name (``.png``, ``.fits.gz``...), or None."""
    lower = name.lower()
    return next((s for s in sorted(CUTOUT_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), None)


def decode_upload(name: str, data: bytes, rgb: RGBConfig = RGBConfig(), *, max_bytes: int = MAX_UPLOAD_BYTES,
                  max_pixels: int = MAX_UPLOAD_PIXELS) -> np.ndarray:
    """An uploaded cutout (PNG, JPEG or FITS) as an ``H x W x 3`` uint8 RGB array.

    The size of the file and of the image are checked before anything is
    decoded (a small compressed file can hold a huge image); the file is then
    read exactly as ``ulisse query --image`` reads one.

    Raises:
        UploadError: empty or too large, not a cutout type, not readable, too many
            pixels, or a FITS file without image data.

    Example:
        >>> decode_upload("notes.txt", b"hello")
        Traceback (most recent call last):
        ...
        ulisse.ui.common.UploadError: notes.txt: not a cutout ulisse reads (PNG, JPEG or FITS: ...)
    """
    label = Path(name).name or "upload"
    if not data:
        raise UploadError(f"{label}: the file is empty")
    if len(data) > max_bytes:
        raise UploadError(f"{label}: {len(data) / 2**20:.1f} MB, more than the {max_bytes / 2**20:.0f} MB allowed")
    suffix = upload_suffix(label)
    if suffix is None:
        raise UploadError(f"{label}: not a cutout ulisse reads (PNG, JPEG or FITS: {', '.join(CUTOUT_SUFFIXES)})")
    if suffix in FITS_SUFFIXES:
        _check_fits(label, data, max_pixels)
    else:
        _check_image(label, data, max_pixels)
    with tempfile.TemporaryDirectory(prefix="ulisse-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return ulisse.read_cutout(path, rgb).image
        except CutoutError as exc:
            raise UploadError(f"{label}: {exc.reason}") from None
        except Exception as exc:  # whatever a damaged file makes a reader raise: a message, not a traceback
            raise UploadError(f"{label}: could not be read ({type(exc).__name__})") from None


def _too_many(label: str, pixels: int, max_pixels: int, shape: str) -> UploadError:
    return UploadError(f"{label}: the image is too large ({shape}, {pixels / 1e6:.0f} million pixels; at most "
                       f"{max_pixels / 1e6:.0f} million: decompression-bomb guard)")


def _check_image(label: str, data: bytes, max_pixels: int) -> None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{label}: the image is too large (decompression-bomb guard)") from None
    except Exception:
        raise UploadError(f"{label}: not a readable PNG or JPEG image") from None
    if width * height > max_pixels:
        raise _too_many(label, width * height, max_pixels, f"{width} x {height} px")


def _check_fits(label: str, data: bytes, max_pixels: int) -> None:
    from astropy.io import fits

    raw = io.BytesIO(data)
    fileobj = gzip.GzipFile(fileobj=raw) if data[:2] == b"\x1f\x8b" else bz2.BZ2File(raw) if data[:3] == b"BZh" else raw
    shape = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(fileobj, memmap=False) as hdul:  # headers only, up to the first image
                for hdu in hdul:
                    if getattr(hdu, "is_image", False) and len(hdu.shape) >= 2:
                        shape = tuple(int(n) for n in hdu.shape)
                        break
    except Exception:
        raise UploadError(f"{label}: not a readable FITS file") from None
    if shape is None:
        raise UploadError(f"{label}: the FITS file holds no image data")
    planes = shape[0] if len(shape) == 3 else 1
    if int(np.prod(shape, dtype=np.int64)) > max_pixels * max(planes, 1) or len(shape) > 3:
        raise _too_many(label, int(np.prod(shape, dtype=np.int64)), max_pixels, " x ".join(map(str, shape)))


# -- results: tables, class fractions, downloads ---------------------------------

def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """A result table for the eye: no row numbers, long source paths or empty columns (ra, dec of a plain image)."""
    empty = [c for c in table.columns if table[c].isna().all() and c not in ("rank", "id")]
    return table.drop(columns=[c for c in ("row", "source") if c in table.columns] + empty)


def fraction_columns(fractions: pd.DataFrame, names: dict | None = None) -> pd.DataFrame:
    """Class fractions with readable column names (``first 16``, ``base rate``) and string class names."""
    names = names or {}
    out = fractions.rename(columns=lambda c: names.get(c, "base rate" if c == "base_rate" else
                                                       (f"first {c}" if isinstance(c, (int, np.integer)) else str(c))))
    out.index = out.index.astype(str)
    out.index.name = fractions.index.name or "class"
    return out


def fractions_view(fractions: pd.DataFrame, label: str, names: dict | None = None) -> None:
    """Class fractions (rows = classes, columns = lists compared with the base rate): a small table and a bar chart."""
    shown = fraction_columns(fractions, names)
    left, right = st.columns([2, 3], gap="large")
    with left:
        st.dataframe(shown, column_config={c: st.column_config.NumberColumn(format="percent") for c in shown.columns})
    with right:
        st.altair_chart(fractions_chart(shown, label), width="stretch")


def fractions_chart(shown: pd.DataFrame, label: str):
    """Grouped bars: for each class, its fraction in each list, the base rate last (grey)."""
    import altair as alt

    lists = list(shown.columns)
    long = shown.rename_axis("class").reset_index().melt(id_vars="class", var_name="list", value_name="fraction")
    palette = ["#c8102e", "#2f6db5", "#e69f00", "#009e73"]
    colours = [("#a7a7a7" if c == "base rate" else palette[i % len(palette)]) for i, c in enumerate(lists)]
    return alt.Chart(long).mark_bar().encode(
        x=alt.X("class:N", sort=list(shown.index), title=label, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("list:N", sort=lists),
        y=alt.Y("fraction:Q", title="fraction", axis=alt.Axis(format="%")),
        color=alt.Color("list:N", sort=lists, scale=alt.Scale(domain=lists, range=colours),
                        legend=alt.Legend(title=None, orient="bottom")),
        tooltip=[alt.Tooltip("class:N", title=label), "list:N", alt.Tooltip("fraction:Q", format=".1%")],
    ).properties(height=240)


def safe_stem(text: str) -> str:
    """A file-name stem from any text."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_.")[:80] or "results"


def download_buttons(table: pd.DataFrame, meta: dict, stem: str, key: str) -> None:
    """Download buttons for a result table: CSV and VOTable."""
    from ulisse.results import render

    table = table.drop(columns=["row"], errors="ignore")
    stem = safe_stem(stem)
    csv_col, vot_col, _ = st.columns([1, 1, 3])
    csv_col.download_button("Download CSV", render(table, "csv", meta), f"{stem}.csv", "text/csv", key=f"{key}.csv",
                            on_click="ignore", icon=":material/download:", width="stretch")
    vot_col.download_button("Download VOTable", render(table, "votable", meta), f"{stem}.xml",
                            "application/x-votable+xml", key=f"{key}.votable", on_click="ignore",
                            icon=":material/download:", width="stretch")
