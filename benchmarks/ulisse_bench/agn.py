"""``ulisse benchmark agn``: the ULISSE table on a labelled, simulated SDSS-like AGN set.

1. Simulates SDSS-like gri cutouts with GalSim (:mod:`ulisse_bench.sim.agn`), about 12 % AGN.
2. Indexes them with the default encoder, the labels as metadata.
3. For random AGN prototypes: the AGN fraction among the first 16 and 89 neighbours
   against the base rate (ULISSE's retrieval efficiency).
4. Recursive expansion against direct kNN with as many objects.
5. The AGN precision of the anomaly ranking.

It prints a Markdown report and, with ``--report FILE``, writes it there with the
exact command, the machine and the timings. Queries, expansion and the anomaly ranking
are the product's own (:mod:`ulisse.plugins.prototype`, :mod:`~ulisse.plugins.recursive`,
:mod:`~ulisse.plugins.anomalies`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import ulisse
from ulisse._io import atomic_write

AGN = "AGN"


@dataclass
class AGNBenchmark:
    """Per-prototype numbers and the summary report."""

    per_prototype: pd.DataFrame
    base_rate: float
    anomalies: dict
    report: str
    timings: dict


def _simulated_set(out: Path, n: int, seed: int, progress: bool) -> tuple[Path, bool]:
    from .sim.agn import simulate_agn_set

    sim = out / "sim"
    params = {"n": n, "seed": seed}
    marker = sim / "params.json"
    if marker.is_file() and json.loads(marker.read_text()) == params and (sim / "labels.csv").is_file():
        return sim, False
    simulate_agn_set(sim, n=n, seed=seed, progress=progress)
    atomic_write(marker, json.dumps(params))
    return sim, True


def run_agn_benchmark(out: Path, n: int = 2000, seed: int = 0, prototypes: int = 20, k_expand: int = 8,
                      iterations: int = 5, model: str = "efficientnet_b0", weights=None, device: str = "auto",
                      progress: bool = True, command: str | None = None) -> AGNBenchmark:
    """Run the whole benchmark in ``out`` (the simulated set and index are reused when present)."""
    from ulisse.plugins.anomalies import rank_anomalies
    from ulisse.plugins.prototype import query
    from ulisse.plugins.recursive import expand

    timings = {}
    t = time.perf_counter()
    sim, fresh = _simulated_set(out, n, seed, progress)
    timings["simulate" if fresh else "simulate (reused)"] = time.perf_counter() - t
    t = time.perf_counter()
    index_dir = out / "index"
    encoder = ulisse.Encoder.load(model, weights=weights, device=device)
    try:
        index = ulisse.open_index(index_dir, device=device)
        index.use_encoder(encoder)
        if len(index) != n:
            raise ulisse.IndexError_("stale")
        reused = True
    except ulisse.UlisseError:
        reused = False
        index, _ = ulisse.build_index([sim / "cutouts"], index_dir, sim / "labels.csv", encoder=encoder,
                                      device=device, overwrite=True, progress=progress)
    timings["index (reused)" if reused else "embed + index"] = time.perf_counter() - t
    labels = index.metadata["label"].astype(str)
    base = float((labels == AGN).mean())
    rng = np.random.default_rng(seed)
    agn_ids = index.metadata["id"][labels == AGN].to_numpy()
    chosen = rng.choice(agn_ids, size=min(prototypes, len(agn_ids)), replace=False)
    rows = []
    t = time.perf_counter()
    for pid in chosen:
        r = query(index, str(pid), k=89, n=[16, 89], label="label")
        e = expand(index, str(pid), k=k_expand, iterations=iterations, budget=89, label="label")
        f = e.fractions
        rows.append({"prototype": str(pid),
                     "agn_at_16": float(r.fractions.loc[AGN, 16]), "agn_at_89": float(r.fractions.loc[AGN, 89]),
                     "expansion_found": len(e), "expansion_agn": float(f.loc[AGN, "expansion"]),
                     "direct_agn_same_n": float(f.loc[AGN, "direct"]),
                     "contrast": float(index.metadata.set_index("id").loc[str(pid), "agn_contrast"])})
    timings["queries"] = time.perf_counter() - t
    per = pd.DataFrame(rows)
    t = time.perf_counter()
    anomalies = {}
    n_agn = int((labels == AGN).sum())
    for top in (50, n_agn):
        ranking = rank_anomalies(index, top=top, method="kth", k=10, label="label", progress=False)
        anomalies[top] = float(ranking.precision.get(AGN, 0.0))
    timings["anomalies"] = time.perf_counter() - t
    report = _report(per, base, anomalies, n, n_agn, index, timings, command, k_expand, iterations)
    return AGNBenchmark(per, base, anomalies, report, timings)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _report(per, base, anomalies, n, n_agn, index, timings, command, k_expand, iterations) -> str:
    enc = index.encoder_spec
    lines = [
        f"Simulated SDSS-like set: {n} cutouts, {n_agn} AGN (base rate {_pct(base)}); "
        f"encoder {enc.model_name} ({enc.weights_source}); index {index.manifest['factory']} L2.",
        "",
        f"One-shot queries from {len(per)} random AGN prototypes (AGN fraction among the first n neighbours):",
        "",
        "| n | mean | median | min | max | base rate |",
        "|---|---|---|---|---|---|",
    ]
    for n_ in (16, 89):
        col = per[f"agn_at_{n_}"]
        lines.append(f"| {n_} | {_pct(col.mean())} | {_pct(col.median())} | {_pct(col.min())} | {_pct(col.max())} | {_pct(base)} |")
    strong = per["contrast"] >= 0.3
    lines += [
        "",
        f"At n = 16, {int((per['agn_at_16'] > base).sum())} of {len(per)} prototypes retrieve AGN above the base rate; "
        f"mean AGN fraction {_pct(per.loc[strong, 'agn_at_16'].mean())} for the {int(strong.sum())} prototypes whose "
        f"nucleus has at least 0.3 of the host's r flux, {_pct(per.loc[~strong, 'agn_at_16'].mean())} for the "
        f"{int((~strong).sum())} fainter ones.",
    ]
    lines += [
        "",
        f"Recursive expansion (k = {k_expand}, up to {iterations} iterations, budget 89) against direct kNN "
        "with as many objects:",
        "",
        "| | mean objects | mean AGN fraction | prototypes where it is higher |",
        "|---|---|---|---|",
        f"| recursive | {per['expansion_found'].mean():.1f} | {_pct(per['expansion_agn'].mean())} | "
        f"{int((per['expansion_agn'] > per['direct_agn_same_n']).sum())} of {len(per)} |",
        f"| direct | {per['expansion_found'].mean():.1f} | {_pct(per['direct_agn_same_n'].mean())} | "
        f"{int((per['direct_agn_same_n'] > per['expansion_agn']).sum())} of {len(per)} |",
        "",
        "Anomaly ranking (distance to the 10th neighbour), AGN precision among the top-ranked:",
        "",
        "| top | AGN precision | base rate |",
        "|---|---|---|",
    ]
    for top, p in anomalies.items():
        lines.append(f"| {top} | {_pct(p)} | {_pct(base)} |")
    lines += ["", "Per prototype (AGN contrast = nuclear / host flux in r):", "",
              "| prototype | contrast | AGN@16 | AGN@89 | recursive (n) | direct at same n |", "|---|---|---|---|---|---|"]
    for r in per.sort_values("contrast").itertuples(index=False):
        lines.append(f"| {r.prototype} | {r.contrast:.2f} | {_pct(r.agn_at_16)} | {_pct(r.agn_at_89)} | "
                     f"{_pct(r.expansion_agn)} ({r.expansion_found}) | {_pct(r.direct_agn_same_n)} |")
    lines += ["", "Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ".",
              f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
              f"torch {__import__('torch').__version__}, faiss {__import__('faiss').__version__}."]
    if command:
        lines += [f"Command: `{command}`"]
    return "\n".join(lines) + "\n"

