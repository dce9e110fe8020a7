"""Progress: a live bar on a terminal, plain log lines every few seconds in a redirected log."""

from __future__ import annotations

import io
import logging
import re

from ulisse.progress import progress_bar


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_redirected_output_gets_lines_not_carriage_returns(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="ulisse"):
        with progress_bar(total=100, desc="embedding", unit="cutout", stream=stream, every=0.0) as bar:
            for _ in range(4):
                bar.update(25)
    assert stream.getvalue() == ""  # nothing written to the redirected stream itself
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all("\r" not in line for line in lines)
    assert lines[-1].startswith("embedding: 100/100 cutout (100 %)")


def test_a_terminal_gets_a_live_bar():
    stream = FakeTTY()
    with progress_bar(total=10, desc="embedding", unit="cutout", stream=stream) as bar:
        bar.update(10)
    assert "\r" in stream.getvalue() and "10/10" in stream.getvalue()


def test_disabled_progress_says_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="ulisse"):
        with progress_bar(total=10, enabled=False, every=0.0) as bar:
            bar.update(10)
    assert not caplog.records


def test_long_work_says_what_it_will_cost_and_the_time_left(caplog):
    """After the first batches one line gives the whole job's time; each later line the time left."""
    import time

    with caplog.at_level(logging.INFO, logger="ulisse"):
        with progress_bar(total=40, desc="embedding", unit="cutout", stream=io.StringIO(), every=0.0,
                          estimate_after=0.05) as bar:
            for _ in range(8):
                time.sleep(0.03)
                bar.update(5)
    lines = [r.getMessage() for r in caplog.records]
    estimates = [line for line in lines if "about" in line and " for 40 cutouts" in line]
    assert len(estimates) == 1, lines
    assert re.match(r"embedding: about \d+ s for 40 cutouts \(measured on the first \d+: [\d.]+/s\); about \d+ s left$",
                    estimates[0]), estimates[0]
    assert any(line.startswith("embedding: 10/40 cutout (25 %)") and line.endswith("s left") for line in lines)
    assert lines[-1].startswith("embedding: 40/40 cutout (100 %)") and "left" not in lines[-1]


def test_a_terminal_bar_writes_the_estimate_above_itself():
    import time

    stream = FakeTTY()
    with progress_bar(total=40, desc="training (n2v)", unit="step", stream=stream, estimate_after=0.05) as bar:
        for _ in range(8):
            time.sleep(0.03)
            bar.update(5)
    assert re.search(r"ulisse: training \(n2v\): about \d+ s for 40 steps", stream.getvalue())


def test_quick_work_says_no_estimate(caplog):
    with caplog.at_level(logging.INFO, logger="ulisse"):
        with progress_bar(total=10, desc="embedding", unit="cutout", stream=io.StringIO(), every=0.0) as bar:
            bar.update(10)
    assert not any("about" in r.getMessage() for r in caplog.records)


def test_quick_work_ends_on_where_it_ended_not_on_its_first_line(caplog):
    """A job done between two lines (every 10 s here) still says so: its first line, "0/3000 (0 %)", is not its last."""
    with caplog.at_level(logging.INFO, logger="ulisse"):
        with progress_bar(total=3000, desc="anomaly scores", unit="object", stream=io.StringIO(), every=10.0) as bar:
            bar.update(3000)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("anomaly scores: 0/3000 object (0 %)") and len(lines) == 2
    assert lines[-1].startswith("anomaly scores: 3000/3000 object (100 %)")


def test_durations_read_well():
    from ulisse.progress import duration_text

    assert [duration_text(s) for s in (0.2, 40, 200, 5400, 36000)] == ["1 s", "40 s", "3 min", "1.5 h", "10.0 h"]


def test_watchers_hear_every_bar_in_their_context_even_a_silent_one():
    from ulisse.progress import WATCH_EVERY_SECONDS, watching

    heard, outer = [], []
    with progress_bar(total=3, desc="before", enabled=False) as bar:  # opened outside: not watched
        with watching(heard.append):
            bar.update(3)
    assert heard == []
    with watching(outer.append):
        with watching(heard.append):
            with progress_bar(total=1000, desc="morphology", unit="cutout", enabled=False) as bar:
                for _ in range(1000):
                    bar.update(1)
    assert heard == outer and heard[0].n == 1 and heard[-1].n == 1000  # the first and the last step
    assert len(heard) < 20  # not one per step: at most every WATCH_EVERY_SECONDS
    assert WATCH_EVERY_SECONDS > 0
    assert heard[-1].fraction == 1.0 and heard[-1].text == "morphology: 1000/1000 cutouts (100 %)"
    with watching(heard.append):
        with progress_bar(total=None, desc="reading", unit="row", enabled=False) as bar:
            bar.update(5)
    assert heard[-1].text == "reading: 5 rows" and heard[-1].fraction == 0.0


def test_watchers_get_the_time_left_once_a_rate_is_known():
    import time

    from ulisse.progress import watching

    heard = []
    with watching(heard.append):
        with progress_bar(total=100, desc="embedding", unit="cutout", enabled=False) as bar:
            for _ in range(10):
                time.sleep(0.05)
                bar.update(1)
    assert len(heard) >= 2 and re.search(r"^embedding: 10/100 cutouts \(10 %\), about \d+ s left$", heard[-1].text), heard


def test_the_estimate_leaves_out_a_slow_start(caplog):
    """Workers that take a while to start (statmorph's, say) must not make the whole job look slow: the rate is
    measured from the first step on."""
    import time

    with caplog.at_level(logging.INFO, logger="ulisse"):
        with progress_bar(total=400, desc="morphology", unit="cutout", stream=io.StringIO(), every=0.0,
                          estimate_after=0.1) as bar:
            time.sleep(0.5)  # the start
            for _ in range(10):
                bar.update(10)
                time.sleep(0.03)
    estimate = next(r.getMessage() for r in caplog.records if " for 400 cutouts" in r.getMessage())
    rate = float(re.search(r"measured on the first \d+: ([\d.]+)/s", estimate).group(1))
    assert rate > 100, estimate  # 10 per 0.03 s after the start; with the start counted, 10 per 0.5 s
