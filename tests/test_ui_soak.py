"""Short soak run of the web UI: parallel Chromium sessions through mixed interactions, bounded.

The long run (500 interactions) is ``python -m ulisse_bench.soak``; its report is benchmarks/ui-soak.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import ulisse

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/chromium").is_file(), reason="needs Chromium at /usr/bin/chromium"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="needs the playwright package"),
]


def test_short_soak_has_no_crash_and_no_traceback(tmp_path, survey, tiny_encoder):
    from ulisse_bench.soak import report, run_soak

    idx, _ = ulisse.build_index([survey / "cutouts"], tmp_path / "idx", survey / "catalog.csv", encoder=tiny_encoder,
                                device="cpu", progress=False)
    shots = Path(__file__).resolve().parents[1] / "test-artifacts"
    shots.mkdir(exist_ok=True)
    result = run_soak(idx.path, tmp_path / "server", sessions=2, interactions_total=12, seed=1, shots=shots)
    text = report(result, "pytest tests/test_ui_soak.py", 2)
    assert result.crashes == 0, text + (tmp_path / "server" / "server.log").read_text()[-3000:]
    assert not result.tracebacks and not result.outside_requests, text
    assert result.interactions == 12, text
