"""Regression heads: real torch training on small data, the NaN guard, storage, derived columns, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse.plugins.heads import (TrainConfig, columns_of, head_names, head_report, list_heads, load_head,
                                  predict_head, regression_metrics, train_head)
from ulisse.plugins.heads.models import VAR_FLOOR, train_member
from txn_faults import Injected, fail_at

DIM = 8
FAST = TrainConfig(max_epochs=40, patience=10, hidden=(64, 32), batch_size=64, lr=3e-3)


def _spec():
    return ulisse.EncoderSpec("synthetic", "random", None, 64, dim=DIM)


def _table(n, rng, start=0):
    z = rng.normal(size=(n, DIM))
    noise = np.where(z[:, 2] > 0, 0.6, 0.05)  # heteroscedastic: the aleatoric part has something to learn
    y = 0.5 * z[:, 0] + 0.8 * z[:, 1] + noise * rng.normal(size=n)
    x = (z * np.linspace(0.5, 4, DIM) + 10).astype(np.float32)  # vectors are not standardised, as a CNN's are not
    meta = pd.DataFrame({"id": [f"o{start + i:04d}" for i in range(n)], "y": y, "word": ["a"] * n,
                         "y_sparse": np.where(np.arange(n) % 4 == 0, y, np.nan)})
    return x, meta


@pytest.fixture()
def vec_index(tmp_path):
    """A real index (FAISS, parquet, manifest) of 240 synthetic vectors with a regression target ``y``."""
    x, meta = _table(240, np.random.default_rng(1))
    return ulisse.create_index(tmp_path / "idx", x, meta, _spec(), device="cpu")


@pytest.mark.slow
def test_ensemble_learns_the_target_with_both_error_parts(vec_index):
    config = dataclasses.replace(FAST, batch_size=16, max_epochs=60, patience=15)  # enough steps to learn the noise
    trained = train_head(vec_index, "y", "yhat", members=2, config=config)
    val = trained.metrics["validation"]
    y = vec_index.metadata["y"].to_numpy()
    assert val["rmse"] < 0.6 * y.std()  # learns (a constant guess scores y.std())
    assert trained.config["nan_events"] == 0 and trained.config["members"] == 2
    cols = vec_index.derived("heads")
    assert list(cols.columns) == columns_of("yhat") and len(cols) == len(vec_index)
    assert np.isfinite(cols.to_numpy()).all()
    np.testing.assert_allclose(cols["yhat_std"] ** 2, cols["yhat_std_aleatoric"] ** 2 + cols["yhat_std_epistemic"] ** 2,
                               rtol=1e-5)
    assert (cols["yhat_std_epistemic"] > 0).all()  # members disagree somewhere on every object
    # heteroscedastic noise: the predicted aleatoric std is larger where the noise is
    noisy = vec_index.vectors_of_rows(range(len(vec_index)))[:, 2] > 10
    alea = cols["yhat_std_aleatoric"].to_numpy()
    assert alea[noisy].mean() > 1.5 * alea[~noisy].mean()


def test_mc_dropout_and_ridge(vec_index):
    mc = train_head(vec_index, "y", "y_mc", method="mc-dropout", config=FAST, update_columns=False)
    ridge = train_head(vec_index, "y", "y_ridge", method="ridge")
    cols = vec_index.derived("heads")
    assert {"y_mc", "y_ridge_std"} <= set(cols.columns)
    assert (cols["y_mc_std_epistemic"] > 0).all()
    assert (cols["y_ridge_std_epistemic"] == 0).all() and cols["y_ridge_std"].nunique() == 1
    assert ridge.metrics["validation"]["rmse"] < vec_index.metadata["y"].std()
    assert mc.config["members"] == 1
    # MC dropout predictions are deterministic (seeded), so stored columns are reproducible
    again = load_head(vec_index, "y_mc").predict_vectors(vec_index.vectors_of_rows(range(10)))
    np.testing.assert_allclose(again["y_mc"], cols["y_mc"][:10], rtol=1e-6)


@pytest.mark.parametrize("case", ["outliers", "constant", "tiny_variance"])
def test_no_nan_on_hard_data(tmp_path, case):
    rng = np.random.default_rng(3)
    x, meta = _table(120, rng)
    if case == "outliers":
        meta.loc[::17, "y"] = 1e7 * rng.choice([-1, 1], size=len(meta.loc[::17]))
    elif case == "constant":
        meta["y"] = 42.0
    else:  # noiseless: the best variance is as small as the floor allows
        meta["y"] = x[:, 0] * 3 + x[:, 1]
    index = ulisse.create_index(tmp_path / case, x, meta, _spec(), device="cpu")
    config = TrainConfig(max_epochs=40, patience=20, hidden=(32,), batch_size=16, lr=3e-3)
    trained = train_head(index, "y", "h", members=2, config=config)
    cols = index.derived("heads")
    assert np.isfinite(cols.to_numpy()).all(), case
    assert (cols["h_std"] > 0).all()
    assert all(np.isfinite(m["val_nll"]) for m in trained.metrics["members"])
    if case == "constant":
        np.testing.assert_allclose(cols["h"], 42.0, atol=0.05)
    if case == "tiny_variance":
        # the variance is bounded below: sigma >= sqrt(floor) in standardised units, and it gets close to it
        floor = np.sqrt(VAR_FLOOR) * trained.config["y_scale"]
        assert (cols["h_std_aleatoric"] >= floor * 0.999).all()


def test_guard_recovers_from_non_finite_steps():
    """A batch with an infinite target makes the loss non-finite: the guard goes back and carries on."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, DIM)).astype(np.float32)
    y = (x[:, 0] + 0.1 * rng.normal(size=96)).astype(np.float32)
    y_bad = y.copy()
    y_bad[5] = np.inf
    fit = train_member(x[:80], y_bad[:80], x[80:], y[80:], TrainConfig(max_epochs=30, hidden=(32,), batch_size=16,
                                                                       max_nan_restarts=3), seed=0, dropout=0.1)
    assert fit.nan_events == 4  # every epoch meets the bad batch; stops after the 3 tolerated restarts
    assert all(bool(np.isfinite(v.numpy()).all()) for v in fit.state.values())
    assert np.isfinite(fit.best_val_nll)


