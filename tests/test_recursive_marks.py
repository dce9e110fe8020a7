"""Confirmed expansion that uses the marks: following marked objects, stopping branches, relevance-guided rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ulisse
from marked_kinds import two_kinds_index
from ulisse.plugins.feedback import mark
from ulisse.plugins.recursive import expand


@pytest.fixture(scope="module")
def rare_index(tmp_path_factory):
    """200 objects, 30 of a rare kind set apart along 4 of 64 dimensions: kNN mixes the kinds, a classifier does not."""
    return two_kinds_index(tmp_path_factory.mktemp("rare") / "idx", seed=1, column="kind", kinds=("rare", "common"))


def test_follow_marks_is_following_the_ids_marked_relevant(tiny_index):
    first = expand(tiny_index, "obj005", k=3, iterations=1).ids
    mark(tiny_index, first[:2], relevant=True)
    mark(tiny_index, first[2:], relevant=False)
    try:
        by_marks = expand(tiny_index, "obj005", k=3, iterations=3, follow_marks=True)
        by_ids = expand(tiny_index, "obj005", k=3, iterations=3, follow_ids=first[:2])
    finally:
        mark(tiny_index, first, relevant=None)
    assert by_marks.ids == by_ids.ids
    assert list(by_marks.table["confirmed"]) == [i in first[:2] for i in by_marks.ids]
    assert by_marks.summary()["follow"]["marks"] is True
    with pytest.raises(ulisse.QueryError, match="no object is marked relevant"):  # marks removed: nobody to follow
        expand(tiny_index, "obj005", k=3, iterations=3, follow_marks=True)
    mark(tiny_index, first[2:], relevant=False)
    try:  # only "not relevant" marks: still nobody to follow
        with pytest.raises(ulisse.QueryError, match="no object is marked relevant"):
            expand(tiny_index, "obj005", k=3, iterations=3, follow_marks=True)
    finally:
        mark(tiny_index, first, relevant=None)


def test_confirmed_expansion_options_that_cannot_work_are_errors(tiny_index, cli):
    """A label value no object has (a typo), a share of confirmed neighbours with nothing confirmed, a column
    that is not there: each an error naming the option the user gave, not a silent plain expansion."""
    with pytest.raises(ulisse.QueryError, match=r"--follow-label label=rounds: no object has label 'rounds' "
                                                r"\(its values: .*'round'"):
        expand(tiny_index, "obj005", k=3, follow_label="label=rounds")
    with pytest.raises(ulisse.QueryError, match="min_confirmed=0.5: .*needs confirmations"):
        expand(tiny_index, "obj005", k=3, min_confirmed=0.5)
    code, _, err = cli("expand", tiny_index.path, "--id", "obj005", "-k", "3", "--follow-label", "nope=x")
    assert code == 1 and err.startswith("ulisse: error: --follow-label nope: no such column"), err
    code, _, err = cli("expand", tiny_index.path, "--id", "obj005", "-k", "3", "--min-confirmed", "0.5")
    assert code == 1 and "--follow-label, --follow, --follow-marks" in err and len(err.strip().splitlines()) == 1


def test_a_branch_stops_where_its_neighbours_stop_being_confirmed(tiny_index):
    labels = tiny_index.metadata.set_index("id")["label"].astype(str)
    first = expand(tiny_index, "obj005", k=4, iterations=1).ids
    fraction = np.mean([labels[i] == "round" for i in first])
    assert 0 < fraction < 1  # the fixture's prototype has a mixed neighbourhood
    plain = expand(tiny_index, "obj005", k=4, iterations=3, follow_label="label=round")
    at = expand(tiny_index, "obj005", k=4, iterations=3, follow_label="label=round", min_confirmed=fraction)
    for it in (1, 2):  # exactly the threshold: the prototype's branch lives (later ones may stop)
        assert at.table.loc[at.table["iteration"] == it, "id"].tolist() == \
            plain.table.loc[plain.table["iteration"] == it, "id"].tolist()
    assert len(at) <= len(plain)
    above = expand(tiny_index, "obj005", k=4, iterations=3, follow_label="label=round", min_confirmed=fraction + 0.01)
    assert above.stopped == "unconfirmed" and above.ids == first  # just above: nothing is followed
    with pytest.raises(ulisse.QueryError, match="between 0 and 1"):
        expand(tiny_index, "obj005", follow_label="label=round", min_confirmed=1.5)


def test_relevance_guided_expansion_finds_more_of_the_confirmed_kind(rare_index):
    kinds = rare_index.metadata.set_index("id")["kind"].astype(str)
    prototype = "o003"
    plain = expand(rare_index, prototype, k=8, iterations=5, budget=40, label="kind", follow_label="kind=rare")
    guided = expand(rare_index, prototype, k=8, iterations=20, budget=40, label="kind", follow_label="kind=rare",
                    relevance=True, show=5)
    assert len(guided) == 40 and guided.stopped == "budget"
    assert (guided.per_iteration["new"] <= 5).all()
    rare = guided.fractions.loc["rare", "expansion"]
    assert rare == pytest.approx(np.mean([kinds[i] == "rare" for i in guided.ids]))
    assert rare >= 0.6 and rare >= plain.fractions.loc["rare", "expansion"] + 0.1  # 0.68 against 0.50 when written
    assert rare >= 1.5 * guided.fractions.loc["rare", "direct"]  # direct kNN: 0.30
    scores = guided.table["relevance"]
    assert ((scores >= 0) & (scores <= 1)).all()
    for _, group in guided.table[guided.table["iteration"] > 1].groupby("iteration"):  # most relevant first
        assert list(group["relevance"]) == sorted(group["relevance"], reverse=True)
    found = set(guided.ids)  # every object was found by the prototype or by a confirmed object found before it
    assert all(r.found_by == prototype or (r.found_by in found and kinds[r.found_by] == "rare")
               for r in guided.table.itertuples(index=False))


def test_relevance_needs_confirmations(rare_index):
    with pytest.raises(ulisse.QueryError, match="needs confirmations"):
        expand(rare_index, "o003", relevance=True)
    with pytest.raises(ulisse.QueryError, match="show"):
        expand(rare_index, "o003", follow_label="kind=rare", relevance=True, show=0)


def test_expand_verb_follows_marks_with_relevance(rare_index, cli):
    first = expand(rare_index, "o003", k=8, iterations=1).ids
    kinds = rare_index.metadata.set_index("id")["kind"].astype(str)
    mark(rare_index, [i for i in first if kinds[i] == "rare"], relevant=True)
    mark(rare_index, [i for i in first if kinds[i] != "rare"], relevant=False)
    try:
        code, out, err = cli("expand", rare_index.path, "--id", "o003", "-k", "8", "--iterations", "4",
                             "--follow-marks", "--relevance", "--show", "4", "--min-confirmed", "0.1",
                             "--format", "json")
        assert code == 0, err
        d = json.loads(out)
        assert d["follow"]["marks"] is True and d["follow"]["relevance"] is True
        assert d["follow"]["min_confirmed"] == pytest.approx(0.1)
        assert {r["id"] for r in d["rows"] if r["confirmed"]} <= {i for i in first if kinds[i] == "rare"}
        code, out, err = cli("expand", rare_index.path, "--id", "o003", "-k", "8", "--follow-marks", "--relevance")
        assert code == 0, err and "most relevant per iteration" in out
    finally:
        mark(rare_index, first, relevant=None)
    code, _, err = cli("expand", rare_index.path, "--id", "o003", "--relevance")
    assert code != 0 and "needs confirmations" in err


@pytest.mark.slow  # an AppTest run of the page: about 3 s
def test_expand_page_follows_the_marks(tiny_index):
    """The Expand page: "Objects marked relevant" follows only the marked objects, most relevant first on request."""
    from streamlit.testing.v1 import AppTest

    from ulisse.testing import page_script

    first = expand(tiny_index, "obj005", k=3, iterations=1).ids
    mark(tiny_index, first[:1], relevant=True)
    mark(tiny_index, first[1:], relevant=False)
    try:
        at = AppTest.from_file(str(page_script("Expand")), default_timeout=90)
        at.session_state["index_path"] = str(tiny_index.path)
        at.session_state["ulisse.protos"] = ["obj005"]
        at.run()
        at.sidebar.slider(key="expand.k").set_value(3)
        at.sidebar.radio(key="expand.follow").set_value("Objects marked relevant")
        at.run()
        at.sidebar.checkbox(key="expand.relevance").check()  # enabled once the marks are followed
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Followed (marked relevant)"] == "1"
        want = expand(tiny_index, "obj005", k=3, iterations=3, follow_marks=True, relevance=True)
        assert metrics["Objects found"] == str(len(want))
    finally:
        mark(tiny_index, first, relevant=None)
