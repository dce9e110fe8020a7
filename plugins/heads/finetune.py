"""Heads fine-tuned on the pixels: each member trains the index's whole encoder (or its last stages).

``ulisse head train INDEX --target COL --name NAME --finetune all`` (``last``: only the
encoder's last stages; ``none``, the CLI's default: the frozen vectors, :mod:`.core`).
Each member is the encoder's trunk (:mod:`.ftnet`) with a Gaussian mean-and-variance
MLP on its pooled map, trained with the Gaussian negative log-likelihood:

* targets standardised (median, MAD) on the training rows;
* variance ``softplus + floor``, bounded (:class:`~ulisse.plugins.heads.models.GaussianMLP`);
* warm-up: the first ``warmup_epochs`` fit the mean alone (MSE), so the variance never
  learns to explain away a mean that has not started to fit; then the NLL;
* AdamW, the trunk at ``backbone_lr``, the MLP at ``lr``, cosine decay to zero; gradient
  norm clipped at ``clip``;
* a NaN guard: a batch whose loss is not finite is named in the log (member, epoch, batch,
  its first ids) and skipped; weights that turn non-finite go back to the last finite state
  at half the step size; events counted and stored with the head;
* augmentation per target (``augment``): ``rot-flip`` draws one of the 8 rotations and
  flips of the square for every cutout of every batch (targets that do not change when
  the sky turns: an Einstein radius, a redshift, a mass), ``none`` for the others. With
  ``rot-flip`` predictions are averaged over the 8 views.

Members differ in seed (MLP initialisation, dropout) and data order; ``mc-dropout``
trains one member and draws ``mc_samples`` dropout masks of its MLP instead. Early
stopping picks each member's best epoch by the NLL on one half of a validation split
(``val_fraction`` of the training rows); the variance factor is fitted on the other half,
which no member ever saw (as for frozen heads). Predictions are the derived columns
``NAME``, ``NAME_std``, ``NAME_std_aleatoric``, ``NAME_std_epistemic``; every object's
cutout is read again when they are computed.

The defaults (Lite0 at 128 px, batches of 16; ``all``: the whole network, 2 members x 24 epochs;
``last``: ``blocks[4:]``, 3 members x 20 epochs, :data:`MODE_DEFAULTS`) were chosen by measurement
on the lens benchmark's training lenses so that a train on about 1,000 cutouts takes at most
15 minutes on 2 CPU cores (benchmarks/heads.md). ``all`` is the default: on the same lenses one
whole network after 20 epochs erred 0.117" where the 3-member ``last`` ensemble erred 0.141".
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

import ulisse
from ulisse.errors import InputError

from .metrics import regression_metrics
from .models import VAR_FLOOR, StoredConfig, TrainingError, gaussian_nll, torch_threads, variance_scale
from .settings import check_members
from .store import (TrainedHead, check_name, columns_of, kept_columns, save_head, split_rows, standardise_target,
                    store_columns, training_rows, warn_few_metrics)

LOG = logging.getLogger(__name__)

FT_METHODS = ("ensemble", "mc-dropout")
# (members, epochs) of each mode when not given: chosen on the lens benchmark's training lenses so that a train
# on about 1,000 cutouts takes at most 15 minutes on 2 CPU cores (benchmarks/heads.md)
MODE_DEFAULTS = {"all": (2, 24), "last": (3, 20)}


@dataclass
class FinetuneConfig(StoredConfig):
    """How a fine-tuned head is trained (stored in its JSON config).

    Attributes:
        mode: ``all`` (the whole network, the default) or ``last`` (the stem and ``blocks[:train_from]``
            frozen and cached: faster, less accurate).
        train_from: first trained ``blocks`` stage with ``last`` (Lite0 has 7: 0-6).
        input_size: side the cutouts are resized to (bilinear) before the network.
        members: networks of an ensemble (``mc-dropout``: 1); ``None``: the mode's default (:data:`MODE_DEFAULTS`).
        epochs: epochs per member (the best one by validation NLL is kept), ``warmup_epochs`` of them MSE;
            ``None``: the mode's default.
        batch_size, lr, backbone_lr, weight_decay, clip: the optimiser (AdamW, cosine decay, norm clipping).
        hidden, dropout: the Gaussian MLP on the pooled map (``dropout=None``: 0.1 ensemble, 0.2 MC dropout).
        augment: ``rot-flip`` or ``none`` (see the module's text).
        val_fraction, calibration_share: validation split of the training rows, and its share kept for
            the variance factor alone.
        mc_samples: dropout draws of ``mc-dropout`` at prediction time.
        max_nan_restarts: non-finite weight events per member before it stops at its best state.
        seed: seed of the split; member ``m`` uses ``seed * 1000 + m``.
        threads: CPU threads (0: every core torch sees).
    """

    mode: str = "all"
    train_from: int = 4
    input_size: int = 128
    members: int | None = None
    epochs: int | None = None
    warmup_epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-3
    backbone_lr: float = 1e-3
    weight_decay: float = 1e-4
    clip: float = 5.0
    hidden: tuple[int, ...] = (128,)
    dropout: float | None = None
    augment: str = "rot-flip"
    val_fraction: float = 0.2
    calibration_share: float = 0.5
    mc_samples: int = 30
    max_nan_restarts: int = 8
    seed: int = 0
    threads: int = 0

    def __post_init__(self):
        members, epochs = MODE_DEFAULTS.get(self.mode, MODE_DEFAULTS["all"])
        self.members = members if self.members is None else self.members
        self.epochs = epochs if self.epochs is None else self.epochs
        super().__post_init__()  # every value in its range (settings.RULES)
        if not self._stored and not self.warmup_epochs < max(self.epochs, 2):
            raise InputError(f"FinetuneConfig.warmup_epochs={self.warmup_epochs}: must be less than "
                             f"epochs={self.epochs}")

    def check(self, stages: int) -> None:
        """What depends on the encoder (its ``stages``) or on training at all (``mode`` none trains no encoder)."""
        if self.mode not in ("last", "all"):
            raise InputError(f"--finetune {self.mode}: expected last or all (none trains on the frozen vectors)")
        if self.mode == "last" and not 0 <= self.train_from < stages:
            raise InputError(f"--train-from {self.train_from}: the encoder has stages 0-{stages - 1}")


def _device(device: str) -> torch.device:
    from ulisse.encoder import resolve_device

    return resolve_device(device)


class FinetunedHead:
    """A stored fine-tuned head, ready to predict from the index's cutouts."""

    pixels = True  # predictions need the cutouts, not the vectors

    def __init__(self, cfg: dict, trunks: list, prefix, spec):
        self.config, self.trunks, self.prefix, self.spec = cfg, trunks, prefix, spec
        self.name, self.method, self.target = cfg["name"], cfg["method"], cfg["target"]
        self.ft = FinetuneConfig.from_dict(cfg["finetune"])

    @property
    def variance_factor(self) -> float:
        return float(self.config.get("variance_scale", 1.0))

    def predict_standardised(self, index, rows, calibrated: bool = True, device: str = "cpu", chunk: int = 128,
                             progress: bool = False):
        """(mean, aleatoric var, epistemic var) in standardised units for ``rows`` of ``index``; ``progress``: show
        how far the pass over the cutouts is, with the time left."""
        from ulisse.progress import progress_bar

        from .ftnet import VIEWS, predict_maps, prefix_maps, read_pixels

        dev = _device(device)
        mc = (self.ft.mc_samples, self.ft.seed) if self.method == "mc-dropout" else None
        parts = []
        with torch_threads(self.ft.threads or os.cpu_count() or 1), progress_bar(
                total=len(rows), desc=f"head {self.name}: predicting from the cutouts", unit="cutout",
                enabled=progress) as bar:
            for t in self.trunks:
                t.to(dev)
            self.prefix.to(dev)
            for start in range(0, len(rows), chunk):  # chunks of 128: predict_maps' batches (MC draws) as one pass
                images = read_pixels(index, rows[start:start + chunk], self.ft.input_size)
                maps = prefix_maps(self.prefix, images, self.spec, VIEWS[self.ft.augment], dev)
                parts.append(predict_maps(self.trunks, maps, mc))
                bar.update(len(images))
        mean, alea, epi = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(3))
        s = self.variance_factor if calibrated else 1.0
        return mean, alea * s, epi * s

    def predict_rows(self, index, rows, calibrated: bool = True, progress: bool = False) -> pd.DataFrame:
        """``NAME``, ``NAME_std``, ``NAME_std_aleatoric``, ``NAME_std_epistemic`` of ``rows``, in the target's units."""
        mean, alea, epi = self.predict_standardised(index, np.asarray(rows, np.int64), calibrated, progress=progress)
        c, ys, ym = columns_of(self.name), float(self.config["y_scale"]), float(self.config["y_mean"])
        return pd.DataFrame({c[0]: mean * ys + ym, c[1]: np.sqrt(alea + epi) * ys, c[2]: np.sqrt(alea) * ys,
                             c[3]: np.sqrt(epi) * ys})


