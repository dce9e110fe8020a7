"""Regression heads: a stored head is never replaced without overwrite, settings are checked where they are made,
one id given as a string is one id, and training on the frozen vectors says how far it is, epoch by epoch."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ulisse
from ulisse.errors import InputError
from ulisse.plugins.heads import TrainConfig, load_head, predict_head, train_head
from ulisse.plugins.heads.finetune import FinetuneConfig
from conftest import tree_digest
from test_heads import _spec, _table


@pytest.fixture()
def vec_index(tmp_path):
    """A real index of 240 synthetic vectors with a regression target ``y`` (as in test_heads)."""
    x, meta = _table(240, np.random.default_rng(1))
    return ulisse.create_index(tmp_path / "idx", x, meta, _spec(), device="cpu")


def _no_work(*args, **kwargs):
    raise AssertionError("training work started before the name was checked")


# -- a head of that name ------------------------------------------------------------------------


@pytest.mark.parametrize("finetune", [None, FinetuneConfig(mode="last", input_size=32, epochs=1)])
def test_a_stored_head_is_refused_before_any_work_unless_overwrite(vec_index, monkeypatch, finetune):
    from ulisse.plugins.heads import core, finetune as ft_module

    train_head(vec_index, "y", "yhat", method="ridge")
    before = tree_digest(vec_index.path)
    with monkeypatch.context() as m:  # reading the training rows is the first work of both paths
        m.setattr(core, "training_rows", _no_work)
        m.setattr(ft_module, "training_rows", _no_work)
        with pytest.raises(InputError) as exc:
            train_head(vec_index, "y", "yhat", finetune=finetune)
    assert str(exc.value) == "head 'yhat' exists (use --overwrite to replace it)"
    assert tree_digest(vec_index.path) == before
    some = list(vec_index.metadata["id"][:100])
    train_head(vec_index, "y", "yhat", method="ridge", train_ids=some, overwrite=True)
    assert len(load_head(vec_index, "yhat").config["training_ids"]) < 100


def test_a_head_stored_by_another_process_while_training_is_not_replaced(vec_index, monkeypatch):
    from ulisse.plugins.heads import core

    real_fit = core.fit_ridge

    def fit_while_another_stores(*args):
        monkeypatch.setattr(core, "fit_ridge", real_fit)  # the other writer's training is a plain one
        train_head(vec_index, "y", "yhat", method="ridge", train_ids=list(vec_index.metadata["id"][:50]),
                   update_columns=False)  # stores a head of the same name while this one trains
        return real_fit(*args)

    monkeypatch.setattr(core, "fit_ridge", fit_while_another_stores)
    with pytest.raises(InputError, match="^head 'yhat' was stored by another process while this one trained"):
        train_head(vec_index, "y", "yhat", method="ridge")
    assert len(load_head(vec_index, "yhat").config["training_ids"]) < 50  # the other process's head is kept


def test_cli_refuses_to_replace_a_head_without_overwrite(vec_index, cli):
    d = str(vec_index.path)
    args = ("-q", "head", "train", d, "--target", "y", "--name", "yr", "--method", "ridge")
    code, out, err = cli(*args)
    assert code == 0, err
    before = tree_digest(vec_index.path)
    code, out, err = cli(*args)
    assert code != 0 and err.strip() == "ulisse: error: head 'yr' exists (use --overwrite to replace it)", err
    assert tree_digest(vec_index.path) == before
    code, out, err = cli(*args, "--overwrite", "--seed", "1")  # another split: another head
    assert code == 0 and "head yr: ridge on y" in out, err
    assert tree_digest(vec_index.path) != before


# -- ids ------------------------------------------------------------------------------------------


def test_one_id_given_as_a_string_is_one_id(vec_index):
    # one id, not the letters o, 0, 0, 3, 9 (which are not in the index): too few objects to train on
    with pytest.raises(InputError, match="^column 'y': 1 objects with a value to train on; at least 8 needed$"):
        train_head(vec_index, "y", "h", method="ridge", train_ids="o0039")
    train_head(vec_index, "y", "h", method="ridge")
    one = predict_head(vec_index, "h", ids="o0039")
    assert list(one["id"]) == ["o0039"]


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, reason", [
    ("val_fraction", 1.5, "must be more than 0 and less than 1"),
    ("val_fraction", 0.0, "must be more than 0 and less than 1"),
    ("calibration_share", 1.0, "must be at least 0 and less than 1"),
    ("max_epochs", 0, "must be a whole number from 1 to 100000"),
    ("max_epochs", 2.5, "must be a whole number from 1 to 100000"),
    ("patience", 0, "must be a whole number at least 1"),
    ("batch_size", 0, "must be a whole number at least 1"),
    ("mc_samples", 0, "must be a whole number at least 1"),
    ("lr", 0.0, "must be a number more than 0"),
    ("lr", math.nan, "must be a number more than 0"),
    ("weight_decay", -1e-3, "must be a number at least 0"),
    ("clip", -1.0, "must be a number more than 0"),
    ("dropout", 1.0, "must be at least 0 and less than 1"),
    ("seed", -1, "must be a whole number from 0 to 4294967295"),
    ("max_nan_restarts", True, "must be a whole number at least 0"),
    ("calibrate", 1, "expected one of True, False"),
    ("features", "log", "expected one of raw, sqrt"),
    ("hidden", (64, 0), "must be a list of layer widths, each a whole number at least 1"),
])
def test_train_config_refuses_values_out_of_range(field, value, reason):
    with pytest.raises(InputError) as exc:
        TrainConfig(**{field: value})
    assert str(exc.value) == f"TrainConfig.{field}={value!r}: {reason}"


@pytest.mark.parametrize("settings, needle", [
    ({"members": 0}, "FinetuneConfig.members=0: must be a whole number from 1 to 100"),
    ({"epochs": 0}, "FinetuneConfig.epochs=0: must be a whole number from 1 to 100000"),
    ({"input_size": 8}, "FinetuneConfig.input_size=8: must be a whole number from 16 to 1024"),
    ({"batch_size": 0}, "FinetuneConfig.batch_size=0: must be a whole number at least 1"),
    ({"backbone_lr": -1.0}, "FinetuneConfig.backbone_lr=-1.0: must be a number more than 0"),
    ({"augment": "sideways"}, "FinetuneConfig.augment='sideways': expected one of rot-flip, none"),
    ({"epochs": 2, "warmup_epochs": 2}, "FinetuneConfig.warmup_epochs=2: must be less than epochs=2"),
])
def test_finetune_config_refuses_values_out_of_range(settings, needle):
    with pytest.raises(InputError) as exc:
        FinetuneConfig(**settings)
    assert str(exc.value) == needle


def test_members_and_good_settings(vec_index):
    with pytest.raises(InputError, match="^members=0: must be a whole number from 1 to 100$"):
        train_head(vec_index, "y", "h", members=0)
    with pytest.raises(InputError, match="^members=2.0: "):
        train_head(vec_index, "y", "h", members=2.0)
    # the defaults and the values the CLI passes are all fine; hidden comes back as a tuple
    assert TrainConfig(hidden=[16, 8], max_epochs=1, val_fraction=0.5, dropout=0.0).hidden == (16, 8)
    assert FinetuneConfig(mode="none").mode == "none" and FinetuneConfig(threads=0, epochs=1).epochs == 1
    # a stored head's settings come back as written, whatever this version allows
    assert TrainConfig.from_dict({**TrainConfig().to_dict(), "val_fraction": 1.5}).val_fraction == 1.5


@pytest.mark.parametrize("args, needle", [
    (("--epochs", "0"), "'--epochs': 0 is not in the range 1<=x<=100000"),
    (("--seed", "-1"), "'--seed': -1 is not in the range 0<=x<=4294967295"),
    (("--finetune", "last", "--input-size", "8"), "'--input-size': 8 is not in the range 16<=x<=1024"),
])
def test_cli_options_take_their_ranges_from_the_same_rules(vec_index, cli, args, needle):
    code, out, err = cli("head", "train", str(vec_index.path), "--target", "y", "--name", "h", *args)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and needle in lines[0], err


# -- progress -------------------------------------------------------------------------------------


def test_frozen_training_reports_every_epoch_of_every_member_with_the_time_left(vec_index, monkeypatch):
    import ulisse.progress as progress

    monkeypatch.setattr(progress, "WATCH_EVERY_SECONDS", 0.0)  # every step heard
    states = []
    config = TrainConfig(max_epochs=12, patience=3, hidden=(16,), batch_size=64, lr=3e-3)  # stops early, often
    with progress.watching(states.append):
        trained = train_head(vec_index, "y", "yhat", members=3, config=config, update_columns=False)
    mine = [s for s in states if s.desc == "training yhat (3 networks)"]
    assert mine and {s.unit for s in mine} == {"epoch"} and {s.total for s in mine} == {36}
    seen = [s.n for s in mine]
    assert seen == sorted(seen) and seen[-1] == 36
    assert 1 in seen and 2 in seen  # within the first member, not one step per member
    assert any(s.left.startswith(", about ") and s.left.endswith(" left") for s in mine if s.n < 36)
    epochs = [m["epochs"] for m in trained.metrics["members"]]
    assert sum(epochs) <= 36 and len(epochs) == 3


@pytest.mark.slow
def test_heads_page_asks_before_replacing_a_head(tiny_index):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from ulisse.registry import ui_pages

    script = [p for p in ui_pages() if p.title == "Heads"][0].script
    train_head(tiny_index, "r_mag", "rmag_pred", method="ridge", train_ids=list(tiny_index.metadata["id"][:10]))
    before = tree_digest(tiny_index.path)

    def submit(overwrite: bool):
        at = AppTest.from_file(str(script), default_timeout=120)
        at.session_state["index_path"] = str(tiny_index.path)
        at.run()
        at.selectbox(key="heads.target").set_value("r_mag")
        at.text_input(key="heads.name").set_value("rmag_pred")
        at.selectbox(key="heads.method").set_value("ridge")
        at.checkbox(key="heads.overwrite").set_value(overwrite)
        [b for b in at.button if b.label == "Train"][0].click()
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    at = submit(False)
    assert [e.value for e in at.error] == ["head 'rmag_pred' exists (use --overwrite to replace it)"]
    assert tree_digest(tiny_index.path) == before
    at = submit(True)
    assert any("Trained rmag_pred" in s.value for s in at.success)
    assert len(load_head(tiny_index, "rmag_pred").config["training_ids"]) > 10


def test_a_head_counts_the_non_finite_steps_of_every_member(vec_index):
    config = TrainConfig(lr=1e4, max_epochs=10, hidden=(16,), max_nan_restarts=2)  # steps so large they overflow
    trained = train_head(vec_index, "y", "h", members=2, config=config, update_columns=False)
    per_member = [m["nan_events"] for m in trained.metrics["members"]]
    assert all(n > 0 for n in per_member) and trained.config["nan_events"] == sum(per_member)


def test_heads_page_names_a_head_after_the_target_chosen(tiny_index):
    """The form's Name is empty by default and then follows the target chosen (it used to keep the first
    column's ``COLUMN_pred``, so a head predicting r_mag could be called after another column)."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from ulisse.plugins.heads import list_heads
    from ulisse.registry import ui_pages

    script = [p for p in ui_pages() if p.title == "Heads"][0].script
    at = AppTest.from_file(str(script), default_timeout=120)
    at.session_state["index_path"] = str(tiny_index.path)
    at.run()
    columns = at.selectbox(key="heads.target").options
    target = columns[-1]
    assert at.text_input(key="heads.name").value == ""  # not the first column's name, whatever the target
    at.selectbox(key="heads.target").set_value(target)
    at.selectbox(key="heads.method").set_value("ridge")
    [b for b in at.button if b.label == "Train"][0].click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(f"Trained {target}_pred" in s.value for s in at.success)
    assert list_heads(tiny_index).set_index("name").loc[f"{target}_pred", "target"] == target


