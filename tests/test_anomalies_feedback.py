"""Anomalies with marks: the plain list without marks, kinds rising and sinking with marks, the stored marks,
the artefact filter, and ``ulisse anomalies --positives/--negatives/--marks/--artefacts``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import ulisse
from ulisse.errors import QueryError
from ulisse.plugins.anomalies import rank_anomalies
from ulisse.plugins.anomalies.feedback import WEIGHTS, check_text, combine_scores, discover, marks_check, relevance_of


def kind_ids(index, kind):
    return index.metadata.loc[index.metadata["label"] == kind, "id"].astype(str).tolist()


def test_without_marks_it_is_the_plain_list(tiny_index):
    plain = rank_anomalies(tiny_index, top=6, k=5, progress=False)
    found = discover(tiny_index, top=6, k=5, use_marks=False, artefacts="show", progress=False)
    assert found.ids == plain.ids and np.allclose(found.table["score"], plain.table["score"])
    assert found.feedback["combine"] is None and not found.feedback["marks"]
    assert list(found.table.columns[:3]) == ["rank", "id", "score"] and "artefact_kind" in found.table


@pytest.mark.slow
def test_marks_make_the_relevant_kind_rise_and_leave_out_marked_objects(tiny_index):
    doubles, rounds = kind_ids(tiny_index, "double"), kind_ids(tiny_index, "round")
    pos, neg = doubles[:2], rounds[:3] + kind_ids(tiny_index, "streak")[:3]
    plain = discover(tiny_index, top=len(tiny_index), k=5, use_marks=False, artefacts="show", progress=False).table
    plain = plain[~plain["id"].isin(pos + neg)].head(6)
    for combine in ("product", "rank_product", "sum", "relevance"):
        found = discover(tiny_index, top=6, k=5, positives=pos, negatives=neg, use_marks=False, artefacts="show",
                         combine=combine, progress=False)
        assert not set(found.ids) & set(pos + neg), combine  # only unmarked objects
        labels = found.table["label"].tolist()
        if combine != "rank_product":  # there the anomaly ranking weighs as much, and doubles are the least anomalous
            assert labels.count("double") > (plain["label"] == "double").sum(), (combine, labels)  # the kind rises
        check = found.feedback.pop("check")
        weight = found.feedback.pop("morphology_weight")
        assert found.feedback == {"marks": False, "positives": 2, "negatives": 6, "combine": combine,
                                  "artefacts": "show", "left_out": 0, "marked_left_out": 8, "morphology": True,
                                  "where": None, "where_left_out": 0}
        assert weight == check["weight"] and weight in WEIGHTS and set(check["weights"]) == set(WEIGHTS)
        assert check["held_out"] == 2 and check["page"] == 6 and check["unmarked"] == len(tiny_index) - 8
        assert found.table["relevance"].between(0, 1).all()
    fixed = discover(tiny_index, top=6, k=5, positives=pos, negatives=neg, use_marks=False, artefacts="show",
                     morphology_weight=0.75, progress=False)
    assert fixed.feedback["morphology_weight"] == 0.75 and list(fixed.feedback["check"]["weights"]) == [0.75]


def test_not_relevant_marks_alone_sink_their_kind(tiny_index):
    plain = discover(tiny_index, top=8, k=5, use_marks=False, artefacts="show", progress=False).table
    kind = plain["label"].mode()[0]  # the kind that dominates the plain top 8
    others = [i for i in kind_ids(tiny_index, kind) if i not in set(plain["id"])]  # marked: not those shown
    found = discover(tiny_index, top=8, k=5, negatives=others, use_marks=False, artefacts="show", progress=False)
    assert len(others) >= 2 and (found.table["label"] == kind).sum() < (plain["label"] == kind).sum()
    assert found.feedback["positives"] == 0 and found.feedback["combine"] == "product"


def test_stored_marks_are_used_by_default_and_can_be_switched_off(tiny_index):
    from ulisse.plugins.feedback import clear_marks, mark

    doubles = kind_ids(tiny_index, "double")
    mark(tiny_index, doubles[:2], True)
    mark(tiny_index, kind_ids(tiny_index, "round")[:2], False)
    try:
        used = discover(tiny_index, top=5, k=5, artefacts="show", progress=False)
        assert used.feedback["marks"] and used.feedback["positives"] == 2 and used.feedback["negatives"] == 2
        assert not set(used.ids) & set(doubles[:2]) and used.table["relevance"].between(0, 1).all()
        off = discover(tiny_index, top=5, k=5, use_marks=False, artefacts="show", progress=False)
        assert not off.feedback["marks"] and off.ids == rank_anomalies(tiny_index, top=5, k=5, progress=False).ids
        given = discover(tiny_index, top=5, k=5, negatives=[doubles[0]], artefacts="show", progress=False)
        assert given.feedback["positives"] == 1 and given.feedback["negatives"] == 3  # a given id overrides its mark
    finally:
        clear_marks(tiny_index)


def test_where_limits_what_is_shown_and_the_base_rate(tiny_index, cli, tmp_path):
    """--where: only matching objects are shown (marks and scores still learned over the whole index), the class
    fractions' base rate is the matching objects', and the table says how many were left out; a bad filter fails
    before any work, leaving the index as it was."""
    from ulisse.testing import tree_digest

    rounds = kind_ids(tiny_index, "round")
    found = discover(tiny_index, top=5, k=5, use_marks=False, artefacts="show", progress=False,
                     where="label != 'round'", label="label")
    assert len(found) == 5 and not set(found.ids) & set(rounds)
    assert found.feedback["where_left_out"] >= 1 and "round" not in found.base_rate
    everything = discover(tiny_index, top=len(tiny_index), k=5, use_marks=False, artefacts="show", progress=False)
    assert found.ids == [i for i in everything.ids if i not in rounds][:5]  # the same order, the rounds taken out
    code, out, err = cli("anomalies", tiny_index.path, "--top", "4", "-k", "5", "--artefacts", "show", "--no-marks",
                         "--where", "label == 'double'", "--output", tmp_path / "a.xml")
    assert code == 0, err
    assert "not matching --where" in out
    from astropy.io.votable import parse_single_table

    vot = parse_single_table(str(tmp_path / "a.xml"))
    assert set(vot.to_table()["label"]) == {"double"}
    assert {p.name: p.value for p in vot.params}["where"] == "label == 'double'"  # the record says so
    before = tree_digest(tiny_index.path)
    for bad, needle in (("label ==", "where 'label ==': expected a value after label ==, got nothing"),
                        ("nope < 3", "no column 'nope'")):
        code, out, err = cli("anomalies", tiny_index.path, "--where", bad)
        assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert tree_digest(tiny_index.path) == before


def test_combine_scores_and_bad_options(tiny_index):
    a, r = np.array([1.0, 3.0, 2.0, 4.0]), np.array([0.9, 0.1, 0.5, 0.2])
    assert np.allclose(combine_scores(a, None), [0.25, 0.75, 0.5, 1.0])
    assert np.allclose(combine_scores(a, r, "product"), [0.225, 0.075, 0.25, 0.2])
    assert np.allclose(combine_scores(a, r, "rank_product"), [0.25, 0.1875, 0.375, 0.5])
    assert np.allclose(combine_scores(a, r, "sum"), [0.575, 0.425, 0.5, 0.6])
    assert np.allclose(combine_scores(a, r, "relevance"), r)
    with pytest.raises(QueryError, match="combine"):
        combine_scores(a, r, "max")
    with pytest.raises(QueryError, match="artefacts"):
        discover(tiny_index, artefacts="never", progress=False)
    with pytest.raises(QueryError, match="both relevant and not"):
        discover(tiny_index, positives=["obj001"], negatives=["obj001"], progress=False)
    with pytest.raises(QueryError):
        discover(tiny_index, positives=["no-such-object"], progress=False)
    for bad in (1.5, "half"):
        with pytest.raises(QueryError, match="must be a number between 0 and 1"):
            discover(tiny_index, positives=["obj001"], morphology_weight=bad, progress=False)
    with pytest.raises(QueryError, match="positives: a list of ids, not one string"):
        discover(tiny_index, positives="obj001", progress=False)
    with pytest.raises(QueryError, match="top='5': must be a whole number"):
        discover(tiny_index, top="5", progress=False)


def test_the_artefact_checks_of_the_candidates_show_progress(tiny_index):
    """Without stored flags each candidate's cutout is checked as the list is chosen: a progress bar counts the
    checks (the web UI's bar hears it while the command line is quiet)."""
    from ulisse.progress import watching

    seen = []
    with watching(seen.append):
        found = discover(tiny_index, top=3, k=5, use_marks=False, artefacts="only", progress=False)
    checks = [s for s in seen if s.desc == "artefact checks of the candidates"]
    assert len(found) == 3 and set(found.table["artefact_kind"]) != {""}
    assert checks and checks[-1].n == len(found) + found.feedback["left_out"]  # each candidate checked once


@pytest.fixture()
def index_with_an_edge(tmp_path, survey, tiny_encoder):
    """The survey plus one cutout whose left third holds no data (a chip edge), a strong outlier."""
    odd = tmp_path / "odd"
    odd.mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 120, (64, 64, 3)).astype(np.uint8)
    img[:, :22] = 0
    Image.fromarray(img).save(odd / "edge.png")
    index, _ = ulisse.build_index([survey / "cutouts", odd], tmp_path / "idx", encoder=tiny_encoder, device="cpu",
                                  progress=False)
    return index


