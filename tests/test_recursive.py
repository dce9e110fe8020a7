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
    from ulisse.plugins.prototype import query  # one base rate: the prototype left out, as a query leaves it out

    q = query(tiny_index, ["obj005"], k=3, label="label", n=[3])
    assert e.fractions["base_rate"].to_dict() == pytest.approx(q.fractions["base_rate"].to_dict())


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


def test_confirmed_expansion_follows_only_the_label(tiny_index):
    labels = tiny_index.metadata.set_index("id")["label"].astype(str)
    e = expand(tiny_index, "obj005", k=3, iterations=4, label="label", follow_label="label=round")
    assert list(e.table["confirmed"]) == [labels[i] == "round" for i in e.ids]
    for row in e.table.itertuples(index=False):  # every later object was found by the prototype or a round one
        if row.iteration > 1:
            assert labels[row.found_by] == "round"
    assert e.info["follow_label"] == "label=round" and len(e.direct) == len(e)
    same = expand(tiny_index, "obj005", k=3, iterations=4, label="label", follow_label=("label", "round"))
    assert same.ids == e.ids


def test_confirmed_expansion_by_ids(tiny_index):
    plain = expand(tiny_index, "obj005", k=3, iterations=3)
    everyone = expand(tiny_index, "obj005", k=3, iterations=3, follow_ids=tiny_index.ids)
    assert everyone.ids == plain.ids and everyone.table["confirmed"].all()  # all confirmed: the plain expansion
    first = plain.table[plain.table["iteration"] == 1]["id"].tolist()
    chosen = first[:1]
    e = expand(tiny_index, "obj005", k=3, iterations=3, follow_ids=chosen)
    assert set(e.table.loc[e.table["iteration"] == 2, "found_by"]) <= set(chosen)
    assert list(e.table["confirmed"]) == [i in chosen for i in e.ids]
    nobody = expand(tiny_index, "obj005", k=3, iterations=3, follow_ids=[])
    assert nobody.stopped == "unconfirmed" and set(nobody.table["iteration"]) == {1}


def test_confirmed_expansion_bad_arguments(tiny_index):
    with pytest.raises(ulisse.QueryError, match="COLUMN=VALUE"):
        expand(tiny_index, "obj005", follow_label="label")
    with pytest.raises(ulisse.QueryError, match="no such column"):
        expand(tiny_index, "obj005", follow_label="colour=red")
    with pytest.raises(ulisse.QueryError, match="not in the index"):
        expand(tiny_index, "obj005", follow_ids=["obj001", "nope"])


def test_expand_verb_follow(tiny_index, cli, tmp_path):
    plain = expand(tiny_index, "obj005", k=3, iterations=2)
    chosen = plain.ids[:2]
    listing, table = tmp_path / "ids.txt", tmp_path / "ids.csv"
    listing.write_text("# confirmed by eye\n" + "\n".join(chosen) + "\n\n")
    table.write_text("note,id\nA," + "\nB,".join(chosen) + "\n")
    outs = []
    for path in (listing, table):
        code, out, err = cli("expand", tiny_index.path, "--id", "obj005", "-k", "3", "--iterations", "2",
                             "--follow", path, "--label", "label", "--format", "json")
        assert code == 0, err
        outs.append(json.loads(out))
    assert outs[0]["rows"] == outs[1]["rows"] and outs[0]["follow"]["ids"] == 2
    assert {r["id"] for r in outs[0]["rows"] if r["confirmed"]} <= set(chosen)
    code, out, err = cli("expand", tiny_index.path, "--id", "obj005", "-k", "3", "--follow-label", "label=round",
                         "--label", "label")
    assert code == 0, err
    assert "confirmed expansion: followed" in out and "direct" in out
    for bad, message in ((["--follow", tmp_path / "missing.txt"], "missing.txt"),
                         (["--follow-label", "round"], "COLUMN=VALUE")):
        code, _, err = cli("expand", tiny_index.path, "--id", "obj005", *bad)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    code, _, err = cli("expand", tiny_index.path, "--id", "obj005", "--follow", empty)
    assert code != 0 and "no ids" in err


def test_expand_verb_writes_a_png_grid(tiny_index, cli, tmp_path):
    from PIL import Image

    png = tmp_path / "grid.png"
    code, out, err = cli("expand", tiny_index.path, "--id", "obj001", "-k", "3", "--iterations", "2", "--png", png)
    assert code == 0, err
    assert Image.open(png).format == "PNG" and Image.open(png).size[0] > 500
