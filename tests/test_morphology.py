"""statmorph's morphology as derived columns: what the statistics tell apart, the stored set, the one process
per core path, ``ulisse morphology``, the anomaly methods, and the relevance of anomalies with marks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import ulisse
from ulisse.plugins import morphology
from ulisse.plugins.anomalies.feedback import discover
from ulisse.plugins.morphology import stats as m


def galaxy(seed: int, tail: float = 0.0, neighbour: bool = False, size: int = 64) -> np.ndarray:
    """A smooth elliptical galaxy on a noisy sky; ``tail``: a curved one-sided tidal tail of that brightness;
    ``neighbour``: a separate small galaxy in a corner."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(float)
    c = size / 2
    img = 160 * np.exp(-np.hypot((x - c) / 1.3, y - c) / 3.0)
    if tail:
        for t in np.linspace(0, 1, 40):  # an arc leaving the galaxy towards one side
            ty, tx = c + 18 * t * np.sin(2.2 * t), c + 20 * t
            img += tail * np.exp(-((x - tx) ** 2 + (y - ty) ** 2) / 6.0)
    if neighbour:
        img += 120 * np.exp(-np.hypot(x - 10, y - 10) / 1.5)
    img += rng.normal(18, 4, img.shape)
    return np.clip(np.repeat(img[..., None], 3, axis=2), 0, 255).astype(np.uint8)


def test_a_tidal_tail_raises_asymmetry_and_an_unrelated_neighbour_is_masked():
    plain = m.measure(galaxy(0))
    tailed = m.measure(galaxy(0, tail=25))
    paired = m.measure(galaxy(0, neighbour=True))
    assert set(plain) == set(m.COLUMNS) and plain["morph_flag"] in (0, 1)
    assert plain["asymmetry"] < 0.1 < 0.2 < tailed["asymmetry"]
    assert tailed["outer_asymmetry"] > plain["outer_asymmetry"] + 0.2
    assert tailed["deviation"] > plain["deviation"] + 0.1
    # deblending gives the neighbour a segment of its own, masked: the galaxy keeps its shape
    assert paired["asymmetry"] < 0.1 and paired["deviation"] < 0.05


def test_empty_sky_and_bad_shapes_are_not_measured():
    sky = np.random.default_rng(1).normal(20, 4, (64, 64, 3)).clip(0, 255).astype(np.uint8)
    for image in (sky, np.zeros((4, 4, 3), np.uint8)):
        values = m.measure(image)
        assert values["morph_flag"] == m.NO_SOURCE and all(np.isnan(values[s]) for s in m.STATISTICS)


def test_standardised_is_robust_and_fills_gaps():
    table = pd.DataFrame({s: [1.0, 2.0, 3.0, np.nan, 1000.0, 2.0] for s in m.STATISTICS})
    Z = m.standardised(table)
    assert Z.shape == (6, len(m.STATISTICS)) and Z.dtype == np.float32
    assert np.all(Z[3] == 0) and np.all(Z[4] == 10.0) and np.allclose(Z[1], 0)


@pytest.fixture()
def shapes_index(tmp_path, tiny_encoder):
    """12 smooth galaxies, 3 with tidal tails and 3 with a neighbour, with a catalogue of their kinds."""
    folder = tmp_path / "cutouts"
    folder.mkdir()
    rows = []
    for i in range(18):
        kind = "tail" if i < 3 else "pair" if i < 6 else "plain"
        Image.fromarray(galaxy(i, tail=30 if kind == "tail" else 0, neighbour=kind == "pair")).save(
            folder / f"g{i:02d}.png")
        rows.append({"id": f"g{i:02d}", "kind": kind})
    pd.DataFrame(rows).to_csv(tmp_path / "cat.csv", index=False)
    index, _ = ulisse.build_index([folder], tmp_path / "idx", tmp_path / "cat.csv", encoder=tiny_encoder,
                                  device="cpu", progress=False)
    return index


def test_the_set_is_stored_and_usable_in_where(shapes_index):
    table = morphology.morphology_table(shapes_index)
    assert list(table.columns) == list(m.COLUMNS) and len(table) == len(shapes_index)
    assert "morphology" in shapes_index.derived_names() and shapes_index.derived_is_fresh("morphology")
    kinds = shapes_index.metadata["kind"].to_numpy()
    assert table["asymmetry"][kinds == "tail"].min() > table["asymmetry"][kinds != "tail"].max()
    hits = shapes_index.query("g06", k=17, where="asymmetry > 0.2")
    assert set(hits.table["id"]) == {"g00", "g01", "g02"}


