"""End-to-end tests of the web UI in a real browser: Debian's Chromium driven by Playwright.

``ulisse ui --index <index> --server.port <free port>`` runs in a subprocess
(:func:`ulisse_bench.soak.serve`); the tests click tiles, open shared URLs, mark and
re-rank, type sexagesimal positions and download as a person would, and check
that no request leaves 127.0.0.1. Screenshots are kept in ``test-artifacts/``.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the
``playwright`` package (never ``playwright install``: the system browser is used).
"""

from __future__ import annotations

import importlib.util
import urllib.parse
from pathlib import Path

import pytest

import ulisse

CHROMIUM = "/usr/bin/chromium"
NOT_STALE = "() => !document.querySelector(\"[data-stale='true']\")"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 90_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="needs the playwright package (pip install playwright)"),
]


@pytest.fixture(scope="module")
def sky_index(survey_index, tmp_path_factory):
    """24 synthetic cutouts with positions and labels (tiny encoder: fast); a copy of its own (marks are written)."""
    import shutil

    copy = tmp_path_factory.mktemp("ui-browser") / "idx"
    shutil.copytree(survey_index.path, copy)
    return ulisse.open_index(copy, device="cpu")


@pytest.fixture(scope="module")
def server(sky_index, tmp_path_factory):
    from ulisse_bench.soak import serve

    with serve(sky_index.path, tmp_path_factory.mktemp("ui-server")) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    from ulisse_bench.soak import CHROMIUM_ARGS

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, server):
    """A fresh tab on the app; every request it makes is recorded (all must stay on 127.0.0.1)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1500}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.requests = []
    tab.on("request", lambda req: tab.requests.append(req.url))
    yield tab
    assert tab.locator("[data-testid='stException']").count() == 0, "the page shows a traceback"
    outside = [u for u in tab.requests if urllib.parse.urlparse(u).hostname not in ("127.0.0.1", None)
               and not u.startswith(("data:", "blob:"))]
    assert not outside, f"requests left the machine: {outside[:5]}"
    context.close()


def open_app(tab, server, **params) -> None:
    tab.goto(f"{server.url}/?{urllib.parse.urlencode(params, doseq=True)}" if params else server.url)
    settle(tab)


def settle(tab):
    """Wait until Streamlit has finished the current run."""
    tab.wait_for_timeout(400)
    tab.locator("[data-testid='stStatusWidget']").wait_for(state="detached")
    tab.wait_for_function(NOT_STALE)  # the last run's elements, greyed while a script runs
    tab.locator("[data-testid='stImage']").first.wait_for()


def prototype(tab) -> str:
    """The id under the (first) prototype's picture, once it is drawn."""
    caption = tab.locator("[class*='st-key-search-prototype'] [data-testid='stImageCaption']").first
    caption.wait_for()
    return caption.inner_text().strip()


def neighbours(tab, n: int = 12) -> list[str]:
    """The ids of the neighbour tiles, once all ``n`` are drawn."""
    from playwright.sync_api import expect

    tiles = tab.locator("[class*='st-key-ulisse-tile-neighbour-'] [data-testid='stImageCaption']")
    expect(tiles).to_have_count(n)
    texts = tiles.all_inner_texts()
    return [t.split()[1] for t in texts]


