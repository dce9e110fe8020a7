"""The labelling loop and confirmed expansion with oracle marks (``ulisse benchmark feedback``; benchmarks/feedback.md).

The labelling loop of :mod:`ulisse.plugins.feedback` with an oracle that marks every
shown object by its true label; the re-ranking is the product's own
:func:`ulisse.plugins.feedback.rank`, the neighbours its own ``Index.query``. Confirmed
expansion is the product's :func:`ulisse.plugins.recursive.expand` with the oracle's
confirmations (``follow_label``), against direct kNN with as many objects.

Example::

    >>> import ulisse
    >>> from ulisse_bench.feedback import oracle_rounds
    >>> index = ulisse.open_index("agn-index")                                                # doctest: +SKIP
    >>> oracle_rounds(index, "label", "AGN", prototypes=20, rounds=3, per_round=16).mean(numeric_only=True)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

import ulisse
from ulisse.plugins.feedback import rank

# The expansions compared with direct kNN at equal count: name -> expand() options (budget 89, as ULISSE's table)
EXPANSIONS = {
    "recursive": dict(k=8, iterations=5),
    "confirmed": dict(k=8, iterations=5, follow=True),
    "confirmed, branches stop below 25 % confirmed": dict(k=8, iterations=5, follow=True, min_confirmed=0.25),
    "confirmed + relevance (k 16, 8 per iteration)": dict(k=16, iterations=20, follow=True, relevance=True, show=8),
}
BUDGET = 89


def draw_prototypes(index, label: str, positive: str, count: int, seed: int) -> list[str]:
    """``count`` random ids of class ``positive``, drawn as ``ulisse benchmark agn`` draws them."""
    truth = (index.metadata[label].astype(str) == positive).to_numpy()
    ids = index.metadata["id"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    return [str(i) for i in rng.choice(ids[truth], size=min(count, int(truth.sum())), replace=False)]


def oracle_rounds(index, label: str, positive: str, prototypes: int = 20, rounds: int = 3, per_round: int = 16,
                  seed: int = 0, vectors: np.ndarray | None = None) -> pd.DataFrame:
    """The labelling loop with an oracle: per prototype, the fraction of ``positive`` in each round of ``per_round``.

    Round 1 shows the prototype's nearest neighbours; they are marked by their true
    labels, the index is re-ranked (:func:`~ulisse.plugins.feedback.rank`, only unmarked
    objects), the next ``per_round`` are shown and marked, and so on. Beside it, direct
    kNN shows the next ``per_round`` neighbours each round (ranks 17-32, 33-48, ...).
    Prototypes are drawn as ``ulisse benchmark agn`` draws them (``numpy.random.default_rng(seed)``).

    Args:
        index: an open :class:`ulisse.Index` with the catalogue column ``label``.
        label, positive: objects whose ``label`` is ``positive`` are the relevant ones.
        vectors: the index's vectors (row order), when the caller has them already.

    Returns:
        One row per prototype: ``prototype``, ``knn_1``.., ``feedback_1``.. (fractions).
    """
    truth = (index.metadata[label].astype(str) == positive).to_numpy()
    X = np.asarray(index.all_vectors() if vectors is None else vectors, dtype=np.float32)
    rows = []
    for pid in draw_prototypes(index, label, positive, prototypes, seed):
        knn = index.query(pid, k=rounds * per_round).table["id"].astype(str).tolist()
        row = {"prototype": pid}
        for r in range(rounds):
            row[f"knn_{r + 1}"] = float(np.mean([truth[index.row_of(i)] for i in knn[r * per_round:(r + 1) * per_round]]))
        positives, negatives = [pid], []
        shown = knn[:per_round]
        for r in range(rounds):
            row[f"feedback_{r + 1}"] = float(np.mean([truth[index.row_of(i)] for i in shown]))
            positives += [i for i in shown if truth[index.row_of(i)]]
            negatives += [i for i in shown if not truth[index.row_of(i)]]
            if r + 1 < rounds:
                shown = rank(index, positives, negatives, per_round, seed=seed, vectors=X)["id"].astype(str).tolist()
        rows.append(row)
    return pd.DataFrame(rows)


def expansion_rounds(index, label: str, positive: str, prototypes: Sequence[str], budget: int = BUDGET,
                     variants: dict | None = None) -> pd.DataFrame:
    """Per prototype and expansion: objects found, the fraction of ``positive`` among them, and among as many
    direct neighbours. The oracle confirms an object when its ``label`` is ``positive``."""
    from ulisse.plugins.recursive import expand

    rows = []
    for pid in prototypes:
        row = {"prototype": pid}
        for name, options in (variants or EXPANSIONS).items():
            opts = dict(options)
            follow = (label, positive) if opts.pop("follow", False) else None
            e = expand(index, pid, budget=budget, label=label, follow_label=follow, **opts)
            row |= {f"{name}|n": len(e), f"{name}|found": float(e.fractions.loc[positive, "expansion"]),
                    f"{name}|direct": float(e.fractions.loc[positive, "direct"])}
        rows.append(row)
    return pd.DataFrame(rows)


def benchmark_index(cache: Path, n: int = 2000, seed: int = 0, rebuild: bool = False, progress: bool = True):
    """The AGN set's index as ``ulisse index build`` makes it by default (``<set>/indexes/default``), built once."""
    from .discovery import _tasks, simulated_set

    sim, _ = simulated_set(_tasks()["agn"], Path(cache), n, seed, progress)
    path = sim / "indexes" / "default"
    if (path / "manifest.json").is_file() and not rebuild:
        return ulisse.open_index(path, device="cpu")
    index, _ = ulisse.build_index([sim / "cutouts"], path, catalog=sim / "labels.csv", device="cpu",
                                  overwrite=True, progress=progress)
    return index


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def run_feedback(cache: Path, n: int = 2000, seed: int = 0, prototypes: int = 20, rounds: int = 3,
                 per_round: int = 16, expansion: bool = True, rebuild: bool = False, progress: bool = True,
                 command: str | None = None) -> str:
    """The Markdown report: the labelling loop per round, and each expansion against direct kNN at equal count."""
    from .discovery import machine_line

    index = benchmark_index(cache, n, seed, rebuild, progress)
    import json

    from ulisse.indexes.space import space_text

    spec, space = index.encoder_spec, json.loads(index.manifest.to_json()).get("space")
    t = time.perf_counter()
    loop = oracle_rounds(index, "label", "AGN", prototypes, rounds, per_round, seed)
    t_loop = time.perf_counter() - t
    base = float((index.metadata["label"].astype(str) == "AGN").mean())
    lines = [f"Index: `{index.path}` ({len(index)} objects, base rate {_pct(base)} AGN; {spec.describe()}; "
             f"space: {space_text(space)}; factory {index.manifest.factory}), built by `ulisse index build` with its defaults.", "",
             f"Labelling loop: {len(loop)} AGN prototypes (seed {seed}), {rounds} rounds of {per_round}, oracle marks:",
             "", "| round | direct kNN | more like my marks |", "|---|---:|---:|"]
    for r in range(1, rounds + 1):
        lines.append(f"| {r} | {_pct(loop[f'knn_{r}'].mean())} | {_pct(loop[f'feedback_{r}'].mean())} |")
    lines += ["", f"Round {rounds}: **{_pct(loop[f'feedback_{rounds}'].mean())} AGN** (target >= 60 %); "
              f"{t_loop:.0f} s for the loop.", ""]
    lines += ["| prototype | " + " | ".join(f"kNN {r}" for r in range(1, rounds + 1)) + " | "
              + " | ".join(f"marks {r}" for r in range(1, rounds + 1)) + " |",
              "|---|" + "---:|" * (2 * rounds)]
    for x in loop.itertuples(index=False):
        d = x._asdict()
        lines.append(f"| {x.prototype} | " + " | ".join(f"{100 * d[f'knn_{r}']:.0f}%" for r in range(1, rounds + 1))
                     + " | " + " | ".join(f"{100 * d[f'feedback_{r}']:.0f}%" for r in range(1, rounds + 1)) + " |")
    if expansion:
        t = time.perf_counter()
        exp = expansion_rounds(index, "label", "AGN", list(loop["prototype"]))
        t_exp = time.perf_counter() - t
        lines += ["", f"Expansion from the same prototypes, budget {BUDGET}, against direct kNN with as many objects "
                  "(the oracle confirms AGN, `follow_label=label=AGN`):", "",
                  "| expansion | mean objects | AGN among them | direct kNN, same count | ratio | prototypes higher / lower |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in EXPANSIONS:
            found, direct = exp[f"{name}|found"], exp[f"{name}|direct"]
            lines.append(f"| {name} | {exp[f'{name}|n'].mean():.1f} | {_pct(found.mean())} | {_pct(direct.mean())} | "
                         f"{found.mean() / direct.mean():.2f}x | {int((found > direct).sum())} / "
                         f"{int((found < direct).sum())} |")
        lines += ["", f"{t_exp:.0f} s for the expansions."]
    lines += ["", machine_line()]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"
