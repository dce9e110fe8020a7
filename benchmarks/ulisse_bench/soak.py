"""Soak run of the web UI: parallel Chromium sessions through mixed interactions against one ``ulisse ui`` server.

Each session repeats random interactions (click a tile, add a prototype, change k,
open a detail panel, mark an object, upload a cutout, switch page, expand with more
iterations, anomalies paging, reload a shared URL, switch index) and waits for each
run to finish. The run stops at the number of interactions asked for; it counts
server crashes (the server process gone), tracebacks shown in the page, and
interactions that did not finish in time. Everything stays on 127.0.0.1.

    python -m ulisse_bench.soak --index ulisse-demo/hdf --sessions 4 --interactions 500 --report benchmarks/ui-soak.md

Needs Chromium at ``/usr/bin/chromium`` and the ``playwright`` package (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STEP_TIMEOUT_MS = 90_000
VIEWPORTS = ((1024, 768), (1366, 768), (1920, 1080))
NOT_STALE = "() => !document.querySelector(\"[data-stale='true']\")"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running ``ulisse ui`` server: its URL, process and log file."""

    url: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.contextmanager
def serve(index_dir, workdir: Path, env: dict | None = None, extra: tuple = (), timeout: float = 120):
    """``ulisse ui --index DIR`` on a free port of 127.0.0.1, until the block ends (then SIGTERM)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "ulisse", "ui", "--index", str(index_dir), "--server.port", str(port),
                             *extra], cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})})
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ulisse ui exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ulisse ui did not answer on {server.url}:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()  # ulisse ui passes SIGTERM on to Streamlit
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@dataclass
class SoakResult:
    """What a soak run saw."""

    interactions: int = 0
    by_kind: Counter = field(default_factory=Counter)
    tracebacks: list = field(default_factory=list)
    timeouts: list = field(default_factory=list)
    server_exit: int | None = None  # None: still running at the end (no crash)
    seconds: float = 0.0
    step_seconds: list = field(default_factory=list)
    outside_requests: list = field(default_factory=list)

    @property
    def crashes(self) -> int:
        return 0 if self.server_exit is None else 1


async def settle(tab) -> None:
    """Wait until Streamlit has finished the current run."""
    await tab.wait_for_timeout(250)
    await tab.locator("[data-testid='stStatusWidget']").wait_for(state="detached", timeout=STEP_TIMEOUT_MS)
    # a running script greys out the elements of the last run (``data-stale``); the status widget may not show
    await tab.wait_for_function(NOT_STALE, timeout=STEP_TIMEOUT_MS)


async def _sidebar_page(tab, title: str) -> None:
    await tab.get_by_test_id("stSidebar").get_by_text(title, exact=True).click()


async def _nudge_slider(tab, label: str, key: str) -> None:
    slider = tab.get_by_test_id("stSidebar").locator(f"[data-testid='stSlider']:has-text('{label}') [role='slider']")
    if await slider.count():
        await slider.first.focus()
        await slider.first.press(key)


def interactions(cutouts: list[Path], urls: list[str]):
    """The mix: (name, weight, coroutine function of (tab, rng))."""

    async def click_tile(tab, rng):
        tiles = tab.locator("[class*='st-key-ulisse-pick-'] button").filter(visible=True)  # not in a hidden tab
        n = await tiles.count()
        if n:  # the transparent button over the picture; force: the image toolbar may sit above it on hover
            await tiles.nth(rng.randrange(n)).click(force=True, timeout=20_000)

    async def add_prototype(tab, rng):
        buttons = tab.get_by_role("button", name="Add", exact=True).filter(visible=True)
        n = await buttons.count()
        if n:
            await buttons.nth(rng.randrange(min(n, 6))).click()

    async def change_k(tab, rng):
        await _nudge_slider(tab, "Neighbours", rng.choice(["ArrowRight", "ArrowLeft", "ArrowRight"]))

    async def detail(tab, rng):
        buttons = tab.get_by_role("button", name="Details", exact=True).filter(visible=True)
        n = await buttons.count()
        if n:
            await buttons.nth(rng.randrange(n)).click()
            await settle(tab)
            dialog = tab.get_by_role("dialog")
            with contextlib.suppress(Exception):  # it may be drawn after the run looks settled
                await dialog.wait_for(state="visible", timeout=15_000)
            if await dialog.count():  # the detail dialog: use the object, or close it (Escape), as a user does
                if rng.random() < 0.3:
                    await dialog.get_by_role("button", name="Use as prototype", exact=True).click()
                else:
                    await tab.keyboard.press("Escape")
                await dialog.wait_for(state="detached", timeout=STEP_TIMEOUT_MS)

    async def mark(tab, rng):
        buttons = tab.get_by_role("button", name=rng.choice(["Relevant", "Not relevant", "Unmark"]),
                                  exact=True).filter(visible=True)
        n = await buttons.count()
        if n:
            await buttons.nth(rng.randrange(n)).click()

    async def upload(tab, rng):
        await _sidebar_page(tab, "Search")
        await settle(tab)
        if not cutouts:  # nothing to upload from this index
            return
        await tab.get_by_text("Upload a cutout", exact=True).click()
        await settle(tab)
        await tab.locator("[data-testid='stFileUploader'] input[type=file]").set_input_files(str(rng.choice(cutouts)))

    async def expand_more(tab, rng):
        await _sidebar_page(tab, "Expand")
        await settle(tab)
        await _nudge_slider(tab, "Iterations", rng.choice(["ArrowRight", "ArrowLeft"]))

    async def anomalies(tab, rng):
        await _sidebar_page(tab, "Anomalies")
        await settle(tab)
        pager = tab.locator("[data-testid='stNumberInput'] input")
        if await pager.count():
            await pager.first.fill(str(rng.randint(1, 3)))
            await pager.first.press("Enter")

    async def switch_page(tab, rng):
        await _sidebar_page(tab, rng.choice(["Search", "Marks", "Expand", "Anomalies"]))

    async def shared_url(tab, rng):
        await tab.goto(rng.choice(urls))

    return [("click a tile", 5, click_tile), ("add a prototype", 1, add_prototype), ("change k", 2, change_k),
            ("detail panel", 2, detail), ("mark", 2, mark), ("upload a cutout", 1, upload),
            ("expand iterations", 2, expand_more), ("anomalies paging", 1, anomalies), ("switch page", 2, switch_page),
            ("open a shared URL / switch index", 1, shared_url)]


async def _session(n: int, browser, server: Server, result: SoakResult, budget: list, mix, seed: int,
                   shots: Path | None) -> None:
    rng = random.Random(seed + n)
    width, height = VIEWPORTS[n % len(VIEWPORTS)]  # laptops and a desktop: the layout must hold at each
    context = await browser.new_context(viewport={"width": width, "height": height})
    tab = await context.new_page()
    tab.on("request", lambda req: None if urllib.parse.urlparse(req.url).hostname in ("127.0.0.1", None)
           or req.url.startswith(("data:", "blob:")) else result.outside_requests.append(req.url))
    await tab.goto(server.url)
    await settle(tab)
    names = [m[0] for m in mix]
    weights = [m[1] for m in mix]
    while budget[0] > 0 and budget[1] > 0 and server.alive():  # [completed still to do, attempts left]
        budget[1] -= 1
        budget[0] -= 1  # reserved before the step: sessions running at once never complete more than the total
        name = rng.choices(names, weights)[0]
        action = mix[names.index(name)][2]
        tick = time.monotonic()
        try:
            await action(tab, rng)
            await settle(tab)
        except Exception as exc:  # a step that did not finish in time, or an element that went away
            budget[0] += 1  # not completed: the reservation goes back
            if not server.alive():
                break
            result.timeouts.append(f"session {n}, {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            if shots is not None:  # what the page looked like, and Playwright's log of the step
                with contextlib.suppress(Exception):
                    await tab.screenshot(path=str(shots / f"soak-timeout-{n}-{len(result.timeouts)}.png"))
                    (shots / f"soak-timeout-{n}-{len(result.timeouts)}.txt").write_text(f"{name}\n{exc}\n")
            with contextlib.suppress(Exception):
                await tab.goto(server.url)
                await settle(tab)
            continue
        result.interactions += 1
        result.by_kind[name] += 1
        result.step_seconds.append(time.monotonic() - tick)
        if await tab.locator("[data-testid='stException']").count():
            text = (await tab.locator("[data-testid='stException']").first.inner_text())[:300]
            result.tracebacks.append(f"session {n}, after {name}: {text}")
            if shots is not None:
                await tab.screenshot(path=str(shots / f"soak-traceback-{n}-{result.interactions}.png"))
            await tab.goto(server.url)
            await settle(tab)
    if shots is not None:
        with contextlib.suppress(Exception):
            await tab.screenshot(path=str(shots / f"soak-session-{n}.png"))
    await context.close()


async def _soak(server: Server, sessions: int, total: int, cutouts: list[Path], urls: list[str], seed: int,
                shots: Path | None) -> SoakResult:
    from playwright.async_api import async_playwright

    result = SoakResult()
    budget = [total, 2 * total]  # interactions to complete; attempts allowed (steps that time out are retried)
    mix = interactions(cutouts, urls)
    tick = time.monotonic()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await asyncio.gather(*(_session(n, browser, server, result, budget, mix, seed, shots)
                                   for n in range(sessions)))
        finally:
            await browser.close()
    result.seconds = time.monotonic() - tick
    return result


def shared_urls(server_url: str, indexes: list, k_values=(5, 8, 12)) -> list[str]:
    """URLs that carry a view (index, page, prototype, k): what a shared link opens."""
    import ulisse

    urls = []
    for index_dir in indexes:
        ids = ulisse.open_index(index_dir).ids
        for k in k_values:
            query = urllib.parse.urlencode({"index": str(Path(index_dir).resolve()), "page": "Search",
                                            "proto": ids[(k * 7) % len(ids)], "k": k})
            urls.append(f"{server_url}/?{query}")
    return urls


def upload_files(index_dir, n: int = 20) -> list[Path]:
    """PNG cutouts to upload: the index's ``cutouts/`` folder (the demo's), else the PNG files its objects came from."""
    files = sorted(Path(index_dir, "cutouts").glob("*.png"))[:n]
    if not files:
        import ulisse

        index = ulisse.open_index(index_dir, device="cpu")
        if "source" in index.metadata_columns:
            files = [Path(index.path, s) for s in index.metadata_column("source") if str(s).lower().endswith(".png")]
            files = [f for f in files if f.is_file()][:n]
    return files


def run_soak(index_dir, workdir: Path, sessions: int = 4, interactions_total: int = 500, seed: int = 0,
             other_indexes: tuple = (), shots: Path | None = None, env: dict | None = None) -> SoakResult:
    """Serve ``index_dir`` and soak it; the server's exit status is recorded when it dies."""
    cutouts = upload_files(index_dir)
    with serve(index_dir, workdir, env=env) as server:
        urls = shared_urls(server.url, [index_dir, *other_indexes])
        result = asyncio.run(_soak(server, sessions, interactions_total, cutouts, urls, seed, shots))
        if not server.alive():
            result.server_exit = server.proc.returncode
    return result


