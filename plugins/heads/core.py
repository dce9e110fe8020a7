"""Regression heads: train on an index's frozen vectors, store with the index, predict every object.

A head is stored in ``DIR/derived/heads/NAME/``: ``head.safetensors`` (the
networks' weights, or ridge's coefficients, and the feature scaling) and
``head.json`` (method, target, the training and validation ids, the encoder
spec, the index fingerprint it was trained on, the training metrics, the
safetensors file's sha256). Both are written in one transaction of the index
(:func:`ulisse.indexes.transaction`: under the writer lock, staged, then committed, the
JSON last; an error leaves the previous head as it was); a removal too.

Example:
    >>> import ulisse
    >>> from ulisse.plugins.heads import train_head, predict_head
    >>> index = ulisse.open_index("indexes/lenses")                                  # doctest: +SKIP
    >>> head = train_head(index, target="theta_E", name="theta_E_pred", members=5)   # doctest: +SKIP
    >>> predict_head(index, "theta_E_pred").head()                                   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

import ulisse
from ulisse.errors import InputError
from ulisse.indexes.transaction import SIDE_WAIT, transaction
from ulisse.inputs import read_id_list

from .common import CONFIG_FILE, DERIVED_SET, METHODS, WEIGHTS_FILE
from .metrics import regression_metrics
from .store import (NAME_RE, SUFFIXES, TrainedHead, check_name, columns_of, head_names, heads_dir,  # noqa: F401
                    kept_columns, rows_of_ids, save_head, split_rows, standardise_target, store_columns,
                    target_values, training_rows, vectors_of, warn_few_metrics)
from .models import (TrainConfig, TrainingError, fit_ridge, network_from_state, predict_ensemble,
                     predict_mc_dropout, torch_threads, train_member, transform_features, variance_scale)
from .settings import check_members

LOG = logging.getLogger(__name__)

read_ids = read_id_list  # this package's name for the core's one id-list reader

CHUNK = 65536  # objects per prediction batch
DEFAULT_DROPOUT = {"ensemble": 0.3, "mc-dropout": 0.2}  # chosen on the lens benchmark's validation split
X_SCALE_FLOOR = 0.1  # a feature's scale is at least this fraction of the RMS scale of all features



@dataclass
class Head:
    """A trained head, ready to predict.

    Attributes:
        name, method, target: what it is.
        config: its stored JSON config (training ids, encoder, metrics...).
    """

    name: str
    method: str
    target: str
    config: dict
    train: TrainConfig
    x_mean: np.ndarray
    x_scale: np.ndarray
    networks: list = field(default_factory=list)
    ridge: object = None

    @property
    def y_mean(self) -> float:
        return float(self.config["y_mean"])

    @property
    def y_scale(self) -> float:
        return float(self.config["y_scale"])

    @property
    def variance_factor(self) -> float:
        return float(self.config.get("variance_scale", 1.0))

    def predict_standardised(self, vectors: np.ndarray, calibrated: bool = True
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, aleatoric variance, epistemic variance) in standardised target units."""
        x = ((transform_features(vectors, self.train.features) - self.x_mean) / self.x_scale).astype(np.float32)
        with torch_threads(self.train.threads):
            if self.method == "ridge":
                mean, alea, epi = self.ridge.predict(x)
            elif self.method == "ensemble":
                mean, alea, epi = predict_ensemble(self.networks, x)
            else:
                mean, alea, epi = predict_mc_dropout(self.networks[0], x, self.train.mc_samples, self.train.seed)
        s = self.variance_factor if calibrated else 1.0
        return mean, alea * s, epi * s

    def predict_vectors(self, vectors: np.ndarray, calibrated: bool = True) -> pd.DataFrame:
        """``NAME``, ``NAME_std``, ``NAME_std_aleatoric``, ``NAME_std_epistemic`` in the target's units."""
        parts = []
        for start in range(0, max(len(vectors), 1), CHUNK):
            chunk = vectors[start:start + CHUNK]
            if len(chunk) == 0:
                break
            parts.append(self.predict_standardised(chunk, calibrated))
        mean, alea, epi = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(3))
        c = columns_of(self.name)
        return pd.DataFrame({c[0]: mean * self.y_scale + self.y_mean,
                             c[1]: np.sqrt(alea + epi) * self.y_scale,
                             c[2]: np.sqrt(alea) * self.y_scale,
                             c[3]: np.sqrt(epi) * self.y_scale})