def test_one_process_per_core_gives_the_same_table(shapes_index, monkeypatch):
    serial = m.compute_morphology(shapes_index, progress=False)
    monkeypatch.setattr(m, "PARALLEL_FROM", 1)
    monkeypatch.setattr(m, "workers", lambda n: 2)
    parallel = m.compute_morphology(shapes_index, progress=False, chunk=5)
    pd.testing.assert_frame_equal(serial, parallel)


def test_anomaly_methods_find_the_disturbed_galaxies(shapes_index):
    from ulisse.plugins.anomalies import rank_anomalies

    top = rank_anomalies(shapes_index, top=3, method="morphology", k=3, progress=False)
    assert set(top.ids) == {"g00", "g01", "g02"}
    both = rank_anomalies(shapes_index, top=len(shapes_index), method="kth+morphology", k=3, progress=False)
    assert both.table["score"].between(0, 1).all() and set(both.ids[:6]) >= {"g00", "g01", "g02"}


def test_marks_learn_from_the_morphology_when_it_is_there(shapes_index, monkeypatch):
    found = discover(shapes_index, top=3, k=3, positives=["g00"], negatives=["g10", "g11"], use_marks=False,
                     artefacts="show", progress=False)
    assert found.feedback["morphology"] is True
    assert found.method == "kth"  # the default score with marks: the relevance carries the morphology already
    assert discover(shapes_index, top=3, k=3, use_marks=False, progress=False).method == "kth"  # label-free
    assert set(found.ids[:2]) == {"g01", "g02"}  # the other tailed galaxies come first
    off = discover(shapes_index, top=3, k=3, positives=["g00"], use_marks=False, artefacts="show", progress=False,
                   morphology=False)
    assert off.feedback["morphology"] is False
    # too large to measure on the way, and not stored: the vectors alone
    shapes_index.derived_dir.joinpath("morphology.json").unlink()
    monkeypatch.setattr(morphology, "AUTO_MAX", 5)
    assert not morphology.use_morphology(shapes_index)
    assert discover(shapes_index, top=3, k=3, positives=["g00"], use_marks=False, artefacts="show",
                    progress=False).feedback["morphology"] is False


def test_cli_measures_sorts_and_exports(shapes_index, cli, tmp_path):
    out = tmp_path / "disturbed.csv"
    code, text, err = cli("morphology", shapes_index.path, "--sort", "asymmetry", "--top", "3",
                          "--output", out)
    assert code == 0, err
    assert "18 objects, 18 measured" in text and "highest asymmetry:" in text
    table = pd.read_csv(out, comment="#")
    assert set(table["id"]) == {"g00", "g01", "g02"} and "deviation" in table
    code, text, err = cli("anomalies", shapes_index.path, "--method", "kth+morphology", "-k", "3", "--top", "5",
                          "--format", "csv")
    assert code == 0, err


def test_cli_errors_are_one_line(shapes_index, cli, tmp_path):
    code, _, err = cli("morphology", shapes_index.path, "--top", "0", "--sort", "gini")
    assert code != 0 and "--top 0: must be at least 1" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("morphology", tmp_path / "nothing-here")
    assert code != 0 and len(err.strip().splitlines()) == 1