@pytest.mark.slow
def test_artefacts_are_hidden_by_default_shown_or_alone_on_request(index_with_an_edge):
    index = index_with_an_edge
    shown = discover(index, top=len(index), k=5, use_marks=False, artefacts="show", progress=False)
    assert "edge" in shown.ids and shown.table.set_index("id").loc["edge", "artefact_kind"] == "edge"
    hidden = discover(index, top=len(index), k=5, use_marks=False, progress=False)
    assert "edge" not in hidden.ids and hidden.feedback["left_out"] >= 1
    only = discover(index, top=5, k=5, use_marks=False, artefacts="only", progress=False)
    assert "edge" in only.ids and (only.table["artefact_kind"] != "").all()
    index.derived("artefacts")  # stored now: the filter reads the stored flags
    assert discover(index, top=len(index), k=5, use_marks=False, progress=False).ids == hidden.ids


def test_cli_positives_negatives_marks_and_artefacts(tiny_index, cli, tmp_path):
    from ulisse.plugins.feedback import clear_marks, mark

    doubles, rounds = kind_ids(tiny_index, "double"), kind_ids(tiny_index, "round")
    (tmp_path / "pos.txt").write_text("\n".join(doubles[:2]) + "\n")
    (tmp_path / "neg.txt").write_text("\n".join(rounds[:3]) + "\n")
    code, out, err = cli("-q", "anomalies", tiny_index.path, "--top", "4", "-k", "4", "--positives",
                         tmp_path / "pos.txt", "--negatives", tmp_path / "neg.txt", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    ids = [r["id"] for r in data["rows"]]
    assert len(ids) == 4 and not set(ids) & set(doubles[:2] + rounds[:3])
    assert data["feedback"]["positives"] == 2 and data["feedback"]["negatives"] == 3
    assert data["feedback"]["artefacts"] == "hide" and data["query"]["marks"] == "false"
    assert data["feedback"]["check"]["held_out"] == 2 and data["feedback"]["check"]["page"] == 4
    code, out, err = cli("anomalies", tiny_index.path, "--top", "4", "-k", "4", "--positives", tmp_path / "pos.txt",
                         "--no-marks")
    assert code == 0 and "# held out in turn, " in out and "relevant marks came back within the next 4" in out
    mark(tiny_index, doubles[2:3], True)
    try:
        code, out, err = cli("anomalies", tiny_index.path, "--top", "3", "-k", "4")
        assert code == 0, err
        assert "# 1 relevant and 0 not relevant marks (with those stored with the index)" in out
        assert "held out in turn" not in out  # one relevant mark: nothing to hold out, and the table says so
        assert "# whether the marks teach is checked from two relevant marks on" in out
        assert doubles[2] not in out
        code, out, err = cli("anomalies", tiny_index.path, "--top", "3", "-k", "4", "--no-marks", "--artefacts",
                             "show")
        assert code == 0 and "# no marks; artefacts shown" in out
    finally:
        clear_marks(tiny_index)


def _clumps(tmp_path, n=400, dim=16):
    """A kind in a clump of its own ("clump"), one drawn exactly as the rest ("hidden"), and the rest ("plain")."""
    rng = np.random.default_rng(2)
    kinds = np.array(["clump"] * 12 + ["hidden"] * 12 + ["plain"] * (n - 24))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:12, :4] += 4.0
    import pandas as pd

    meta = pd.DataFrame({"id": [f"o{i:03d}" for i in range(n)], "label": kinds})
    index = ulisse.create_index(tmp_path / "idx", x, meta, ulisse.EncoderSpec("synthetic", "random", None, 32, dim=dim),
                                device="cpu")
    return index, x, kinds


