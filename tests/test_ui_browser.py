"""End-to-end tests of the web UI in a real browser: Debian's Chromium driven by Playwright.

``ulisse ui --index <demo index> --server.port <free port>`` runs in a
subprocess; the tests query, look at the grid, upload, expand and download as
a person would. Screenshots are kept in ``test-artifacts/`` (git-ignored).

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the
``playwright`` package (``pip install playwright``; never ``playwright
install``: the system browser is used).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="needs the playwright package (pip install playwright)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_index, tmp_path_factory):
    """``ulisse ui`` serving the demo index on a free port; its URL."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("ui-server")
    log = open(workdir / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ulisse", "ui", "--index", str(demo_index), "--server.port", str(port)],
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ulisse ui exited with {proc.returncode}:\n{(workdir / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ulisse ui did not answer on {url}:\n{(workdir / 'server.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()  # ulisse ui passes SIGTERM on to Streamlit
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # a first upload loads the encoder
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, server):
    """A fresh browser tab on the app, once its first grid has appeared."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.goto(server)
    tab.locator("[data-testid='stImage']").first.wait_for()
    yield tab
    assert tab.locator("[data-testid='stException']").count() == 0, "the page shows a traceback"
    context.close()


def captions(tab):
    return tab.locator("[data-testid='stImageCaption']")


def settle(tab):
    """Wait until Streamlit has finished the current run."""
    tab.wait_for_timeout(300)
    tab.locator("[data-testid='stStatusWidget']").wait_for(state="detached")


def shoot(tab, name: str) -> None:
    """A screenshot in test-artifacts/, once the run, the images and the charts are done."""
    ARTIFACTS.mkdir(exist_ok=True)
    settle(tab)
    charts = tab.locator("[data-testid='stVegaLiteChart']")
    for i in range(charts.count()):
        charts.nth(i).locator("canvas, svg").first.wait_for()
    tab.wait_for_function("Array.from(document.images).every(im => im.complete)")
    tab.wait_for_timeout(300)
    tab.screenshot(path=str(ARTIFACTS / name))


def download(tab, label: str) -> str:
    with tab.expect_download() as info:
        tab.get_by_role("button", name=label).click()
    return Path(info.value.path()).read_text()


def sidebar_page(tab, title: str) -> None:
    tab.get_by_test_id("stSidebar").get_by_text(title, exact=True).click()


def test_search_grid_and_downloads(page, demo_index):
    from playwright.sync_api import expect

    import ulisse

    prototype = ulisse.open_index(demo_index).ids[7]
    box = page.get_by_role("textbox", name="Object id")
    box.fill(prototype)
    box.press("Enter")
    expect(captions(page).first).to_have_text(prototype)
    expect(page.locator("[data-testid='stImage']")).to_have_count(13)  # the prototype and 12 neighbours
    expect(captions(page).nth(1)).to_contain_text("#1 ")
    shoot(page, "ui-search.png")

    csv = download(page, "Download CSV").splitlines()
    assert csv[0].startswith("rank,id,distance") and len(csv) == 13
    assert prototype not in "".join(csv[1:])
    assert "<VOTABLE" in download(page, "Download VOTable")


def test_pick_a_thumbnail_and_upload(page, demo_index):
    from playwright.sync_api import expect

    page.get_by_text("Pick a thumbnail").click()
    expect(page.get_by_role("button", name="use", exact=True)).to_have_count(24)
    picked = captions(page).nth(4).inner_text()
    shoot(page, "ui-pick.png")
    page.get_by_role("button", name="use", exact=True).nth(4).click()
    expect(page.get_by_role("textbox", name="Object id")).to_have_value(picked)
    expect(captions(page).first).to_have_text(picked)

    page.get_by_text("Upload a cutout").click()
    uploader = page.locator("[data-testid='stFileUploader'] input[type=file]")
    uploader.set_input_files(files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"}])
    expect(page.get_by_text("notes.png: not a readable PNG or JPEG image")).to_be_visible()
    expect(page.locator("[data-testid='stImage']")).to_have_count(0)
    shoot(page, "ui-upload-error.png")

    cutout = sorted((demo_index / "cutouts").glob("*.png"))[3]
    uploader.set_input_files(str(cutout))
    expect(captions(page).first).to_have_text(cutout.name)
    expect(captions(page).nth(1)).to_contain_text(f"#1 {cutout.stem}")  # the object itself is the nearest
    shoot(page, "ui-upload.png")


def test_expand_and_anomalies(page):
    from playwright.sync_api import expect

    sidebar_page(page, "Expand")
    expect(page.get_by_text("Iteration 1", exact=False).first).to_be_visible()
    expect(captions(page).nth(1)).to_contain_text("←")  # provenance: found by ...
    shoot(page, "ui-expand.png")
    page.get_by_role("tab", name="Direct kNN").click()
    expect(page.get_by_text("✓ marks those the expansion found too")).to_be_visible()
    csv = download(page, "Download CSV").splitlines()
    assert csv[0].startswith("rank,id,iteration,found_by,distance")

    sidebar_page(page, "Anomalies")
    expect(page.get_by_role("heading", name="Anomalies")).to_be_visible()
    expect(page.locator("[data-testid='stImage']")).to_have_count(24)
    expect(captions(page).first).to_contain_text("#1 ")
    shoot(page, "ui-anomalies.png")
    page.get_by_role("button", name="search similar").first.click()  # back to Search with that prototype
    expect(page.get_by_role("heading", name="Search")).to_be_visible()
    expect(page.locator("[data-testid='stImage']")).to_have_count(13)