def test_round_trip_of_a_saved_head(vec_index):
    train_head(vec_index, "y", "yhat", members=2, config=FAST)
    stored = vec_index.derived("heads")
    folder = vec_index.derived_dir / "heads" / "yhat"
    assert sorted(p.name for p in folder.iterdir()) == ["head.json", "head.safetensors"]
    cfg = json.loads((folder / "head.json").read_text())
    assert cfg["target"] == "y" and cfg["method"] == "ensemble" and cfg["encoder"]["model_name"] == "synthetic"
    assert len(cfg["training_ids"]) + len(cfg["validation_ids"]) == 240
    assert not set(cfg["training_ids"]) & set(cfg["validation_ids"])
    assert {"rmse", "nll", "coverage_68", "coverage_95"} <= set(cfg["metrics"]["validation"])
    # the stored validation metrics are those of the stored predictions on the calibration objects
    # (the validation rows that early stopping did not use)
    val = predict_head(vec_index, "yhat", ids=cfg["calibration_ids"])
    truth = vec_index.metadata.set_index("id").loc[cfg["calibration_ids"], "y"].to_numpy()
    recomputed = regression_metrics(truth, val["yhat"], val["yhat_std"])
    for key in ("rmse", "nll", "coverage_68"):
        assert recomputed[key] == pytest.approx(cfg["metrics"]["validation"][key], rel=1e-4, abs=1e-6)
    reopened = ulisse.open_index(vec_index.path, device="cpu")
    head = load_head(reopened, "yhat")
    again = head.predict_vectors(reopened.vectors_of_rows(range(len(reopened))))
    pd.testing.assert_frame_equal(again, stored, check_exact=False, rtol=1e-6)
    assert head_names(reopened) == ["yhat"]
    # a damaged weights file is refused, not half-used
    (folder / "head.safetensors").write_bytes(b"garbage")
    with pytest.raises(ulisse.InputError, match="does not match"):
        load_head(reopened, "yhat")


