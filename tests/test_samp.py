"""SAMP: a result table and a position reach a tool through a hub the test starts on the loopback interface."""

from __future__ import annotations

import threading
import time
import urllib.request

import astropy.units as u
import pandas as pd
import pytest
from astropy.table import Table

from ulisse.record import QueryRecord
from ulisse.samp import POINT_MTYPE, TABLE_MTYPE, SampError, hub_running, point_at, samp_module, send_table

samp = samp_module()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A SAMP hub on 127.0.0.1 (no web profile), found by clients through its own lock file."""
    lockfile = tmp_path / "samp-hub"
    server = samp.SAMPHubServer(web_profile=False, lockfile=str(lockfile), addr="127.0.0.1", timeout=60)
    server.start(wait=False)
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{lockfile.as_uri()}")
    try:
        yield server
    finally:
        server.stop()


class Receiver:
    """A tool on the hub that loads tables and takes positions, like TOPCAT and Aladin."""

    def __init__(self, name="topcat"):
        self.client = samp.SAMPIntegratedClient(name=name, addr="127.0.0.1")
        self.received: dict[str, dict] = {}
        self.event = threading.Event()

    def __enter__(self):
        self.client.connect()
        for mtype in (TABLE_MTYPE, POINT_MTYPE):
            self.client.bind_receive_notification(mtype, self._take)
        return self

    def _take(self, private_key, sender_id, mtype, params, extra):
        self.received[mtype] = params
        self.event.set()

    def wait(self, mtype, timeout=10.0):
        deadline = time.monotonic() + timeout
        while mtype not in self.received and time.monotonic() < deadline:
            self.event.wait(0.1)
        return self.received.get(mtype)

    def __exit__(self, *exc):
        self.client.disconnect()


def test_a_result_table_reaches_the_tool_with_units_and_record(hub, tmp_path):
    table = pd.DataFrame({"rank": [1, 2], "id": ["hdf-0073", "hdf-0012"], "distance": [1.25, 2.5],
                          "ra": [53.16, 53.17], "dec": [-27.78, -27.79], "row": [3, 7]})
    record = QueryRecord("query", {"prototype": "hdf-0050", "k": 2}, {"index": "demo"})
    with Receiver("topcat") as tool:
        report = send_table(table, record, name="neighbours of hdf-0050", directory=tmp_path, timeout=10)
        params = tool.wait(TABLE_MTYPE)
    assert params is not None and report.recipients == ("topcat",) and "topcat" in report.text()
    assert params["url"] == report.url and params["url"].startswith("file://") and params["name"]
    with urllib.request.urlopen(params["url"], timeout=5) as f:
        data = f.read()
    (tmp_path / "got.xml").write_bytes(data)
    got = Table.read(tmp_path / "got.xml", format="votable")
    assert got["ra"].unit == u.deg and got["dec"].unit == u.deg and list(got["id"]) == ["hdf-0073", "hdf-0012"]
    assert "row" not in got.colnames and got["ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    from astropy.io.votable import parse_single_table

    params = {p.name: p.value for p in parse_single_table(str(tmp_path / "got.xml")).params}
    assert params["prototype"] == "hdf-0050" and params["k"] == 2 and params["verb"] == "query"


def test_a_position_reaches_the_sky_viewer(hub):
    assert hub_running()
    with Receiver("Aladin") as viewer:
        report = point_at(53.16, -27.78, recipient="aladin", timeout=10)
        params = viewer.wait(POINT_MTYPE)
    assert report.recipients == ("Aladin",) and float(params["ra"]) == pytest.approx(53.16)
    assert float(params["dec"]) == pytest.approx(-27.78)


def test_no_tool_listening_is_one_clear_line(hub):
    with pytest.raises(SampError, match="no tool on the SAMP hub takes tables"):
        send_table(pd.DataFrame({"id": ["a"], "ra": [1.0], "dec": [2.0]}), timeout=10)


def test_without_a_hub_the_message_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{(tmp_path / 'none').as_uri()}")
    assert not hub_running()
    with pytest.raises(SampError) as info:
        point_at(10.0, 20.0, timeout=10)
    assert "TOPCAT or Aladin" in str(info.value) and "samp_hub" in str(info.value)


SCRIPT = """import pandas as pd
import ulisse.ui.kit as kit
kit.samp_buttons(pd.DataFrame({"id": ["a", "b"], "ra": [53.16, 53.17], "dec": [-27.78, -27.79]}),
                 meta={"prototype": "a", "k": 2}, key="t")
kit.show_in_aladin(53.16, -27.78, key="t")
"""


def test_the_ui_buttons_send_or_say_how_to_start_a_hub(hub, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    script = tmp_path / "samp_page.py"
    script.write_text(SCRIPT)
    with Receiver("topcat") as tool:
        at = AppTest.from_file(str(script), default_timeout=30).run()
        at.button(key="t.samp.table").click().run()
        assert not at.exception and tool.wait(TABLE_MTYPE) is not None
        assert "Sent the table to topcat" in at.success[0].value
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{(tmp_path / 'none').as_uri()}")
    at.button(key="t.samp.point").click().run()
    assert not at.exception and "samp_hub" in at.warning[0].value and "TOPCAT or Aladin" in at.warning[0].value
