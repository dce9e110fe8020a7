"""Send result tables and positions to TOPCAT, Aladin and other SAMP tools on this machine.

SAMP (the IVOA's Simple Application Messaging Protocol) goes through a hub that
TOPCAT and Aladin start themselves; ``samp_hub`` (astropy's, also ``python -m
astropy.samp.hub_script``) starts one alone. :func:`send_table` writes the
table as a VOTable with units, UCDs and the query's record
(:func:`ulisse.results.render`, the exports' own path) and sends its
``file://`` URL with ``table.load.votable``; :func:`point_at` sends
``coord.pointAt.sky`` (Aladin moves to the position). Both wait at most
``timeout`` seconds and raise :class:`SampError`, with how to start a hub,
when none runs. The hub is the one of the machine running ulisse (for the web
UI: the machine of ``ulisse ui``).

Uses ``pyvo.samp`` (astropy's SAMP, moved there in astropy 8), else ``astropy.samp``.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import UlisseError

TABLE_MTYPE = "table.load.votable"
POINT_MTYPE = "coord.pointAt.sky"
TIMEOUT = 5.0
KEEP_SECONDS = 86400  # tables sent over SAMP are removed from the temporary folder after a day
HOW_TO_START = ("start TOPCAT or Aladin (each starts a SAMP hub when none runs), or run `samp_hub` "
                "(or `python -m astropy.samp.hub_script`) in a terminal, then try again")


class SampError(UlisseError):
    """No SAMP hub, no tool listening, or the hub did not answer in time; the message says what to do."""


@dataclass(frozen=True)
class SampReport:
    """What was sent: the message type, the tools it went to (their SAMP names) and the table's URL, if any."""

    mtype: str
    recipients: tuple[str, ...]
    url: str | None = None

    def text(self) -> str:
        what = "table" if self.mtype == TABLE_MTYPE else "position"
        return f"sent the {what} to {', '.join(self.recipients)}"


def samp_module():
    """``pyvo.samp`` where it has the SAMP client and hub, else ``astropy.samp`` (deprecated there in 8.0)."""
    try:
        import pyvo.samp as samp

        if hasattr(samp, "SAMPIntegratedClient") and hasattr(samp, "SAMPHubServer"):
            return samp
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import astropy.samp as samp
    return samp


def _bounded(fn, timeout: float):
    """``fn()`` in a thread, waited for ``timeout`` seconds at most (a hung hub never hangs the caller)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, name="ulisse-samp", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise SampError(f"the SAMP hub did not answer within {timeout:g} s; {HOW_TO_START}")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _notify(mtype: str, params: dict, recipient: str | None, timeout: float, what: str) -> tuple[str, ...]:
    samp = samp_module()

    def send():
        client = samp.SAMPIntegratedClient(name="ulisse", description="ulisse similarity search",
                                           callable=False)
        try:
            client.connect()
        except samp.SAMPHubError as exc:
            raise SampError(f"no SAMP hub is running: {HOW_TO_START}") from exc
        except OSError as exc:  # a stale lock file: the hub it names is gone
            raise SampError(f"the SAMP hub does not answer ({exc}): {HOW_TO_START}") from exc
        try:
            subscribed = client.get_subscribed_clients(mtype)
            names = {cid: _client_name(client, cid) for cid in subscribed}
            if recipient is not None:
                names = {cid: n for cid, n in names.items() if recipient.lower() in (n.lower(), cid.lower())}
            if not names:
                who = f"{recipient} is not connected to the SAMP hub or" if recipient else "no tool on the SAMP hub"
                raise SampError(f"{who} takes {what} ({mtype}): start TOPCAT or Aladin and try again")
            message = {"samp.mtype": mtype, "samp.params": params}
            for cid in names:
                client.notify(cid, message)
            return tuple(names.values())
        finally:
            client.disconnect()

    return _bounded(send, timeout)


def _client_name(client, client_id: str) -> str:
    try:
        return str(client.get_metadata(client_id).get("samp.name") or client_id)
    except Exception:  # a client that left meanwhile keeps its id
        return client_id


def table_file(table: pd.DataFrame, record=None, meta: dict | None = None, directory=None) -> Path:
    """The table written as a VOTable (units, UCDs, the query's record) under ``directory`` (default: a
    ``ulisse-samp`` folder in the temporary directory, where the receiving tool reads it; files older than
    :data:`KEEP_SECONDS` there are removed)."""
    from .results import render

    folder = Path(directory) if directory else Path(tempfile.gettempdir()) / "ulisse-samp"
    folder.mkdir(parents=True, exist_ok=True)
    if directory is None:  # the tools read a table at once: a day-old one is no longer wanted
        for old in folder.glob("ulisse-*.xml"):
            try:
                if time.time() - old.stat().st_mtime > KEEP_SECONDS:
                    old.unlink()
            except OSError:  # another process removed it first
                pass
    path = folder / f"ulisse-{uuid.uuid4().hex[:12]}.xml"
    path.write_text(render(table.drop(columns=["row"], errors="ignore"), "votable", meta, record=record),
                    encoding="utf-8")
    return path


def send_table(table: pd.DataFrame, record=None, *, name: str = "ulisse result", meta: dict | None = None,
               recipient: str | None = None, timeout: float = TIMEOUT, directory=None) -> SampReport:
    """Send a result table to the SAMP tools that load VOTables (TOPCAT, Aladin...), or to ``recipient`` only
    (a SAMP name such as ``topcat`` or ``Aladin``).

    Raises:
        SampError: no hub (the message says how to start one), no tool that loads tables, or no answer in time.
    """
    path = table_file(table, record, meta, directory)
    url = path.resolve().as_uri()
    params = {"url": url, "table-id": f"ulisse-{path.stem}", "name": name}
    recipients = _notify(TABLE_MTYPE, params, recipient, timeout, "tables")
    return SampReport(TABLE_MTYPE, recipients, url)


def point_at(ra: float, dec: float, *, recipient: str | None = None, timeout: float = TIMEOUT) -> SampReport:
    """Point the SAMP sky viewers (Aladin...) at ``ra``, ``dec`` (degrees, ICRS).

    Raises:
        SampError: no hub (the message says how to start one), no viewer that takes positions, or no answer.
    """
    params = {"ra": f"{float(ra):.7f}", "dec": f"{float(dec):.7f}"}
    return SampReport(POINT_MTYPE, _notify(POINT_MTYPE, params, recipient, timeout, "sky positions"))


def hub_running(timeout: float = 2.0) -> bool:
    """True when a SAMP hub answers (a quick check for a page that offers SAMP buttons)."""
    samp = samp_module()

    def ping():
        client = samp.SAMPIntegratedClient(name="ulisse", callable=False)
        client.connect()
        client.disconnect()
        return True

    try:
        return bool(_bounded(ping, timeout))
    except Exception:  # no hub, a stale lock file, no answer: all say "not running"
        return False