def load_finetuned(index, cfg: dict, tensors: dict) -> FinetunedHead:
    """A fine-tuned head from its stored config and safetensors (the frozen stages from the index's encoder)."""
    from .ftnet import Prefix, Trunk, base_network

    ft = FinetuneConfig.from_dict(cfg["finetune"])
    model = base_network(index.encoder_spec)
    train_from = ft.train_from if ft.mode == "last" else None
    trunks = []
    for m in range(int(cfg["members"])):
        trunk = Trunk(model, train_from, ft.hidden, float(cfg["dropout"]))
        prefix = f"member{m}."
        trunk.load_state_dict({k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in tensors.items()
                               if k.startswith(prefix)})
        trunks.append(trunk.eval())
    return FinetunedHead(cfg, trunks, Prefix(model, train_from), index.encoder_spec)


# -- training ----------------------------------------------------------------------------------

def _batch_loss(trunk, h, y, nll: bool):
    mean, var = trunk(h)
    mean, var = mean.float(), var.float()
    return gaussian_nll(mean, var, y) if nll else ((mean - y) ** 2).mean()


def _val_nll(trunk, maps, y, batch: int = 128) -> float:
    trunk.eval()
    total = 0.0
    with torch.no_grad():
        for s in range(0, maps.shape[1], batch):
            mean, var = trunk(maps[0, s:s + batch].float().contiguous(memory_format=torch.channels_last))
            total += float(gaussian_nll(mean.float(), var.float(), y[s:s + batch])) * len(mean)
    return total / max(1, maps.shape[1])


