"""Progress: a live bar on a terminal, plain log lines every few seconds in a redirected log."""

from __future__ import annotations

import io
import logging

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
