"""The web UI under AppTest: every page script, the kit, uploads, the URL state, the page hook and ``ulisse ui``.

The browser tests (a real Chromium against ``ulisse ui``) are in test_ui_browser.py,
the crash regression in test_ui_crash.py and the short soak in test_ui_soak.py.
"""

from __future__ import annotations

import gzip
import io
import struct
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import ulisse  # noqa: E402
from ulisse.testing import page_script  # noqa: E402
from ulisse.ui import APP  # noqa: E402

TIMEOUT = 90


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled_index(survey_index):
    """24 synthetic cutouts (every 4th a FITS cube) with ra, dec and a ``label`` column (round, streak, double)."""
    return survey_index


def page(script: Path, index_dir, params: dict | None = None, **state) -> AppTest:
    """An AppTest of ``script`` on the index ``index_dir`` (or the URL's), run once."""
    at = AppTest.from_file(str(script), default_timeout=TIMEOUT)
    if index_dir is not None:
        at.session_state["index_path"] = str(index_dir)
    for key, value in (params or {}).items():
        at.query_params[key] = value
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


def neighbour_ids(at: AppTest) -> list[str]:
    return [c.split()[1] for c in captions(at) if c.startswith("#")]


def pick(at: AppTest, grid: str, n: int) -> AppTest:
    """Click tile ``n`` of a grid (the transparent button over the thumbnail)."""
    return ok(at.button(key=f"ulisse-pick-{grid}-{n}").click().run())


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
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
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


def test_decode_upload_reads_png_jpeg_and_fits():
    from PIL import Image

    from ulisse.ui.kit._uploads import decode_upload

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
    ("bomb.fits", fits_bytes(header_only_shape=(100_000, 100_000)), "too large for a cutout (100000 x 100000"),
    ("cube4d.fits", fits_bytes(np.zeros((2, 3, 16, 16), np.float32)), "a 4-D image (2 x 3 x 16 x 16): give a 2-D"),
    ("tile.png", png_claiming(6000, 6000), "(6000 x 6000 px, 36.0 million pixels; at most 25 million, 5000 x 5000"),
    ("big.png", b"\x89PNG" + bytes(21 * 2**20), "MB allowed"),
])
def test_decode_upload_turns_bad_files_into_messages(name, data, message):
    from ulisse.ui.kit._uploads import UploadError, decode_upload

    with pytest.raises(UploadError) as err:
        decode_upload(name, fits_bytes() if data is None else data)
    assert message in str(err.value)
    assert str(err.value).startswith(name)  # the user's file name, never a temporary path


# -- the kit's pure parts --------------------------------------------------------------

def test_numbers_are_written_in_full():
    import pandas as pd

    from ulisse.ui.kit import display_table, number_text

    assert number_text(183321.3333) == "183321.3333" and number_text(7) == "7" and number_text(float("nan")) == ""
    shown = display_table(pd.DataFrame({"rank": [1], "id": ["a"], "flux": [183321.3333], "source": ["/x/a.png"],
                                        "row": [0], "empty": [np.nan]}))
    assert list(shown.columns) == ["rank", "id", "flux"] and shown["flux"].iloc[0] == "183321.3333"


def test_downloads_carry_source_paths_relative_to_the_index(tmp_path):
    import pandas as pd

    from ulisse.ui.kit import export_table

    table = pd.DataFrame({"id": ["a", "b"], "row": [0, 1],
                          "source": [str(tmp_path / "idx" / "cutouts" / "a.png"), "cutouts/b.png"]})
    out = export_table(table, tmp_path / "idx")
    assert list(out.columns) == ["id", "source"] and list(out["source"]) == ["cutouts/a.png", "cutouts/b.png"]


def test_sky_positions_as_astronomers_type_them():
    from ulisse.ui.kit._sky import ResolveError, parse_position, viewer_links

    for text in ("150.1 2.2", "150.1, 2.2", "10:00:24 +02:12:00", "10h00m24s +2d12m00s"):
        c = parse_position(text)
        assert (round(c.ra.deg, 4), round(c.dec.deg, 4)) == (150.1, 2.2), text
    with pytest.raises(Exception, match="RA must be in"):
        parse_position("400 2")
    with pytest.raises(ResolveError, match="name resolution"):
        parse_position("NGC 4486", resolve_names=False)
    links = viewer_links(150.1, 2.2, "1237648720693755918")
    assert [link.name for link in links] == ["SkyServer Navigate", "SkyServer Explore", "Legacy Surveys", "Aladin Lite"]
    assert "id=1237648720693755918" in links[1].url and "ra=150.100000" in links[0].url
    assert viewer_links(float("nan"), 2.0) == [] and viewer_links(None, None) == []


def test_fits_stretches_differ(survey):
    from ulisse.ui.kit._images import STRETCHES, stretched_fits

    path = survey / "cutouts" / "obj000.fits"
    images = {s: stretched_fits(path, s) for s in STRETCHES}
    assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in images.values())
    assert not np.array_equal(images["asinh"], images["linear"]) and not np.array_equal(images["log"], images["linear"])


def test_fits_stretches_keep_the_thumbnails_orientation(survey):
    """The detail panel's stretched FITS is the picture the thumbnail shows (rows as the index reads FITS)."""
    from ulisse.cutouts import RGBConfig, read_cutout
    from ulisse.ui.kit._images import stretched_fits

    path = survey / "cutouts" / "obj008.fits"  # a tilted streak: not symmetric top to bottom
    for rows in ("bottom-up", "top-down"):
        thumb = read_cutout(path, RGBConfig(fits_rows=rows)).image.astype(float).sum(axis=2)
        shown = stretched_fits(path, "linear", fits_rows=rows).astype(float).sum(axis=2)
        other = stretched_fits(path, "linear", fits_rows="top-down" if rows == "bottom-up" else "bottom-up")
        assert np.corrcoef(thumb.ravel(), shown.ravel())[0, 1] > \
            np.corrcoef(thumb.ravel(), other.astype(float).sum(axis=2).ravel())[0, 1] + 0.2


# -- the page hook and the app ---------------------------------------------------------------

