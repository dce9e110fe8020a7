"""The Python API's common arguments are checked the same way everywhere: a string where a list of ids belongs,
a count that is not a whole number, a mark that is not True/False/None, several prototypes where one is taken,
a vector that is not finite. Each is one QueryError naming the argument (nothing is written)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse import QueryError
from ulisse.encoder import EncoderSpec
from ulisse.plugins import feedback
from ulisse.plugins.anomalies.feedback import discover
from ulisse.plugins.prototype import query
from ulisse.plugins.recursive import expand

DIM = 8


@pytest.fixture()
def index(tmp_path):
    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"id": [f"o{i:02d}" for i in range(40)], "label": ["a", "b"] * 20})
    return ulisse.create_index(tmp_path / "idx", rng.normal(size=(40, DIM)).astype(np.float32), meta,
                               EncoderSpec("synthetic", "random", None, dim=DIM), device="cpu")


@pytest.mark.parametrize("call, message", [
    (lambda ix: feedback.mark(ix, ["o01"], "no"), "relevant='no': must be True, False or None"),
    (lambda ix: feedback.mark(ix, ["o01"], 1), "relevant=1: must be True, False or None"),
    (lambda ix: feedback.mark(ix, "o01", True), "ids: a list of ids, not one string ('o01')"),
    (lambda ix: expand(ix, "o01", follow_ids="confirmed.txt"), "follow_ids: a list of ids, not one string"),
    (lambda ix: expand(ix, ["o01", "o02"], k=4), "expand takes one prototype"),
    (lambda ix: expand(ix, "o01", budget=1.5), "budget=1.5: must be a whole number"),
    (lambda ix: expand(ix, "o01", k="8"), "k='8': must be a whole number"),
    (lambda ix: query(ix, ["o01"], k=5, n="2,4"), "n='2,4': a list of whole numbers"),
    (lambda ix: query(ix, ["o01"], k=5, n=[2.5]), "n=2.5: must be a whole number"),
    (lambda ix: ix.query(["o01"], k=5), "id: one object id, not list"),
    (lambda ix: ix.query("o01", k=1.5), "k=1.5: must be a whole number"),
    (lambda ix: ix.query("o01", k=True), "k=True: must be a whole number"),
    (lambda ix: ix.query(vector=np.full(DIM, np.nan, np.float32), k=5), "8 values are not finite"),
    (lambda ix: ix.query(vector=np.r_[np.inf, np.zeros(DIM - 1)].astype(np.float32), k=5), "1 values are not finite"),
    (lambda ix: discover(ix, top=5, leave_out="o01"), "leave_out: a list of ids, not one string"),
    (lambda ix: discover(ix, top=2.0), "top=2.0: must be a whole number"),
    (lambda ix: feedback.rank(ix, "o01"), "positives: a list of ids, not one string"),
])
def test_a_bad_argument_is_one_query_error_naming_it(index, call, message):
    with pytest.raises(QueryError) as err:
        call(index)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert len(feedback.marks(index)) == 0


def test_a_filter_that_is_not_text_is_named(index):
    with pytest.raises(ulisse.InputError, match="where: a filter is text"):
        index.query("o01", k=3, where=5)


def test_the_good_forms_still_work(index):
    feedback.mark(index, ("o01", "o02"), True)
    feedback.mark(index, np.array(["o03"]), np.bool_(False))
    assert dict(zip(feedback.marks(index)["id"], feedback.marks(index)["relevant"])) == {"o01": True, "o02": True,
                                                                                          "o03": False}
    assert len(index.query("o05", k=np.int64(3)).table) == 3
    assert len(query(index, ["o05", "o06"], k=4, n=(2, 4)).table) == 4
    assert len(expand(index, "o05", k=3, iterations=2, follow_ids=["o01", "o02"]).table) > 0


def test_a_float_rgb_array_is_told_to_be_8_bit():
    from ulisse import CutoutError
    from ulisse.cutouts import image_to_rgb

    with pytest.raises(CutoutError, match="H x W x 3 image must be 8-bit RGB \\(uint8\\), not float64"):
        image_to_rgb(np.random.default_rng(0).random((64, 64, 3)) * 1000)
    assert image_to_rgb(np.random.default_rng(0).random((3, 64, 64))).shape == (64, 64, 3)  # a g,r,i cube
    assert image_to_rgb(np.zeros((64, 64, 3), np.uint8)).dtype == np.uint8
