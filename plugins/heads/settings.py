"""What every training setting of a head may be, in one table: the configs check themselves against it and the
CLI builds its options from it, so a value is judged the same whichever way it comes. No torch.

A bad value is an :class:`~ulisse.errors.InputError` of one line that names the setting and the reason.

Example:
    >>> check_setting("TrainConfig.val_fraction", 0.2)
    >>> check_setting("TrainConfig.val_fraction", 1.5)
    Traceback (most recent call last):
    ...
    ulisse.errors.InputError: TrainConfig.val_fraction=1.5: must be more than 0 and less than 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from numbers import Integral, Real

from ulisse.errors import InputError

FEATURES = ("raw", "sqrt")
FINETUNE_MODES = ("none", "last", "all")
AUGMENTS = ("rot-flip", "none")


@dataclass(frozen=True)
class Range:
    """The numbers a setting may be: ``low`` and ``high`` (``None``: no bound), each in or out."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # ``low`` itself is not allowed
    high_open: bool = False
    whole: bool = False  # a whole number
    optional: bool = False  # None allowed (a default chosen later)

    def allows(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.whole else Real):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def text(self) -> str:
        """``a whole number from 1 to 100``, ``more than 0 and less than 1``, ``a number more than 0``..."""
        kind = "a whole number" if self.whole else "a number"
        low = None if self.low is None else f"{'more than' if self.low_open else 'at least'} {_num(self.low)}"
        high = None if self.high is None else f"{'less than' if self.high_open else 'at most'} {_num(self.high)}"
        if self.whole and low and high and not (self.low_open or self.high_open):
            return f"{kind} from {_num(self.low)} to {_num(self.high)}"
        bounds = " and ".join(b for b in (low, high) if b)
        if not self.whole and self.low is not None and self.high is not None:
            return bounds
        return f"{kind} {bounds}".strip()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


WHOLE_0, WHOLE_1 = Range(0, whole=True), Range(1, whole=True)
POSITIVE = Range(0, low_open=True)
SHARE = Range(0, 1, low_open=True, high_open=True)  # a share of rows that leaves some on both sides

# every setting of TrainConfig and FinetuneConfig (and train_head's ``members``): a Range or a tuple of choices
RULES: dict[str, Range | tuple] = {
    "hidden": WHOLE_1,  # each width
    "dropout": Range(0, 1, high_open=True, optional=True),
    "lr": POSITIVE, "backbone_lr": POSITIVE, "weight_decay": Range(0), "clip": POSITIVE,
    "batch_size": WHOLE_1, "max_epochs": Range(1, 100_000, whole=True), "patience": WHOLE_1,
    "epochs": Range(1, 100_000, whole=True, optional=True), "warmup_epochs": WHOLE_0,
    "members": Range(1, 100, whole=True, optional=True),
    "val_fraction": SHARE, "calibration_share": Range(0, 1, high_open=True),
    "mc_samples": WHOLE_1, "max_nan_restarts": WHOLE_0, "seed": Range(0, 2 ** 32 - 1, whole=True),
    "threads": WHOLE_0, "input_size": Range(16, 1024, whole=True), "train_from": Range(0, 20, whole=True),
    "calibrate": (True, False), "features": FEATURES, "mode": FINETUNE_MODES, "augment": AUGMENTS,
}


def check_setting(name: str, value, rule: Range | tuple | None = None) -> None:
    """Raise an :class:`InputError` naming ``name`` (``Owner.field`` or a parameter) when ``value`` breaks its rule.

    ``rule``: default the rule of the field ``name`` ends with (:data:`RULES`).
    """
    rule = RULES[name.rsplit(".", 1)[-1]] if rule is None else rule
    if isinstance(rule, tuple):
        if not (isinstance(value, type(rule[0])) and value in rule):  # calibrate=1 is not True
            raise InputError(f"{name}={value!r}: expected one of {', '.join(map(str, rule))}")
        return
    if value is None and rule.optional:
        return
    if not rule.allows(value):
        raise InputError(f"{name}={value!r}: must be {rule.text()}")


def check_members(members) -> None:
    """``members`` of :func:`~ulisse.plugins.heads.train_head`: None (the method's default) or 1 to 100."""
    check_setting("members", members)


def check_config(config) -> None:
    """Check every field of a config dataclass against :data:`RULES` (``hidden``: each width, in a list)."""
    owner = type(config).__name__
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "hidden":
            if (isinstance(value, (str, bytes)) or not hasattr(value, "__iter__")
                    or not all(WHOLE_1.allows(w) for w in value)):
                raise InputError(f"{owner}.hidden={value!r}: must be a list of layer widths, each {WHOLE_1.text()}")
        elif f.name in RULES:
            check_setting(f"{owner}.{f.name}", value)