def test_derived_columns_stale_after_add_and_recomputed(vec_index, monkeypatch):
    from ulisse.plugins.heads import core

    train_head(vec_index, "y", "yhat", members=2, config=FAST)
    before = vec_index.derived("heads")
    assert vec_index.derived_is_fresh("heads")
    x, meta = _table(12, np.random.default_rng(9), start=5000)
    vec_index.add_vectors(x, meta)
    assert not vec_index.derived_is_fresh("heads") and vec_index.derived_pending("heads") == range(240, 252)
    predicted, real = [], core.compute_columns
    monkeypatch.setattr(core, "compute_columns", lambda index, rows=None, **kw: predicted.append(rows)
                        or real(index, rows=rows, **kw))
    after = vec_index.derived("heads")
    assert predicted == [range(240, 252)]  # only the objects added are predicted
    assert len(after) == 252 and np.isfinite(after.to_numpy()).all()
    pd.testing.assert_frame_equal(after.iloc[:240].reset_index(drop=True), before, check_exact=False, rtol=1e-6)
    pd.testing.assert_frame_equal(after, real(vec_index), check_exact=False, rtol=1e-6)  # as predicting them all
    assert vec_index.derived_is_fresh("heads")
    # joined into query results, and usable in a --where filter
    result = vec_index.query("o5003", k=5)
    assert "yhat_std" in result.table.columns and result.table["yhat"].notna().all()
    from ulisse.filters import parse_where

    table = vec_index.derived_table()
    mask = parse_where("yhat > 0.5 and yhat_std < 10").mask(table)
    assert 0 < mask.sum() < len(table)
    # predictions of chosen ids
    some = predict_head(vec_index, "yhat", ids=["o5000", "o0001"])
    assert list(some["id"]) == ["o5000", "o0001"] and list(some.columns)[1:] == columns_of("yhat")


def test_train_ids_and_report(vec_index, tmp_path):
    ids = list(vec_index.metadata["id"][:150])
    trained = train_head(vec_index, "y_sparse", "ys", members=2, train_ids=ids, config=FAST)
    # rows without a value are left out: 1 in 4 of the first 150 have one
    assert trained.metrics["n_train"] + trained.metrics["n_validation"] == 38
    rep = head_report(vec_index, "ys", "y", out=tmp_path / "rep")
    assert rep.metrics["n"] == 240 - 38
    assert rep.note == "objects never used in training; y is not the head's target (y_sparse)"
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"report.json", "predictions.csv", "pit.png",
                                                                "predicted_vs_true.png"}
    assert ((rep.table["pit"] >= 0) & (rep.table["pit"] <= 1)).all()
    listed = list_heads(vec_index)
    assert list(listed["name"]) == ["ys"] and listed["n_train"][0] == trained.metrics["n_train"]


def test_metrics_known_answers():
    rng = np.random.default_rng(0)
    n = 20000
    mean = rng.normal(size=n)
    truth = mean + rng.normal(size=n) * 2.0
    good = regression_metrics(truth, mean, np.full(n, 2.0))
    assert abs(good["coverage_68"] - 0.68) < 0.015 and abs(good["coverage_95"] - 0.95) < 0.01
    assert abs(good["rmse"] - 2.0) < 0.05
    assert abs(good["nll"] - (0.5 * np.log(2 * np.pi * 4) + 0.5)) < 0.02
    narrow = regression_metrics(truth, mean, np.full(n, 1.0))
    assert narrow["coverage_68"] < 0.45 and narrow["nll"] > good["nll"]


