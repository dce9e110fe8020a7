"""A morphology worker: ``python -m ulisse.plugins.morphology._worker`` (started by
:func:`ulisse.plugins.morphology.stats.compute_morphology`, one per core).

It reads one path per line on stdin, each an ``.npz`` of cutouts (``a0``, ``a1``...; an
empty array where a cutout could not be read), and answers each with one JSON line on
stdout: the list of their statistics. An empty line, the end of stdin or the caller's death
(checked between chunks) ends it. A fresh
interpreter rather than a multiprocessing pool: a pool's workers re-run the parent's
``__main__``, which in a Streamlit server is the web app itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from ulisse.plugins.morphology.stats import _measure_all


def serve(lines, out) -> None:
    parent = os.getppid()
    for line in lines:
        path = line.strip()
        if not path or os.getppid() != parent:  # the end, or the caller is gone (killed): stop at once
            break
        with np.load(path, allow_pickle=False) as data:
            images = [data[f"a{i}"] for i in range(len(data.files))]
        Path(path).unlink(missing_ok=True)  # read: a killed caller leaves no chunk behind
        rows = _measure_all([im if im.size else None for im in images])
        out.write(json.dumps(rows) + "\n")
        out.flush()


if __name__ == "__main__":
    protocol, sys.stdout = sys.stdout, sys.stderr  # nothing else may write to the answers' stream
    serve(sys.stdin, protocol)