def test_marks_check_tells_marks_that_teach_from_marks_that_do_not(tmp_path):
    index, x, kinds = _clumps(tmp_path)
    anomaly = np.ones(len(x))  # the relevance alone orders the objects
    neg = np.flatnonzero(kinds == "plain")[:15]
    taught = marks_check(anomaly, x, np.flatnonzero(kinds == "clump")[:6], neg, page=20)
    untaught = marks_check(anomaly, x, np.flatnonzero(kinds == "hidden")[:6], neg, page=20)
    assert taught["held_out"] == untaught["held_out"] == 6 and taught["unmarked"] == len(x) - 21
    assert taught["within"] >= 5 and taught["median_place"] <= 10  # the clump: the others find each one again
    assert untaught["within"] <= 2 and untaught["median_place"] > 50  # like everything else: nothing to learn
    assert taught["places"] == sorted(taught["places"])
    assert "of 6 relevant marks came back within the next 20" in check_text(taught) and check_text(None) == ""
    assert marks_check(anomaly, x, [0], neg) is None  # one relevant mark: nothing to hold out
    many = marks_check(anomaly, x, np.flatnonzero(kinds == "clump"), neg, limit=4)
    assert many["held_out"] == 4  # a sample of the relevant marks, not all 12


def test_a_held_out_mark_is_never_a_stand_in_negative(tmp_path, monkeypatch):
    import ulisse.plugins.anomalies.feedback as feedback

    index, x, kinds = _clumps(tmp_path)
    pos, row = np.flatnonzero(kinds == "clump")[:5], int(np.flatnonzero(kinds == "clump")[5])
    seen, original = [], feedback.relevance_scores

    def spy(vectors, positives, negatives=(), **options):  # the negatives the model is given, then the real model
        seen.append(set(np.asarray(negatives).tolist()))
        return original(vectors, positives, negatives, **options)

    monkeypatch.setattr(feedback, "relevance_scores", spy)
    relevance_of(x, pos, [], stand_in=len(x))  # every unmarked object a stand-in ...
    relevance_of(x, pos, [], stand_in=len(x), keep_out=[row])
    assert row in seen[0] and row not in seen[1]  # ... but the one kept out
    assert seen[1] == seen[0] - {row}
    check = marks_check(np.ones(len(x)), x, np.flatnonzero(kinds == "clump")[:3], [], limit=3)
    held = np.flatnonzero(kinds == "clump")[:3]
    assert check["held_out"] == 3 and all(int(h) not in negatives for h, negatives in zip(held, seen[2:]))