# -- options and targets that would be ignored or meaningless -------------------------------------


@pytest.mark.parametrize("args, needle", [
    (("--method", "ridge", "--input-size", "32"), "--input-size 32: only with --finetune last or all"),
    (("--method", "ridge", "--augment", "none"), "--augment none: only with --finetune last or all"),
    (("--augment", "rot-flip"), "--augment rot-flip: only with --finetune last or all"),  # the default, given
    (("--train-from", "2"), "--train-from 2: only with --finetune last"),
    (("--finetune", "all", "--train-from", "2"), "--train-from 2: only with --finetune last"),
    (("--finetune", "all", "--features", "sqrt"), "--features sqrt: only without --finetune"),
    (("--method", "ridge", "--members", "3"), "--members 3: not with --method ridge"),
    (("--method", "ridge", "--epochs", "5"), "--epochs 5: not with --method ridge"),
    (("--method", "mc-dropout", "--members", "3"), "--members 3: not with --method mc-dropout"),
])
def test_cli_refuses_options_that_would_do_nothing(vec_index, cli, args, needle):
    before = tree_digest(vec_index.path)
    code, out, err = cli("head", "train", str(vec_index.path), "--target", "y", "--name", "h", *args)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith(f"ulisse: error: {needle}"), err
    assert tree_digest(vec_index.path) == before


