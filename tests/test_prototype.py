"""One-shot prototype queries: several prototypes, class fractions, the query verb."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse.labels import class_fractions
from ulisse.plugins.prototype import Prototype, query
from ulisse.registry import query_strategies


def test_fractions_match_a_hand_count(tiny_index):
    r = query(tiny_index, "obj003", k=10, n=[3, 10, 50], label="label")
    labels = tiny_index.metadata.set_index("id")["label"]
    found = [labels[i] for i in r.ids]
    for n in (3, 10):
        for c in ("round", "streak", "double"):
            assert r.fractions.loc[c, n] == pytest.approx(found[:n].count(c) / n)
    assert r.fractions.loc["round", 50] == pytest.approx(found.count("round") / 10)  # n capped at what was found
    assert r.info["n_used"] == {"3": 3, "10": 10, "50": 10}
    assert r.fractions["base_rate"].to_dict() == pytest.approx({"round": 1 / 3, "streak": 1 / 3, "double": 1 / 3})


def test_class_fractions_helper():
    t, used = class_fractions(["a", "a", "b", "c"], pd.Series(["a", "b", "b", "c"]), [2, 4])
    assert t.loc["a", 2] == 1.0 and t.loc["b", 4] == 0.25 and t.loc["b", "base_rate"] == 0.5


def test_mean_and_union_of_several_prototypes(tiny_index):
    ids = ["obj001", "obj010"]
    mean = query(tiny_index, ids, k=5, combine="mean")
    v = tiny_index.vectors_of_rows([tiny_index.row_of(i) for i in ids]).mean(0)
    brute = np.linalg.norm(tiny_index.vectors_of_rows(range(len(tiny_index))) - v, axis=1)
    brute[[tiny_index.row_of(i) for i in ids]] = np.inf
    assert mean.ids == [tiny_index.ids[i] for i in np.argsort(brute)[:5]]
    union = query(tiny_index, ids, k=5, combine="union")
    singles = [set(tiny_index.query(i, k=5).ids) - set(ids) for i in ids]
    assert set(union.ids) == (singles[0] | singles[1]) - set(ids)
    assert (np.diff(union.table["distance"]) >= 0).all() and set(union.table["found_by"]) <= set(ids)
    assert not set(ids) & set(union.ids)


def test_prototype_kinds(tiny_index, survey):
    by_sky = query(tiny_index, (150.01, 2.005), k=3)
    assert by_sky.prototype_id == "obj001"
    by_path = query(tiny_index, Prototype("image", survey / "cutouts" / "obj001.png"), k=3)
    assert by_path.ids[0] == "obj001"
    by_vec = query(tiny_index, tiny_index.vector("obj001"), k=1)
    assert by_vec.ids == ["obj001"]
    with pytest.raises(ulisse.QueryError, match="no such column"):
        query(tiny_index, "obj001", label="nope")
    with pytest.raises(ulisse.QueryError, match="combine"):
        query(tiny_index, ["obj001", "obj002"], combine="max")


def test_real_features_retrieve_the_same_shape(tmp_path, survey, lite0_encoder):
    """With ImageNet features, streaks find streaks far above their base rate of 1/3."""
    idx, _ = ulisse.build_index([survey / "cutouts"], tmp_path / "l0", survey / "catalog.csv", encoder=lite0_encoder,
                                progress=False)
    streaks = idx.metadata["id"][idx.metadata["label"] == "streak"]
    fr = [query(idx, s, k=5, label="label").fractions.loc["streak", 5] for s in streaks]
    assert np.mean(fr) >= 0.7, fr


def test_query_verb_reports_fractions(tiny_index, cli):
    code, out, err = cli("query", tiny_index.path, "--id", "obj003", "-k", "12", "--n", "4,12", "--label", "label",
                         "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert set(d["fractions"]) == {"4", "12"} and d["base_rate"]["round"] == pytest.approx(1 / 3)
    assert len(d["rows"]) == 12 and d["label"] == "label"
    code, out, _ = cli("query", tiny_index.path, "--id", "obj003", "-k", "12", "--n", "4,12", "--label", "label")
    assert "class fractions (label)" in out and "base rate" in out
    code, out, err = cli("query", tiny_index.path, "--id", "obj003", "--id", "obj004", "--combine", "union", "-k", "3",
                         "--format", "csv")
    assert code == 0 and "found_by" in out.splitlines()[0]


@pytest.mark.parametrize("args,needle", [(("--n", "0"), "at least 1"), (("--n", "a,b"), "expected integers"),
                                         (("--label", "colour"), "no such column")])
def test_query_verb_bad_options(tiny_index, cli, args, needle):
    code, _, err = cli("query", tiny_index.path, "--id", "obj003", *args)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1


def test_strategies_are_registered():
    assert {"mean", "union", "recursive"} <= set(query_strategies())