def train_one(model, train_from, maps_tr, y_tr, maps_stop, y_stop, ft: FinetuneConfig, seed: int, dropout: float,
              device: torch.device, bar=None, ids=None, where: str = "", draw_views: int = 0
              ) -> tuple[nn.Module, dict]:
    """Train one member on cached prefix maps (``views x N x ...``); returns its best trunk and a summary.

    ``draw_views``: ``maps_tr`` holds one view (``1 x N x ...``) and each batch turns its images into
    views drawn from this many on the fly; the same draws and values as caching every view.
    """
    from .ftnet import Trunk, autocast, views_of

    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed + 7919)  # each member: its own batch order and views
    trunk = Trunk(model, train_from, ft.hidden, dropout).to(device).to(memory_format=torch.channels_last)
    n, views = maps_tr.shape[1], draw_views or maps_tr.shape[0]
    bs = max(2, min(ft.batch_size, n))
    total_steps = ft.epochs * math.ceil(n / bs)

    def optimiser():
        return torch.optim.AdamW([{"params": list(trunk.layers.parameters()), "lr": ft.backbone_lr},
                                  {"params": list(trunk.mlp.parameters()), "lr": ft.lr}],
                                 weight_decay=ft.weight_decay)

    opt = optimiser()
    base = [g["lr"] for g in opt.param_groups]
    scale, step, nan_events = 1.0, 0, 0
    good = copy.deepcopy(trunk.state_dict())
    best, best_nll, best_epoch, history = None, math.inf, -1, []

    def recover(what: str, epoch: int, b: int, batch) -> None:
        """Skip the batch, name it, go back to the last finite state at half the step size, fresh moments."""
        nonlocal nan_events, scale, opt
        nan_events += 1
        first = ", ".join(ids[i] for i in batch[:3].tolist()) if ids is not None else "?"
        LOG.warning("%snon-finite %s in epoch %d, batch %d (objects %s...): batch skipped, back to the last "
                    "finite state at half the step size", where, what, epoch, b, first)
        trunk.load_state_dict(good)
        scale /= 2
        opt = optimiser()

    for epoch in range(1, ft.epochs + 1):
        trunk.train()
        nll = epoch > ft.warmup_epochs  # the warm-up epochs fit the mean alone and are not candidates
        total, done = 0.0, 0
        for b, batch in enumerate(torch.randperm(n, generator=order).split(bs)):
            step += 1
            if bar is not None:
                bar.update(1)
            if len(batch) < 2 or nan_events > ft.max_nan_restarts:
                continue
            for g, lr in zip(opt.param_groups, base):  # cosine decay to zero over the member's steps
                g["lr"] = scale * lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / total_steps))
            which = torch.randint(0, views, (len(batch),), generator=order).to(maps_tr.device)
            if draw_views:
                h = views_of(maps_tr[0, batch.to(maps_tr.device)].float(), which)
            else:
                h = maps_tr[which, batch.to(maps_tr.device)].float()
            with autocast(device):
                loss = _batch_loss(trunk, h.contiguous(memory_format=torch.channels_last), y_tr[batch.to(y_tr.device)],
                                   nll)
            if not torch.isfinite(loss):
                recover("loss", epoch, b, batch)
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(trunk.parameters(), ft.clip)
            opt.step()
            if not all(bool(torch.isfinite(p).all()) for p in trunk.parameters()):
                recover("weights", epoch, b, batch)
                continue
            total, done = total + float(loss.detach()), done + 1
        val = _val_nll(trunk, maps_stop, y_stop)
        history.append((total / max(done, 1), val))
        if math.isfinite(val):
            good = copy.deepcopy(trunk.state_dict())
            if epoch > ft.warmup_epochs and val < best_nll:
                best, best_nll, best_epoch = copy.deepcopy(trunk.state_dict()), val, epoch
        if nan_events > ft.max_nan_restarts:
            LOG.warning("%s%d non-finite events: keeping the best finite state", where, nan_events)
            break
    if best is None:  # no judged epoch was finite: the last finite state, if its validation loss is
        trunk.load_state_dict(good)
        best, best_nll, best_epoch = good, _val_nll(trunk, maps_stop, y_stop), 0
        if not math.isfinite(best_nll):
            raise TrainingError(f"{where}never reached a finite validation loss ({nan_events} non-finite events)")
    trunk.load_state_dict(best)
    return trunk.eval(), {"seed": seed, "epochs": len(history), "best_epoch": best_epoch, "val_nll": best_nll,
                          "nan_events": nan_events, "history": history}


