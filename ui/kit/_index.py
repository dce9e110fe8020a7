"""The index a page works on: chosen in the sidebar, opened once per process, locked while searched."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

import ulisse
from ulisse.errors import UlisseError
from ulisse.indexes import faiss_backend, store
from ulisse.ui import INDEX_ENV
from ulisse.ui.kit._state import DETAIL, PROTOS

OTHER_INDEX = "Other directory…"


@st.cache_resource(max_entries=4, show_spinner="Opening the index…")
def _open_index(path: str, generation: int) -> ulisse.Index:
    """One open index per path and generation, shared by every session.

    On a machine where FAISS has a GPU, the index is searched once here, so that its GPU copy is made
    while the spinner turns and stays resident for every later query (it lives as long as this entry).
    """
    index = ulisse.open_index(path)
    index.join_compute_max = 0  # a page's table never waits for a measurement (the pages measure in the background)
    if len(index) and faiss_backend.gpu_available():
        with index_lock(index):
            index.search(index.vectors_of_rows([0]), 1)
    return index


@st.cache_resource(max_entries=2, show_spinner="Loading the encoder…")
def _load_encoder(spec_json: str, device: str):
    import json

    from ulisse.encoder import Encoder, EncoderSpec

    return Encoder.from_spec(EncoderSpec.from_dict(json.loads(spec_json)), device=device)


def with_encoder(index: ulisse.Index) -> ulisse.Index:
    """The index with its encoder loaded: one model per encoder spec for the whole process."""
    import json

    spec = json.dumps(index.encoder_spec.to_dict(), sort_keys=True)
    index.use_encoder(_load_encoder(spec, index.device))
    return index


@st.cache_resource(show_spinner=False)
def _lock(path: str) -> threading.Lock:
    return threading.Lock()


@contextmanager
def index_lock(index: ulisse.Index):
    """One search at a time on an index: sessions share it (a GPU index or an encoder is not thread-safe)."""
    with _lock(str(index.path)):
        yield index


def index_key(index: ulisse.Index) -> tuple[str, int]:
    """``(path, generation)``: a hashable key of the index as it is now, for ``st.cache_data`` functions."""
    return str(Path(index.path).resolve()), int(index.manifest.get("generation", 0))


def index_from_key(key: tuple[str, int]) -> ulisse.Index:
    """The open index of a key from :func:`index_key` (inside cached functions)."""
    return _open_index(*key)


def open_path(path: str) -> ulisse.Index:
    """The open index at ``path`` as it is now (cached per path and generation)."""
    from ulisse.indexes import shards

    resolved = Path(path).expanduser().resolve()
    if shards.is_sharded(resolved):
        raise UlisseError(f"{resolved}: a sharded index: search it on the Cluster search page "
                          "(ulisse ui --index DIR --dask SCHEDULER)")
    manifest = store.read_manifest(resolved)
    return _open_index(str(resolved), int(manifest.get("generation", 0)))


def _resolved(path) -> str | None:
    return str(Path(str(path)).expanduser().resolve()) if path else None


def index_candidates(root: str | os.PathLike | None = None) -> list[str]:
    """Index directories in ``root`` (default: the working directory) and under its ``indexes`` and
    ``ulisse-demo``."""
    found = {p.parent.resolve() for p in Path(root or Path.cwd()).glob(f"*/{store.MANIFEST}")}
    for base in ("indexes", "ulisse-demo"):
        folder = Path(root or Path.cwd()) / base
        for pattern in (store.MANIFEST, f"*/{store.MANIFEST}", f"*/*/{store.MANIFEST}"):
            found.update(p.parent.resolve() for p in folder.glob(pattern))
    return [str(p) for p in sorted(found)]


def _short_path(path: str) -> str:
    if path == OTHER_INDEX:
        return path
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def current_index() -> ulisse.Index:
    """The index chosen in the sidebar, open (cached per path and generation, shared by every session).

    Its first choice is the URL's ``?index=``, then ``ULISSE_UI_INDEX`` (``ulisse ui --index DIR``);
    the chooser lists that one, every index opened in this session and the index directories in
    ``.``, ``./indexes`` and ``./ulisse-demo``. Stops the page with a
    message when there is no usable index. The chooser is drawn once per run; later calls reuse it.
    """
    run = st.session_state.get("_kit.run")
    done = st.session_state.get("_kit.index_run")
    if done and done[0] == run:
        return open_path(done[1])
    current = _resolved(st.session_state.get("index_path"))
    opened = st.session_state.setdefault("_kit.opened", [])  # every index opened in this session, in order
    # a stable list (the launch index, those opened, those found): choosing one always opens that one
    options = list(dict.fromkeys([p for p in [_resolved(os.environ.get(INDEX_ENV)), *opened, current] if p]
                                 + index_candidates())) + [OTHER_INDEX]
    chosen = st.session_state.get("index.choice")
    if chosen not in options or (chosen == OTHER_INDEX and current
                                 and _resolved(st.session_state.get("index.other")) == current):
        if current:  # the box names the index that is open (also once one typed under "Other directory…" opened)
            st.session_state["index.choice"] = current
        else:
            st.session_state.pop("index.choice", None)
    choice = st.sidebar.selectbox("Index", options, key="index.choice", format_func=_short_path,
                                  help="An index directory (built by `ulisse index build` or `ulisse demo`).")
    path = st.sidebar.text_input("Index directory", key="index.other", placeholder="path/to/index") \
        if choice == OTHER_INDEX else choice
    if not path:
        st.info("Choose an index in the sidebar. No index yet? `ulisse demo` builds one from the Hubble Deep Field.")
        st.stop()
    try:
        index = open_path(path)
    except UlisseError as exc:
        st.error(str(exc))
        st.info("Choose another index in the sidebar, or build one here: `ulisse index build CUTOUTS "
                f"--index {_short_path(str(path))} --catalog CATALOG` (`ulisse demo` makes one from the Hubble "
                "Deep Field).")
        st.stop()
    resolved = str(Path(index.path).resolve())
    if current and current != resolved:  # another index: the prototypes and the detail it has too are kept
        protos = [p for p in st.session_state.get(PROTOS) or [] if has_object(index, p)]
        if protos:
            st.session_state[PROTOS] = protos
        else:
            st.session_state.pop(PROTOS, None)
        if not has_object(index, str(st.session_state.get(DETAIL) or "")):
            st.session_state.pop(DETAIL, None)
    if resolved not in opened:
        opened.append(resolved)
    st.session_state["index_path"] = resolved
    st.session_state["_kit.index_run"] = (run, resolved)
    st.sidebar.caption(f"{len(index):,} objects · {index.encoder_spec.model_name} · "
                       f"{index.manifest.get('factory', '?')} · generation {index.manifest.get('generation', 0)}")
    return index


def has_object(index: ulisse.Index, object_id: str) -> bool:
    """Whether ``object_id`` is an object of ``index``."""
    try:
        index.row_of(object_id)
    except UlisseError:
        return False
    return True


def known_prototypes(index: ulisse.Index, instead: str = "") -> list[str]:
    """The prototypes that are objects of ``index``; the others are reported, the same way on every page.

    ``instead`` says what the page does without them ("starting from hdf-0001"); the
    unknown ids stay in the view (and the URL) until the user chooses other prototypes.
    """
    protos = list(st.session_state.get(PROTOS) or [])
    unknown = [p for p in protos if not has_object(index, p)]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        st.warning(f"{shown}: not in this index ({Path(index.path).name}). " + (instead or "Choose another prototype."))
    return [p for p in protos if p not in unknown]
