"""Feature-activation browsing (plugins/features): stored top lists against an exhaustive recomputation,
overlays, object views, labelled rankings, the CLI verbs, bad input, and the Features page under AppTest.

Real torch/timm/FAISS on small data: timm's ``test_efficientnet`` with seeded random
weights at 96 px input (3 x 3 final maps), a few dozen 64 x 64 synthetic cutouts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse.plugins import features
from ulisse.plugins.features._store import lists_text
from ulisse.plugins.features._observer import cutout_of
from ulisse.registry import Config, EmbeddingBatch, embedding_observers
from ulisse.testing import make_survey
from txn_faults import Injected, fail_at


# -- fixtures and the exhaustive reference ------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    return ulisse.Encoder.load("test_efficientnet", weights="random", device="cpu", input_size=96)


@pytest.fixture(scope="module")
def more_cutouts(tmp_path_factory):
    """9 more labelled cutouts (ids add000...) for adds."""
    root = tmp_path_factory.mktemp("more")
    make_survey(root / "cutouts", n_per_kind=3, seed=7, prefix="add").to_csv(root / "catalog.csv", index=False)
    return root


@pytest.fixture()
def index(tmp_path, survey, encoder):
    idx, _ = ulisse.build_index([survey / "cutouts"], tmp_path / "idx", survey / "catalog.csv", encoder=encoder,
                                device="cpu", progress=False)
    return idx


@pytest.fixture(scope="module")
def browsed(tmp_path_factory, survey, encoder):
    """An index with its feature lists (one pass over the cutouts), shared by the tests that only read it."""
    idx, _ = ulisse.build_index([survey / "cutouts"], tmp_path_factory.mktemp("browsed") / "idx",
                                survey / "catalog.csv", encoder=encoder, device="cpu", progress=False)
    features.rebuild_lists(idx, progress=False)
    return idx


def planted_index(path, n=80, channels=64, planted=41, seed=3):
    """An index of vectors computed elsewhere, its lists from synthetic maps: feature ``planted`` lights up
    in the nucleus of the ``agn`` objects only."""
    rng = np.random.default_rng(seed)
    labels = np.array(["agn"] * 10 + ["galaxy"] * (n - 10))
    rng.shuffle(labels)
    spec = ulisse.EncoderSpec("test_efficientnet", "random(seed=0)", "random-test_efficientnet-seed0", dim=channels)
    meta = pd.DataFrame({"id": [f"s{i:03d}" for i in range(n)], "label": labels})
    idx = ulisse.create_index(path, rng.normal(size=(n, channels)).astype(np.float32), meta, spec, device="cpu")
    maps = rng.normal(0, 1, (n, channels, 7, 7)).astype(np.float32)
    maps[labels == "agn", planted, 2:5, 2:5] += 4.0
    observer = features.FeatureObserver(None)
    for start in range(0, n, 16):
        ids = list(meta["id"][start:start + 16])
        observer.observe(EmbeddingBatch(ids, maps[start:start + 16], np.zeros((len(ids), channels), np.float32)))
    observer.finish(idx)
    return idx, maps


def exhaustive(index, n):
    """Every object's maps, recomputed in one go: (top rows C x n, activations N x C, maps N x C x h x w)."""
    images = [cutout_of(index, i) for i in index.ids]
    maps = features.encoder_maps(index.encoder, images)
    act = features.activations(maps)
    rows = np.broadcast_to(np.arange(len(act)), act.T.shape)
    top = np.lexsort((rows, -act.T), axis=1)[:, :n]
    return top, act, maps


