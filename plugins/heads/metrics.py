"""How good a head's predictions and error bars are: RMSE, Gaussian NLL, interval coverage, PIT.

Pure functions of arrays (no index, no torch); :mod:`.report` judges a stored head with them.

Example:
    >>> import numpy as np
    >>> m = regression_metrics(np.array([1.0, 2.0]), np.array([1.1, 1.8]), np.array([0.2, 0.2]))
    >>> round(m["rmse"], 3), m["coverage_68"]
    (0.158, 1.0)
"""

from __future__ import annotations

import math

import numpy as np

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
