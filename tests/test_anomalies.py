"""The anomalies plugin: scores against brute force, an obvious outlier found, stored scores reused, the CLI verb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from PIL import Image

import ulisse
from conftest import make_survey, tree_digest
from ulisse.plugins.anomalies import anomaly_scores, rank_anomalies
from ulisse.registry import derived_columns


def brute_force_distances(index):
    """Euclidean distances between all the index's vectors, self left out (inf), each row sorted."""
    v = index.vectors_of_rows(range(len(index))).astype(np.float64)
    d = np.sqrt(np.maximum(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1), 0.0))
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)


def outside_derived(path):
    return {name: h for name, h in tree_digest(path).items() if not name.startswith("derived")}


@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_scores_match_brute_force(tiny_index, k):
    d = brute_force_distances(tiny_index)
    kth = anomaly_scores(tiny_index, "kth", k=k, progress=False)
    mean = anomaly_scores(tiny_index, "mean", k=k, progress=False)
    assert list(kth["row"]) == list(range(len(tiny_index))) and list(kth["id"]) == tiny_index.ids
    np.testing.assert_allclose(kth["score"], d[:, k - 1], rtol=1e-5, atol=1e-5 * d[:, 0].max())
    np.testing.assert_allclose(mean["score"], d[:, :k].mean(axis=1), rtol=1e-5, atol=1e-5 * d[:, 0].max())