def shoot(tab, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tab.wait_for_function("Array.from(document.images).every(im => im.complete)")
    tab.screenshot(path=str(ARTIFACTS / name))


def test_click_a_tile_to_make_it_the_prototype(page, server):
    from playwright.sync_api import expect

    open_app(page, server, proto="obj001")
    assert prototype(page) == "obj001"
    target = neighbours(page)[3]
    tile = page.locator("[class*='st-key-ulisse-tile-neighbour-3'] img")
    tile.scroll_into_view_if_needed()
    box = tile.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # on the picture itself
    expect(page.locator("[data-testid='stImageCaption']").first).to_have_text(target)
    settle(page)
    assert f"proto={target}" in page.url and target not in neighbours(page)
    shoot(page, "ui-click-to-prototype.png")


def test_a_shared_url_restores_the_same_neighbours(page, server, sky_index, browser):
    open_app(page, server, proto="obj010", k=5, label="label", page="Search")
    first = neighbours(page, 5)
    assert first == sky_index.query("obj010", k=5).ids
    shared = page.url
    other = browser.new_context(viewport={"width": 1400, "height": 1500}).new_page()  # someone else opens the link
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(shared)
    settle(other)
    from playwright.sync_api import expect

    expect(other.locator("[data-testid='stImageCaption']").first).to_have_text("obj010")
    assert neighbours(other, 5) == first
    other.context.close()


def test_mark_and_rerank(page, server, sky_index):
    from playwright.sync_api import expect

    from ulisse.plugins.feedback import clear_marks, marks

    clear_marks(sky_index)
    open_app(page, server, proto="obj005")
    shown = neighbours(page)
    page.get_by_role("button", name="Relevant", exact=True).nth(0).click()  # under the first tile
    settle(page)
    page.get_by_role("button", name="Not relevant", exact=True).nth(1).click()  # under the second
    settle(page)
    assert dict(zip(marks(sky_index)["id"], marks(sky_index)["relevant"])) == {shown[0]: True, shown[1]: False}
    page.get_by_test_id("stSidebar").get_by_text("Marks", exact=True).click()
    expect(page.get_by_role("heading", name="More like my marks")).to_be_visible()
    settle(page)
    expect(page.locator("[class*='st-key-ulisse-tile-rerank-'] [data-testid='stImageCaption']")).to_have_count(16)
    ranked = [t.split()[1] for t in
              page.locator("[class*='st-key-ulisse-tile-rerank-'] [data-testid='stImageCaption']").all_inner_texts()]
    assert len(ranked) == 16 and not {shown[0], shown[1], "obj005"} & set(ranked)
    shoot(page, "ui-marks.png")
    clear_marks(sky_index)


def test_sexagesimal_position_with_search_button(page, server, sky_index):
    from astropy import units as u
    from astropy.coordinates import Angle
    from playwright.sync_api import expect

    row = sky_index.metadata.iloc[9]
    ra = Angle(row["ra"] * u.deg).to_string(unit=u.hourangle, sep=":", precision=3)
    dec = Angle(row["dec"] * u.deg).to_string(unit=u.deg, sep=":", precision=2, alwayssign=True)
    open_app(page, server)
    page.get_by_text("Sky position", exact=True).click()
    box = page.get_by_role("textbox", name="Position")
    box.fill(f"{ra} {dec}")
    page.locator("[data-testid='stForm'] button", has_text="Search").click()  # the form's Search button
    expect(page.get_by_text(f"Matched {row['id']} at")).to_be_visible()
    settle(page)
    assert prototype(page) == row["id"]
    shoot(page, "ui-sexagesimal.png")


def test_detail_panel_links_and_relative_downloads(page, server):
    from playwright.sync_api import expect

    open_app(page, server, proto="obj002")
    page.get_by_role("button", name="Details", exact=True).first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("link", name="Aladin Lite", exact=False).first).to_be_visible()
    shoot(page, "ui-detail.png")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    settle(page)  # closing it reruns the page (the URL's detail= goes)
    assert "detail=" not in page.url
    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV").click()
    csv = [line for line in Path(info.value.path()).read_text().splitlines() if not line.startswith("#")]
    header = csv[0].split(",")
    source = csv[1].split(",")[header.index("source")]
    assert header[:3] == ["rank", "id", "distance"] and not source.startswith("/") and source.startswith("../")


# -- issue 25: any window size, words not glyphs, marks you can see -------------------------------------------

VIEWPORTS = [(1024, 768), (1366, 768), (1920, 1080)]

LAYOUT_PROBLEMS = r"""
() => {
  const problems = [];
  const shown = el => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) return false;
    for (let e = el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || s.visibility === 'hidden' || s.opacity === '0') return false;
    }
    return true;
  };
  const name = el => (el.getAttribute('data-testid') || el.tagName.toLowerCase()) + ': ' + el.innerText.trim().slice(0, 60);
  // 1. clipped labels: content wider than its box, or cut with an ellipsis
  const labels = 'button, button p, [data-testid="stImageCaption"], [data-testid="stMetricValue"], ' +
    '[data-testid="stMetricValue"] div, [data-testid="stMetricLabel"], [data-testid="stCaptionContainer"], ' +
    '[data-testid="stMarkdownContainer"] p, [data-testid="stWidgetLabel"] p, [role="tab"] p, h1, h2, h3, ' +
    '[data-testid="stBadge"], [data-testid="stBaseButton-secondary"], [data-testid="stDownloadButton"] button';
  for (const el of document.querySelectorAll(labels)) {
    if (el.closest('[class*="st-key-ulisse-pick-"]') || !el.innerText.trim() || !shown(el)) continue;
    const s = getComputedStyle(el);
    if (el.scrollWidth > el.clientWidth + 1) problems.push('clipped ' + name(el) + ` (${el.scrollWidth} > ${el.clientWidth})`);
    else if (s.textOverflow === 'ellipsis' && s.overflow !== 'visible' && el.scrollWidth > el.clientWidth)
      problems.push('ellipsis ' + name(el));
  }
  // 2. split numbers and ids: a token with a digit (12, -27.7704, hdf-0073, #3) drawn on more than one line
  const root = document.querySelector('[data-testid="stAppViewContainer"]') || document.body;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest('svg, canvas, script, style, [class*="st-key-ulisse-pick-"]') || !shown(parent)) continue;
    const re = /\S+/g;
    let m;
    while ((m = re.exec(node.data)) !== null) {
      if (!/\d/.test(m[0])) continue;
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const rects = Array.from(range.getClientRects()).filter(r => r.width > 0.5 && r.height > 0.5);
      const tops = new Set(rects.map(r => Math.round(r.top)));
      if (tops.size > 1) problems.push(`split "${m[0]}" in ${name(parent)}`);
    }
  }
  return problems;
}
"""


