"""The Anomalies page's Look next: marks on its tiles, the batch kept while marking, "Next 20" learning from them."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from ulisse.testing import page_script  # noqa: E402


def run_page(index_dir, **state) -> AppTest:
    at = AppTest.from_file(str(page_script("Anomalies")), default_timeout=90)
    at.session_state["index_path"] = str(index_dir)
    for key, value in state.items():
        at.session_state[key] = value
    return ok(at.run())


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    return at


def next_ids(at: AppTest) -> list[str]:
    """The ids of the Look next tiles (captions ``next N · ID``)."""
    return [c.split(" · ")[1].split()[0] for im in at.image for c in im.captions if c.startswith("next ")]


@pytest.mark.slow
def test_look_next_learns_from_the_marks_made_on_its_tiles(tiny_index):
    from ulisse.plugins.feedback import marks

    at = run_page(tiny_index.path, **{"anomalies.artefacts": "show"})
    first = next_ids(at)
    assert len(first) == 20 and "no marks yet" in " ".join(c.value for c in at.caption)
    ok(at.button(key="next.yes.0").click().run())
    ok(at.button(key="next.no.1").click().run())
    ok(at.button(key="next.yes.2").click().run())
    table = marks(tiny_index).set_index("id")["relevant"]
    assert table.to_dict() == {first[0]: True, first[1]: False, first[2]: True}
    assert next_ids(at) == first  # the batch stays while it is being marked, and says the marks are taken
    assert "chosen before your 3 marks, which Next 20 uses: the most anomalous first" in " ".join(c.value for c in at.caption)
    ok(at.button(key="anomalies.next").click().run())
    again = next_ids(at)
    n = len(tiny_index)
    assert sorted(again) == sorted(set(tiny_index.ids) - set(first))  # neither marked nor shown before
    captions = " ".join(c.value for c in at.caption)
    assert "re-ranked by your 2 Relevant and 1 Not relevant marks (their vectors" in captions
    assert "3 marked, 17 shown before left out; 0 flagged artefacts passed over on the way" in captions
    assert "What your marks teach: held out in turn, " in captions and "of 2 relevant marks came back" in captions

    # another session (a reload, a second tab): chosen again with the marks as they are now, none of them shown
    other = run_page(tiny_index.path, **{"anomalies.artefacts": "show"})
    assert not set(next_ids(other)) & set(first[:3]) and len(next_ids(other)) == 20
    assert "re-ranked by your 2 Relevant and 1 Not relevant marks" in " ".join(c.value for c in other.caption)

    # not learning from the marks: the marked objects are still left out
    ok(at.sidebar.toggle(key="anomalies.marks").set_value(False).run())
    plain = next_ids(at)
    assert "your 3 marks not learned from" in " ".join(c.value for c in at.caption)
    assert len(plain) == 20 and not set(plain) & set(first[:3])
    ok(at.button(key="anomalies.next").click().run())
    assert len(next_ids(at)) == n - 3 - 20
    ok(at.button(key="anomalies.next").click().run())
    assert next_ids(at) == [] and "Every object has been shown or marked" in " ".join(i.value for i in at.info)
    ok(at.button(key="anomalies.again").click().run())
    assert len(next_ids(at)) == 20 and not set(next_ids(at)) & set(first[:3])


@pytest.mark.slow
def test_look_next_answers_while_the_shapes_are_measured_in_the_background(tiny_index, survey, tmp_path):
    """With marks and no stored shape statistics the page does not wait for them: Look next learns from the
    vectors, a progress bar follows the measurement, and the next batch learns from the shapes too."""
    import time

    from ulisse.plugins.feedback import mark
    from ulisse.plugins.morphology import SET

    mark(tiny_index, ["obj001", "obj002"], True)
    mark(tiny_index, ["obj003"], False)
    assert SET not in tiny_index.derived_names()
    at = run_page(tiny_index.path, **{"anomalies.artefacts": "show"})
    captions = " ".join(c.value for c in at.caption)
    assert "re-ranked by your 2 Relevant and 1 Not relevant marks (their vectors), score" in captions
    bars = [p.proto.text for p in at.get("progress")]
    assert any(t.startswith(f"Measuring the shapes of {len(tiny_index)} cutouts (statmorph)") for t in bars), bars
    first = next_ids(at)
    assert len(first) == 20
    deadline = time.monotonic() + 600
    while not (SET in tiny_index.derived_names() and tiny_index.derived_is_fresh(SET)):
        assert time.monotonic() < deadline, "the background measurement did not store the shapes"
        time.sleep(0.5)
    ok(at.run())
    assert next_ids(at) == first  # the batch keeps what it was chosen with
    assert not at.get("progress")
    ok(at.button(key="anomalies.next").click().run())
    captions = " ".join(c.value for c in at.caption)
    assert "re-ranked by your 2 Relevant and 1 Not relevant marks (their vectors and shapes" in captions \
        or "(their vectors; their shapes weighted 0)" in captions
    assert not set(next_ids(at)) & {"obj001", "obj002", "obj003"}

    # objects added: only their shapes are measured, the others' are kept
    import shutil

    from ulisse import open_index

    folder = tmp_path / "more"
    folder.mkdir()
    for i in range(3):
        shutil.copy(survey / "cutouts" / f"obj{i + 1:03d}.png", folder / f"new{i}.png")
    grown = open_index(tiny_index.path)
    grown.add([folder], progress=False)
    at = run_page(tiny_index.path, **{"anomalies.artefacts": "show"})
    bars = [p.proto.text for p in at.get("progress")]
    assert any(t.startswith(f"Measuring the shapes of 3 cutouts (statmorph); {len(tiny_index)} are stored")
               for t in bars), bars


@pytest.mark.slow
def test_an_index_too_large_to_measure_unasked_offers_the_measurement(tiny_index, monkeypatch):
    """More cutouts than AUTO_MAX: Look next says it learns from the vectors alone and what measuring the shapes
    would take; its button measures them in the background, and the next batch learns from them."""
    import time

    from ulisse.plugins import morphology
    from ulisse.plugins.feedback import mark

    monkeypatch.setattr(morphology, "AUTO_MAX", 5)
    mark(tiny_index, ["obj001", "obj002"], True)
    mark(tiny_index, ["obj003"], False)
    at = run_page(tiny_index.path, **{"anomalies.artefacts": "show"})
    captions = " ".join(c.value for c in at.caption)
    assert f"the shapes of {len(tiny_index)} cutouts are not measured (more than 5 are measured only when asked: " \
           "about " in captions and not at.get("progress")
    ok(at.button(key="anomalies.measure").click().run())
    bars = [p.proto.text for p in at.get("progress")]
    assert any(t.startswith(f"Measuring the shapes of {len(tiny_index)} cutouts (statmorph)") for t in bars), bars
    deadline = time.monotonic() + 600
    while not morphology.is_measured(tiny_index):
        assert time.monotonic() < deadline, "the background measurement did not store the shapes"
        time.sleep(0.5)
    ok(at.run())
    assert not at.get("progress") and "are not measured" not in " ".join(c.value for c in at.caption)
    ok(at.button(key="anomalies.next").click().run())
    captions = " ".join(c.value for c in at.caption)
    assert "(their vectors and shapes)" in captions or "(their vectors; their shapes weighted 0)" in captions


def test_the_url_keeps_the_ranking_page_and_whether_marks_teach(demo_index):
    """A reload or a shared link opens the ranking grid on the same page, with "Learn from my marks" as it was."""
    at = AppTest.from_file(str(page_script("Anomalies")), default_timeout=90)
    at.session_state["index_path"] = str(demo_index)
    at.session_state["anomalies.top"] = 60
    ok(at.run())
    ok(at.sidebar.toggle(key="anomalies.marks").set_value(False).run())
    ok(at.number_input(key="anomaly.page").set_value(2).run())
    url = dict(at.query_params)
    assert url["learn"] == "False" and url["ranking_page"] == "2", url
    again = AppTest.from_file(str(page_script("Anomalies")), default_timeout=90)
    again.session_state["index_path"] = str(demo_index)
    for key, value in url.items():
        again.query_params[key] = value
    ok(again.run())
    assert again.sidebar.toggle(key="anomalies.marks").value is False
    assert again.number_input(key="anomaly.page").value == 2
    shown = [c for im in again.image for c in im.captions if c.startswith("#")]
    assert shown and shown[0].startswith("#25 "), shown[:2]  # the grid's second page of 24


def ranking_ids(at: AppTest) -> list[str]:
    """The ids of the ranking's tiles (captions ``#N ID``)."""
    return [c.split()[1] for im in at.image for c in im.captions if c.startswith("#")]


def test_the_ranking_hides_artefacts_as_the_command_line_does(tiny_index):
    """The plain ranking below Look next is ``ulisse anomalies --no-marks --artefacts MODE``: the artefacts
    setting applies to it too (it used to show every flagged object, unmarked as such)."""
    from ulisse.plugins.anomalies.feedback import discover

    for mode in ("hide", "only"):
        at = run_page(tiny_index.path, **{"anomalies.artefacts": mode, "anomalies.top": 10})
        cli = discover(tiny_index, top=10, k=10, use_marks=False, artefacts=mode, progress=False).table
        assert ranking_ids(at) == list(cli["id"].astype(str)), mode
        if mode == "only":
            assert len(cli) and all(f" · {kind}" in " ".join(c for im in at.image for c in im.captions)
                                    for kind in set(cli["artefact_kind"]))