def test_an_obvious_outlier_ranks_first(tmp_path, survey, tiny_encoder):
    odd = tmp_path / "odd"
    odd.mkdir()
    y, x = np.mgrid[0:64, 0:64]
    checkerboard = (((x // 8 + y // 8) % 2) * 255).astype(np.uint8)
    Image.fromarray(np.stack([checkerboard, 255 - checkerboard, checkerboard], axis=-1)).save(odd / "checkerboard.png")
    index, _ = ulisse.build_index([survey / "cutouts", odd], tmp_path / "idx", encoder=tiny_encoder, device="cpu",
                                  progress=False)
    for method in ("kth", "mean"):
        ranking = rank_anomalies(index, top=3, method=method, k=5, progress=False)
        assert ranking.ids[0] == "checkerboard", ranking.table
        assert list(ranking.table["rank"]) == [1, 2, 3] and ranking.table["score"].is_monotonic_decreasing


def test_ranking_table_and_class_fractions(tiny_index):
    scores = anomaly_scores(tiny_index, k=5, progress=False)
    ranking = rank_anomalies(tiny_index, top=6, k=5, label="label", progress=False)
    best = scores.sort_values("score", ascending=False, kind="stable").head(6)
    assert ranking.ids == list(best["id"]) and np.allclose(ranking.table["score"], best["score"])
    assert list(ranking.table.columns[:3]) == ["rank", "id", "score"] and {"ra", "dec", "label"} <= set(ranking.table)
    assert (ranking.method, ranking.k, ranking.label) == ("kth", 5, "label")  # the default method
    assert ranking.base_rate == pytest.approx({"round": 1 / 3, "streak": 1 / 3, "double": 1 / 3})
    counts = ranking.table["label"].value_counts()
    assert ranking.precision == pytest.approx({c: counts.get(c, 0) / 6 for c in ("round", "streak", "double")})
    assert len(rank_anomalies(tiny_index, top=1000, k=5, progress=False)) == len(tiny_index)


def test_stored_scores_are_reused_and_recomputed_when_the_index_grows(tiny_index, tmp_path):
    before = outside_derived(tiny_index.path)
    first = anomaly_scores(tiny_index, "kth", k=4, progress=False)
    path = tiny_index.path / "derived" / "anomaly.parquet"
    assert path.is_file() and (tiny_index.path / "derived" / "anomaly.json").is_file()
    assert outside_derived(tiny_index.path) == before  # manifest, vectors and metadata untouched
    stamp = path.stat().st_mtime_ns, path.read_bytes()

    reopened = ulisse.open_index(tiny_index.path, device="cpu")
    again = anomaly_scores(reopened, "kth", k=4, progress=False)
    assert (path.stat().st_mtime_ns, path.read_bytes()) == stamp and again.equals(first)
    anomaly_scores(reopened, "kth", k=5, progress=False)  # other options: computed again
    assert json.loads((tiny_index.path / "derived" / "anomaly.json").read_text())["options"] == {"k": 5}

    more = tmp_path / "more"
    make_survey(more, n_per_kind=1, seed=3, prefix="add")
    reopened.add([more], progress=False)
    stored_before = path.read_bytes()
    assert not reopened.derived_is_fresh("anomaly")  # the add made them stale
    grown = anomaly_scores(reopened, "kth", k=4, progress=False)
    assert len(grown) == 27 and list(grown["id"][-3:]) == ["add000", "add001", "add002"]
    assert path.read_bytes() != stored_before
    np.testing.assert_allclose(grown["score"], brute_force_distances(reopened)[:, 3], rtol=1e-5, atol=1e-5)
    stored = json.loads((tiny_index.path / "derived" / "anomaly.json").read_text())
    assert stored["fingerprint"] == reopened.fingerprint and stored["count"] == 27


def test_after_an_add_the_knn_scores_are_updated_not_computed_again(tiny_index, tmp_path, monkeypatch, caplog, cli):
    import shutil

    from ulisse.index import compact_index
    from ulisse.plugins import anomalies

    anomaly_scores(tiny_index, "kth", k=2, progress=False)
    stored = json.loads((tiny_index.path / "derived" / "anomaly.json").read_text())
    assert stored["vectors"] == list(tiny_index.manifest.content)
    old_kth = tiny_index.derived("anomaly")["anomaly_kth"].to_numpy()

    more = tmp_path / "more"
    make_survey(more, n_per_kind=1, seed=3, prefix="add")
    # a twin of an old object comes nearer to it than its 2nd neighbour: that object's scores must change
    source = Path(tiny_index.metadata_column("source").iloc[5])
    shutil.copy(source, more / f"twin{source.suffix}")
    tiny_index.add([more], progress=False)
    n_old = 24
    assert len(tiny_index) == n_old + 4 and tiny_index.derived_pending("anomaly") == range(n_old, n_old + 4)
    assert tiny_index.derived_status("anomaly") == ("anomaly (k 2): 24 objects stored, 4 added since (the set "
                                                    "brought up to date on the next read)")

    computed = []
    monkeypatch.setattr(anomalies, "compute_knn_scores",
                        lambda *a, **kw: computed.append(1) or pytest.fail("computed again"))
    with caplog.at_level("INFO", logger="ulisse.plugins.anomalies"):
        grown = anomaly_scores(tiny_index, "kth", k=2, progress=False)
    monkeypatch.undo()
    assert not computed and tiny_index.derived_is_fresh("anomaly")
    searched = [r.getMessage() for r in caplog.records if "searched again" in r.getMessage()]
    assert searched and "4 objects" in searched[0]
    again = int(searched[0].split(": ")[1].split(" objects")[0])
    assert 4 < again < len(tiny_index)  # the new ones and the old ones they came near, not every object
    assert "derived    anomaly (k 2): 28 objects, up to date" in cli("index", "info", tiny_index.path)[1]
    d = brute_force_distances(tiny_index)
    np.testing.assert_allclose(grown["score"], d[:, 1], rtol=1e-5, atol=1e-5 * d[:, 0].max())
    assert grown["score"].iloc[5] < old_kth[5]  # the twin's original
    whole = anomalies.compute_knn_scores(tiny_index, k=2, progress=False)
    pd.testing.assert_frame_equal(tiny_index.derived("anomaly"), whole, rtol=1e-6)

    # an add of more than UPDATE_MAX_ADDED objects (or a quarter of the index) is computed again: as cheap, less memory
    monkeypatch.setattr(anomalies, "UPDATE_MAX_ADDED", 3)
    again_whole = []
    monkeypatch.setattr(anomalies, "compute_knn_scores", lambda *a, **kw: again_whole.append(1) or whole)
    assert anomalies.update_knn_scores(tiny_index, whole.iloc[:n_old], range(n_old, n_old + 4), k=2) is whole
    assert again_whole == [1]
    monkeypatch.undo()

    # a compaction keeps the content: the next add is an update again
    compact_index(tiny_index.path)
    reopened = ulisse.open_index(tiny_index.path, device="cpu")
    assert reopened.derived_is_fresh("anomaly")
    later = tmp_path / "later"
    make_survey(later, n_per_kind=1, seed=4, prefix="late")
    reopened.add([later], progress=False)
    assert reopened.derived_pending("anomaly") == range(n_old + 4, n_old + 7)
    # vectors stored that are not the index's first ones: everything again
    meta = reopened.derived_dir / "anomaly.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "vectors": ["0" * 64]}))
    assert reopened.derived_pending("anomaly") == range(n_old + 7)
    assert "anomaly (k 2): 28 objects stored, stale (every object computed again" in cli("index", "info",
                                                                                          reopened.path)[1]
    np.testing.assert_allclose(anomaly_scores(reopened, "kth", k=2, progress=False)["score"],
                               brute_force_distances(reopened)[:, 1], rtol=1e-5, atol=1e-5)


def test_a_damaged_store_is_recomputed_and_recompute_rewrites(tiny_index):
    anomaly_scores(tiny_index, "mean", k=3, progress=False)
    path = tiny_index.path / "derived" / "anomaly.parquet"
    path.write_bytes(b"not a parquet file")  # damaged: computed again, not an error
    table = anomaly_scores(tiny_index, "mean", k=3, progress=False)
    assert len(table) == 24 and path.read_bytes().startswith(b"PAR1")
    stamp = path.stat().st_mtime_ns
    anomaly_scores(tiny_index, "mean", k=3, progress=False, recompute=True)
    assert path.stat().st_mtime_ns != stamp


def test_inner_product_index_scores_follow_similarity(tmp_path, survey, tiny_encoder):
    from scipy.stats import spearmanr

    index, _ = ulisse.build_index([survey / "cutouts"], tmp_path / "ip", metric="IP", encoder=tiny_encoder,
                                  device="cpu", progress=False)
    v = index.vectors_of_rows(range(len(index))).astype(np.float64)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    fourth = -np.sort(-sim, axis=1)[:, 3]  # the 4th largest inner product
    scores = anomaly_scores(index, "kth", k=4, progress=False)["score"]
    # a distance whatever the metric: the less similar the 4th neighbour, the more anomalous
    assert spearmanr(scores, -fourth).statistic > 0.99


def test_iforest(tiny_index):
    pytest.importorskip("sklearn")
    scores = anomaly_scores(tiny_index, "iforest", progress=False)
    assert len(scores) == 24 and np.isfinite(scores["score"]).all()
    assert (tiny_index.path / "derived" / "anomaly_iforest.parquet").is_file()
    assert rank_anomalies(tiny_index, top=3, method="iforest", progress=False).k is None


def test_iforest_without_scikit_learn_is_a_one_line_error(tiny_index):
    try:
        import sklearn  # noqa: F401
    except ImportError:
        with pytest.raises(ulisse.InputError, match="pip install scikit-learn"):
            anomaly_scores(tiny_index, "iforest", progress=False)
    else:
        pytest.skip("scikit-learn is installed")


def test_scores_are_derived_columns_joined_into_queries_and_filters(tiny_index):
    providers = derived_columns()
    assert {"anomaly", "anomaly_iforest"} <= set(providers) and providers["anomaly"].options == {"k": 10}
    table = tiny_index.derived("anomaly", k=3)
    assert list(table.columns) == ["anomaly_kth", "anomaly_mean"] and len(table) == 24
    np.testing.assert_allclose(table["anomaly_mean"], brute_force_distances(tiny_index)[:, :3].mean(axis=1),
                               rtol=1e-5, atol=1e-5)
    result = tiny_index.query("obj001", k=5)
    assert {"anomaly_kth", "anomaly_mean"} <= set(result.table.columns)
    rows = [tiny_index.row_of(i) for i in result.table["id"]]
    np.testing.assert_allclose(result.table["anomaly_kth"], table["anomaly_kth"].to_numpy()[rows])
    cut = float(np.median(table["anomaly_kth"]))
    filtered = tiny_index.query("obj001", k=30, where=f"anomaly_kth > {cut}")
    assert len(filtered.table) and (filtered.table["anomaly_kth"] > cut).all()
    assert len(filtered.table) == int((table["anomaly_kth"].to_numpy() > cut).sum()) - (table["anomaly_kth"][1] > cut)


def test_cli_json_label_png_and_fits(tiny_index, cli, tmp_path):
    png, fits_out = tmp_path / "top.png", tmp_path / "top.fits"
    code, out, err = cli("-q", "anomalies", tiny_index.path, "--top", "5", "-k", "4", "--label", "label",
                         "--format", "json", "--png", png, "--output", fits_out, "--device", "cpu")
    assert code == 0, err
    result = json.loads(out)
    assert (result["method"], result["k"], result["label"]) == ("kth", 4, "label")
    rows = result["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and {"id", "score", "ra", "dec", "label", "r_mag"} <= set(rows[0])
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert set(result["precision"]) == set(result["base_rate"]) == {"round", "streak", "double"}
    assert sum(result["base_rate"].values()) == pytest.approx(1.0)
    assert sum(result["precision"].values()) == pytest.approx(1.0)
    t = Table.read(fits_out)
    assert list(t["id"]) == [r["id"] for r in rows] and np.allclose(t["score"], [r["score"] for r in rows])
    assert Image.open(png).format == "PNG" and Image.open(png).size[0] > 500

    code, out, err = cli("anomalies", tiny_index.path, "--top", "3", "-k", "4", "--label", "label")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["rank", "id", "score"] and lines[1].split()[0] == "1"
    assert "class fractions at the top (label; labelled objects only" in out and "33.3%" in out
    code, out, _ = cli("-q", "anomalies", tiny_index.path, "--top", "3", "--method", "mean", "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("rank,id,score") and len(out.splitlines()) == 4


@pytest.mark.parametrize("args,needle", [
    (("{idx}", "-k", "0"), "k=0: must be at least 1"),
    (("{idx}", "-k", "24"), "must be smaller than the number of objects in the index (24)"),
    (("{idx}", "--top", "0"), "top=0: must be at least 1"),
    (("{idx}", "--label", "colour"), "--label colour: no such column"),
    (("{idx}", "--output", "{tmp}/r.docx"), "unknown output format"),
    (("{tmp}/missing",), "no index here"),
])
def test_bad_input_one_line_error(tiny_index, cli, tmp_path, args, needle):
    digest = tree_digest(tiny_index.path)
    code, out, err = cli("anomalies", *[a.format(idx=tiny_index.path, tmp=tmp_path) for a in args])
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("ulisse: error:") and needle in lines[0], err
    assert "Traceback" not in err and out == ""
    assert tree_digest(tiny_index.path) == digest


def test_the_default_method_is_kth_and_kth_morphology_needs_cutouts(tmp_path, tiny_index):
    from ulisse.plugins.anomalies import default_method

    assert default_method() == "kth" and rank_anomalies(tiny_index, top=2, k=2, progress=False).method == "kth"
    x = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    meta = pd.DataFrame({"id": [f"v{i}" for i in range(30)]})
    bare = ulisse.create_index(tmp_path / "bare", x, meta, ulisse.EncoderSpec("synthetic", "random", None, 32, dim=8),
                               device="cpu")
    ranking = rank_anomalies(bare, top=3, k=4, progress=False)  # vectors without cutouts: kth alone
    assert ranking.method == "kth"
    with pytest.raises(ulisse.InputError, match="no cutouts"):
        rank_anomalies(bare, top=3, k=4, method="kth+morphology", progress=False)