# -- CLI ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_verbs(vec_index, cli, tmp_path):
    d = str(vec_index.path)
    code, out, err = cli("-q", "head", "train", d, "--target", "y", "--name", "yhat", "--members", "2", "--epochs", "40")
    assert code == 0, err
    assert "head yhat: ensemble on y" in out and "non-finite steps" in out
    code, out, err = cli("-q", "head", "train", d, "--target", "y", "--name", "yr", "--method", "ridge")
    assert code == 0, err
    code, out, err = cli("head", "list", d)
    assert code == 0 and "yhat" in out and "ridge" in out
    ids = tmp_path / "ids.txt"
    ids.write_text("id\no0003\no0007\n")
    code, out, err = cli("head", "predict", d, "--name", "yhat", "--ids", ids, "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["id"] for r in rows] == ["o0003", "o0007"] and set(rows[0]) == {"id", *columns_of("yhat")}
    code, out, err = cli("head", "predict", d, "--name", "yhat", "--format", "csv")
    assert code == 0 and len(out.strip().splitlines()) == 241
    code, out, err = cli("head", "predict", d, "--name", "yr", "--format", "votable")
    assert code == 0 and "<VOTABLE" in out and "yr_std_epistemic" in out
    code, out, err = cli("head", "report", d, "--name", "yhat", "--truth", "y", "--out", tmp_path / "rep")
    assert code == 0, err
    assert "coverage 68%" in out and (tmp_path / "rep" / "pit.png").is_file()
    code, out, err = cli("head", "remove", d, "--name", "yr")
    assert code == 0
    assert head_names(ulisse.open_index(d, device="cpu")) == ["yhat"]
    assert "yr" not in ulisse.open_index(d, device="cpu").derived("heads").columns


@pytest.mark.parametrize("args, needle", [
    (("train", "{d}", "--target", "nope", "--name", "h"), "column 'nope': not in the index's catalogue"),
    (("train", "{d}", "--target", "word", "--name", "h"), "column 'word': not numeric"),
    (("train", "{d}", "--target", "y", "--name", "9bad"), "head name '9bad'"),
    (("train", "{d}", "--target", "y", "--name", "y"), "is in the index's catalogue already"),
    (("train", "{d}", "--target", "y", "--name", "h", "--members", "0"), "'--members': 0 is not in the range"),
    (("train", "{d}", "--target", "y", "--name", "h", "--train-ids", "{missing}"), "no such file"),
    (("train", "{d}", "--target", "y", "--name", "h", "--train-ids", "{unknown}"), "id 'zzz' is not in the index"),
    (("train", "{d}", "--target", "y", "--name", "h", "--train-ids", "{few}"), "at least 8 needed"),
    (("train", "{nowhere}", "--target", "y", "--name", "h"), "nowhere"),
    (("predict", "{d}", "--name", "ghost"), "head 'ghost': not trained"),
    (("report", "{d}", "--name", "ghost", "--truth", "y", "--out", "{tmp}"), "head 'ghost': not trained"),
])
def test_cli_bad_input_one_line(vec_index, cli, tmp_path, args, needle):
    from conftest import tree_digest

    (tmp_path / "unknown.txt").write_text("o0001\nzzz\n")
    (tmp_path / "few.txt").write_text("o0001\no0002\no0003\n")
    paths = {"d": vec_index.path, "missing": tmp_path / "missing.txt", "unknown": tmp_path / "unknown.txt",
             "few": tmp_path / "few.txt", "nowhere": tmp_path / "nowhere", "tmp": tmp_path / "rep"}
    before = tree_digest(vec_index.path)
    code, out, err = cli("head", *[a.format(**paths) for a in args])
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ulisse: error:") and needle in lines[0], err
    assert tree_digest(vec_index.path) == before


def test_plugin_registers_columns_commands_and_page():
    from ulisse.registry import derived_columns, ui_pages

    assert "heads" in derived_columns()
    page = [p for p in ui_pages() if p.title == "Heads"]
    assert page and page[0].script.is_file()


# -- real encoder -------------------------------------------------------------------------------


@pytest.mark.slow
def test_heads_on_real_encoder_features(demo_index, tmp_path):
    """The HDF demo index (Lite0 ImageNet features, 60 sources): heads on the sources' areas train with no NaN."""
    import shutil

    shutil.copytree(demo_index, tmp_path / "demo")  # the session's demo index stays as other tests expect it
    index = ulisse.open_index(tmp_path / "demo", device="cpu")
    target = "area"
    assert target in index.metadata.columns, list(index.metadata.columns)
    trained = train_head(index, target, "real_h", members=2, config=FAST)
    ridge = train_head(index, target, "real_r", method="ridge")
    cols = index.derived("heads")
    assert np.isfinite(cols.to_numpy()).all() and len(cols) == len(index)
    assert trained.config["nan_events"] == 0 and ridge.config["nan_events"] == 0
    assert trained.config["encoder"]["dim"] == 1280


# -- web UI ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_heads_page(tiny_index):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from ulisse.registry import ui_pages

    script = [p for p in ui_pages() if p.title == "Heads"][0].script

    def run(**state):
        at = AppTest.from_file(str(script), default_timeout=120)
        at.session_state["index_path"] = str(tiny_index.path)
        for k, v in state.items():
            at.session_state[k] = v
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    at = run()
    assert any("No heads yet" in i.value for i in at.info)
    train_head(tiny_index, "r_mag", "rmag_pred", method="ridge")
    at = run()
    assert "rmag_pred" in at.dataframe[0].value["name"].tolist()  # training status
    labels = [m.label for m in at.metric]
    assert {"RMSE", "68 % coverage", "95 % coverage", "rmag_pred", "σ epistemic"} <= set(labels)
    captions = [c for im in at.image for c in im.captions]
    assert any("rmag_pred = " in c and "±" in c for c in captions) or len(at.get("vega_lite_chart")) >= 2
    ok = at.selectbox(key="heads.truth")
    assert ok.value == "r_mag"


def test_sqrt_features_round_trip(vec_index):
    train_head(vec_index, "y", "ysq", method="ridge", config=TrainConfig(features="sqrt"))
    head = load_head(ulisse.open_index(vec_index.path, device="cpu"), "ysq")
    assert head.train.features == "sqrt"
    again = head.predict_vectors(vec_index.vectors_of_rows(range(len(vec_index))))
    pd.testing.assert_frame_equal(again, vec_index.derived("heads"), check_exact=False, rtol=1e-6)
    with pytest.raises(ulisse.InputError, match="features='log'"):
        train_head(vec_index, "y", "ylog", method="ridge", config=TrainConfig(features="log"))


@pytest.mark.slow
def test_lens_simulator(tmp_path):
    pytest.importorskip("lenstronomy")
    from ulisse_bench.sim.lenses import LABEL_COLUMNS, SIZE, cached_lens_set, simulate_lens, simulate_lens_set

    table = simulate_lens_set(tmp_path / "lenses", n=3, progress=False)
    assert list(table.columns) == LABEL_COLUMNS and list(table["id"]) == ["lens-000001", "lens-000002", "lens-000003"]
    assert table["theta_E"].between(0.5, 3.0).all()
    assert sorted(p.name for p in (tmp_path / "lenses" / "cutouts").iterdir())[0] == "lens-000001.png"
    cube, params = simulate_lens(np.random.default_rng([0, 1]))
    assert cube.shape == (3, SIZE, SIZE) and np.isfinite(cube).all()
    assert params["theta_E"] == pytest.approx(table["theta_E"][0])  # deterministic per object
    assert cached_lens_set(tmp_path / "lenses", n=3, seed=0, progress=False)[1] is False  # reused
    (tmp_path / "lenses" / "cutouts" / "lens-000002.png").unlink()
    assert cached_lens_set(tmp_path / "lenses", n=3, seed=0, progress=False)[1] is True  # incomplete: simulated again


def test_retrained_head_is_not_served_from_stale_columns(vec_index):
    """A head retrained under its name (columns not updated) is predicted by the new training, never the old."""
    train_head(vec_index, "y", "yhat", method="ridge", config=FAST, update_columns=True)
    old = predict_head(vec_index, "yhat")["yhat"].to_numpy()
    assert "yhat" in vec_index.query("o0003", k=5).table  # the index object now holds the joined columns
    train_head(vec_index, "y", "yhat", members=2, config=FAST, update_columns=False, overwrite=True)
    new = predict_head(vec_index, "yhat")
    expected = load_head(vec_index, "yhat").predict_vectors(vec_index.all_vectors())
    np.testing.assert_allclose(new["yhat"], expected["yhat"], rtol=1e-6)
    assert not np.allclose(new["yhat"], old)
    # and in query tables, through the stored derived set
    res = vec_index.query("o0003", k=5)
    rows = [vec_index.row_of(i) for i in res.table["id"]]
    np.testing.assert_allclose(res.table["yhat"], expected["yhat"].to_numpy()[rows], rtol=1e-6)


def test_variance_factor_is_fitted_on_rows_early_stopping_never_saw(vec_index):
    trained = train_head(vec_index, "y", "yhat", members=2, config=FAST, update_columns=False)
    cfg = trained.config
    cal, val, tr = set(cfg["calibration_ids"]), set(cfg["validation_ids"]), set(cfg["training_ids"])
    assert cal < val and not cal & tr and 0.4 * len(val) <= len(cal) <= 0.6 * len(val)
    assert cfg["metrics"]["n_metrics"] == len(cal) and cfg["metrics"]["n_validation"] == len(val)


def test_paired_bootstrap_of_the_rmse_difference():
    from ulisse_bench.lenses import paired_bootstrap

    ids = np.arange(50)
    p = paired_bootstrap((ids, np.ones(50)), (ids, np.full(50, 2.0)), resamples=200)
    assert p["diff"] == pytest.approx(-1.0) and p["lo"] == pytest.approx(-1.0) and p["share_lower"] == 1.0
    e = np.random.default_rng(0).normal(size=400)
    p = paired_bootstrap((np.arange(400), e), (np.arange(400), e * 1.02), resamples=500)
    assert p["lo"] < p["diff"] < p["hi"] < 0  # 2 % smaller errors on every object: lower in every resample
    with pytest.raises(ValueError, match="different objects"):
        paired_bootstrap((ids, np.ones(50)), (ids[::-1], np.ones(50)))


# -- one transaction of the index behind every head write -----------------------------------------


def _head_files(index) -> dict:
    folder = index.path / "derived" / "heads"
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("method, call", [("stage", 2), ("commit", 1)])
def test_a_failed_head_write_leaves_the_previous_head(vec_index, monkeypatch, method, call):
    """Training writes weights and config in one transaction: an error while staging the config (the weights
    staged already) or at the commit leaves the previous head's files byte for byte, and nothing staged."""
    train_head(vec_index, "y", "yhat", method="ridge", update_columns=False)
    before, config = _head_files(vec_index), load_head(vec_index, "yhat").config
    calls = fail_at(monkeypatch, method, call)
    some = list(vec_index.metadata["id"][:100])
    with pytest.raises(Injected):  # a write that bypassed the transaction would not fail here
        train_head(vec_index, "y", "yhat", method="ridge", train_ids=some, update_columns=False, overwrite=True)
    assert len(calls) == call
    assert _head_files(vec_index) == before and load_head(vec_index, "yhat").config == config
    monkeypatch.undo()
    train_head(vec_index, "y", "yhat", method="ridge", train_ids=some, update_columns=False, overwrite=True)
    after = _head_files(vec_index)
    assert sorted(after) == sorted(before) and after != before
    assert len(load_head(vec_index, "yhat").config["training_ids"]) < len(config["training_ids"])


def test_a_failed_head_removal_leaves_the_head_and_a_removal_leaves_no_folder(vec_index, monkeypatch):
    from ulisse.plugins.heads import remove_head

    train_head(vec_index, "y", "yhat", method="ridge", update_columns=False)
    train_head(vec_index, "y", "other", method="ridge")
    before = _head_files(vec_index)
    calls = fail_at(monkeypatch, "commit", 1)
    with pytest.raises(Injected):
        remove_head(vec_index, "yhat")
    assert len(calls) == 1 and _head_files(vec_index) == before and head_names(vec_index) == ["other", "yhat"]
    monkeypatch.undo()
    remove_head(vec_index, "yhat")
    heads = vec_index.path / "derived" / "heads"
    assert head_names(vec_index) == ["other"] and not (heads / "yhat").exists()  # the emptied folder went too
    assert "yhat" not in vec_index.derived("heads").columns and "other" in vec_index.derived("heads").columns
    remove_head(vec_index, "other", update_columns=False)
    assert not heads.exists() and (vec_index.path / "derived").is_dir()  # emptied up to derived/, never derived/


# -- a head's training or removal predicts its own columns alone ----------------------------------------------


def _spy_predictions(monkeypatch) -> list:
    """The names of the frozen heads that predict from the vectors from now on (the real predictions, counted)."""
    from ulisse.plugins.heads.core import Head

    seen, real = [], Head.predict_vectors
    monkeypatch.setattr(Head, "predict_vectors", lambda self, *a, **kw: seen.append(self.name) or real(self, *a, **kw))
    return seen


def test_training_or_removing_a_head_keeps_the_other_heads_stored_columns(vec_index, monkeypatch):
    from ulisse.plugins.heads import compute_columns, remove_head

    train_head(vec_index, "y", "a", members=2, config=FAST)
    before = vec_index.derived("heads")
    seen = _spy_predictions(monkeypatch)
    train_head(vec_index, "y", "b", method="ridge")
    assert seen == ["b"]  # head a is not predicted again: its stored columns are kept
    assert vec_index.derived_is_fresh("heads")
    cols = vec_index.derived("heads")
    assert list(cols.columns) == columns_of("a") + columns_of("b")  # the order a full computation gives
    pd.testing.assert_frame_equal(cols[columns_of("a")], before)
    pd.testing.assert_frame_equal(cols, compute_columns(vec_index), check_exact=False, rtol=1e-6)
    seen.clear()
    train_head(vec_index, "y", "a", method="ridge", overwrite=True)  # retrained under its name: its new columns
    assert seen == ["a"] and not np.allclose(vec_index.derived("heads")["a"], before["a"])
    seen.clear()
    remove_head(vec_index, "b")
    assert seen == [] and vec_index.derived_is_fresh("heads")
    assert list(vec_index.derived("heads").columns) == columns_of("a") and seen == []


def test_head_list_tells_the_fine_tuning_and_gives_ridge_no_members(vec_index, cli):
    train_head(vec_index, "y", "yr", method="ridge", update_columns=False)
    train_head(vec_index, "y", "ye", members=2, config=FAST, update_columns=False)
    listed = list_heads(vec_index).set_index("name")
    assert listed.loc["yr", "finetune"] == "none" and listed.loc["yr", "members"] is pd.NA
    assert listed.loc["ye", "members"] == 2
    code, out, err = cli("head", "list", str(vec_index.path))
    assert code == 0, err
    header, *rows = out.splitlines()
    assert "finetune" in header.split()
    ridge = [r.split() for r in rows if r.startswith("yr ")][0]
    assert ridge[1:5] == ["ridge", "y", "none", "-"], rows
    code, out, err = cli("head", "list", str(vec_index.path), "--format", "json")
    assert {r["name"]: r["members"] for r in json.loads(out)} == {"ye": 2, "yr": None}


def test_head_columns_are_described_in_few_enough_characters_not_to_wrap(vec_index, tmp_path):
    from astropy.table import Table

    from ulisse.plugins.heads.plugin import DESCRIPTION_MAX, column_descriptions

    long = "a_rather_long_head_name_for_the_half_light_radius_in_pixels"
    for method in ("ensemble", "mc-dropout", "ridge"):
        for name, target in (("rh", "r_half"), (long, "r_half"), ("rh", long), (long, long)):
            texts = column_descriptions(name, target, method, "all")
            assert all(len(t) <= DESCRIPTION_MAX for t in texts.values()), texts
            assert method == "ensemble" or "members" not in texts[name + "_std_epistemic"]
    assert column_descriptions("rh", "r_half", "ensemble")["rh_std_epistemic"].endswith("(spread of its members)")
    ridge = column_descriptions("rh", "r_half", "ridge")["rh_std_epistemic"]
    assert ridge == "0: ridge head rh has no model uncertainty"
    train_head(vec_index, "y", "y_pred", members=2, config=FAST)
    train_head(vec_index, "y", "y_ridge", method="ridge")
    out = tmp_path / "q.xml"
    vec_index.query("o0003", k=4).write(out, index=vec_index)
    back = Table.read(out)
    for name in ("y_pred", "y_ridge"):
        for column in columns_of(name):
            text = back[column].description
            assert text and "\n" not in text and text == text.strip(), (column, text)
    assert back["y_pred_std_aleatoric"].description == "1-sigma noise of y as y_pred predicts it"
    assert "members" not in back["y_ridge_std_epistemic"].description


def test_a_damaged_head_is_removed_and_costs_the_others_no_new_prediction(vec_index, monkeypatch, caplog):
    from ulisse.plugins.heads import remove_head

    train_head(vec_index, "y", "a", method="ridge")
    train_head(vec_index, "y", "b", method="ridge", update_columns=False)
    (vec_index.derived_dir / "heads" / "a" / "head.safetensors").write_bytes(b"garbage")
    with caplog.at_level("WARNING"):
        assert list(vec_index.derived("heads").columns) == columns_of("b")  # a left out, with a note
    assert "head a left out of the derived columns" in caplog.text
    seen = _spy_predictions(monkeypatch)
    train_head(vec_index, "y", "c", method="ridge")
    assert seen == ["c"]  # b's stored columns kept; a tried again alone (and left out again)
    assert list(vec_index.derived("heads").columns) == columns_of("b") + columns_of("c")
    remove_head(vec_index, "a")  # a head that cannot be loaded can still be removed
    assert head_names(vec_index) == ["b", "c"] and seen == ["c"] and vec_index.derived_is_fresh("heads")
