"""The README's examples run as written: every shell and Python block, in order, in an empty folder.

The rules are those of ``../shared/tools/run-readme`` (the by-hand check): fenced ``bash``/``sh``/``shell``/
``console`` and ``python`` blocks run in README order in one temporary folder; skipped are blocks preceded by
``<!-- not run -->`` or whose first line is ``# not run``, and lines (or Python blocks) that install (pip,
venv, apt), start the web UI, need the internet (``ulisse sdss``, Sesame), run a benchmark or the test suite.
Each shell command line runs on its own (``\\`` continuations joined, comments and ``$`` prompts dropped).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!--\s*not run\s*-->\s*)?```(bash|sh|shell|console|python)\n(.*?)```", re.S)
SKIP = re.compile(r"pip install|python3? -m venv|apt(-get)? |ulisse ui\b|playwright install|ulisse sdss |"
                  r"ulisse benchmark |pytest|--sesame|# not run")
MIN_COMMANDS = 15


def readme_steps(text: str) -> list[tuple[str, str]]:
    """The README's runnable steps in order: ("shell", command line) or ("python", block)."""
    steps = []
    for marker, lang, body in BLOCK.findall(text):
        if marker or not body.strip() or "# not run" in body.splitlines()[0]:
            continue
        if lang == "python":
            if not SKIP.search(body):
                steps.append(("python", body))
            continue
        cur = ""
        for line in body.splitlines():
            s = line.rstrip()
            if s.startswith("$ "):
                s = s[2:]
            cur = f"{cur} {s.strip()}" if cur else s
            if cur.endswith("\\"):
                cur = cur[:-1]
                continue
            if cur.strip() and not cur.strip().startswith("#") and not SKIP.search(cur):
                steps.append(("shell", cur))
            cur = ""
    return steps


def test_readme_steps_are_found_and_use_no_placeholders():
    steps = readme_steps(README.read_text())
    shell = [s for kind, s in steps if kind == "shell"]
    assert len(steps) >= MIN_COMMANDS
    assert shell[0] == "ulisse demo" and shell[1].startswith("ulisse sample ")
    assert any(kind == "python" for kind, _ in steps)
    for placeholder in ("my-survey", "cutouts/ ", "bpt_class", "theta_E", "1237648720693755918"):
        assert not any(placeholder in s for s in shell), placeholder  # those live in blocks marked not run
    verbs = {s.split()[1] for s in shell if s.startswith("ulisse ")}
    assert {"demo", "sample", "embed", "index", "query", "expand", "anomalies", "rank", "head", "denoise",
            "features", "plugins"} <= verbs


def test_readme_skip_rules():
    text = ("```bash\npip install -e .\nulisse demo \\\n  --out x   # a comment\n# only a comment\nulisse ui\n```\n"
            "<!-- not run -->\n```bash\nulisse query my-survey --id A\n```\n"
            "```python\n# not run\nimport nothing\n```\n```python\nprint(1)\n```\n")
    assert readme_steps(text) == [("shell", "ulisse demo  --out x   # a comment"), ("python", "print(1)\n")]


@pytest.mark.slow
def test_readme_tutorial_runs_as_written(tmp_path):
    """Every runnable README step exits 0, in order, in an empty folder (no network needed)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    bindir = str(Path(sys.executable).parent)  # the `ulisse` of this environment first
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    failures, ran = [], 0
    for kind, step in readme_steps(README.read_text()):
        argv = [sys.executable, "-c", step] if kind == "python" else ["bash", "-c", step]
        try:
            p = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            rc, out = p.returncode, (p.stderr or p.stdout).strip()
        except subprocess.TimeoutExpired:
            rc, out = 124, "timed out after 600 s"
        ran += 1
        if rc:
            what = step if kind == "shell" else "python block: " + step.strip().splitlines()[0]
            failures.append(f"{what[:100]} -> exit {rc}: {out.splitlines()[-1][:200] if out else ''}")
    assert not failures, "README steps failed:\n" + "\n".join(failures)
    assert ran >= MIN_COMMANDS
