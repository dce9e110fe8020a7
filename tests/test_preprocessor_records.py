"""What an encoder spec records of a preprocessing step: the step's own canonical ``arg`` when it has one, and,
when an index's recorded step cannot be loaded any more, an error that says it is the index's step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import ulisse
from ulisse import Encoder


class _Shift:
    """A throwaway step: pixel + n (mod 256), its argument canonicalised ("+3" and "3" are one step)."""

    def __init__(self, arg: str):
        if not arg.strip().lstrip("+").isdigit():
            err = ulisse.InputError(f"{arg}: not a whole number")
            err.index_hint = "give the index a number"
            raise err
        self.n = int(arg)
        self.arg = str(self.n)
        self.fingerprint = f"shift-{self.n}"

    def __call__(self, images):
        return [(np.asarray(im).astype(int) + self.n) % 256 for im in images]


class _Plugin:
    @ulisse.hookimpl
    def register_preprocessors(self, config):
        from ulisse.registry import Preprocessor

        return [Preprocessor("shift", "pixel + n", load=_Shift)]


@pytest.fixture()
def plugin():
    from ulisse.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    p = _Plugin()
    pm.register(p, name="shift-test-plugin")
    try:
        yield p
    finally:
        pm.unregister(p)


def load(preprocess):
    return Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="torch", preprocess=preprocess)


def test_the_spec_records_the_steps_canonical_argument(plugin):
    spec = load([("shift", " +3")]).spec
    assert spec.preprocessors == ({"name": "shift", "arg": "3", "fingerprint": "shift-3"},)
    assert Encoder.from_spec(spec, device="cpu", runtime="torch").spec.preprocessors == spec.preprocessors


def test_a_recorded_step_that_cannot_load_says_it_is_the_indexs(plugin):
    with pytest.raises(ulisse.InputError, match="^x: not a whole number$"):  # given now: the plugin's own words
        load([("shift", "x")])
    spec = load([("shift", "3")]).spec
    broken = replace(spec, preprocessors=({"name": "shift", "arg": "x", "fingerprint": "shift-3"},))
    with pytest.raises(ulisse.EncoderMismatch) as caught:
        Encoder.from_spec(broken, device="cpu", runtime="torch")
    assert str(caught.value) == ("the index's recorded preprocessing step shift cannot be loaded: x: not a whole "
                                 "number; give the index a number")
    moved = replace(spec, preprocessors=({"name": "shift", "arg": "4", "fingerprint": "shift-3"},))
    with pytest.raises(ulisse.EncoderMismatch, match="fingerprint changed"):  # the check stays
        Encoder.from_spec(moved, device="cpu", runtime="torch")
