"""The view's state: the URL's parameters, widget values kept across pages, the prototypes.

The kit keeps its own state (the index, the page, the prototypes, the object in
the detail panel); each page declares the rest in the :class:`~ulisse.registry.UIPage`
it registers (``url_state``, ``persistent_keys``, ``accepts_prototypes``), so the
kit knows no page by name.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import streamlit as st

from ulisse.registry import UIPage, ui_pages

PROTOS = "ulisse.protos"  # session key: the prototype ids (the URL's ``proto``, repeated, one per prototype)
DETAIL = "ulisse.detail"  # session key: the object in the detail panel (the URL's ``detail``)
NONE_TEXT = "(none)"  # in the URL: a choice of "none" (no label column, say), not a missing parameter
PROTOTYPE_PAGE = ""  # ``set_prototypes(page=PROTOTYPE_PAGE)``: the page that accepts prototypes (Search)
# The kit's own URL parameters -> session-state keys; pages add theirs (UIPage.url_state).
TILE_SIZE = "ulisse.tile_size"  # session key: the sidebar's "Tile size" (the URL's ``tiles``)
KIT_URL_STATE = {"index": "index_path", "page": "page", "proto": PROTOS, "detail": DETAIL, "tiles": TILE_SIZE}
KIT_PERSISTENT_KEYS = ("index.choice", "index.other", TILE_SIZE)  # the sidebar's index chooser, the tile size
DECLARED = "_kit.url_state"  # session key: title -> the url_state a page declared in ``page_setup``
URL_SNAPSHOT = "_kit.url"  # session key: the URL the session opened with (a page's state waits there for its page)


def url_bool(text: str) -> bool:
    """A checkbox or toggle's value from the URL (``url_state={"name": ("key", kit.url_bool)}``): "True" is true."""
    return str(text).strip().lower() in ("true", "1", "yes", "on")


def registered_pages() -> list[UIPage]:
    """The pages plugins register (``register_ui_pages``), in sidebar order."""
    return ui_pages()


def url_state(pages: Sequence[UIPage] | None = None) -> dict[str, tuple[str, Callable[[str], Any]]]:
    """URL parameter -> (session-state key, convert): the kit's own, then each page's in sidebar order.

    A parameter declared twice keeps its first declaration (the kit's, or the earlier page's).
    """
    out: dict[str, tuple[str, Callable[[str], Any]]] = {name: (key, str) for name, key in KIT_URL_STATE.items()}
    declared = [page.url_state for page in (registered_pages() if pages is None else pages)]
    declared += list(st.session_state.get(DECLARED, {}).values())
    for state in declared:
        for name, spec in (state or {}).items():
            key, convert = (spec, str) if isinstance(spec, str) else spec
            out.setdefault(str(name), (str(key), convert))
    return out


def declare_url_state(title: str, state: dict | None) -> None:
    """A page's own URL parameters (``page_setup(title, url_state=...)``), restored from the URL the session opened with.

    The first time a page declares them in a session, the parameters the session's first URL
    held are put into the session state (a shared link restores them even when it opened on
    another page); from then on :func:`sync_url` keeps them in the URL.
    """
    if not state:
        return
    declared = dict(st.session_state.get(DECLARED, {}))
    if title in declared:
        return
    declared[title] = dict(state)
    st.session_state[DECLARED] = declared
    snapshot = st.session_state.get(URL_SNAPSHOT) or {}
    _restore(snapshot, {name: (spec, str) if isinstance(spec, str) else spec for name, spec in state.items()})


def persistent_keys(pages: Sequence[UIPage] | None = None) -> list[str]:
    """Widget keys whose values survive a change of page: the kit's, then each page's."""
    keys = list(KIT_PERSISTENT_KEYS)
    for page in registered_pages() if pages is None else pages:
        keys.extend(page.persistent_keys or ())
    for state in st.session_state.get(DECLARED, {}).values():  # what pages keep in the URL is kept across pages
        keys.extend(spec if isinstance(spec, str) else spec[0] for spec in state.values())
    return list(dict.fromkeys(keys))


def keep_widget_values(pages: Sequence[UIPage] | None = None) -> None:
    """Keep the declared widgets' values (Streamlit forgets a widget that a run does not draw)."""
    for key in persistent_keys(pages):
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def restore_from_url(pages: Sequence[UIPage] | None = None) -> None:
    """Put the URL's view (``?index=&page=&proto=&detail=`` and the pages' parameters) into the session state."""
    params = st.query_params
    snapshot = {name: params.get_all(name) for name in params}
    st.session_state[URL_SNAPSHOT] = snapshot
    _restore(snapshot, url_state(pages))


