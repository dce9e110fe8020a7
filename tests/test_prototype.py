"""One-shot prototype queries: several prototypes, class fractions, the query verb."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse.labels import class_fractions, fractions_text
from ulisse.plugins.prototype import Prototype, query
from ulisse.registry import query_strategies


def test_fractions_match_a_hand_count(tiny_index):
    r = query(tiny_index, "obj003", k=10, n=[3, 10], label="label")
    labels = tiny_index.metadata.set_index("id")["label"]
    found = [labels[i] for i in r.ids]
    for n in (3, 10):
        for c in ("round", "streak", "double"):
            assert r.fractions.loc[c, n] == pytest.approx(found[:n].count(c) / n)
    assert r.info["n_used"] == {"3": {"objects": 3, "labelled": 3}, "10": {"objects": 10, "labelled": 10}}
    # the prototype (a round one) is left out of the base rate
    assert r.fractions["base_rate"].to_dict() == pytest.approx({"round": 7 / 23, "streak": 8 / 23, "double": 8 / 23})
    with pytest.raises(ulisse.QueryError, match="larger than k"):
        query(tiny_index, "obj003", k=10, n=[3, 50], label="label")


def test_unlabelled_objects_count_in_neither_fractions_nor_base_rate():
    found = ["a", "(none)", "a", "b", "(none)"]
    everyone = pd.Series(["a", "b", "(none)", "(none)", "(none)", "b"])
    t, used = class_fractions(found, everyone, [5])
    assert t.loc["a", 5] == pytest.approx(2 / 3) and t.loc["b", 5] == pytest.approx(1 / 3)
    assert t["base_rate"].to_dict() == pytest.approx({"a": 1 / 3, "b": 2 / 3})
    assert used == {"5": {"objects": 5, "labelled": 3}} and "(none)" not in t.index


def test_fractions_text_shows_a_small_lift_instead_of_rounding_it_to_zero():
    found = ["rare"] * 19 + ["common"]
    everyone = pd.Series(["rare"] * 20 + ["common"] * 480)
    t, used = class_fractions(found, everyone, [20])
    lines = {line.split()[0]: line for line in fractions_text(t, "kind", used, excluded=None).splitlines() if line}
    assert "95.0% x23.8" in lines["rare"]  # 0.95 / 0.04
    assert "5.0% x0.052" in lines["common"]  # 0.05 / 0.96, not "x0.1" or "x0.0"


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
    assert set(d["fractions"]) == {"4", "12"} and d["base_rate"]["round"] == pytest.approx(7 / 23)
    assert len(d["rows"]) == 12 and d["label"] == "label"
    code, out, _ = cli("query", tiny_index.path, "--id", "obj003", "-k", "12", "--n", "4,12", "--label", "label")
    assert "class fractions (label" in out and "base rate" in out and "%" in out
    assert out.startswith(f"# {tiny_index.path}: 12 nearest neighbour(s) of obj003")
    code, out, err = cli("query", tiny_index.path, "--id", "obj003", "--id", "obj004", "--combine", "union", "-k", "3",
                         "--format", "csv")
    assert code == 0 and "found_by" in out.splitlines()[0]


@pytest.mark.parametrize("args,needle", [(("--n", "0"), "at least 1"), (("--n", "a,b"), "expected integers"),
                                         (("--label", "colour"), "no such column"),
                                         (("--n", "89", "-k", "16"), "larger than -k 16"),
                                         (("--ra", "510.1", "--dec", "2"), "--ra 510.1: out of range"),
                                         (("--ra", "150", "--dec", "-95"), "--dec -95: out of range"),
                                         (("--where", "label = "), "expected a value"),
                                         (("--combine", "max"), "no such query strategy")])
def test_query_verb_bad_options(tiny_index, cli, args, needle):
    code, _, err = cli("query", tiny_index.path, "--id", "obj003", *args)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1


def test_strategies_are_registered():
    assert {"mean", "union", "recursive"} <= set(query_strategies())


def test_positions_print_six_decimals_and_position_queries_name_their_match(tiny_index, cli):
    code, out, err = cli("query", tiny_index.path, "--ra", "150.0101", "--dec", "2.005", "-k", "3")
    assert code == 0, err
    assert "sky position matched obj001 at ra=150.010000 dec=2.005000, 0.36 arcsec away" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(" ") or line[:1].isdigit()]
    assert any("150.020000" in r or "150.030000" in r for r in rows) or "150.0" in out
    assert all(len(tok.split(".")[1]) == 6 for tok in out.split() if tok.startswith("150.") and "=" not in tok)


def test_fewer_neighbours_than_k_get_a_note(tiny_index, cli):
    code, out, err = cli("query", tiny_index.path, "--id", "obj003", "-k", "1000")
    assert code == 0 and "only 23 neighbour(s) found for k=1000" in err


def test_a_prototype_cut_with_another_geometry_warns(tiny_index, survey, tmp_path, caplog):
    import logging
    import shutil


    manifest = dict(tiny_index.manifest)
    geometry = {"size": 64, "scale": 0.4, "orientation": "north-up-east-left", "projection": "TAN",
                "bands": ["g", "r", "i"], "colour": "lupton"}
    tiny_index.manifest = {**manifest, "cutout_geometry": geometry}
    folder = tmp_path / "proto"
    folder.mkdir()
    shutil.copy(survey / "cutouts" / "obj001.png", folder / "p.png")
    (folder / "cutout_geometry.json").write_text(json.dumps({**geometry, "scale": 0.396}))
    with caplog.at_level(logging.WARNING):
        query(tiny_index, Prototype("image", folder / "p.png"), k=2)
    assert any("geometry differs" in r.getMessage() and "scale 0.396 vs 0.4" in r.getMessage() for r in caplog.records)
    (folder / "cutout_geometry.json").write_text(json.dumps(geometry))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        query(tiny_index, Prototype("image", folder / "p.png"), k=2)
    assert not [r for r in caplog.records if "geometry" in r.getMessage()]


def test_index_query_is_the_one_query_api(tiny_index):
    """Index.query (one prototype by keyword) is a thin call into ulisse.prototypes.query: same answer, same checks."""
    from ulisse.prototypes import query as core_query

    assert query is core_query  # the plugin re-exports the core's query; it does not keep its own
    for kwargs, proto in (({"id": "obj003"}, "obj003"), ({"ra": 150.01, "dec": 2.005}, (150.01, 2.005))):
        a, b = tiny_index.query(**kwargs, k=5, where="ra >= 0"), core_query(tiny_index, proto, k=5, where="ra >= 0")
        assert a.ids == b.ids and a.prototype_id == b.prototype_id and a.info.get("matched") == b.info.get("matched")
    for call in (lambda: tiny_index.query("obj003", k=0), lambda: core_query(tiny_index, "obj003", k=0)):
        with pytest.raises(ulisse.QueryError, match="k=0: must be at least 1"):
            call()
    with pytest.raises(ulisse.QueryError, match="give both ra and dec"):
        tiny_index.query(ra=150.0)


def test_sky_match_reports_the_separation_it_matched_by(tiny_index):
    from ulisse.catalog import separation_arcsec
    from ulisse.prototypes import match_position

    row, sep = match_position(tiny_index, 150.01, 2.005 + 1e-4, 3.0)
    pos = tiny_index.metadata_rows([row]).iloc[0]
    assert tiny_index.id_of(row) == "obj001" and row == tiny_index.nearest_object(150.01, 2.005 + 1e-4)
    assert sep == pytest.approx(float(separation_arcsec(150.01, 2.005 + 1e-4, [pos["ra"]], [pos["dec"]])[0]))
    r = query(tiny_index, (150.01, 2.005 + 1e-4), k=3)
    assert r.info["matched"] == [{"id": "obj001", "separation_arcsec": pytest.approx(sep)}]


def test_a_column_of_measured_numbers_is_not_taken_for_classes(demo_index):
    """--label ellipticity (a float per object) would print a class table of one object per "class": refused,
    pointing at --where."""
    index = ulisse.open_index(demo_index)
    first = index.ids[0]
    with pytest.raises(ulisse.QueryError, match=r"--label ellipticity: \d+ different numbers, not classes"):
        query(index, first, k=5, label="ellipticity")