def test_workers_never_rerun_the_callers_main_module(shapes_index, tmp_path):
    """A Streamlit server's ``__main__`` is the web app: the workers must not run it again (a multiprocessing
    pool's would, and die: BrokenProcessPool on the Anomalies page)."""
    import subprocess
    import sys

    marker = tmp_path / "runs.txt"
    script = tmp_path / "app.py"
    script.write_text(f"""
from pathlib import Path
with open({str(marker)!r}, "a") as f:  # every run of this module's top level leaves a line
    f.write("run\\n")
if __name__ == "__main__":
    import ulisse
    from ulisse.plugins.morphology import stats
    stats.PARALLEL_FROM, stats.workers = 1, lambda n: 2
    table = stats.compute_morphology(ulisse.open_index({str(shapes_index.path)!r}), progress=False, chunk=5)
    print(len(table), int((table["morph_flag"] >= 0).sum()))
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["18", "18"]
    assert marker.read_text().splitlines() == ["run"]


def test_a_worker_that_dies_is_a_one_line_error(shapes_index, monkeypatch):
    import ulisse.errors

    monkeypatch.setattr(m, "PARALLEL_FROM", 1)
    monkeypatch.setattr(m, "workers", lambda n: 2)
    monkeypatch.setattr(m.sys, "executable", "/bin/false")  # a "Python" that exits at once
    with pytest.raises(ulisse.errors.UlisseError, match=r"morphology worker \d stopped \(exit 1\)"):
        m.compute_morphology(shapes_index, progress=False, chunk=5)


def test_after_an_add_only_the_new_objects_are_measured(tmp_path, tiny_encoder, monkeypatch):
    from ulisse.index import compact_index
    from ulisse.plugins.anomalies import artefacts as a

    first, later = tmp_path / "first", tmp_path / "later"
    for folder, seeds in ((first, range(0, 10)), (later, range(10, 14))):
        folder.mkdir()
        for i in seeds:
            Image.fromarray(galaxy(i, tail=30 if i in (2, 11) else 0)).save(folder / f"g{i:02d}.png")
    index, _ = ulisse.build_index([first], tmp_path / "idx", encoder=tiny_encoder, device="cpu", progress=False)
    morphology.morphology_table(index)
    index.derived("artefacts")
    assert len(index.derived_pending("morphology")) == 0

    measured, checked = [], []  # the rows each set computes, recorded on the way to the real measurement
    real_m, real_a = m.compute_morphology, a.compute_artefacts
    monkeypatch.setattr(m, "compute_morphology",
                        lambda index, rows=None, **kw: measured.append(rows) or real_m(index, rows=rows, **kw))
    monkeypatch.setattr(morphology, "compute_morphology", m.compute_morphology)
    monkeypatch.setattr(a, "compute_artefacts",
                        lambda index, rows=None, **kw: checked.append(rows) or real_a(index, rows=rows, **kw))

    index.add([later], progress=False)
    assert len(index) == 14 and not morphology.is_measured(index)
    assert index.derived_status("morphology") == ("morphology: 10 objects stored, 4 added since (those computed on "
                                                  "the next read)")
    assert index.derived_pending("morphology") == range(10, 14) == index.derived_pending("artefacts")
    monkeypatch.setattr(morphology, "AUTO_MAX", 5)
    assert morphology.use_morphology(index)  # 4 to measure, not 14
    assert len(index.derived_kept("artefacts")) == 10 and len(index.derived_kept("anomaly")) == 0
    grown = morphology.morphology_table(index)
    index.derived("artefacts")
    assert measured == [range(10, 14)] and checked == [range(10, 14)]
    assert morphology.is_measured(index) and index.derived_is_fresh("artefacts")
    whole = real_m(index, progress=False)
    pd.testing.assert_frame_equal(grown, whole)  # the same table as measuring everything again
    assert grown["asymmetry"].nlargest(2).index.tolist() in ([2, 11], [11, 2])

    # other settings of the measurement: everything again
    monkeypatch.setattr(morphology, "checks_state", lambda index=None: "other settings")
    assert index.derived_pending("morphology") == range(14)
    morphology.morphology_table(index)
    assert measured == [range(10, 14), range(14)] and morphology.is_measured(index)
    # stored rows that stand for other objects than the index's first ones: everything again
    meta = index.derived_dir / "morphology.json"
    info = json.loads(meta.read_text())
    meta.write_text(json.dumps({**info, "count": 10}))
    assert index.derived_pending("morphology") == range(14)
    meta.write_text(json.dumps({**info, "count": 10, "objects": index._objects_digest(10)}))
    assert index.derived_pending("morphology") == range(10, 14)
    # a compaction keeps every object and its row: nothing more to measure
    meta.write_text(json.dumps(info))
    assert morphology.is_measured(index)
    compact_index(index.path)
    assert morphology.is_measured(ulisse.open_index(index.path, device="cpu"))


def test_a_measurement_stopped_half_way_resumes_where_it_was(shapes_index, monkeypatch, caplog):
    import ulisse.derived

    monkeypatch.setattr(ulisse.derived, "CHECKPOINT_SECONDS", 0.0)  # store after every chunk
    monkeypatch.setattr(m, "CHUNK", 5)
    real, calls = m._measure_all, []

    def stops_at_the_third_chunk(images):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) would
        return real(images)

    monkeypatch.setattr(m, "_measure_all", stops_at_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        morphology.morphology_table(shapes_index)
    assert shapes_index.derived_info("morphology")["count"] == 10  # two chunks of five stored
    assert shapes_index.derived_pending("morphology") == range(10, 18)

    # a result table does not start a long computation: the objects not measured yet are blank there
    monkeypatch.setattr(ulisse.derived, "JOIN_COMPUTE_MAX", 5)
    joined = shapes_index.derived_table(["morphology"])
    assert len(joined) == 18 and joined["gini"].iloc[:10].notna().all() and joined["gini"].iloc[10:].isna().all()
    assert "8 of 18 objects are not computed yet and blank here" in caplog.text

    monkeypatch.setattr(m, "_measure_all", lambda images: calls.append(len(images)) or real(images))
    calls.clear()
    resumed = morphology.morphology_table(shapes_index)
    assert calls == [5, 3]  # only the eight not stored
    pd.testing.assert_frame_equal(resumed, m.compute_morphology(shapes_index, progress=False))
    assert morphology.is_measured(shapes_index)
    assert shapes_index.derived_table(["morphology"])["gini"].notna().all()


def test_objects_without_a_cutout_cost_nothing_and_the_progress_counts_cutouts(shapes_index, monkeypatch):
    """Vectors added without cutouts (a catalogue's, a worker's) between the cutouts: only the cutouts are measured,
    the bar and its estimate count them alone, and a checkpoint stores the rows in order."""
    import ulisse.derived
    import ulisse.progress

    rng = np.random.default_rng(0)
    for batch in range(2):  # 18 cutouts, 20 vectors, 18 cutouts again, 20 vectors
        shapes_index.add_vectors(rng.normal(size=(20, shapes_index.manifest.dim)).astype(np.float32),
                                 pd.DataFrame({"id": [f"v{batch}-{i}" for i in range(20)]}))
        if batch == 0:
            shapes_index.add_vectors(shapes_index.vectors_of_rows(range(18)),
                                     shapes_index.metadata.iloc[:18][["source"]].assign(
                                         id=[f"again{i}" for i in range(18)]))
    assert len(shapes_index) == 76 and morphology.cutouts_to_measure(shapes_index) == 36
    totals, real_bar = [], ulisse.progress.progress_bar
    monkeypatch.setattr(ulisse.progress, "progress_bar", lambda total=None, **kw: totals.append(total)
                        or real_bar(total=total, **kw))
    monkeypatch.setattr(ulisse.derived, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(m, "CHUNK", 10)
    stored = []
    real_store = shapes_index._store_derived
    monkeypatch.setattr(shapes_index, "_store_derived", lambda name, table, *a, **kw: stored.append(table.copy())
                        or real_store(name, table, *a, **kw))
    measured = []
    real = m._measure_all
    monkeypatch.setattr(m, "_measure_all", lambda images: measured.append(len(images)) or real(images))
    table = morphology.morphology_table(shapes_index)
    assert totals == [36] and sum(measured) == 36  # the bar counts the cutouts, the vectors cost nothing
    flags = table["morph_flag"].to_numpy()
    assert (flags[18:38] == m.NO_SOURCE).all() and (flags[56:] == m.NO_SOURCE).all()
    assert (flags[:18] >= 0).all() and (flags[38:56] >= 0).all()
    pd.testing.assert_frame_equal(table.iloc[38:56].reset_index(drop=True), table.iloc[:18].reset_index(drop=True))
    # each checkpoint is the rows in order up to the next cutout to measure: 10, 18 + 20 vectors + 2, ...
    assert [len(t) for t in stored[:-1]] == [10, 40, 50] and len(stored[-1]) == 76
    for part in stored[:-1]:
        pd.testing.assert_frame_equal(part, table.iloc[:len(part)], check_dtype=False)
    assert morphology.cutouts_to_measure(shapes_index) == 0

