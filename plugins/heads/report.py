"""A stored head judged against a truth column: metrics, a predictions table, PIT and predicted-vs-true plots.

Example::

    ulisse head report indexes/lenses --name theta_E_pred --truth theta_E --out report/
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

from .core import load_head, predict_head, rows_of_ids, target_values
from .metrics import PIT_BINS, pit_values, regression_metrics


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
            head was neither trained nor validated on; if there are none, the held-out objects
            that calibrated its error bars, never those it trained on; ``note`` says which).
        out: a folder for ``report.json``, ``predictions.csv``, ``pit.png`` and
            ``predicted_vs_true.png`` (created if needed).

    Raises:
        InputError: unknown head or column, or no object with a truth value.
    """
    head = load_head(index, name)
    values = target_values(index, truth)
    all_ids = index.metadata["id"].astype(str).to_numpy()
    trained_on = set(head.config.get("training_ids", []))
    if ids is None:
        seen = trained_on | set(head.config.get("validation_ids", []))
        rows = np.flatnonzero(np.isfinite(values) & ~np.isin(all_ids, list(seen)))
        note = "objects never used in training"
        if len(rows) == 0:  # never the training rows: their scores flatter the head
            held = head.config.get("calibration_ids") or head.config.get("validation_ids", [])
            rows = np.flatnonzero(np.isfinite(values) & np.isin(all_ids, list(held)))
            note = (f"the {len(rows)} held-out objects (validation), not the {len(trained_on)} it trained on "
                    "(every object with a truth value was used; --train-ids keeps a test set apart)")
    else:
        rows = rows_of_ids(index, ids, "--ids")
        rows = rows[np.isfinite(values[rows])]
        trained = int(np.isin(all_ids[rows], list(trained_on)).sum())
        note = "the objects asked for" + (f" ({trained} of the {len(rows)} trained the head: scores on them flatter it)"
                                          if trained else "")
    if len(rows) == 0:
        raise InputError(f"column {truth!r}: no object to judge has a value")
    if truth != head.target:  # scoring against another column is allowed (a cleaner measurement), never silent
        note += f"; {truth} is not the head's target ({head.target})"
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