@pytest.mark.parametrize("target", ["row", "source", "id"])
def test_the_index_own_columns_are_no_targets(vec_index, cli, target):
    code, out, err = cli("head", "train", str(vec_index.path), "--target", target, "--name", "h", "--method", "ridge")
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1, err
    assert lines[0].startswith(f"ulisse: error: column {target!r}: the index's own {target} column"), err
    listed = lines[0].split("(columns: ")[1]
    assert "y_sparse" in listed and not {"row", "source", "id"} & set(listed.rstrip(")").split(", "))


def test_train_ids_help_says_a_csv_with_an_id_column_works(vec_index, cli, tmp_path):
    code, out, err = cli("head", "train", "--help")
    assert code == 0 and "CSV with an id column" in " ".join(out.split())
    ids = tmp_path / "some.csv"
    ids.write_text("id,y\n" + "".join(f"o{i:04d},0\n" for i in range(30)))
    code, out, err = cli("-q", "head", "train", str(vec_index.path), "--target", "y", "--name", "h", "--method",
                         "ridge", "--train-ids", ids)
    assert code == 0 and len(load_head(vec_index, "h").config["training_ids"]) < 30, err


def test_summary_says_what_the_metrics_rest_on_and_what_was_left_out(vec_index, cli, tmp_path):
    d = str(vec_index.path)
    ids = tmp_path / "twelve.txt"
    ids.write_text("".join(f"o{i:04d}\n" for i in range(12)))
    code, out, err = cli("head", "train", d, "--target", "y", "--name", "tiny", "--members", "2", "--epochs", "3",
                         "--train-ids", ids)
    assert code == 0, err
    assert "2 held out (all of them stop the training early and give the metrics below)" in out, out
    assert "held out (2 objects, too few to trust: 10 or more wanted)" in out
    assert "head tiny: its held-out metrics rest on 2 objects only, which also chose the best epochs" in err
    # a target that a quarter of the objects have: the others are counted as left out
    code, out, err = cli("head", "train", d, "--target", "y_sparse", "--name", "ys", "--method", "ridge")
    assert code == 0 and "180 objects without a finite y_sparse left out" in out, out
    code, out, err = cli("head", "train", d, "--target", "y", "--name", "yy", "--method", "ridge")
    assert code == 0 and "left out" not in out and "too few" not in out, out