def _restore(snapshot: dict[str, list[str]], state: dict[str, tuple[str, Callable[[str], Any]]]) -> None:
    for name, (key, convert) in state.items():
        values = snapshot.get(name)
        if not values:
            continue
        if key == PROTOS:
            st.session_state[key] = [p for p in values if p]
        elif convert is str:
            st.session_state[key] = None if values[-1] in ("", NONE_TEXT) else values[-1]
        else:
            try:
                st.session_state[key] = convert(values[-1])
            except (TypeError, ValueError):
                pass


def sync_url(pages: Sequence[UIPage] | None = None) -> None:
    """Write the view's state into the URL (only what changed), so that it can be reloaded or shared.

    A parameter no page declares (one a page set by hand, say) is dropped, and so are those
    another page declared in ``page_setup`` (they come back with their page: the session keeps them).
    """
    state = url_state(pages)
    title = st.session_state.get("page") or st.session_state.get("_kit.title")
    other = {name for page, declared in st.session_state.get(DECLARED, {}).items() if page != title
             for name in declared}
    other -= set(st.session_state.get(DECLARED, {}).get(title, {}))
    state = {name: spec for name, spec in state.items() if name not in other}
    for name in [n for n in st.query_params if n not in state]:
        st.query_params.pop(name, None)
    for name, (key, _) in state.items():
        value = st.session_state.get(key)
        if key == PROTOS:
            value = [str(v) for v in value or []]
            if value != st.query_params.get_all(name):
                if value:
                    st.query_params[name] = value
                else:
                    st.query_params.pop(name, None)
            continue
        if value is None and key in st.session_state and name not in KIT_URL_STATE:
            value = NONE_TEXT  # a page's choice of "none"
        text = "" if value is None else str(value)
        if st.query_params.get(name, "") != text:
            if text:
                st.query_params[name] = text
            else:
                st.query_params.pop(name, None)


def go_to_page(title: str) -> None:
    """Switch the app's page (a no-op when a page script runs on its own, or no page has that title)."""
    if "page" in st.session_state and title in [p.title for p in registered_pages()]:
        st.session_state["page"] = title


def prototype_page() -> str | None:
    """The title of the page that accepts prototypes (the first registered with ``accepts_prototypes=True``)."""
    return next((p.title for p in registered_pages() if p.accepts_prototypes), None)


# -- prototypes ----------------------------------------------------------------

def prototypes() -> list[str]:
    """The ids of the current prototypes (shared by every page and kept in the URL)."""
    return list(st.session_state.get(PROTOS) or [])


def set_prototypes(ids: Sequence[str], page: str | None = PROTOTYPE_PAGE) -> None:
    """Make ``ids`` the prototypes and open ``page``; usable as a widget callback.

    By default the page that accepts prototypes opens (see :func:`prototype_page`);
    ``page=None`` stays on this page. A page that shows the prototypes in its own
    widgets follows :func:`prototypes` when it runs.
    """
    st.session_state[PROTOS] = [str(i) for i in dict.fromkeys(ids) if str(i)]
    if page == PROTOTYPE_PAGE:
        page = prototype_page()
    if page:
        go_to_page(page)


def use_as_prototype(object_id: str) -> None:
    """Make ``object_id`` the only prototype and open the page that accepts prototypes (a widget callback)."""
    set_prototypes([object_id])


def add_prototype(object_id: str) -> None:
    """Add ``object_id`` to the prototypes (the query combines them)."""
    set_prototypes(prototypes() + [object_id])


def show_detail(object_id: str | None) -> None:
    """Show ``object_id`` in the detail panel (None: close it); usable as a widget callback."""
    st.session_state[DETAIL] = object_id


# -- uploads by content hash ------------------------------------------------------

UPLOADS_KEPT = 32  # uploaded cutouts kept by the server process (the URL names them by content hash)


@st.cache_resource(show_spinner=False)
def _upload_cache() -> dict[str, tuple[str, bytes]]:
    return {}


def remember_upload(name: str, data: bytes) -> str:
    """Keep an uploaded file in the upload cache; returns its content hash (what the URL holds: ``upload=``)."""
    import hashlib

    digest = hashlib.sha256(data).hexdigest()[:20]
    cache = _upload_cache()
    cache.pop(digest, None)
    cache[digest] = (str(name), bytes(data))
    while len(cache) > UPLOADS_KEPT:
        cache.pop(next(iter(cache)))
    return digest


def recall_upload(digest: str) -> tuple[str, bytes] | None:
    """The ``(name, bytes)`` of an upload by its content hash, or None when the cache no longer holds it."""
    return _upload_cache().get(str(digest))