def test_the_shape_statistics_weigh_what_the_held_out_marks_say_they_are_worth(tmp_path):
    """The "hidden" kind is drawn like the rest in the vectors but stands out in the statistics: marking it, the
    statistics get the largest weight tried; marking the clump, which the vectors alone find, they get none."""
    index, x, kinds = _clumps(tmp_path)
    stats = np.random.default_rng(3).normal(size=(len(x), 6)).astype(np.float32)
    stats[kinds == "hidden", :2] += 4.0
    neg = np.flatnonzero(kinds == "plain")[:15]
    hidden = marks_check(None, x, np.flatnonzero(kinds == "hidden")[:6], neg, morphology=stats)
    clump = marks_check(None, x, np.flatnonzero(kinds == "clump")[:6], neg, morphology=stats)
    assert hidden["weight"] == max(WEIGHTS) and clump["weight"] == 0.0
    assert hidden["weights"][max(WEIGHTS)] < hidden["weights"][0.0]  # its marks come back higher with the statistics
    assert hidden["within"] >= 4 and "shape statistics weighted 0.5" in check_text(hidden)
    plain = marks_check(None, x, np.flatnonzero(kinds == "clump")[:6], neg)  # no statistics: nothing to choose
    assert plain["weight"] is None and plain["weights"] == {} and "weighted" not in check_text(plain)