def load_head(index, name: str) -> Head:
    """The stored head ``name`` of ``index``.

    Raises:
        InputError: no such head, or its files are damaged or do not match each other or the index.
    """
    from safetensors.numpy import load

    folder = heads_dir(index) / str(name)
    if not NAME_RE.match(str(name)) or not (folder / CONFIG_FILE).is_file():
        known = ", ".join(head_names(index)) or "none"
        raise InputError(f"head {name!r}: not trained for {index.path} (heads: {known})")
    try:
        cfg = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"head {name!r}: {folder / CONFIG_FILE} is damaged ({exc.__class__.__name__})") from None
    weights = folder / WEIGHTS_FILE
    try:
        data = weights.read_bytes()
    except OSError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != cfg.get("weights_sha256"):
        raise InputError(f"head {name!r}: {weights} is missing or does not match {CONFIG_FILE} (train it again)")
    spec = ulisse.EncoderSpec.from_dict(cfg["encoder"])
    if not spec.compatible_with(index.encoder_spec):
        raise ulisse.EncoderMismatch(f"head {name!r}: trained on vectors of {spec.describe()}; "
                                     f"the index holds vectors of {index.encoder_spec.describe()}")
    t = load(data)
    if cfg.get("finetune"):
        from .finetune import load_finetuned

        return load_finetuned(index, cfg, t)
    train = TrainConfig.from_dict(cfg["train"])
    head = Head(cfg["name"], cfg["method"], cfg["target"], cfg, train, t["x_mean"], t["x_scale"])
    if head.method == "ridge":
        from .models import RidgeFit

        head.ridge = RidgeFit(t["ridge.coef"], float(t["ridge.intercept"][0]), float(cfg["ridge_alpha"]),
                              float(t["ridge.noise_var"][0]))
    else:
        import torch

        dropout = float(cfg["dropout"])
        for m in range(int(cfg["members"])):
            prefix = f"member{m}."
            state = {k[len(prefix):]: torch.from_numpy(v) for k, v in t.items() if k.startswith(prefix)}
            head.networks.append(network_from_state(state, train, int(cfg["dim"]), dropout))
    return head


def remove_head(index, name: str, update_columns: bool = True, wait: float = SIDE_WAIT) -> None:
    """Delete the stored head ``name`` (a damaged one too): its files in one transaction of the index, then its
    derived columns (the other heads' stored columns are kept, not predicted again)."""
    if not NAME_RE.match(str(name)) or name not in head_names(index):
        known = ", ".join(head_names(index)) or "none"
        raise InputError(f"head {name!r}: not trained for {index.path} (heads: {known})")
    folder = heads_dir(index) / name
    kept = kept_columns(index, name) if update_columns else None
    with transaction(index.path, wait) as txn:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                txn.remove(f)
        txn.commit()
    if update_columns:
        store_columns(index, name, kept)


# -- training ------------------------------------------------------------------------------