def assert_lists_exhaustive(index, top_n=features.DEFAULT_TOP):
    lists = features.stored_lists(index)
    top, act, maps = exhaustive(index, top_n)
    channels = act.shape[1]
    assert lists.rows.shape == (channels, min(top_n, len(index)))
    np.testing.assert_array_equal(lists.rows, top)
    np.testing.assert_allclose(lists.activation, np.take_along_axis(act.T, top, 1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lists.maps, maps.transpose(1, 0, 2, 3)[np.arange(channels)[:, None], top],
                               rtol=1e-4, atol=1e-6)
    assert lists.count == len(index)
    np.testing.assert_allclose(lists.mean, act.mean(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(lists.std, act.std(axis=0), rtol=1e-4, atol=1e-9)
    return lists


def feed(observer, index, ids, sizes):
    """Give ``observer`` the maps of ``ids`` in batches of uneven ``sizes`` (as the core's embedding would)."""
    start = 0
    for size in sizes:
        chunk = ids[start:start + size]
        maps = features.encoder_maps(index.encoder, [cutout_of(index, i) for i in chunk])
        observer.observe(EmbeddingBatch(chunk, maps, index.vectors_of_rows([index.row_of(i) for i in chunk])))
        start += size
    assert start == len(ids)


# -- the stored lists --------------------------------------------------------------------------

def test_observer_lists_equal_exhaustive_after_build_and_add(index, more_cutouts):
    provider = embedding_observers()["features"]
    observer = provider.create(None)  # a new build
    feed(observer, index, index.ids, [5, 7, 1, 11])
    observer.finish(index)
    assert_lists_exhaustive(index)

    observer = provider.create(index)  # created before the add, from the lists stored so far
    index.add([more_cutouts / "cutouts"], more_cutouts / "catalog.csv", progress=False)
    feed(observer, index, index.ids[24:], [4, 5])
    observer.finish(index)
    lists = assert_lists_exhaustive(index)
    assert lists.rows.max() >= 24  # some new object made a top list


def test_two_adds_at_once_keep_the_lists(index, more_cutouts, tmp_path):
    """Two writers add at once: the one that commits second started from lists without the other's objects; it
    merges its objects into the lists the other stored (exactly), instead of leaving them stale."""
    from ulisse.embedding import embed_files

    provider = embedding_observers()["features"]
    late = provider.create(index)  # writer B starts now, from the 24 objects' lists
    files = sorted((more_cutouts / "cutouts").glob("*.png"))
    (tmp_path / "a").mkdir()
    for f in files[:3]:
        shutil.copy(f, tmp_path / "a" / f.name)
    index.add([tmp_path / "a"], progress=False)  # writer A adds 3 and stores its lists (27 objects)
    assert features.stored_lists(index).count == 27 and len(files) > 4
    emb = embed_files(index.encoder, files[3:], progress=False)  # writer B's objects, committed after A's
    index.add_vectors(emb.vectors, pd.DataFrame({"id": emb.ids, "source": [str(f) for f in files[3:]]}))
    feed(late, index, emb.ids, [2, len(emb.ids) - 2])
    late.finish(index)
    assert_lists_exhaustive(index)  # the top lists and the statistics as if computed in one go
    assert "stale" not in lists_text(index)


@pytest.mark.slow
def test_build_and_add_keep_the_lists_through_the_core(tmp_path, survey, more_cutouts, encoder):
    idx, _ = ulisse.build_index([survey / "cutouts"], tmp_path / "idx", survey / "catalog.csv", encoder=encoder,
                                device="cpu", progress=False)
    assert_lists_exhaustive(idx)
    idx.add([more_cutouts / "cutouts"], more_cutouts / "catalog.csv", progress=False)
    assert_lists_exhaustive(idx)
    reopened = ulisse.open_index(idx.path, device="cpu")
    assert_lists_exhaustive(reopened)


def test_rebuild_equals_exhaustive_and_top_n_is_configurable(index):
    features.rebuild_lists(index, top_n=4, batch_size=3, progress=False)
    assert_lists_exhaustive(index, top_n=4)
    observer = embedding_observers(config=Config(options={"features.top_n": 3}))["features"].create(None)
    assert observer.acc.top_n == 3
    info = json.loads((Path(index.path) / "derived" / "features" / "info.json").read_text())
    assert info["top_n"] == 4 and info["count"] == 24 and info["fingerprint"] == index.fingerprint


def test_lists_go_stale_when_vectors_are_added_without_them(tmp_path):
    idx, maps = planted_index(tmp_path / "idx")
    top, act = features.top_objects(idx, 41), features.activations(maps)
    assert list(top["activation"]) == sorted(act[:, 41], reverse=True)[:9]
    assert lists_text(idx).startswith("64 features, top 9 objects each, over all")
    idx.add_vectors(idx.vectors_of_rows([0]), pd.DataFrame({"id": ["elsewhere"]}))
    with pytest.raises(ulisse.QueryError, match="stale.*ulisse features rebuild"):
        features.top_objects(idx, 41)
    assert lists_text(idx).startswith(f"stale: 64 features, top 9 objects each, computed over {len(idx) - 1} of "
                                      f"the {len(idx)} objects")


# -- display -------------------------------------------------------------------------------------

def test_overlays_have_the_cutouts_size(browsed):
    view = features.feature_view(browsed, 5)
    assert len(view.overlays) == len(view.table) == features.DEFAULT_TOP
    for image, over in zip(view.images, view.overlays):
        assert over.shape == image.shape and over.dtype == np.uint8
        assert not np.array_equal(over, image)
    assert list(view.table["rank"]) == list(range(1, 10))
    assert np.all(np.diff(view.table["activation"]) <= 0)
    odd = np.zeros((50, 70, 3), np.uint8)
    assert features.overlay(odd, np.arange(9.0).reshape(3, 3)).shape == (50, 70, 3)


def test_stored_maps_equal_maps_recomputed_from_the_cutouts(browsed):
    stored = features.feature_view(browsed, 11, n=4)
    again = features.feature_view(browsed, 11, n=4, recompute=True)
    np.testing.assert_allclose(stored.maps, again.maps, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(again.maps.mean(axis=(1, 2)), stored.table["activation"], rtol=1e-5)


def test_object_features_by_activation_and_by_z(browsed):
    by_act = features.object_features(browsed, "obj005", n=6)
    by_z = features.object_features(browsed, "obj005", n=6, by="z")
    _, act, _ = exhaustive(browsed, 1)
    mine = act[browsed.row_of("obj005")]
    assert list(by_act.table["feature"]) == list(np.argsort(-mine, kind="stable")[:6])
    lists = features.stored_lists(browsed)
    std = act.std(axis=0)
    z = (mine - act.mean(axis=0)) / np.sqrt(std ** 2 + np.median(std[std > 0]) ** 2)  # moderated (s0: median std)
    assert list(by_z.table["feature"]) == list(np.argsort(-z, kind="stable")[:6])
    np.testing.assert_allclose(by_z.table["z_score"], np.sort(z)[::-1][:6], rtol=1e-4)
    assert all(o.shape == by_act.image.shape for o in by_act.overlays) and len(lists.mean) == len(mine)


def test_labelled_ranking_picks_the_planted_feature(tmp_path):
    idx, _ = planted_index(tmp_path / "planted", planted=41)
    ranking = features.rank_features(idx, "label", "agn")
    assert ranking["feature"].iloc[0] == 41
    assert ranking["fraction"].iloc[0] == 1.0 and ranking["fraction"].iloc[1] < 1.0
    assert ranking["base_rate"].iloc[0] == pytest.approx(10 / 80)
    fractions = features.class_fractions_by_feature(idx, "label")
    assert fractions.loc[41, "agn"] == 1.0 and fractions.shape == (64, 2)


# -- CLI ----------------------------------------------------------------------------------------

def test_cli_verbs(cli, index, tmp_path):
    shutil.rmtree(Path(index.path) / "derived" / "features", ignore_errors=True)  # as an index built before them
    code, _, err = cli("features", "top", index.path, "--feature", "3")
    assert code == 1 and "no feature lists are stored" in err and "ulisse features rebuild" in err
    code, out, _ = cli("index", "info", index.path)
    assert f"features   none stored (run: ulisse features rebuild {index.path})" in out
    assert cli("features", "rebuild", index.path, "--top-n", "5")[0] == 0
    code, out, _ = cli("features", "top", index.path, "--feature", "3", "--n", "4", "--format", "csv",
                       "--out", tmp_path / "grid.png")
    assert code == 0
    import io

    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns[:3]) == ["rank", "id", "activation"] and len(table) == 4
    assert list(table["id"]) == list(features.top_objects(index, 3, 4)["id"])
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = cli("features", "object", index.path, "--id", "obj002", "--n", "3", "--format", "json",
                       "--out", tmp_path / "overlay.png")
    assert code == 0 and (tmp_path / "overlay.png").is_file()
    rows = json.loads(out)["rows"]
    assert [list(r)[:4] for r in rows][0] == ["rank", "feature", "activation", "z_score"] and len(rows) == 3
    code, out, _ = cli("features", "rank", index.path, "--label", "label", "--value", "streak", "--limit", "5")
    assert code == 0 and len(out.strip().splitlines()) == 6 and "fraction" in out
    # --output as every result verb: the table in any export format, with the record; z_score is no redshift
    from astropy.table import Table

    for verb, args in (("top", ("--feature", "3", "--n", "4")), ("object", ("--id", "obj002", "--n", "3")),
                       ("rank", ("--label", "label", "--value", "streak", "--limit", "5"))):
        code, out, err = cli("features", verb, index.path, *args, "--output", tmp_path / f"{verb}.xml")
        assert code == 0, err
        t = Table.read(tmp_path / f"{verb}.xml", format="votable")
        assert len(t) in (3, 4, 5) and "row" not in t.colnames, verb
        if "z_score" in t.colnames:
            assert "redshift" not in str(t["z_score"].description or "").lower()


@pytest.mark.parametrize("args, message", [
    (("top", "--feature", "abc"), "feature 'abc': not a feature number"),
    (("top", "--feature", "256"), "feature 256: out of range (this index has features 0 to 255)"),
    (("top", "--feature", "-1"), "feature -1: out of range"),
    (("top", "--feature", "1", "--n", "10"), "n=10: the index stores the top 9"),
    (("top", "--feature", "1", "--n", "0"), "--n 0: must be at least 1"),
    (("top", "--feature", "1", "--out", "/no/such/dir/grid.png"), "no such folder"),
    (("object", "--id", "nobody"), "id 'nobody': unknown id"),
    (("object", "--id", "obj001", "--n", "x"), "--n x: not a whole number"),
    (("rank", "--label", "nolabel", "--value", "agn"), "--label nolabel: no such column"),
    (("rank", "--label", "label", "--value", "agn"), "--value agn: not a class of label"),
])
def test_bad_input_is_one_line(cli, browsed, args, message):
    before = sorted(p.name for p in Path(browsed.path).rglob("*"))
    code, out, err = cli("features", args[0], browsed.path, *args[1:])
    assert code == 1 and out == ""
    assert err.startswith("ulisse: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in Path(browsed.path).rglob("*")) == before


def test_missing_cutout_is_named(browsed, tmp_path):
    row = browsed.row_of("obj003")
    source = browsed.metadata.loc[row, "source"]
    browsed.metadata.loc[row, "source"] = str(tmp_path / "gone.png")
    try:
        with pytest.raises(ulisse.InputError, match="obj003: its cutout cannot be read"):
            features.object_features(browsed, "obj003")
        with pytest.raises(ulisse.InputError, match="obj003: its cutout cannot be read"):
            features.rebuild_lists(browsed, progress=False)
    finally:
        browsed.metadata.loc[row, "source"] = source
    features.top_objects(browsed, 0)  # the stored lists are untouched


# -- UI -----------------------------------------------------------------------------------------

def test_features_page(browsed):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from ulisse.testing import page_script

    at = AppTest.from_file(str(page_script("Features")), default_timeout=60)
    at.session_state["index_path"] = str(browsed.path)
    at.query_params["feature"] = "7"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    top = features.top_objects(browsed, 7)
    captions = [c for im in at.image for c in im.captions]
    assert captions[0].startswith(f"#1 {top['id'].iloc[0]}") and len(captions) >= 9
    best = int(features.object_features(browsed, top["id"].iloc[0], n=1).table["feature"].iloc[0])
    at.button(key=f"features.show.{best}").click().run()
    assert at.session_state["features.feature"] == best
    assert [c for im in at.image for c in im.captions][0].startswith(
        f"#1 {features.top_objects(browsed, best)['id'].iloc[0]}")
    first = features.top_objects(browsed, best)["id"].iloc[0]
    at.button(key="ulisse-pick-features-0").click().run()  # a click on the first tile: it becomes the prototype
    assert at.session_state["ulisse.protos"] == [first] and not at.exception
    at.button(key="features.of.1").click().run()
    second = features.top_objects(browsed, best)["id"].iloc[1]
    assert at.session_state["features.id"] == second and not at.exception
    assert [c for im in at.image for c in im.captions][9] == second


def test_features_page_offers_to_compute_missing_lists(index):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from ulisse.testing import page_script

    shutil.rmtree(Path(index.path) / "derived" / "features")
    at = AppTest.from_file(str(page_script("Features")), default_timeout=60)
    at.session_state["index_path"] = str(index.path)
    at.run()
    assert not at.exception and "no feature lists are stored" in at.warning[0].value and not at.image
    at.button(key="features.rebuild").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert len([c for im in at.image for c in im.captions if c.startswith("#")]) == features.DEFAULT_TOP
    assert_lists_exhaustive(index)


# -- one transaction of the index behind the lists' write --------------------------------------------


@pytest.mark.parametrize("method, call", [("stage", 2), ("commit", 1)])
def test_a_failed_write_of_the_lists_leaves_the_previous_lists(tmp_path, monkeypatch, method, call):
    """Both files are written in one transaction: an error while staging ``info.json`` (``top.npz`` staged
    already) or at the commit leaves the previous files byte for byte, and nothing staged."""
    import dataclasses

    from ulisse.plugins.features._store import save_lists

    idx, _ = planted_index(tmp_path / "idx")
    folder = Path(idx.path) / "derived" / "features"
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    assert sorted(before) == ["info.json", "top.npz"]
    old = features.stored_lists(idx)
    changed = dataclasses.replace(old, activation=old.activation + 1.0)
    calls = fail_at(monkeypatch, method, call)
    with pytest.raises(Injected):  # a write that bypassed the transaction would not fail here
        save_lists(idx, changed, "test")
    assert len(calls) == call
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    np.testing.assert_array_equal(features.stored_lists(idx).activation, old.activation)
    monkeypatch.undo()
    save_lists(idx, changed, "test")
    np.testing.assert_array_equal(features.stored_lists(idx).activation, changed.activation)
    assert json.loads((folder / "info.json").read_text())["how"] == "test"


def test_lists_of_an_index_that_changed_meanwhile_are_not_stored(tmp_path):
    from ulisse.plugins.features._store import save_lists

    idx, _ = planted_index(tmp_path / "idx")
    old = features.stored_lists(idx)
    before = (Path(idx.path) / "derived" / "features" / "top.npz").read_bytes()
    other = ulisse.open_index(idx.path)  # another writer adds vectors after the lists were computed
    other.add_vectors(other.vectors_of_rows([0]), pd.DataFrame({"id": ["elsewhere"]}))
    with pytest.raises(ulisse.InputError, match="changed while its feature lists were computed"):
        save_lists(idx, old, "add")
    assert (Path(idx.path) / "derived" / "features" / "top.npz").read_bytes() == before
