"""The networks and fits behind regression heads: Gaussian MLPs (NLL), their NaN guard, and ridge.

Everything here works on standardised arrays (features and target scaled by the
training rows); :mod:`ulisse.plugins.heads.store` keeps the scalings.

Why a Gaussian-NLL ensemble goes NaN, and what guards it here:

* the predicted variance collapses towards zero on a few easy rows, so
  ``(y - mu)^2 / var`` and its gradient explode: the variance is
  ``softplus(raw) + VAR_FLOOR``, clamped to ``VAR_MAX`` (bounded both ways);
* large targets (outliers, unscaled units) give huge residuals: targets are
  standardised by median and MAD, gradients clipped to ``clip`` in norm;
* if a step still yields a non-finite loss or weights, training goes back to the
  last finite state, halves the learning rate and carries on; after
  ``max_nan_restarts`` such events the member keeps its best finite state (the
  events are counted and stored with the head).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ulisse.errors import UlisseError

from .settings import check_config

LOG = logging.getLogger(__name__)

VAR_FLOOR = 1e-4  # standardised units: sigma >= 0.01 of the target's spread
VAR_MAX = 1e2  # standardised units: sigma <= 10 of the target's spread
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run torch on ``n`` CPU threads inside the block (small networks: more threads only wait on each other,
    and on a shared machine two spinning threads ran one step 30x slower than one)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        with threadpool_limits(limits=max(1, n)):  # numpy's BLAS too (ridge)
            yield
    finally:
        torch.set_num_threads(before)


class TrainingError(UlisseError):
    """A head could not be trained (no finite state was ever reached, too few rows...)."""


class StoredConfig:
    """A dataclass of training settings kept in a head's JSON config (``hidden``: a tuple of widths).

    Made by hand, it checks every value (:func:`~ulisse.plugins.heads.settings.check_config`: an
    :class:`~ulisse.errors.InputError` naming the field and the reason); read back from a stored head
    (:meth:`from_dict`), it is taken as it was written (an older version may have allowed other values).
    """

    _stored = False  # read back from a head: not checked again

    def __post_init__(self):
        if not self._stored:
            check_config(self)
        self.hidden = tuple(int(h) for h in self.hidden)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict):
        """The settings of a stored config (keys this version does not know are left out)."""
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        config = cls.__new__(cls)
        config._stored = True
        config.__init__(**d)
        return config


@dataclass
class TrainConfig(StoredConfig):
    """How a head is trained (stored in its JSON config).

    Attributes:
        hidden: widths of the hidden layers.
        dropout: dropout probability of every hidden layer (``None``: 0.3 for ensembles, 0.2 for MC dropout).
        lr, weight_decay: AdamW settings.
        batch_size: rows per step.
        max_epochs, patience: early stopping on the validation NLL.
        clip: gradient norm clipping.
        val_fraction: share of the training rows kept for validation (early stopping, variance calibration).
        mc_samples: stochastic passes of MC dropout at prediction time.
        calibrate: scale the predicted variance so the validation NLL is smallest (one factor per head).
        calibration_share: share of the validation rows kept for that factor alone (the networks are
            early-stopped on the others). A factor fitted on the rows the stopping rule chose the
            networks by comes out too small: on 6000 simulated lenses it was 0.78 where unseen lenses
            needed 1.06, and the 95 % intervals covered 91 %.
        max_nan_restarts: non-finite steps tolerated per member before it stops at its best state.
        seed: seed of the split, the initialisations and the batch orders.
        threads: CPU threads for torch and BLAS while training and predicting (0 counts as 1).
        features: ``raw`` vectors, or ``sqrt``: signed square root of each component (power
            normalisation of pooled CNN features), before standardisation; every method uses the same.

    Raises:
        InputError: a value out of its range (:data:`~ulisse.plugins.heads.settings.RULES`), e.g.
            ``val_fraction`` not between 0 and 1, ``max_epochs`` or ``batch_size`` below 1, ``lr`` not above 0.
    """

    hidden: tuple[int, ...] = (256, 128)
    dropout: float | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 25
    clip: float = 5.0
    val_fraction: float = 0.2
    mc_samples: int = 50
    calibrate: bool = True
    calibration_share: float = 0.5
    max_nan_restarts: int = 8
    seed: int = 0
    threads: int = 1
    features: str = "raw"



class GaussianMLP(nn.Module):
    """An MLP with two outputs: the mean and the variance (softplus + floor, bounded) of a Gaussian."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (256, 128), dropout: float = 0.1):
        super().__init__()
        layers, width = [], dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU(), nn.Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, 2)
        with torch.no_grad():  # start at mean 0, variance 1 (the standardised target's)
            self.out.weight.mul_(0.1)
            self.out.bias.copy_(torch.tensor([0.0, math.log(math.expm1(1.0))]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.outputs(self.body(x))

    def outputs(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) from the last hidden layer's activations."""
        o = self.out(h)
        return o[:, 0], (F.softplus(o[:, 1]) + VAR_FLOOR).clamp(max=VAR_MAX)


def transform_features(x: np.ndarray, kind: str) -> np.ndarray:
    """``raw``: the vectors as they are; ``sqrt``: sign(x) sqrt(|x|) (float64)."""
    x = np.asarray(x, np.float64)
    if kind == "raw":
        return x
    if kind == "sqrt":
        return np.sign(x) * np.sqrt(np.abs(x))
    raise ValueError(f"features={kind!r}: expected raw or sqrt")


def gaussian_nll(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood (without the constant 0.5 log 2 pi)."""
    return 0.5 * (torch.log(var) + (y - mean) ** 2 / var).mean()


@dataclass
class MemberFit:
    """One trained network and how its training went."""

    state: dict
    epochs: int
    best_epoch: int
    best_val_nll: float
    nan_events: int
    history: list = field(default_factory=list)  # (train loss, validation NLL) per epoch


def _finite_params(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _val_nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        mean, var = model(x)
        return float(gaussian_nll(mean, var, y))


def train_member(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 config: TrainConfig, seed: int, dropout: float, device: str = "cpu", bar=None) -> MemberFit:
    """Train one Gaussian MLP with the NLL, early stopping on the validation NLL and the NaN guard.

    ``bar``: a progress bar (:func:`ulisse.progress.progress_bar`) advanced by one at the end of every epoch.

    Raises:
        TrainingError: no finite state was ever reached.
    """
    with torch_threads(config.threads):
        return _train_member(x_train, y_train, x_val, y_val, config, seed, dropout, device, bar)


def _train_member(x_train, y_train, x_val, y_val, config: TrainConfig, seed: int, dropout: float,
                  device: str, bar=None) -> MemberFit:
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed + 7919)  # each member: its own batch order
    xt, yt = torch.as_tensor(x_train, device=device), torch.as_tensor(y_train, device=device)
    xv, yv = torch.as_tensor(x_val, device=device), torch.as_tensor(y_val, device=device)
    model = GaussianMLP(xt.shape[1], config.hidden, dropout).to(device)
    lr = config.lr

    def optimiser():
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)

    opt = optimiser()
    best_state, best_nll, best_epoch = None, math.inf, -1
    good_state = copy.deepcopy(model.state_dict())
    nan_events, bad_epochs, history, epoch = 0, 0, [], 0
    n, bs = len(xt), max(1, min(config.batch_size, len(xt)))

    def recover(where: str) -> bool:
        """Count a non-finite event; back to the last finite state at half the step size. False: give up."""
        nonlocal nan_events, lr, opt
        nan_events += 1
        if nan_events > config.max_nan_restarts:
            LOG.warning("member with seed %d: %d non-finite steps; keeping its best finite state", seed, nan_events)
            return False
        LOG.info("non-finite %s in epoch %d (seed %d): back to the last finite state, learning rate %.2g",
                 where, epoch, seed, lr / 2)
        model.load_state_dict(good_state)
        lr /= 2
        opt = optimiser()
        return True

    for epoch in range(1, config.max_epochs + 1):
        model.train()
        total, steps, going = 0.0, 0, True
        for batch in torch.randperm(n, generator=order).split(bs):
            mean, var = model(xt[batch])
            loss = gaussian_nll(mean, var, yt[batch])
            if torch.isfinite(loss):
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                opt.step()
                if _finite_params(model):
                    total, steps = total + float(loss.detach()), steps + 1
                    continue
            going = recover("loss or weights")  # this batch is skipped
            if not going:
                break
        if bar is not None:
            bar.update(1)
        if not going:
            break
        val = _val_nll(model, xv, yv)
        history.append((total / max(steps, 1), val))
        if not math.isfinite(val):
            if not recover("validation loss"):
                break
            continue
        good_state = copy.deepcopy(model.state_dict())
        if val < best_nll - 1e-4:
            best_state, best_nll, best_epoch, bad_epochs = copy.deepcopy(model.state_dict()), val, epoch, 0
        else:
            bad_epochs += 1
        if bad_epochs >= config.patience:
            break
    if best_state is None:
        raise TrainingError(f"training never reached a finite validation loss ({nan_events} non-finite steps)")
    return MemberFit(best_state, epoch, best_epoch, best_nll, nan_events, history)


def network_from_state(state: dict, config: TrainConfig, dim: int, dropout: float) -> GaussianMLP:
    """A network rebuilt from a stored state dict."""
    model = GaussianMLP(dim, config.hidden, dropout)
    model.load_state_dict(state)
    return model.eval()


def predict_ensemble(models: list[GaussianMLP], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixture of the members: mean of the means; aleatoric = mean variance; epistemic = variance of the means."""
    xt = torch.as_tensor(x)
    with torch.no_grad():
        outs = [m.eval()(xt) for m in models]
    means = torch.stack([o[0] for o in outs]).double()
    varis = torch.stack([o[1] for o in outs]).double()
    return (means.mean(0).numpy(), varis.mean(0).numpy(), means.var(0, unbiased=False).numpy())


def predict_mc_dropout(model: GaussianMLP, x: np.ndarray, samples: int, seed: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MC dropout: ``samples`` networks drawn by dropping hidden units, combined as a mixture.

    Pass ``t`` drops the same units for every row (masks from a generator seeded by
    ``seed`` and ``t``), so an object's prediction does not depend on which other
    objects share its batch, and stored predictions are reproducible.
    """
    means, varis = mc_dropout_draws(model, x, samples, seed)
    return means.mean(0), varis.mean(0), means.var(0)


def mc_dropout_draws(model: GaussianMLP, x: np.ndarray, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``samples x N`` means and variances of :func:`predict_mc_dropout`'s draws (float64)."""
    xt = torch.as_tensor(x)
    means, varis = [], []
    with torch.no_grad():
        for t in range(samples):
            gen = torch.Generator().manual_seed(seed * 100003 + t)
            h = xt
            for layer in model.body:
                if isinstance(layer, nn.Dropout) and layer.p > 0:
                    keep = (torch.rand(h.shape[1], generator=gen) >= layer.p).to(h.dtype) / (1 - layer.p)
                    h = h * keep
                else:
                    h = layer(h)
            mean, var = model.outputs(h)
            means.append(mean)
            varis.append(var)
    return torch.stack(means).double().numpy(), torch.stack(varis).double().numpy()


@dataclass
class RidgeFit:
    """A ridge regression (alpha by generalised cross-validation) with a constant noise variance."""

    coef: np.ndarray
    intercept: float
    alpha: float
    noise_var: float

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = x.astype(np.float64) @ self.coef + self.intercept
        return mean, np.full(len(x), self.noise_var), np.zeros(len(x))


def fit_ridge(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> RidgeFit:
    """Ridge on the training rows (alpha by GCV); its noise variance is the validation rows' mean squared residual."""
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=RIDGE_ALPHAS).fit(x_train.astype(np.float64), y_train.astype(np.float64))
    fit = RidgeFit(np.asarray(model.coef_, np.float64), float(model.intercept_), float(model.alpha_), 1.0)
    resid = y_val - fit.predict(x_val)[0]
    fit.noise_var = float(np.clip(np.mean(resid ** 2), VAR_FLOOR, VAR_MAX))
    return fit


def variance_scale(y: np.ndarray, mean: np.ndarray, var: np.ndarray) -> float:
    """The factor s on the variance that minimises the Gaussian NLL of (y, mean, s var): mean((y - mean)^2 / var)."""
    s = float(np.mean((y - mean) ** 2 / var))
    return float(np.clip(s, 1e-2, 1e2)) if math.isfinite(s) else 1.0