def train_head(index, target: str, name: str, method: str = "ensemble", members: int | None = None,
               train_ids: Iterable[str] | None = None, config: TrainConfig | None = None, device: str = "cpu",
               update_columns: bool = True, progress: bool = False, finetune=None,
               overwrite: bool = False) -> TrainedHead:
    """Train a regression head on the index's vectors against the catalogue column ``target``.

    Args:
        index: an open :class:`ulisse.Index`.
        target: a numeric catalogue column; rows where it is missing are left out.
        name: the head's name; its predictions become the derived columns ``NAME``, ``NAME_std``,
            ``NAME_std_aleatoric`` and ``NAME_std_epistemic``.
        method: ``ensemble`` (deep ensemble of ``members`` Gaussian MLPs), ``mc-dropout`` or ``ridge``.
        members: networks of the ensemble (default 5; fine-tuned: the config's).
        train_ids: the objects to train on (default: every object with a value of ``target``); one string is
            one id.
        config: training settings (:class:`TrainConfig`).
        device: torch device for training (``cpu`` or ``cuda``); prediction runs on the CPU.
        update_columns: store the head's predictions in the index's ``heads`` derived columns afterwards (the
            other heads' stored columns are kept, not predicted again).
        progress: show the training's progress, epoch by epoch over every member, with the time left (and a
            fine-tuned head's pass over every cutout).
        finetune: a :class:`~ulisse.plugins.heads.finetune.FinetuneConfig` (mode ``last`` or ``all``) to
            fine-tune the encoder on the cutouts (:mod:`.finetune`) instead of training on the frozen vectors.
        overwrite: replace a stored head of that name (without it, such a head is an error, before any work).

    Raises:
        InputError: unknown or non-numeric column, bad name or method, a head ``name`` and not ``overwrite``,
            too few rows.
        TrainingError: no member reached a finite validation loss.
    """
    import torch

    if finetune is not None and finetune.mode != "none":
        from .finetune import train_finetuned

        return train_finetuned(index, target, name, method, members=members, train_ids=train_ids, config=finetune,
                               device=device, update_columns=update_columns, progress=progress, overwrite=overwrite)
    if method not in METHODS:
        raise InputError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    check_members(members)
    members = 5 if members is None else int(members)
    check_name(index, name, overwrite)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config = config or TrainConfig()
    rows, y_all, left_out = training_rows(index, target, train_ids)
    t0 = time.perf_counter()
    x = vectors_of(index, rows).astype(np.float64)
    if not np.isfinite(x).all():
        raise InputError(f"{index.path}: the vectors of the training objects are not all finite")
    xf = transform_features(x, config.features)
    y = y_all[rows]
    rng = np.random.default_rng(config.seed)
    tr, va = split_rows(len(rows), config.val_fraction, rng)
    y_mean, y_scale, note = standardise_target(y[tr])
    if note:
        LOG.warning("column %r: %s", target, note)
    x_mean = xf[tr].mean(0)
    x_scale = xf[tr].std(0)
    # nearly constant features (many of a CNN's pooled channels are) would blow up on new objects: floor the scale
    floor = X_SCALE_FLOOR * float(np.sqrt(np.mean(x_scale ** 2)))
    x_scale = np.maximum(x_scale, floor) if floor > 0 else np.ones_like(x_scale)
    xs = ((xf - x_mean) / x_scale).astype(np.float32)
    ys = ((y - y_mean) / y_scale).astype(np.float32)
    tensors = {"x_mean": x_mean, "x_scale": x_scale}
    cfg = {"name": name, "method": method, "target": target, "format": 1,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "train": config.to_dict(), "dim": int(x.shape[1]), "y_mean": y_mean, "y_scale": y_scale,
           "training_ids": [str(i) for i in index.metadata["id"].to_numpy()[rows[tr]]],
           "validation_ids": [str(i) for i in index.metadata["id"].to_numpy()[rows[va]]],
           "encoder": index.encoder_spec.to_dict(), "index_fingerprint": index.fingerprint,
           "versions": {"ulisse": ulisse.__version__, "torch": torch.__version__}}
    member_info = []
    if method == "ridge":
        with torch_threads(config.threads):
            fit = fit_ridge(xs[tr], ys[tr], xs[va], ys[va])
        tensors.update({"ridge.coef": fit.coef, "ridge.intercept": np.array([fit.intercept]),
                        "ridge.noise_var": np.array([fit.noise_var])})
        cfg.update(members=0, ridge_alpha=fit.alpha, variance_scale=1.0, nan_events=0)
    n_val, chose_epochs = len(va), False
    if method != "ridge":
        va_stop, va_cal = va, va  # early stopping on one part of the validation rows, the variance factor on the other
        if config.calibrate and config.calibration_share > 0 and len(va) >= 4:
            stop, cal = split_rows(len(va), config.calibration_share, rng)
            va_stop, va_cal = va[stop], va[cal]
        chose_epochs = len(va_cal) == len(va)  # too few to split: the same objects stop the training and score it
        dropout = config.dropout if config.dropout is not None else DEFAULT_DROPOUT[method]
        n_nets = members if method == "ensemble" else 1
        nets, nan_events = [], 0
        from ulisse.progress import progress_bar

        # epoch by epoch over every member, so the time left is known after a few epochs, not after a member;
        # a member that stops early skips its remaining epochs (the estimate is an upper bound)
        with progress_bar(total=n_nets * config.max_epochs, unit="epoch", enabled=progress,
                          desc=f"training {name} ({n_nets} network{'s' if n_nets > 1 else ''})") as bar:
            for m in range(n_nets):
                seed = config.seed * 1000 + m
                try:
                    fit = train_member(xs[tr], ys[tr], xs[va_stop], ys[va_stop], config, seed, dropout, device, bar)
                except TrainingError as exc:
                    raise TrainingError(f"head {name!r}, member {m + 1}: {exc}") from None
                bar.update((m + 1) * config.max_epochs - bar.n)
                _keep_member(fit, m, config, xs.shape[1], dropout, nets, tensors, member_info)
                nan_events += fit.nan_events
        cfg.update(members=n_nets, dropout=dropout, nan_events=nan_events, variance_scale=1.0,
                   calibration_ids=[str(i) for i in index.metadata["id"].to_numpy()[rows[va_cal]]])
        va = va_cal  # the factor and the validation metrics: rows the stopping rule never saw
    head = Head(name, method, target, cfg, config, x_mean, x_scale, networks=[] if method == "ridge" else nets,
                ridge=fit if method == "ridge" else None)
    mean, alea, epi = head.predict_standardised(x[va], calibrated=False)
    if method != "ridge" and config.calibrate:
        cfg["variance_scale"] = variance_scale(ys[va], mean, alea + epi)
    metrics = {"validation_uncalibrated": _std_metrics(ys[va], mean, alea + epi, y_scale)}
    metrics["validation"] = _std_metrics(ys[va], mean, (alea + epi) * cfg["variance_scale"], y_scale)
    cfg["metrics"] = {**metrics, "members": member_info, "n_train": int(len(tr)), "n_validation": n_val,
                      "n_metrics": int(len(va)), "early_stopping_scored": chose_epochs, "n_left_out": left_out,
                      "seconds": round(time.perf_counter() - t0, 2)}
    warn_few_metrics(name, len(va), chose_epochs)
    kept = kept_columns(index, name) if update_columns else None
    folder = save_head(index, cfg, tensors, overwrite=overwrite)
    LOG.info("head %s (%s, %s) trained on %d objects, %d held out: RMSE %.4g on %d of them, %d non-finite steps",
             name, method, target, len(tr), n_val, metrics["validation"]["rmse"], len(va), cfg["nan_events"])
    if update_columns:
        store_columns(index, name, kept, lambda: compute_columns(index, names=[name]))
    return TrainedHead(name, folder, cfg)


