"""The AGN benchmark command, end to end on a small simulated set."""

from __future__ import annotations

import re


def test_agn_benchmark_small(tmp_path, cli):
    out, report = tmp_path / "bench", tmp_path / "report.md"
    args = ("-q", "benchmark", "agn", "--out", out, "--n", "80", "--prototypes", "3", "--model", "test_efficientnet",
            "--weights", "random", "--device", "cpu", "--report", report)
    code, stdout, err = cli(*args)
    assert code == 0, err
    text = report.read_text()
    assert text.startswith("# AGN retrieval benchmark") and stdout in text
    assert "| 16 |" in text and "| 89 |" in text and "recursive" in text and "AGN precision" in text
    base = float(re.search(r"base rate ([\d.]+)%\)", text).group(1))
    n_agn = int(re.search(r"80 cutouts, (\d+) AGN", text).group(1))
    assert abs(base - 100 * n_agn / 80) < 0.06
    assert len(re.findall(r"^\| sim-\d+ \|", text, re.M)) == 3
    # second run reuses the simulated set and the index
    code, stdout, err = cli(*args)
    assert code == 0 and "simulate (reused)" in stdout and "index (reused)" in stdout


def test_speed_benchmark_small(tmp_path, cli):
    report = tmp_path / "speed.md"
    code, stdout, err = cli("-q", "benchmark", "speed", "--images", "8", "--vectors", "500", "--queries", "4",
                            "--model", "test_efficientnet", "--weights", "random", "--device", "cpu", "--report", report)
    assert code == 0, err
    text = report.read_text()
    assert "| embedding, cutouts/s |" in text and "| exact kNN" in text
    assert "agree on 100.0 % of neighbours" in text  # FAISS exact search equals the NumPy reference
    assert re.search(r"\| [\d.]+x \|", text) and "Machine:" in text and "Command:" in text
