"""The web UI: every page script under AppTest, the upload checks, the page hook and ``ulisse ui``.

The browser tests (a real Chromium against ``ulisse ui``) are in test_ui_browser.py.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import ulisse  # noqa: E402
from ulisse.ui import APP, view  # noqa: E402

TIMEOUT = 60


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled_index(tmp_path_factory, survey, tiny_encoder):
    """24 synthetic cutouts with ra, dec and a ``label`` column (round, streak, double)."""
    out = tmp_path_factory.mktemp("ui-labelled") / "idx"
    idx, _ = ulisse.build_index([survey / "cutouts"], out, survey / "catalog.csv", encoder=tiny_encoder,
                                device="cpu", progress=False)
    return idx


def page(script: Path, index_dir, **state) -> AppTest:
    """An AppTest of ``script`` on the index ``index_dir``, run once."""
    at = AppTest.from_file(str(script), default_timeout=TIMEOUT)
    at.session_state["index_path"] = str(index_dir)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    return at


def captions(at: AppTest) -> list[str]:
    return [c for im in at.image for c in im.captions]


def errors(at: AppTest) -> str:
    return " | ".join(e.value for e in at.error)


# -- bad files ---------------------------------------------------------------------

def png_bytes(size=(64, 64), seed=0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    data = bytearray(png_bytes((8, 8)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])  # keep depth, colour type, ...
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def fits_bytes(data=None, header_only_shape=None) -> bytes:
    from astropy.io import fits

    if header_only_shape is not None:  # a header that claims a huge image, and no data
        hdr = fits.Header()
        hdr["SIMPLE"] = True
        hdr["BITPIX"] = -32
        hdr["NAXIS"] = len(header_only_shape)
        for i, n in enumerate(reversed(header_only_shape), 1):
            hdr[f"NAXIS{i}"] = n
        return hdr.tostring().encode()
    buf = io.BytesIO()
    (fits.PrimaryHDU() if data is None else fits.PrimaryHDU(data)).writeto(buf)
    return buf.getvalue()


# -- upload decoding (ulisse.ui.common.decode_upload) ---------------------------------

def test_decode_upload_reads_png_jpeg_and_fits():
    from PIL import Image

    from ulisse.ui.common import decode_upload

    assert decode_upload("cutout.png", png_bytes()).shape == (64, 64, 3)
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 30, 3), 120, np.uint8)).save(buf, format="JPEG")
    assert decode_upload("cutout.JPG", buf.getvalue()).shape == (40, 30, 3)
    cube = np.random.default_rng(1).normal(1, 0.1, (3, 32, 32)).astype(np.float32)
    assert decode_upload("cube.fits", fits_bytes(cube)).shape == (32, 32, 3)
    assert decode_upload("cube.fits.gz", gzip.compress(fits_bytes(cube))).shape == (32, 32, 3)


@pytest.mark.parametrize("name, data, message", [
    ("empty.png", b"", "empty"),
    ("notes.txt", b"hello", "not a cutout ulisse reads"),
    ("fake.png", b"this is not an image at all", "not a readable PNG or JPEG"),
    ("fake.fits", b"SIMPLE  = nonsense" * 10, "not a readable FITS"),
    ("nodata.fits", None, "no image data"),
    ("bomb.png", png_claiming(40_000, 40_000), "too large"),
    ("huge.png", png_claiming(6_000, 6_000), "too large"),
    ("bomb.fits", fits_bytes(header_only_shape=(100_000, 100_000)), "too large"),
    ("tiny.png", None, "smaller than"),
    ("big.png", b"\x89PNG" + bytes(21 * 2**20), "MB allowed"),
])
def test_decode_upload_turns_bad_files_into_messages(name, data, message):
    from ulisse.ui.common import UploadError, decode_upload

    if name == "nodata.fits":
        data = fits_bytes()
    if name == "tiny.png":
        data = png_bytes((4, 4))
    with pytest.raises(UploadError, match=message) as err:
        decode_upload(name, data)
    assert str(err.value).startswith(name)  # the user's file name, never a temporary path


def test_display_png_enlarges_small_cutouts_and_frames_the_prototype():
    from PIL import Image

    from ulisse.ui.common import THUMB_PX, display_png

    rgb = np.zeros((64, 64, 3), np.uint8)
    plain = Image.open(io.BytesIO(display_png(rgb)))
    framed = Image.open(io.BytesIO(display_png(rgb, framed=True)))
    assert plain.width >= THUMB_PX and framed.width > plain.width
    assert framed.getpixel((0, 0)) != (0, 0, 0)


# -- the page hook -------------------------------------------------------------------

def test_first_party_pages_come_from_the_hook():
    from ulisse.registry import ui_pages

    pages = {p.title: p for p in ui_pages()}
    assert [t for t in pages if t in ("Search", "Expand", "Anomalies")] == ["Search", "Expand", "Anomalies"]
    assert pages["Search"].script == view("search") and pages["Search"].script.is_file()
    assert pages["Expand"].script.is_file() and pages["Anomalies"].script.is_file()


def test_app_lists_registered_pages_and_runs_the_chosen_one(demo_index, tmp_path):
    from ulisse.plugin_manager import get_plugin_manager
    from ulisse.registry import UIPage

    script = tmp_path / "hello.py"
    script.write_text("import streamlit as st\nst.title('Hello from a plugin')\n")

    class ThrowawayPlugin:
        @ulisse.hookimpl
        def register_ui_pages(self):
            return [UIPage("Hello", script, order=99)]

    plugin = ThrowawayPlugin()
    pm = get_plugin_manager()
    pm.register(plugin, name="ui-test-throwaway")
    try:
        at = ok(page(APP, demo_index))
        radio = at.sidebar.radio(key="page")
        assert list(radio.options)[:3] == ["Search", "Expand", "Anomalies"] and "Hello" in radio.options
        assert at.title[0].value == "Search" and len(at.image) > 1
        ok(radio.set_value("Hello").run())
        assert "Hello from a plugin" in [t.value for t in at.title]
        ok(at.sidebar.radio(key="page").set_value("Expand").run())
        assert at.title[0].value == "Recursive expansion"
    finally:
        pm.unregister(plugin)


def test_app_keeps_the_prototype_across_pages(demo_index):
    at = ok(page(APP, demo_index))
    ids = ulisse.open_index(demo_index).ids
    at.text_input(key="search.id").set_value(ids[3]).run()
    ok(at.button(key="search.expand").click().run())  # "Expand" from the Search page
    assert at.sidebar.radio(key="page").value == "Expand"
    assert at.text_input(key="expand.id").value == ids[3]
    ok(at.sidebar.radio(key="page").set_value("Search").run())
    assert at.text_input(key="search.id").value == ids[3]


# -- Search ------------------------------------------------------------------------------

def test_search_by_id_shows_the_prototype_and_its_neighbours(demo_index):
    at = ok(page(view("search"), demo_index))
    ids = ulisse.open_index(demo_index).ids
    at.text_input(key="search.id").set_value(ids[5])
    at.sidebar.slider(key="search.k").set_value(7)
    ok(at.run())
    shown = captions(at)
    assert shown[0] == ids[5]  # the prototype first
    assert len(shown) == 1 + 7 and shown[1].startswith("#1 ") and "d = " in shown[1]
    table = at.dataframe[-1].value
    assert list(table["rank"]) == list(range(1, 8)) and ids[5] not in set(table["id"])
    assert [b.label for b in at.download_button] == ["Download CSV", "Download VOTable"]
    assert "No class column" in " ".join(c.value for c in at.sidebar.caption)


def test_search_unknown_id_is_a_message(demo_index):
    at = ok(page(view("search"), demo_index, **{"search.id": "no-such-object"}))
    assert "unknown id" in errors(at)
    assert not at.image


def test_search_by_picking_a_thumbnail(demo_index):
    at = ok(page(view("search"), demo_index, **{"search.mode": "Pick a thumbnail"}))
    use = [b for b in at.button if b.label == "use"]
    assert len(use) == 24 and at.number_input(key="search.browse").value == 1
    picked = at.image[5].captions[0]
    ok(use[5].click().run())
    assert at.radio(key="search.mode").value == "Object id"
    assert at.text_input(key="search.id").value == picked
    assert captions(at)[0] == picked and len(at.image) == 13


def test_search_by_sky_position_and_class_fractions(labelled_index):
    row = labelled_index.metadata.iloc[5]
    at = ok(page(view("search"), labelled_index.path, **{"search.mode": "Sky position"}))
    at.number_input(key="search.ra").set_value(float(row["ra"]))
    at.number_input(key="search.dec").set_value(float(row["dec"]))
    ok(at.run())
    assert captions(at)[0] == row["id"]
    assert at.sidebar.selectbox(key="search.label").value == "label"
    assert "Class fractions (label)" in [s.value for s in at.subheader]
    fractions = at.dataframe[0].value
    assert set(fractions.index) == {"round", "streak", "double"}
    assert list(fractions.columns) == ["first 12", "base rate"]
    assert fractions["base rate"].sum() == pytest.approx(1.0)


def test_search_sky_position_without_positions_is_a_warning(demo_index):
    at = ok(page(view("search"), demo_index, **{"search.mode": "Sky position"}))
    assert "no sky positions" in at.warning[0].value


def test_search_by_uploaded_cutout(demo_index):
    at = ok(page(view("search"), demo_index, **{"search.mode": "Upload a cutout"}))
    cutout = sorted((demo_index / "cutouts").glob("*.png"))[0]
    at.file_uploader(key="search.upload").set_value((cutout.name, cutout.read_bytes(), "image/png"))
    ok(at.run())
    shown = captions(at)
    assert shown[0] == cutout.name
    assert shown[1].startswith(f"#1 {cutout.stem}")  # the object itself is the nearest


@pytest.mark.parametrize("name, data, message", [
    ("fake.png", b"not an image", "not a readable PNG or JPEG"),
    ("nodata.fits", None, "no image data"),
    ("bomb.png", png_claiming(40_000, 40_000), "too large"),
    ("notes.txt", b"hello", "not a cutout"),
])
def test_search_bad_upload_is_a_message(demo_index, name, data, message):
    at = ok(page(view("search"), demo_index, **{"search.mode": "Upload a cutout"}))
    at.file_uploader(key="search.upload").set_value((name, fits_bytes() if data is None else data, "application/octet-stream"))
    ok(at.run())
    assert message in errors(at)
    assert not at.image


def test_search_bad_index_is_a_message(tmp_path):
    at = ok(page(view("search"), tmp_path / "nowhere"))
    assert "no index here" in errors(at)


def test_search_on_another_index_starts_from_its_objects(demo_index, labelled_index):
    at = ok(page(view("search"), demo_index))
    assert captions(at)[0].startswith("hdf-")
    ok(at.sidebar.selectbox(key="index.choice").set_value("Other directory…").run())
    assert "Choose an index" in at.info[0].value
    ok(at.sidebar.text_input(key="index.other").set_value(str(labelled_index.path)).run())
    assert not at.error and captions(at)[0] == "obj000"
    assert "24 objects" in at.sidebar.caption[0].value


def test_search_index_from_environment(demo_index, monkeypatch):
    from ulisse.ui.common import INDEX_ENV

    monkeypatch.setenv(INDEX_ENV, str(demo_index))
    at = ok(AppTest.from_file(str(view("search")), default_timeout=TIMEOUT).run())
    assert at.sidebar.selectbox(key="index.choice").value == str(demo_index.resolve())
    assert len(at.image) == 13


# -- Expand ------------------------------------------------------------------------------

def test_expand_shows_iterations_provenance_and_direct_knn(demo_index):
    ids = ulisse.open_index(demo_index).ids
    at = page(view("expand"), demo_index, **{"expand.id": ids[2]})
    at.sidebar.slider(key="expand.k").set_value(4)
    at.sidebar.slider(key="expand.iterations").set_value(2)
    ok(at.run())
    metrics = {m.label: m.value for m in at.metric}
    found = int(metrics["Objects found"])
    assert 4 <= found <= 4 + 16 and metrics["Iterations run"] == "2"
    assert [m.value for m in at.markdown if m.value.startswith("**Iteration")][:2] == \
        ["**Iteration 1** · 4 new", f"**Iteration 2** · {found - 4} new"]
    assert [t.label for t in at.tabs] == ["By iteration", "Direct kNN", "Table"]
    first = [c for c in captions(at) if f"← {ids[2]}" in c]
    assert len(first) == 4  # found by the prototype in iteration 1
    table = at.dataframe[0].value
    assert {"iteration", "found_by", "distance"} <= set(table.columns) and len(table) == found
    assert [b.label for b in at.download_button] == ["Download CSV", "Download VOTable"]


def test_expand_with_labels_compares_with_direct_knn(labelled_index):
    at = ok(page(view("expand"), labelled_index.path, **{"expand.id": "obj003"}))
    assert any(s.value.startswith("Class fractions (label)") for s in at.subheader)
    fractions = [d.value for d in at.dataframe if "base rate" in d.value.columns][0]
    assert list(fractions.columns) == ["expansion", "direct kNN", "base rate"]


def test_expand_unknown_id_is_a_message(demo_index):
    at = ok(page(view("expand"), demo_index, **{"expand.id": "nope"}))
    assert "unknown id" in errors(at)


# -- Anomalies -------------------------------------------------------------------------

def test_anomalies_grid_with_scores_and_controls(demo_index):
    at = ok(page(view("anomalies"), demo_index))
    shown = captions(at)
    assert len(shown) == 24 and shown[0].startswith("#1 ") and "score" in shown[0]
    scores = at.dataframe[-1].value["score"].to_numpy()
    assert np.all(np.diff(scores) <= 0)
    at.sidebar.selectbox(key="anomalies.method").set_value("mean")
    at.sidebar.slider(key="anomalies.top").set_value(6)
    ok(at.run())
    assert len(at.image) == 6 and "mean distance" in at.caption[0].value
    ok(at.sidebar.selectbox(key="anomalies.method").set_value("iforest").run())
    assert at.sidebar.slider(key="anomalies.k").disabled and len(at.image) == 6


def test_anomalies_with_labels(labelled_index):
    at = ok(page(view("anomalies"), labelled_index.path))
    assert "Classes at the top (label)" in [s.value for s in at.subheader]
    fractions = at.dataframe[0].value
    assert list(fractions.columns) == ["top 24", "base rate"]


# -- ulisse ui -----------------------------------------------------------------------------

def test_ui_command_line(cli, demo_index):
    code, out, err = cli("ui", "--index", demo_index, "--print-command", "--server.port", "8601")
    assert code == 0, err
    words = out.split()
    assert words[1:5] == ["-m", "streamlit", "run", str(APP)]
    assert words[words.index("--server.address") + 1] == "127.0.0.1"
    assert words[words.index("--server.maxUploadSize") + 1] == "20"
    assert words[words.index("--browser.gatherUsageStats") + 1] == "false"
    assert words[-2:] == ["--server.port", "8601"]  # Streamlit's own options pass through, last


def test_ui_command_needs_an_index_there(cli, tmp_path):
    code, out, err = cli("ui", "--index", tmp_path / "missing", "--print-command")
    assert code == 1 and "no index here" in err


def test_ui_environment_names_the_index(demo_index):
    from ulisse.ui.common import INDEX_ENV
    from ulisse.ui.plugin import streamlit_env

    assert streamlit_env(demo_index)[INDEX_ENV] == str(demo_index.resolve())


def test_ui_command_without_streamlit_says_what_to_install(cli, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else find_spec(name, *a))
    code, out, err = cli("ui", "--print-command")
    assert code == 1 and "pip install 'ulisse[ui]'" in err