def _keep_member(fit, m: int, config: TrainConfig, dim: int, dropout: float, nets: list, tensors: dict,
                 member_info: list) -> None:
    """Add member ``m``'s network, its weights to store and its summary."""
    state = {k: v.detach().cpu() for k, v in fit.state.items()}
    nets.append(network_from_state(state, config, dim, dropout))
    tensors.update({f"member{m}.{k}": v.numpy() for k, v in state.items()})
    member_info.append({"seed": config.seed * 1000 + m, "epochs": fit.epochs, "best_epoch": fit.best_epoch,
                        "val_nll": fit.best_val_nll, "nan_events": fit.nan_events})


def _std_metrics(y, mean, var, scale) -> dict:
    return regression_metrics(y * scale, mean * scale, np.sqrt(var) * scale)


# -- predictions ---------------------------------------------------------------------------

def compute_columns(index, rows=None, names=None, progress: bool = True, **options) -> pd.DataFrame:
    """The ``heads`` derived columns: every stored head's prediction (or the heads ``names``') for every object
    (row order), or for ``rows``; ``progress``: a fine-tuned head's pass over the cutouts shows how far it is."""
    names = head_names(index) if names is None else list(names)
    every = rows is None
    rows = np.arange(len(index)) if every else np.asarray(rows, np.int64)
    table = pd.DataFrame(index=pd.RangeIndex(len(rows)))
    if not names or len(rows) == 0:
        return table
    vectors, parts = None, [table]
    for name in names:
        try:
            head = load_head(index, name)
            if getattr(head, "pixels", False):  # fine-tuned: from the cutouts
                parts.append(head.predict_rows(index, rows, progress=progress))
                continue
            vectors = vectors_of(index, None if every else rows) if vectors is None else vectors
            parts.append(head.predict_vectors(vectors))
        except ulisse.UlisseError as exc:
            LOG.warning("head %s left out of the derived columns: %s", name, exc)
    return pd.concat(parts, axis=1)