def test_a_constant_target_is_said(vec_index, caplog):
    vec_index.add_vectors(*_constant_rows())
    with caplog.at_level("WARNING"):
        train_head(vec_index, "c", "hc", method="ridge", train_ids=[f"c{i}" for i in range(20)], update_columns=False)
    assert "column 'c': one value (7) for all 16 training objects: the head can only learn to predict" in caplog.text


def _constant_rows():
    x, meta = _table(20, np.random.default_rng(5), start=900)
    meta["id"] = [f"c{i}" for i in range(20)]
    meta["c"] = 7.0
    return x, meta


def test_report_against_another_column_than_the_target_says_so(vec_index, cli, tmp_path):
    d = str(vec_index.path)
    train_head(vec_index, "y", "yr", method="ridge")
    code, out, err = cli("head", "report", d, "--name", "yr", "--truth", "y_sparse", "--out", tmp_path / "r1")
    assert code == 0 and "y_sparse is not the head's target (y)" in out.splitlines()[0], out
    code, out, err = cli("head", "report", d, "--name", "yr", "--truth", "y", "--out", tmp_path / "r2")
    assert code == 0 and "not the head's target" not in out, out


# -- predictions to a file --------------------------------------------------------------------------


def test_head_predict_writes_a_file_with_units_descriptions_and_record(vec_index, cli, tmp_path):
    from astropy.table import Table

    d = str(vec_index.path)
    train_head(vec_index, "y", "yr", method="ridge")
    bad = tmp_path / "p.docx"
    code, out, err = cli("head", "predict", d, "--name", "yr", "--output", bad)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "p.docx" in err and not bad.exists(), err
    for suffix in ("fits", "ecsv", "xml", "csv"):
        path = tmp_path / f"p.{suffix}"
        code, out, err = cli("head", "predict", d, "--name", "yr", "--output", path, "--format", "csv")
        assert code == 0, err
        assert len(out.strip().splitlines()) == 241  # still printed too
        back = Table.read(path)
        assert list(back.colnames) == ["id", *[f"yr{s}" for s in ("", "_std", "_std_aleatoric", "_std_epistemic")]]
        assert len(back) == 240
        np.testing.assert_allclose(np.asarray(back["yr"], float), predict_head(vec_index, "yr")["yr"], rtol=1e-5)
        if suffix in ("xml", "ecsv"):
            assert back["yr"].description == "y predicted by head yr (ridge)"
            assert back["yr_std_epistemic"].description == "0: ridge head yr has no model uncertainty"
        if suffix == "ecsv":
            assert back.meta["verb"] == "head predict" and back.meta["head"] == "yr"