def test_first_party_pages_come_from_the_hook():
    from ulisse.registry import ui_pages

    pages = {p.title: p for p in ui_pages()}
    assert [t for t in pages if t in ("Search", "Marks", "Expand", "Anomalies")] == ["Search", "Expand", "Marks", "Anomalies"]
    assert pages["Search"].script == page_script("Search") and all(pages[t].script.is_file() for t in ("Expand", "Marks", "Anomalies"))


def test_plugins_do_not_import_the_ui():
    import subprocess

    code = ("import sys, ulisse.plugins.prototype, ulisse.plugins.recursive, ulisse.plugins.anomalies, "
            "ulisse.plugins.feedback; from ulisse.registry import ui_pages; ui_pages(); "
            "print(sorted(m for m in sys.modules if m.startswith('ulisse.ui')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] in ("[]", "['ulisse.ui', 'ulisse.ui.plugin']")  # the ui plugin's own command


@contextmanager
def registered_page(tmp_path, name: str, title: str, body: str, **fields):
    """A throwaway plugin whose page ``title`` runs ``body`` (after the kit's imports), registered for the block."""
    from ulisse.plugin_manager import get_plugin_manager
    from ulisse.registry import UIPage

    script = tmp_path / f"{name}.py"
    script.write_text("import streamlit as st\nimport ulisse.ui.kit as kit\n" + body)

    class ThrowawayPlugin:
        @ulisse.hookimpl
        def register_ui_pages(self, config):
            assert config.device == "auto"
            return [UIPage(title, script, **fields)]

    plugin = ThrowawayPlugin()
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    try:
        yield
    finally:
        pm.unregister(plugin)


def test_app_lists_registered_pages_and_runs_the_chosen_one(demo_index, tmp_path):
    hello = ("kit.page_setup('Hello')\nindex = kit.current_index()\n"
             "st.title(f'Hello from a plugin: {len(index)} objects')\n")
    with registered_page(tmp_path, "ui-test-throwaway", "Hello", hello, order=99):
        at = ok(page(APP, demo_index))
        radio = at.sidebar.radio(key="page")
        assert list(radio.options)[0] == "Search" and "Hello" in radio.options
        assert at.main.title[0].value == "Search" and len(at.image) > 1
        ok(radio.set_value("Hello").run())
        assert [t.value for t in at.main.title] == [f"Hello from a plugin: {len(ulisse.open_index(demo_index))} objects"]
        assert at.query_params["page"] == "Hello"


ZOOM_PAGE = """import streamlit as st
import ulisse.ui.kit as kit

kit.page_setup("Zoom")
index = kit.current_index()
zoom = kit.slider("Zoom", 1, 9, 2, key="zoom.level")
note = st.text_input("Note", key="zoom.note")
scratch = st.text_input("Scratch", key="zoom.scratch")
kit.sync_url()
st.title(f"zoom {zoom} · {note} · {scratch}")
"""


def test_a_plugin_page_declares_its_url_state_and_kept_widgets(demo_index, tmp_path):
    """The kit learns a page's URL parameters and kept widget keys from its UIPage, not from names it knows."""
    from ulisse.plugin_manager import get_plugin_manager
    from ulisse.registry import UIPage

    script = tmp_path / "zoom.py"
    script.write_text(ZOOM_PAGE)

    class ThrowawayPlugin:
        @ulisse.hookimpl
        def register_ui_pages(self, config):
            return [UIPage("Zoom", script, order=98, url_state={"zoom": ("zoom.level", int), "note": "zoom.note"},
                           persistent_keys=("zoom.level", "zoom.note"))]

    plugin = ThrowawayPlugin()
    pm = get_plugin_manager()
    pm.register(plugin, name="ui-test-zoom")
    try:
        at = ok(page(APP, demo_index, params={"page": "Zoom", "zoom": "7", "note": "spiral arms"}))
        assert at.sidebar.slider(key="zoom.level").value == 7 and at.text_input(key="zoom.note").value == "spiral arms"
        at.sidebar.slider(key="zoom.level").set_value(4)
        at.text_input(key="zoom.scratch").set_value("not kept")
        ok(at.text_input(key="zoom.note").set_value("a ring").run())
        url = dict(at.query_params)
        assert url["page"] == "Zoom" and url["zoom"] == "4" and url["note"] == "a ring" and "scratch" not in url
        ok(at.sidebar.radio(key="page").set_value("Search").run())  # another page: Zoom's widgets are not drawn
        assert at.main.title[0].value == "Search" and at.query_params["zoom"] == "4"
        ok(at.sidebar.radio(key="page").set_value("Zoom").run())
        assert at.sidebar.slider(key="zoom.level").value == 4 and at.text_input(key="zoom.note").value == "a ring"
        assert at.text_input(key="zoom.scratch").value == ""  # not declared: forgotten on the way

        # a shared URL opened on another page: the page's state waits in the session for its page
        again = ok(page(APP, None, params={**url, "page": "Search", "zoom": "5"}))
        assert again.main.title[0].value == "Search" and again.query_params["zoom"] == "5"
        ok(again.sidebar.radio(key="page").set_value("Zoom").run())
        assert again.sidebar.slider(key="zoom.level").value == 5 and again.text_input(key="zoom.note").value == "a ring"
    finally:
        pm.unregister(plugin)


@pytest.mark.slow
def test_a_tile_click_opens_the_page_that_accepts_prototypes(demo_index, tmp_path):
    at = ok(page(APP, demo_index, params={"page": "Anomalies"}))
    first = neighbour_ids(at)[0]
    pick(at, "anomaly", 0)
    assert at.sidebar.radio(key="page").value == "Search" and at.query_params["proto"] == first
    assert captions(at)[0] == first and at.text_input(key="search.id").value == first

    mine = "kit.page_setup('Mine')\nkit.current_index()\nst.title('prototypes: ' + ', '.join(kit.prototypes()))\n"
    with registered_page(tmp_path, "ui-test-mine", "Mine", mine, order=5, accepts_prototypes=True):  # before Search
        # the first page that declares it takes prototypes gets them, whatever its title
        at = ok(page(APP, demo_index, params={"page": "Anomalies"}))
        second = neighbour_ids(at)[1]
        pick(at, "anomaly", 1)
        assert at.sidebar.radio(key="page").value == "Mine" and at.main.title[0].value == f"prototypes: {second}"


def test_a_marked_prototype_says_its_mark(tiny_index):
    from ulisse.plugins.feedback import mark

    mark(tiny_index, ["obj001"], True)
    at = ok(page(page_script("Search"), tiny_index.path, **{"search.id": "obj001"}))
    assert captions(at)[0] == "obj001 · Relevant"


def test_a_plugin_tile_action_shows_under_result_tiles(labelled_index):
    """Buttons under result tiles come from register_tile_actions (the feedback plugin's Relevant/Not relevant)."""
    from ulisse.plugin_manager import get_plugin_manager
    from ulisse.registry import TileAction

    starred = []

    class ThrowawayPlugin:
        @ulisse.hookimpl
        def register_tile_actions(self, config):
            return [TileAction("star", "⭐", run=lambda index, object_id: starred.append((len(index), object_id)),
                               help="Star {id}")]

    plugin = ThrowawayPlugin()
    pm = get_plugin_manager()
    pm.register(plugin, name="ui-test-star")
    try:
        at = ok(page(page_script("Search"), labelled_index.path, **{"search.id": "obj001"}))
        shown = neighbour_ids(at)
        star = at.button(key="neighbour.star.2")
        assert star.label == "⭐" and star.help == f"Star {shown[2]}"
        assert [at.button(key=f"neighbour.{name}.2").label for name in ("yes", "no")] == ["Relevant", "Not relevant"]
        assert [at.button(key=f"neighbour.{name}.2").label for name in ("use", "add", "detail")] == \
            ["Use as prototype", "Add", "Details"]  # words, not glyphs
        ok(star.click().run())
        assert starred == [(len(labelled_index), shown[2])] and neighbour_ids(at) == shown
        ok(at.radio(key="search.mode").set_value("Pick a thumbnail").run())  # a grid without actions
        assert not [b for b in at.button if ".star." in (b.key or "")] and at.button(key="ulisse-pick-pick-0")
    finally:
        pm.unregister(plugin)
    ok(at.run())
    assert not [b for b in at.button if ".star." in (b.key or "")]  # gone with its plugin


def test_download_buttons_offer_registered_export_formats(tmp_path):
    from ulisse.plugin_manager import get_plugin_manager
    from ulisse.registry import ExportFormat

    script = tmp_path / "downloads.py"
    script.write_text("import pandas as pd\nimport ulisse.ui.kit as kit\n"
                      "kit.download_buttons(pd.DataFrame({'id': ['a'], 'x': [1.5]}), 'two formats', "
                      "formats=('csv', 'tsv'))\n")

    class ThrowawayPlugin:
        @ulisse.hookimpl
        def register_export_formats(self, config):
            return [ExportFormat("tsv", "tab-separated values", (".tsv",), "text/tab-separated-values",
                                 write=lambda table, meta, extra: table.to_csv(sep="\t", index=False))]

    plugin = ThrowawayPlugin()
    pm = get_plugin_manager()
    pm.register(plugin, name="ui-test-tsv")
    try:
        at = ok(AppTest.from_file(str(script), default_timeout=TIMEOUT).run())
        assert [b.label for b in at.download_button] == ["Download CSV", "Download tsv"]
    finally:
        pm.unregister(plugin)


def test_the_kit_imports_no_plugin():
    import subprocess

    code = "import sys, ulisse.ui.kit; print(sorted(m for m in sys.modules if m.startswith('ulisse.plugins')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


# -- Search ------------------------------------------------------------------------------

def test_search_by_id_shows_tiles_with_id_distance_and_position(demo_index):
    ids = ulisse.open_index(demo_index).ids
    at = page(page_script("Search"), demo_index, **{"search.id": ids[5]})
    at.sidebar.slider(key="search.k").set_value(7)
    ok(at.run())
    shown = captions(at)
    assert shown[0] == ids[5]  # the prototype first
    assert len(neighbour_ids(at)) == 7 and shown[1].startswith("#1 ") and "d = " in shown[1]
    table = at.dataframe[-1].value
    assert list(table["rank"]) == list(range(1, 8)) and ids[5] not in set(table["id"])
    assert {"Download CSV", "Download VOTable"} <= {b.label for b in at.download_button}
    assert at.query_params["proto"] == ids[5] and at.query_params["k"] == "7"


def test_click_a_tile_to_make_it_the_prototype(labelled_index):
    at = ok(page(page_script("Search"), labelled_index.path, **{"search.id": "obj001"}))
    third = neighbour_ids(at)[2]
    pick(at, "neighbour", 2)
    assert captions(at)[0] == third and third not in neighbour_ids(at)
    assert at.query_params["proto"] == third and at.text_input(key="search.id").value == third
    fourth = neighbour_ids(at)[3]
    ok(at.button(key="neighbour.use.3").click().run())  # the labelled button does the same
    assert captions(at)[0] == fourth and at.query_params["proto"] == fourth


def test_several_prototypes_combine_by_mean_or_union(labelled_index):
    at = ok(page(page_script("Search"), labelled_index.path, **{"search.id": "obj001"}))
    second = neighbour_ids(at)[0]
    ok(at.button(key="neighbour.add.0").click().run())  # ＋ under the first tile
    assert at.text_input(key="search.id").value == f"obj001, {second}"
    assert at.query_params["proto"] == ["obj001", second]
    mean = neighbour_ids(at)
    assert not {"obj001", second} & set(mean)
    ok(at.sidebar.selectbox(key="search.combine").set_value("union").run())
    union = [d for d in at.dataframe if "found_by" in d.value.columns][0].value
    assert set(union["found_by"]) <= {"obj001", second} and not {"obj001", second} & set(union["id"])
    assert at.query_params["combine"] == "union"


def test_a_shared_url_restores_the_same_neighbours(labelled_index):
    first = ok(page(page_script("Search"), labelled_index.path, **{"search.id": "obj007"}))
    first.sidebar.slider(key="search.k").set_value(5)
    ok(first.sidebar.selectbox(key="search.label").set_value(None).run())
    url = dict(first.query_params)
    assert url["proto"] == "obj007" and url["k"] == "5" and url["index"] == str(labelled_index.path.resolve())
    again = ok(page(page_script("Search"), None, params=url))  # a new session with nothing but the URL
    assert neighbour_ids(again) == neighbour_ids(first) == labelled_index.query("obj007", k=5).ids
    assert again.sidebar.slider(key="search.k").value == 5 and again.sidebar.selectbox(key="search.label").value is None


def test_search_by_sexagesimal_position_shows_the_match_and_separation(labelled_index):
    from astropy import units as u
    from astropy.coordinates import Angle

    row = labelled_index.metadata.iloc[5]
    ra = Angle(row["ra"] * u.deg).to_string(unit=u.hourangle, sep=":", precision=3)
    dec = Angle(row["dec"] * u.deg).to_string(unit=u.deg, sep=":", precision=2, alwayssign=True)
    at = ok(page(page_script("Search"), labelled_index.path, **{"search.mode": "Sky position"}))
    assert "press **Search**" in at.info[0].value and not at.image  # no query per keystroke
    at.text_input(key="search.position").set_value(f"{ra} {dec}")
    ok(_submit(at))
    assert f"Matched **{row['id']}** at" in at.success[0].value and "arcsec" in at.success[0].value
    assert captions(at)[0] == row["id"] and at.query_params["proto"] == row["id"]


def _submit(at: AppTest) -> AppTest:
    button = next(b for b in at.button if b.label == "Search")
    return button.click().run()


def test_search_by_name_offline_says_so(labelled_index, monkeypatch):
    at = ok(page(page_script("Search"), labelled_index.path, **{"search.mode": "Sky position"}))
    at.text_input(key="search.position").set_value("NGC 4486")
    ok(_submit(at))
    assert "NGC 4486" in errors(at) and ("internet" in errors(at) or "Sesame" in errors(at))


def test_search_sky_position_without_positions_is_a_warning(tmp_path, survey, tiny_encoder):
    import pandas as pd

    cat = pd.read_csv(survey / "catalog.csv").drop(columns=["ra", "dec"])
    cat.to_csv(tmp_path / "cat.csv", index=False)
    pngs = tmp_path / "cutouts"
    pngs.mkdir()
    for p in sorted((survey / "cutouts").glob("*.png"))[:6]:
        (pngs / p.name).write_bytes(p.read_bytes())
    idx, _ = ulisse.build_index([pngs], tmp_path / "idx", tmp_path / "cat.csv", encoder=tiny_encoder, device="cpu",
                                progress=False)
    at = ok(page(page_script("Search"), idx.path, **{"search.mode": "Sky position"}))
    assert "no sky positions" in at.warning[0].value


def test_detail_panel_with_links_and_fits_stretch(labelled_index):
    at = ok(page(page_script("Search"), labelled_index.path, **{"search.id": "obj001"}))
    fits_tile = next(i for i, oid in enumerate(neighbour_ids(at)) if int(oid[3:]) % 4 == 0)
    oid = neighbour_ids(at)[fits_tile]
    ok(at.button(key=f"neighbour.detail.{fits_tile}").click().run())
    text = " ".join(m.value for m in at.markdown)
    for name in ("SkyServer Navigate", "SkyServer Explore", "Legacy Surveys", "Aladin Lite"):
        assert f"[{name}](https://" in text
    stretch = at.get("button_group")[0]
    ok(stretch.set_value("log").run())
    assert oid in captions(at)
    ok(at.button(key="search.detail.use").click().run())
    assert captions(at)[0] == oid and at.query_params["proto"] == oid


def test_the_detail_panel_shows_the_mark_and_the_stored_derived_columns(tiny_index):
    from ulisse.plugins.anomalies import anomaly_scores
    from ulisse.plugins.feedback import mark

    anomaly_scores(tiny_index, method="kth", k=3, progress=False)  # stored with the index
    at = ok(page(page_script("Search"), tiny_index.path, **{"search.id": "obj001"}))
    oid = neighbour_ids(at)[0]
    mark(tiny_index, [oid], False)
    ok(at.button(key="neighbour.detail.0").click().run())
    assert "Marked: Not relevant" in " ".join(c.value for c in at.caption)
    tables = [t.value for t in at.dataframe]
    derived = next(t for t in tables if any(str(c).startswith("anomaly") for c in t.columns))
    stored = tiny_index.derived_kept("anomaly").iloc[tiny_index.row_of(oid)]
    column = next(str(c) for c in derived.columns if str(c).startswith("anomaly"))
    assert float(derived[column].iloc[0]) == pytest.approx(float(stored[column]))


def test_search_by_uploaded_cutout(demo_index):
    at = ok(page(page_script("Search"), demo_index, **{"search.mode": "Upload a cutout"}))
    cutout = sorted((demo_index / "cutouts").glob("*.png"))[0]
    at.file_uploader(key="search.upload").set_value((cutout.name, cutout.read_bytes(), "image/png"))
    ok(at.run())
    shown = captions(at)
    assert shown[0] == cutout.name
    assert shown[1].startswith(f"#1 {cutout.stem}")  # the object itself is the nearest


@pytest.mark.parametrize("name, data, message", [
    ("fake.png", b"not an image", "not a readable PNG or JPEG"),
    ("bomb.png", png_claiming(40_000, 40_000), "too large"),
])
def test_search_bad_upload_is_a_message(demo_index, name, data, message):
    at = ok(page(page_script("Search"), demo_index, **{"search.mode": "Upload a cutout"}))
    at.file_uploader(key="search.upload").set_value((name, data, "application/octet-stream"))
    ok(at.run())
    assert message in errors(at) and not at.image


def test_search_leaves_strategies_with_a_page_of_their_own_out(demo_index):
    """Recursive expansion has its Expand page (iterations, budget): the Search page does not offer it as a way
    to combine prototypes (k = 8 returned 239 "nearest neighbours" there)."""
    at = ok(page(page_script("Search"), demo_index, params={"combine": "recursive"}))
    box = at.sidebar.selectbox(key="search.combine")
    assert "recursive" not in box.options and box.value == "mean" and "on the Expand page" in box.help
    assert [w.value for w in at.warning] == ["Combine prototypes 'recursive' is not one of mean, union: showing mean."]
    anomalies = ok(page(page_script("Anomalies"), demo_index, params={"method": "kth morphology"}))
    assert anomalies.sidebar.selectbox(key="anomalies.method").value == "kth+morphology" and not anomalies.warning


def test_search_bad_index_is_a_message(tmp_path):
    at = ok(page(page_script("Search"), tmp_path / "nowhere"))
    assert "no index here" in errors(at)


def test_another_index_starts_from_its_objects(demo_index, labelled_index):
    at = ok(page(page_script("Search"), demo_index))
    assert captions(at)[0].startswith("hdf-")
    ok(at.sidebar.selectbox(key="index.choice").set_value("Other directory…").run())
    ok(at.sidebar.text_input(key="index.other").set_value(str(labelled_index.path)).run())
    other = ulisse.open_index(labelled_index.path)
    assert not at.error and captions(at)[0] == other.id_of(int(other.metadata["flux"].to_numpy().argmax())) \
        if "flux" in other.metadata_columns else captions(at)[0].startswith("obj")
    assert at.query_params["index"] == str(labelled_index.path.resolve())
    # the chooser now names the index that is open, and still lists the first one: choosing it opens it
    ok(at.run())
    box = at.sidebar.selectbox(key="index.choice")
    assert box.value == str(labelled_index.path.resolve()) and str(demo_index.resolve()) in box.options
    ok(box.set_value(str(demo_index.resolve())).run())
    assert at.query_params["index"] == str(demo_index.resolve()) and captions(at)[0].startswith("hdf-")


# -- the labelling loop ---------------------------------------------------------------------

def search_and_mark(index, prototype: str, clicks: list[str]):
    """Search from ``prototype`` with no marks yet, then click the tile buttons ``clicks`` (keys); the page and its ids."""
    from ulisse.plugins.feedback import clear_marks

    clear_marks(index)
    at = ok(page(page_script("Search"), index.path, **{"search.id": prototype}))
    shown = neighbour_ids(at)
    for key in clicks:
        ok(at.button(key=key).click().run())
    return at, shown


def test_mark_tiles_and_rank_more_like_my_marks(labelled_index):
    from ulisse.plugins.feedback import clear_marks, marks

    at, shown = search_and_mark(labelled_index, "obj009", ["neighbour.yes.0", "neighbour.no.1"])
    table = marks(labelled_index)
    assert dict(zip(table["id"], table["relevant"])) == {shown[0]: True, shown[1]: False}
    marks_page = ok(page(page_script("Marks"), labelled_index.path, **{"ulisse.protos": ["obj009"]}))
    assert {m.label: m.value for m in marks_page.metric} == \
        {"Prototypes": "1", "Marked relevant": "1", "Marked not relevant": "1"}
    ranked = neighbour_ids(marks_page)
    assert len(ranked) == 16 and not {shown[0], shown[1], "obj009"} & set(ranked)
    assert [b.label for b in marks_page.download_button][-2:] == ["Marks as CSV", "Marks as VOTable"]
    ok(marks_page.button(key="rerank.yes.0").click().run())  # mark from the ranking: it leaves the ranking
    assert ranked[0] not in neighbour_ids(marks_page) and ranked[0] in set(marks(labelled_index)["id"])
    # deleting every mark asks first: the button is off until the box is ticked
    assert marks_page.button(key="marks.clear").disabled and len(marks(labelled_index)) == 3
    ok(marks_page.checkbox(key="marks.clear_sure").check().run())
    ok(marks_page.button(key="marks.clear").click().run())
    assert marks(labelled_index).empty and "No marks yet." in [c.value for c in marks_page.caption]
    ok(marks_page.button(key="rerank.yes.0").click().run())  # a new mark: deleting asks again
    assert not marks_page.checkbox(key="marks.clear_sure").value and marks_page.button(key="marks.clear").disabled
    clear_marks(labelled_index)


# -- Expand ------------------------------------------------------------------------------

def test_expand_fractions_first_paged_iterations_and_a_warning(labelled_index):
    at = page(page_script("Expand"), labelled_index.path, **{"ulisse.protos": ["obj003"]})
    at.sidebar.slider(key="expand.k").set_value(6)
    ok(at.sidebar.slider(key="expand.iterations").set_value(3).run())
    found = int({m.label: m.value for m in at.metric}["Objects found"])
    assert found >= 12 and "swallowed most of the survey" in at.warning[0].value
    assert at.subheader[0].value.startswith("Class fractions (label)")  # at the top
    assert [d for d in at.dataframe if "base rate" in d.value.columns][0].value.columns.tolist() == \
        ["expansion", "direct kNN", "base rate"]
    iteration_tiles = [c for c in captions(at) if "←" in c]
    assert len(iteration_tiles) <= 12 * 3  # a capped grid per iteration; more are paged
    assert {"Download CSV", "Download VOTable"} <= {b.label for b in at.download_button}


def test_expand_reports_an_unknown_prototype_and_starts_from_the_default(demo_index):
    at = ok(page(page_script("Expand"), demo_index, params={"proto": "nope"}))
    index = ulisse.open_index(demo_index)
    brightest = index.id_of(int(index.metadata["flux"].to_numpy().argmax()))
    assert captions(at)[0] == brightest  # the brightest object, not the first (an empty field on the demo)
    assert "nope: not in this index" in at.warning[0].value and "Expanding from" in at.warning[0].value
    search = ok(page(page_script("Search"), demo_index, params={"proto": "nope"}))  # reported the same way
    assert "nope: not in this index" in search.warning[0].value


# -- Anomalies -------------------------------------------------------------------------

def test_anomalies_histogram_and_paging(demo_index):
    at = ok(page(page_script("Anomalies"), demo_index))
    assert len(at.get("vega_lite_chart")) == 1  # the score histogram
    shown = [c for c in captions(at) if c.startswith("#")]
    assert len(shown) == 24 and shown[0].startswith("#1 ") and "score" in shown[0]
    n = len(ulisse.open_index(demo_index))
    assert at.number_input(key="anomaly.page").max == -(-n // 24)
    ok(at.number_input(key="anomaly.page").set_value(2).run())
    assert [c for c in captions(at) if c.startswith("#")][0].startswith("#25 ")
    scores = at.dataframe[-1].value["score"].astype(float).to_numpy()
    from ulisse.plugins.anomalies.feedback import discover  # artefacts hidden by default, as the command line hides them

    clean = discover(ulisse.open_index(demo_index), top=n, use_marks=False, progress=False)
    assert len(scores) == len(clean) == n - clean.feedback["left_out"] and np.all(np.diff(scores) <= 0)
    ok(at.sidebar.selectbox(key="anomalies.method").set_value("iforest").run())
    assert at.sidebar.slider(key="anomalies.k").disabled


def test_anomalies_page_offers_a_plugins_anomaly_method(demo_index):
    from ulisse.plugin_manager import get_plugin_manager
    from ulisse.registry import AnomalyMethod

    class ThrowawayPlugin:
        @ulisse.hookimpl
        def register_anomaly_methods(self, config):
            return [AnomalyMethod("norm", "vector norm", uses_k=False,
                                  score=lambda index, **options: np.linalg.norm(index.all_vectors(), axis=1))]

    plugin = ThrowawayPlugin()
    pm = get_plugin_manager()
    pm.register(plugin, name="ui-test-norm")
    try:
        at = ok(page(page_script("Anomalies"), demo_index))
        choice = at.sidebar.selectbox(key="anomalies.method")
        assert choice.value == "kth" and "norm: vector norm" in choice.options  # offered, not the default
        ok(at.sidebar.selectbox(key="anomalies.method").set_value("norm").run())
        index = ulisse.open_index(demo_index)
        norms = np.linalg.norm(index.all_vectors(), axis=1)
        assert at.sidebar.slider(key="anomalies.k").disabled
        assert neighbour_ids(at)[0] == index.id_of(int(np.argmax(norms)))
    finally:
        pm.unregister(plugin)


# -- ulisse ui -----------------------------------------------------------------------------

def test_ui_command_line(cli, demo_index):
    code, out, err = cli("ui", "--index", demo_index, "--print-command", "--server.port", "8601")
    assert code == 0, err
    words = out.split()
    assert words[1:5] == ["-m", "streamlit", "run", str(APP)]
    assert words[words.index("--server.address") + 1] == "127.0.0.1"
    assert words[words.index("--server.fileWatcherType") + 1] == "none"
    assert words[words.index("--browser.gatherUsageStats") + 1] == "false"
    assert words[-2:] == ["--server.port", "8601"]  # Streamlit's own options pass through, last


def test_ui_command_takes_the_index_as_an_argument_and_a_port(cli, demo_index, monkeypatch):
    """``ulisse ui INDEX --port N``, as every other verb takes its index; a value of a Streamlit option is not
    taken for the index, and two indexes are refused."""
    import ulisse.ui.plugin as plugin

    seen = {}
    monkeypatch.setattr(plugin, "run_streamlit", lambda command, env: seen.update(command=command, env=env) or 0)
    code, out, err = cli("ui", demo_index, "--port", "8531", "--server.address", "0.0.0.0")
    assert code == 0, err
    assert seen["env"][plugin.INDEX_ENV] == str(demo_index.resolve())
    assert seen["command"][-4:] == ["--server.address", "0.0.0.0", "--server.port", "8531"]
    code, out, err = cli("ui", "--index", demo_index, "--server.port", "8601")
    assert code == 0 and seen["command"][-2:] == ["--server.port", "8601"], err
    code, out, err = cli("ui", demo_index, "--index", demo_index)
    assert code == 1 and "the index is given twice" in err
    code, out, err = cli("ui", demo_index, "other")
    assert code == 1 and "one index at most" in err
    code, out, err = cli("ui", "--port", "0")
    assert code == 2 and "--port" in err


def test_ui_command_exits_with_the_servers_status(cli, demo_index, monkeypatch):
    import ulisse.ui.plugin as plugin

    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    monkeypatch.setattr(plugin, "streamlit_command", lambda extra=(): crash)
    code, out, err = cli("ui", "--index", demo_index)
    assert code == 139 and "status 139" in err


def test_ui_command_needs_an_index_there(cli, tmp_path):
    code, out, err = cli("ui", "--index", tmp_path / "missing", "--print-command")
    assert code == 1 and "no index here" in err


# -- issue 25: every view in its URL, marks on tiles, sky context, a sensible default ---------------------------

def round_trip(script, index_dir, set_widgets, read_widgets, **state) -> tuple[dict, dict]:
    """Set widgets on a page, read its URL, open that URL in a new session: the widgets' values (first, again)."""
    at = ok(page(script, index_dir, **state))
    set_widgets(at)
    ok(at.run())
    url = {name: at.query_params.get_all(name) if hasattr(at.query_params, "get_all") else at.query_params[name]
           for name in at.query_params}
    url = {name: (value if len(value) != 1 else value[0]) if isinstance(value, list) else value
           for name, value in url.items()}
    again = ok(page(script, None, params=url))
    return read_widgets(at), read_widgets(again)


@pytest.mark.slow
def test_search_state_round_trips_through_its_url(labelled_index):
    def set_widgets(at):
        at.sidebar.slider(key="search.k").set_value(9)
        at.sidebar.selectbox(key="search.combine").set_value("union")
        at.text_input(key="search.id").set_value("obj004, obj011")
        at.sidebar.select_slider(key="ulisse.tile_size").set_value("Large")

    def read(at):
        return (at.sidebar.slider(key="search.k").value, at.sidebar.selectbox(key="search.combine").value,
                at.text_input(key="search.id").value, at.sidebar.select_slider(key="ulisse.tile_size").value,
                neighbour_ids(at))

    first, again = round_trip(page_script("Search"), labelled_index.path, set_widgets, read)
    assert first == again and first[:4] == (9, "union", "obj004, obj011", "Large")

    def pick_order(at):
        at.radio(key="search.mode").set_value("Pick a thumbnail").run()
        at.selectbox(key="search.pick_sort").set_value("Dec")

    def read_pick(at):
        return at.radio(key="search.mode").value, at.selectbox(key="search.pick_sort").value, captions(at)[:5]

    first, again = round_trip(page_script("Search"), labelled_index.path, pick_order, read_pick)
    assert first == again and first[:2] == ("Pick a thumbnail", "Dec")
    decs = dict(zip(labelled_index.metadata["id"], labelled_index.metadata["dec"]))
    shown = [c.split()[0] for c in first[2]]
    assert [decs[i] for i in shown] == sorted(decs[i] for i in shown)


def test_expand_state_round_trips_through_its_url(labelled_index):
    def set_widgets(at):
        at.sidebar.slider(key="expand.k").set_value(5)
        at.sidebar.slider(key="expand.iterations").set_value(2)
        at.sidebar.number_input(key="expand.budget").set_value(10)

    def read(at):
        return (at.sidebar.slider(key="expand.k").value, at.sidebar.slider(key="expand.iterations").value,
                at.sidebar.number_input(key="expand.budget").value, captions(at)[0],
                {m.label: m.value for m in at.metric}["Objects found"])

    first, again = round_trip(page_script("Expand"), labelled_index.path, set_widgets, read,
                              **{"ulisse.protos": ["obj006"]})
    assert first == again and first[:4] == (5, 2, 10, "obj006")


def test_a_confirmed_expansion_round_trips_through_its_url(tiny_index):
    """Follow the marks, most relevant first, branches stopped below 50 % confirmed: a shared link opens the same."""
    from ulisse.plugins.feedback import mark

    mark(tiny_index, ["obj006", "obj007", "obj008"], True)

    def set_widgets(at):
        ok(at.sidebar.radio(key="expand.follow").set_value("Objects marked relevant").run())  # enables the rest
        at.sidebar.checkbox(key="expand.relevance").check()
        at.sidebar.slider(key="expand.min_confirmed").set_value(50)

    def read(at):
        return (at.sidebar.radio(key="expand.follow").value, at.sidebar.checkbox(key="expand.relevance").value,
                at.sidebar.slider(key="expand.min_confirmed").value,
                {m.label: m.value for m in at.metric}["Objects found"])

    first, again = round_trip(page_script("Expand"), tiny_index.path, set_widgets, read,
                              **{"ulisse.protos": ["obj006"]})
    assert first == again and first[:3] == ("Objects marked relevant", True, 50)


def test_anomalies_state_round_trips_through_its_url(demo_index):
    def set_widgets(at):
        at.sidebar.selectbox(key="anomalies.method").set_value("mean")
        at.sidebar.slider(key="anomalies.k").set_value(7)
        at.sidebar.slider(key="anomalies.top").set_value(30)

    def read(at):
        return (at.sidebar.selectbox(key="anomalies.method").value, at.sidebar.slider(key="anomalies.k").value,
                at.sidebar.slider(key="anomalies.top").value, neighbour_ids(at)[:5])

    first, again = round_trip(page_script("Anomalies"), demo_index, set_widgets, read)
    assert first == again and first[:3] == ("mean", 7, 30)


def test_marks_state_round_trips_through_its_url(labelled_index):
    def set_widgets(at):
        at.sidebar.slider(key="marks.k").set_value(6)

    def read(at):
        return at.sidebar.slider(key="marks.k").value, neighbour_ids(at)

    first, again = round_trip(page_script("Marks"), labelled_index.path, set_widgets, read,
                              **{"ulisse.protos": ["obj002"]})
    assert first == again and first[0] == 6 and len(first[1]) == 6


def test_denoise_state_round_trips_through_its_url(labelled_index):
    def set_widgets(at):
        at.text_input(key="denoise.id").set_value("obj003")
        at.sidebar.text_input(key="denoise.model").set_value("/nowhere/model")

    def read(at):
        return at.text_input(key="denoise.id").value, at.sidebar.text_input(key="denoise.model").value

    first, again = round_trip(page_script("Denoise"), labelled_index.path, set_widgets, read)
    assert first == again == ("obj003", "/nowhere/model")


@pytest.mark.slow
def test_a_page_change_keeps_only_declared_parameters(demo_index):
    at = ok(page(APP, demo_index, params={"page": "Anomalies", "feature": "7", "junk": "1"}))
    ok(at.sidebar.slider(key="anomalies.top").set_value(40).run())
    assert "feature" not in at.query_params and "junk" not in at.query_params and at.query_params["top"] == "40"
    ok(at.sidebar.radio(key="page").set_value("Expand").run())
    ok(at.sidebar.slider(key="expand.iterations").set_value(2).run())
    assert at.query_params["page"] == "Expand" and at.query_params["iterations"] == "2"
    assert "top" not in at.query_params and "method" not in at.query_params  # Anomalies' view left with its page
    again = ok(page(APP, None, params=dict(at.query_params)))  # the link opens Expand as it was
    assert again.sidebar.radio(key="page").value == "Expand" and again.sidebar.slider(key="expand.iterations").value == 2
    ok(at.sidebar.radio(key="page").set_value("Anomalies").run())  # back: the session kept Anomalies' view
    assert at.sidebar.slider(key="anomalies.top").value == 40 and at.query_params["top"] == "40"
    features = ok(page(APP, demo_index, params={"page": "Features", "feature": "3"}))
    assert features.query_params["feature"] == "3"
    ok(features.sidebar.radio(key="page").set_value("Denoise").run())
    assert features.query_params["page"] == "Denoise" and "feature" not in features.query_params
    ok(features.sidebar.radio(key="page").set_value("Cluster search").run())  # a page that stops for what it lacks
    assert features.query_params["page"] == "Cluster search"


def test_an_upload_is_named_by_its_content_hash_in_the_url(demo_index):
    at = ok(page(page_script("Search"), demo_index, params={"proto": "hdf-0036"}, **{"search.mode": "Upload a cutout"}))
    cutout = sorted((demo_index / "cutouts").glob("*.png"))[0]
    at.file_uploader(key="search.upload").set_value((cutout.name, cutout.read_bytes(), "image/png"))
    ok(at.run())
    url = dict(at.query_params)
    assert "proto" not in url and len(url["upload"]) == 20 and url["mode"] == "Upload a cutout"
    again = ok(page(page_script("Search"), None, params=url))  # the server still holds it: the same view
    assert captions(again)[:2] == captions(at)[:2] and captions(again)[0] == cutout.name
    gone = ok(page(page_script("Search"), None, params={**url, "upload": "0" * 20}))
    assert "upload it again" in gone.warning[0].value and not gone.image


def test_marks_show_on_tiles_and_are_undone_one_at_a_time(labelled_index):
    from ulisse.plugins.feedback import clear_marks, marks

    at, shown = search_and_mark(labelled_index, "obj012", ["neighbour.yes.0", "neighbour.no.1", "neighbour.yes.2"])
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert badges == [":green-badge[Relevant]", ":red-badge[Not relevant]", ":green-badge[Relevant]"]
    assert at.button(key="neighbour.yes.undo.0").label == "Unmark" and at.button(key="neighbour.yes.1").label == "Relevant"
    ok(at.button(key="neighbour.no.undo.1").click().run())  # one mark removed, the others kept
    assert dict(zip(marks(labelled_index)["id"], marks(labelled_index)["relevant"])) == {shown[0]: True, shown[2]: True}
    assert [m.value for m in at.markdown if "-badge[" in m.value] == [":green-badge[Relevant]"] * 2
    anomalies = ok(page(page_script("Anomalies"), labelled_index.path))  # the same tiles, the same marks
    marked = [b.key for b in anomalies.button if ".yes.undo." in (b.key or "")]
    assert len(marked) == sum(i in {shown[0], shown[2]} for i in neighbour_ids(anomalies)[:24])
    clear_marks(labelled_index)


def test_default_prototype_is_the_brightest_and_the_footprint_is_drawn(demo_index):
    index = ulisse.open_index(demo_index)
    at = ok(page(page_script("Search"), demo_index))
    brightest = index.id_of(int(index.metadata["flux"].to_numpy().argmax()))
    assert captions(at)[0] == brightest and "the brightest object" in " ".join(c.value for c in at.caption)
    assert any(s.value == "Where the index lies on the sky" for s in at.subheader)


def test_a_position_with_no_match_is_told_in_the_users_notation(demo_index):
    at = ok(page(page_script("Search"), demo_index, **{"search.mode": "Sky position"}))
    at.text_input(key="search.position").set_value("12:36:49.0 +62:12:58")
    ok(_submit(at))
    message = errors(at)
    assert "12:36:49.0 +62:12:58" in message and "189.2041" not in message and " deg" in message, message
    assert len(at.image) == 1  # the footprint, with the asked position


def test_picker_orders_and_the_default_follow_magnitudes_or_the_mean(labelled_index):
    import ulisse.ui.kit as kit

    index = ulisse.open_index(labelled_index.path)
    mags = index.metadata["r_mag"].to_numpy()
    brightest = kit.sort_for_picking(index, "Brightest first")["id"].tolist()
    assert brightest[0] == index.id_of(int(mags.argmin())) == kit.default_prototype(index)
    assert list(mags[[index.row_of(i) for i in brightest]]) == sorted(mags)
    vectors = np.asarray(index.all_vectors())
    typical = index.id_of(int(np.linalg.norm(vectors - vectors.mean(0), axis=1).argmin()))
    assert kit.sort_for_picking(index, "Most typical first")["id"].iloc[0] == typical
    assert kit.sort_for_picking(index, "Most unusual first")["id"].iloc[-1] == typical
    assert kit.sort_for_picking(index, "RA")["ra"].is_monotonic_increasing


def test_long_work_shows_a_progress_bar_with_the_time_left_then_goes(demo_index, tmp_path):
    """kit.progress_shown (the app wraps every page in it): the product's own progress, as a Streamlit bar."""
    script = tmp_path / "work.py"
    script.write_text(f'''
import streamlit as st
import ulisse
import ulisse.ui.kit as kit
from ulisse.plugins.anomalies import compute_knn_scores

index = ulisse.open_index({str(demo_index)!r}, device="cpu")


@st.cache_data
def scores(k):  # as the pages compute: inside a cached function, whose elements Streamlit replays
    return compute_knn_scores(index, k=k, progress=False)  # the product's scoring, silent on the terminal


with kit.progress_shown() as shown:
    scores(3)
    st.caption("inside: " + shown.text)
st.caption("after: " + shown.text)
''')
    at = ok(AppTest.from_file(str(script), default_timeout=TIMEOUT).run())
    assert [c.value for c in at.caption] == ["inside: anomaly scores (k=3): 60/60 objects (100 %)",
                                             "after: anomaly scores (k=3): 60/60 objects (100 %)"]
    assert not at.get("progress")  # the bar went with the work
    at = ok(at.run())  # a cache hit: nothing to replay into the bar of the first run, no work, no bar
    assert [c.value.strip() for c in at.caption] == ["inside:", "after:"] and not at.get("progress")


def test_a_page_that_wraps_its_own_long_call_shows_the_bar_there_not_at_the_top(demo_index, tmp_path):
    script = tmp_path / "nested.py"
    script.write_text(f'''
import streamlit as st
import ulisse
import ulisse.ui.kit as kit
from ulisse.plugins.anomalies import compute_knn_scores

index = ulisse.open_index({str(demo_index)!r}, device="cpu")
with kit.progress_shown() as top:  # as the app wraps every page
    st.title("page")
    with kit.progress_shown() as here:  # the page's own, beside its results
        compute_knn_scores(index, k=4, progress=False)
    st.caption(f"top meanwhile: {{top.text or '-'}}")  # the top bar stayed empty: one bar, not two
    compute_knn_scores(index, k=5, progress=False)  # outside the page's: at the top
    st.caption(f"here: {{here.text}} | top: {{top.text}}")
''')
    at = ok(AppTest.from_file(str(script), default_timeout=TIMEOUT).run())
    assert [c.value for c in at.caption] == ["top meanwhile: -", "here: anomaly scores (k=4): 60/60 objects (100 %) | "
                                             "top: anomaly scores (k=5): 60/60 objects (100 %)"]
    assert not at.get("progress")