def train_finetuned(index, target: str, name: str, method: str = "ensemble", members: int | None = None,
                    train_ids=None, config: FinetuneConfig | None = None, device: str = "cpu",
                    update_columns: bool = True, progress: bool = False, overwrite: bool = False) -> TrainedHead:
    """Fine-tune ``members`` copies of the index's encoder on its cutouts against the catalogue column ``target``.

    ``overwrite``: replace a stored head named ``name`` (without it, such a head is an error before any work).

    Raises:
        InputError: unknown column, bad name, method or settings, a head ``name`` and not ``overwrite``,
            unreadable cutouts, too few rows.
        TrainingError: a member never reached a finite validation loss.
    """
    from ulisse.progress import progress_bar

    from .ftnet import VIEWS, Prefix, base_network, prefix_maps, read_pixels, stages_of

    ft = config or FinetuneConfig()
    if method not in FT_METHODS:
        raise InputError(f"method {method!r} with --finetune: expected one of {', '.join(FT_METHODS)}")
    check_members(members)
    if members is not None:
        ft = FinetuneConfig.from_dict({**ft.to_dict(), "members": int(members)})
    n_nets = ft.members if method == "ensemble" else 1
    check_name(index, name, overwrite)
    dev = _device(device)
    rows, y_all, left_out = training_rows(index, target, train_ids)
    t0 = time.perf_counter()
    rng = np.random.default_rng(ft.seed)
    tr, va = split_rows(len(rows), ft.val_fraction, rng)
    stop, cal = split_rows(len(va), ft.calibration_share, rng) if len(va) >= 4 else (np.arange(len(va)),) * 2
    va_stop, va_cal = va[stop], va[cal]
    y = y_all[rows]
    y_mean, y_scale, note = standardise_target(y[tr])
    if note:
        LOG.warning("column %r: %s", target, note)
    ys = ((y - y_mean) / y_scale).astype(np.float32)
    ids = index.metadata["id"].astype(str).to_numpy()[rows]
    dropout = ft.dropout if ft.dropout is not None else {"ensemble": 0.1, "mc-dropout": 0.2}[method]
    with torch_threads(ft.threads or os.cpu_count() or 1):
        model = base_network(index.encoder_spec)
        ft.check(stages_of(model))
        train_from = ft.train_from if ft.mode == "last" else None
        prefix = Prefix(model, train_from).to(dev)
        images = read_pixels(index, rows, ft.input_size)
        views = VIEWS[ft.augment]
        # the frozen stages run once per cutout and view and are cached; mode all has none: the normalised pixels
        # are kept once and each batch turns its own views (caching 8 views took 786 KB per 128-px cutout)
        draw = views if train_from is None else 0
        maps_tr = prefix_maps(prefix, images[tr], index.encoder_spec, 1 if draw else views, dev)
        maps_stop = prefix_maps(prefix, images[va_stop], index.encoder_spec, 1, dev)
        y_tr, y_stop = (torch.as_tensor(ys[s], device=dev) for s in (tr, va_stop))
        trunks, info, nan_events = [], [], 0
        steps = n_nets * ft.epochs * math.ceil(len(tr) / max(2, min(ft.batch_size, len(tr))))
        with progress_bar(total=steps, desc=f"fine-tuning {name}", unit="batch", enabled=progress) as bar:
            for m in range(n_nets):
                trunk, summary = train_one(model, train_from, maps_tr, y_tr, maps_stop, y_stop, ft,
                                           ft.seed * 1000 + m, dropout, dev, bar, ids[tr],
                                           f"head {name!r}, member {m + 1}: ", draw_views=draw)
                trunks.append(trunk)
                nan_events += summary["nan_events"]
                info.append(summary)
        del maps_tr, maps_stop
    cfg = {"name": name, "method": method, "target": target, "format": 1, "finetune": ft.to_dict(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "members": n_nets, "dropout": dropout,
           "y_mean": y_mean, "y_scale": y_scale, "nan_events": nan_events, "variance_scale": 1.0,
           "training_ids": list(ids[tr]), "validation_ids": list(ids[va]), "calibration_ids": list(ids[va_cal]),
           "encoder": index.encoder_spec.to_dict(), "index_fingerprint": index.fingerprint,
           "versions": {"ulisse": ulisse.__version__, "torch": torch.__version__}}
    head = FinetunedHead(cfg, [t.cpu() for t in trunks], prefix.cpu(), index.encoder_spec)
    mean, alea, epi = head.predict_standardised(index, rows[va_cal], calibrated=False, device=str(dev))
    cfg["variance_scale"] = variance_scale(ys[va_cal], mean, np.maximum(alea + epi, VAR_FLOOR))
    cfg["metrics"] = {
        "validation_uncalibrated": _metrics(ys[va_cal], mean, alea + epi, y_scale),
        "validation": _metrics(ys[va_cal], mean, (alea + epi) * cfg["variance_scale"], y_scale),
        "members": info, "n_train": int(len(tr)), "n_validation": int(len(va)), "n_metrics": int(len(va_cal)),
        "early_stopping_scored": len(va) < 4, "n_left_out": left_out, "seconds": round(time.perf_counter() - t0, 2)}
    warn_few_metrics(name, len(va_cal), len(va) < 4)
    tensors = {f"member{m}.{k}": v.detach().cpu().contiguous().numpy()
               for m, t in enumerate(trunks) for k, v in t.state_dict().items()}
    kept = kept_columns(index, name) if update_columns else None
    folder = save_head(index, cfg, tensors, overwrite=overwrite)
    LOG.info("head %s (fine-tuned %s, %s) trained on %d objects: RMSE %.4g on %d held out, %d non-finite events",
             name, ft.mode, target, len(tr), cfg["metrics"]["validation"]["rmse"], len(va_cal), nan_events)
    if update_columns:  # this head's pass over every cutout; the other heads' stored columns are kept
        store_columns(index, name, kept, lambda: head.predict_rows(index, np.arange(len(index)), progress=progress))
    return TrainedHead(name, folder, cfg)


def _metrics(y, mean, var, scale) -> dict:
    return regression_metrics(y * scale, mean * scale, np.sqrt(var) * scale)