def update_columns(index, kept: pd.DataFrame, rows: range, **options) -> pd.DataFrame:
    """The ``heads`` columns after an add: the stored predictions of the objects there were (a head's prediction
    depends on the object's own vector or cutout), and the added ``rows`` predicted."""
    added = compute_columns(index, rows=rows, **options)
    if list(added.columns) != list(kept.columns):  # a head that failed to load one time and not the other
        return compute_columns(index, **options)
    return pd.concat([kept, added], ignore_index=True)


def predict_head(index, name: str, ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Predictions of head ``name``: ``id``, ``NAME``, ``NAME_std``, ``NAME_std_aleatoric``, ``NAME_std_epistemic``.

    Read from the index's stored ``heads`` derived columns (recomputed when stale);
    ``ids`` selects objects (default: all, in row order).
    """
    load_head(index, name)  # a clear error for an unknown or damaged head
    table = index.derived(DERIVED_SET)
    if name not in table.columns:
        table = index.derived(DERIVED_SET, recompute=True)
    rows = np.arange(len(index)) if ids is None else rows_of_ids(index, ids, "--ids")
    out = table.iloc[rows][columns_of(name)].reset_index(drop=True)
    out.insert(0, "id", index.metadata["id"].to_numpy()[rows])
    return out


def _finetune_text(cfg: dict) -> str:
    """``none`` (the frozen vectors), ``all, 64 px`` or ``last from 4, 128 px``."""
    ft = cfg.get("finetune")
    if not isinstance(ft, dict):
        return "none"
    mode = str(ft.get("mode", "?"))
    start = f" from {ft['train_from']}" if mode == "last" and "train_from" in ft else ""
    return f"{mode}{start}, {ft.get('input_size', '?')} px"


def list_heads(index) -> pd.DataFrame:
    """One row per stored head: name, method, target, fine-tuning (``none``: the frozen vectors; else the mode and
    input size), members (none for ridge), training size, validation metrics, created."""
    rows = []
    for name in head_names(index):
        try:
            cfg = json.loads((heads_dir(index) / name / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            rows.append({"name": name, "method": "damaged"})
            continue
        val = cfg.get("metrics", {}).get("validation", {})
        members = cfg.get("members") if cfg.get("method") != "ridge" else None  # ridge has none (stored as 0)
        rows.append({"name": name, "method": cfg.get("method"), "target": cfg.get("target"),
                     "finetune": _finetune_text(cfg), "members": members,
                     "n_train": cfg.get("metrics", {}).get("n_train"),
                     "val_rmse": val.get("rmse"), "val_cov68": val.get("coverage_68"),
                     "val_cov95": val.get("coverage_95"), "nan_events": cfg.get("nan_events"),
                     "created": cfg.get("created")})
    cols = ["name", "method", "target", "finetune", "members", "n_train", "val_rmse", "val_cov68", "val_cov95",
            "nan_events", "created"]
    table = pd.DataFrame(rows, columns=cols)
    for c in ("members", "n_train", "nan_events"):  # whole numbers; missing (ridge's members) shown as -
        table[c] = pd.array([None if v is None or v != v else int(v) for v in table[c]], dtype="Int64")
    return table
