"""How good a head's predictions and error bars are: RMSE, Gaussian NLL, interval coverage, PIT; report plots.

Example:
    >>> import numpy as np
    >>> m = regression_metrics(np.array([1.0, 2.0]), np.array([1.1, 1.8]), np.array([0.2, 0.2]))
    >>> round(m["rmse"], 3), m["coverage_68"]
    (0.158, 1.0)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ulisse._io import atomic_write
from ulisse.errors import InputError

NOMINAL = (0.68, 0.95)
PIT_BINS = 10


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def regression_metrics(truth: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict:
    """RMSE, mean absolute error, mean Gaussian NLL, coverage of the central 68 % and 95 % intervals, mean std.

    The predictive distribution is taken as Gaussian with the given mean and
    (total) standard deviation; ``coverage_68`` is the fraction of truths within
    ``mean +- 0.994 std``, ``coverage_95`` within ``mean +- 1.960 std``.
    """
    truth, mean, std = (np.asarray(a, np.float64) for a in (truth, mean, std))
    if len(truth) == 0:
        return {"n": 0}
    r = truth - mean
    var = np.maximum(std, 1e-300) ** 2
    out = {"n": int(len(truth)), "rmse": float(np.sqrt(np.mean(r ** 2))), "mae": float(np.mean(np.abs(r))),
           "bias": float(np.mean(r)), "nll": float(np.mean(0.5 * np.log(2 * math.pi * var) + r ** 2 / (2 * var))),
           "mean_std": float(np.mean(std))}
    for level in NOMINAL:
        out[f"coverage_{round(level * 100)}"] = float(np.mean(np.abs(r) <= _z(level) * std))
    return out


def pit_values(truth: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Probability integral transform: the predictive CDF at the truth (uniform when calibrated)."""
    from scipy.stats import norm

    return norm.cdf((np.asarray(truth) - np.asarray(mean)) / np.maximum(np.asarray(std), 1e-300))


@dataclass
class HeadReport:
    """A head's predictions against a truth column on chosen objects.

    Attributes:
        name, truth: the head and the truth column.
        metrics: :func:`regression_metrics` of the calibrated predictions, with ``uncalibrated`` beside.
        table: ``id``, truth, ``NAME``, ``NAME_std``, ``NAME_std_aleatoric``, ``NAME_std_epistemic``, ``pit``.
        files: what was written (report JSON, PNGs).
        note: how the objects were chosen.
    """

    name: str
    truth: str
    metrics: dict
    table: pd.DataFrame
    note: str
    files: list = field(default_factory=list)

    def text(self) -> str:
        m = self.metrics
        lines = [f"head {self.name} against {self.truth}: {self.note}",
                 f"  objects      {m['n']}",
                 f"  RMSE         {m['rmse']:.4g}",
                 f"  MAE          {m['mae']:.4g}",
                 f"  NLL          {m['nll']:.4g}",
                 f"  coverage 68% {100 * m['coverage_68']:.1f} %",
                 f"  coverage 95% {100 * m['coverage_95']:.1f} %",
                 f"  mean std     {m['mean_std']:.4g}"]
        return "\n".join(lines) + "\n"


def write_plots(report: HeadReport, out: Path) -> list[Path]:
    """``pit.png`` (PIT histogram) and ``predicted_vs_true.png`` (with 1-sigma bars) in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, name = report.table, report.name
    written = []
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.hist(t["pit"], bins=PIT_BINS, range=(0, 1), color="#4c72b0", edgecolor="white")
    ax.axhline(len(t) / PIT_BINS, color="k", ls="--", lw=1, label="calibrated")
    ax.set_xlabel("PIT = predictive CDF at the truth")
    ax.set_ylabel("objects")
    ax.set_title(f"{name}: PIT histogram ({len(t)} objects)")
    ax.legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    written.append(atomic_write(out / "pit.png", lambda p: fig.savefig(p, format="png", dpi=110)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    truth, pred, std = t[report.truth].to_numpy(), t[name].to_numpy(), t[f"{name}_std"].to_numpy()
    ax.errorbar(truth, pred, yerr=std, fmt="o", ms=2.5, alpha=0.5, elinewidth=0.6, color="#4c72b0")
    lo, hi = float(np.nanmin([truth.min(), pred.min()])), float(np.nanmax([truth.max(), pred.max()]))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"true {report.truth}")
    ax.set_ylabel(f"predicted {name} (1-sigma bars)")
    m = report.metrics
    ax.set_title(f"RMSE {m['rmse']:.3g}, 68%: {100 * m['coverage_68']:.0f}%, 95%: {100 * m['coverage_95']:.0f}%",
                 fontsize=10)
    fig.tight_layout()
    written.append(atomic_write(out / "predicted_vs_true.png", lambda p: fig.savefig(p, format="png", dpi=110)))
    plt.close(fig)
    return written


def head_report(index, name: str, truth: str, ids=None, out: str | os.PathLike | None = None) -> HeadReport:
    """Compare head ``name`` with the catalogue column ``truth``.

    Args:
        ids: the objects to judge (default: every object with a truth value that the
            head was neither trained nor validated on; all of them if there are none).
        out: a folder for ``report.json``, ``predictions.csv``, ``pit.png`` and
            ``predicted_vs_true.png`` (created if needed).

    Raises:
        InputError: unknown head or column, or no object with a truth value.
    """
    from .core import load_head, predict_head, rows_of_ids, target_values

    head = load_head(index, name)
    values = target_values(index, truth)
    all_ids = index.metadata["id"].astype(str).to_numpy()
    if ids is None:
        seen = set(head.config.get("training_ids", [])) | set(head.config.get("validation_ids", []))
        rows = np.flatnonzero(np.isfinite(values) & ~np.isin(all_ids, list(seen)))
        note = "objects never used in training"
        if len(rows) == 0:
            rows, note = np.flatnonzero(np.isfinite(values)), "all objects with a truth value (the head saw them all)"
    else:
        rows = rows_of_ids(index, ids, "--ids")
        rows = rows[np.isfinite(values[rows])]
        note = "the objects asked for"
    if len(rows) == 0:
        raise InputError(f"column {truth!r}: no object to judge has a value")
    pred = predict_head(index, name, ids=list(all_ids[rows]))
    table = pred.copy()
    table.insert(1, truth, values[rows])
    std_col = f"{name}_std"
    table["pit"] = pit_values(table[truth], table[name], table[std_col])
    metrics = regression_metrics(table[truth], table[name], table[std_col])
    s = math.sqrt(head.variance_factor)
    metrics["uncalibrated"] = regression_metrics(table[truth], table[name], table[std_col] / s)
    report = HeadReport(name, truth, metrics, table, note)
    if out is not None:
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        report.files.append(atomic_write(folder / "report.json", json.dumps(
            {"head": name, "truth": truth, "method": head.method, "target": head.target, "objects": note,
             "metrics": metrics, "variance_scale": head.variance_factor}, indent=2) + "\n"))
        report.files.append(atomic_write(folder / "predictions.csv", table.to_csv(index=False)))
        report.files += write_plots(report, folder)
    return report
