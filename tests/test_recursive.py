"""Recursive expansion: provenance, stopping rules, per-iteration fractions, the direct comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ulisse
from ulisse.plugins.recursive import expand


def test_expansion_provenance_and_no_duplicates(tiny_index):
    e = expand(tiny_index, "obj005", k=3, iterations=3)
    assert len(set(e.ids)) == len(e.ids) and "obj005" not in e.ids
    first = e.table[e.table["iteration"] == 1]
    assert list(first["id"]) == tiny_index.query("obj005", k=3).ids and set(first["found_by"]) == {"obj005"}
    for row in e.table.itertuples(index=False):  # each object was found by one found in the previous round
        if row.iteration > 1:
            parent = e.table.set_index("id").loc[row.found_by]
            assert parent["iteration"] == row.iteration - 1
            d = np.linalg.norm(tiny_index.vector(row.id) - tiny_index.vector(row.found_by))
            assert row.distance == pytest.approx(d, rel=1e-4)
    assert e.per_iteration["total"].iloc[-1] == len(e)


def test_budget_and_exhaustion(tiny_index):
    e = expand(tiny_index, "obj005", k=4, iterations=10, budget=7)
    assert len(e) == 7 and e.stopped == "budget"
    everything = expand(tiny_index, "obj005", k=23, iterations=10)
    assert len(everything) == 23 and everything.stopped == "exhausted"


def test_fractions_against_direct_at_equal_counts(tiny_index):
    e = expand(tiny_index, "obj005", k=3, iterations=2, label="label")
    n = len(e)
    assert len(e.direct) == n
    labels = tiny_index.metadata.set_index("id")["label"]
    for c in ("round", "streak", "double"):
        assert e.fractions.loc[c, "expansion"] == pytest.approx(np.mean([labels[i] == c for i in e.ids]))
        assert e.fractions.loc[c, "direct"] == pytest.approx(np.mean([labels[i] == c for i in e.direct["id"]]))
    assert {"new_round", "all_round"} <= set(e.per_iteration.columns)


def test_bad_arguments(tiny_index):
    with pytest.raises(ulisse.QueryError):
        expand(tiny_index, "obj005", k=0)
    with pytest.raises(ulisse.QueryError):
        expand(tiny_index, "obj005", iterations=0)
    with pytest.raises(ulisse.QueryError, match="unknown id"):
        expand(tiny_index, "nope")


def test_expand_verb(tiny_index, cli):
    code, out, err = cli("expand", tiny_index.path, "--id", "obj005", "-k", "3", "--iterations", "2", "--label",
                         "label", "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert d["found"] == len(d["rows"]) and set(d["fractions"]) == {"expansion", "direct", "base_rate"}
    assert {"iteration", "found_by", "distance"} <= set(d["rows"][0])
    code, out, _ = cli("expand", tiny_index.path, "--id", "obj005", "-k", "3", "--label", "label")
    assert "iteration 1:" in out and "expansion" in out
    code, _, err = cli("expand", tiny_index.path, "--id", "nope")
    assert code == 1 and "unknown id" in err