def report(result: SoakResult, command: str, sessions: int, log: Path | None = None) -> str:
    import numpy as np

    steps = np.array(result.step_seconds or [0.0])
    lines = [
        f"Interactions completed: **{result.interactions}** in {result.seconds:.0f} s by {sessions} parallel "
        f"Chromium sessions; server crashes: **{result.crashes}**"
        + ("" if result.server_exit is None else f" (exit status {result.server_exit})") + "; tracebacks in the page: "
        f"**{len(result.tracebacks)}**; steps not finished in {STEP_TIMEOUT_MS // 1000} s or whose element went "
        f"away: {len(result.timeouts)}; requests to other hosts than 127.0.0.1: {len(result.outside_requests)}.",
        "",
        f"Seconds per interaction (click to finished run): median {np.median(steps):.1f}, "
        f"90th percentile {np.percentile(steps, 90):.1f}, max {steps.max():.1f}.",
        "",
        "| interaction | count |", "|---|---:|",
        *[f"| {k} | {v} |" for k, v in sorted(result.by_kind.items())],
        "",
    ]
    for title, items in (("Tracebacks", result.tracebacks), ("Steps that did not finish", result.timeouts),
                         ("Outside requests", result.outside_requests)):
        if items:
            lines += [f"{title} (first 10):", "", *[f"- {x}" for x in items[:10]], ""]
    lines += [f"Command: `{command}`",
              f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ulisse_bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="the index to serve")
    parser.add_argument("--other-index", action="append", default=[], help="another index to switch to (repeatable)")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--interactions", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the server runs and logs (default: a temporary folder)")
    parser.add_argument("--report", default=None, help="write the Markdown report here")
    parser.add_argument("--shots", default=None, help="a folder for screenshots: each session's last page, and "
                        "the page and Playwright's log of every step that did not finish")
    args = parser.parse_args(argv)
    import tempfile

    command = "python -m ulisse_bench.soak " + shlex.join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="ulisse-soak-") as tmp:
        workdir = Path(args.workdir or tmp)
        shots = Path(args.shots) if args.shots else None
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
        result = run_soak(args.index, workdir, args.sessions, args.interactions, args.seed, tuple(args.other_index),
                          shots=shots)
        text = report(result, command, args.sessions)
        print(text)
        if result.crashes:
            print((workdir / "server.log").read_text()[-4000:], file=sys.stderr)
    if args.report:
        Path(args.report).write_text(text)
    return 1 if result.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
