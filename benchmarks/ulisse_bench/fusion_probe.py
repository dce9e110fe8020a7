"""Probe (issue 23, tenth session): the first round of the oracle protocol from two anomaly scores in turn.

The ``morphology`` score ranks mergers far higher than ``kth`` on the vectors does, so the first 20 shown are
taken alternately from the two rankings (``-min(place by kth, r x place by morphology)``, r = 1 or 2), and the
product's :func:`~ulisse.plugins.anomalies.feedback.discover` chooses the later rounds (with the fused score,
or with ``kth`` again). Runs on sets ``ulisse benchmark anomalies`` simulated and indexed before (with their
morphology stored)::

    python -m ulisse_bench.fusion_probe rare-structured-n3000-seed0 rare-n3000-seed0

Prints the interesting objects per round, the first 60 in all and the kinds found.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

import ulisse

from .anomalies import PER_ROUND, oracle_loop


def probe(name: str, cache: Path) -> list[tuple[str, list[int], int, dict]]:
    from ulisse.plugins.anomalies import anomaly_scores
    from ulisse.plugins.anomalies.feedback import discover

    index = ulisse.open_index(cache / name / "index")
    classes = index.metadata_column("class").astype(str).to_numpy()
    vectors = index.all_vectors()
    kth = anomaly_scores(index, method="kth", progress=False)["score"].to_numpy()
    shape = anomaly_scores(index, method="morphology", progress=False)["score"].to_numpy()
    by_kth = pd.Series(-kth).rank(method="first").to_numpy()
    by_shape = pd.Series(-shape).rank(method="first").to_numpy()

    def loop(first: np.ndarray, later: np.ndarray):
        def choose(pos, neg, r):
            return discover(index, top=PER_ROUND, positives=pos, negatives=neg, use_marks=False,
                            scores=first if r == 0 else later, vectors=vectors, progress=False, check=False).ids
        return choose

    rows = [("kth (the default)", kth, kth)]
    for ratio in (1, 2):
        fused = -np.minimum(by_kth, ratio * by_shape + 0.5)
        label = "round robin" if ratio == 1 else f"{ratio}:1"
        rows += [(label, fused, fused), (f"{label}, then kth", fused, kth)]
    out = []
    for label, first, later in rows:
        run = oracle_loop(index, classes, loop(first, later), label)
        out.append((label, run.interesting, run.total, dict(Counter(run.found))))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="set folders under the cache, e.g. rare-structured-n3000-seed0")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ulisse" / "benchmarks")
    args = parser.parse_args(argv)
    for name in args.sets:
        for label, rounds, total, kinds in probe(name, args.cache):
            print(f"{name}\t{label}\t{rounds}\t{total}\t{kinds}", flush=True)


if __name__ == "__main__":
    main()