def layout_problems(tab) -> list[str]:
    tab.wait_for_function("Array.from(document.images).every(im => im.complete)")
    tab.wait_for_timeout(300)
    return tab.evaluate(LAYOUT_PROBLEMS)


@pytest.mark.parametrize("width, height", VIEWPORTS, ids=[f"{w}x{h}" for w, h in VIEWPORTS])
def test_no_clipped_label_or_split_number_at_any_window_size(browser, server, sky_index, width, height):
    """Search, Expand, Marks and Anomalies at 1024x768, 1366x768 and 1920x1080: every label whole, every number
    and id on one line (the tiles reflow: the grid holds as many as the window does)."""
    from ulisse.plugins.feedback import clear_marks, mark

    clear_marks(sky_index)
    mark(sky_index, ["obj004"], True)
    mark(sky_index, ["obj007"], False)
    context = browser.new_context(viewport={"width": width, "height": height})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    found = {}
    try:
        for title, params in (("Search", {"proto": "obj003"}), ("Expand", {"proto": "obj003", "iterations": "2"}),
                              ("Marks", {"proto": "obj003"}), ("Anomalies", {})):
            open_app(tab, server, page=title, **params)
            tab.get_by_role("heading").first.wait_for()
            problems = layout_problems(tab)
            if problems:
                found[title] = problems[:8]
                shoot(tab, f"ui-layout-{title}-{width}x{height}.png")
            assert tab.locator("[data-testid='stException']").count() == 0, f"{title}: a traceback"
        shoot(tab, f"ui-layout-anomalies-{width}x{height}.png")
    finally:
        context.close()
        clear_marks(sky_index)
    assert not found, found


def test_the_detail_dialog_opens_where_the_user_is(browser, server):
    """1366x768, scrolled down: Details on tile #12 opens a dialog inside the window (the old panel sat at y < 0)."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1366, "height": 768})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    try:
        open_app(tab, server, proto="obj001", k="20")
        button = tab.locator("[class*='st-key-ulisse-tools-neighbour-11'] button", has_text="Details").first
        button.scroll_into_view_if_needed()
        button.click()
        dialog = tab.get_by_role("dialog")
        expect(dialog).to_be_visible()
        box = dialog.bounding_box()
        assert box["y"] >= 0 and box["y"] < 768, box
        expect(dialog.get_by_role("button", name="Use as prototype")).to_be_in_viewport()
        shoot(tab, "ui-detail-dialog-1366.png")
        dialog.get_by_role("button", name="Use as prototype").click()
        expect(dialog).to_have_count(0)
        settle(tab)
        assert "detail=" not in tab.url
    finally:
        context.close()


def test_a_mark_shows_on_its_tile_and_is_undone_there(page, server, sky_index):
    from playwright.sync_api import expect

    from ulisse.plugins.feedback import clear_marks, marks

    clear_marks(sky_index)
    open_app(page, server, proto="obj008")
    shown = neighbours(page)
    page.locator("[class*='st-key-ulisse-tools-neighbour-1'] button", has_text="Relevant").first.click()
    settle(page)
    card = page.locator("[class*='st-key-ulisse-card-neighbour-1-mark0']")
    expect(card).to_have_count(1)
    expect(card.locator(".stMarkdownBadge", has_text="Relevant")).to_have_count(1)  # the badge
    outline = card.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline == "solid"
    shoot(page, "ui-marked-tile.png")
    card.get_by_role("button", name="Unmark").click()
    settle(page)
    expect(page.locator("[class*='st-key-ulisse-card-neighbour-1-mark']")).to_have_count(0)
    assert shown[1] not in set(marks(sky_index)["id"])
    clear_marks(sky_index)
