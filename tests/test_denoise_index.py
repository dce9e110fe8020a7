"""A denoiser as an index's preprocessing step, over time: the model's folder recorded absolute (the index works
from any folder), a moved model (one-line error, ``ulisse denoise relink``), fingerprints that ignore when and
where a model was trained, and models saved before (version 1 configs, legacy fingerprints)."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse.plugins import denoise
from ulisse.plugins.denoise.training import TrainOptions
from ulisse.testing import make_survey

TINY = TrainOptions(steps=12, batch_size=4, crop=16, width=4, depth=2, validate_every=6)
ENCODER = ("--model", "test_efficientnet", "--weights", "random", "--device", "cpu")


def train_on(survey, out, seed=0):
    """A small 8-bit denoiser trained self-supervised on the survey's PNG cutouts."""
    files = sorted((survey / "cutouts").glob("*.png"))
    return denoise.train(files, self_supervised=True, options=TrainOptions(**{**TINY.__dict__, "seed": seed}),
                         device="cpu", out=out, progress=False)


def one_line_error(code, err, *fragments):
    lines = [x for x in err.strip().splitlines() if x.startswith("ulisse: error:")]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def query_self(cli, index, probe):
    code, out, err = cli("query", index, "--image", probe, "-k", "1", "--format", "csv")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert table["id"].iloc[0] == probe.name.split(".")[0] and table["distance"].iloc[0] < 1e-3


@pytest.fixture()
def built(survey, tmp_path, cli, monkeypatch):
    """An index built from ``tmp_path/work`` with ``--denoise den`` (a path relative to that folder)."""
    work = tmp_path / "work"
    work.mkdir()
    train_on(survey, work / "den")
    monkeypatch.chdir(work)
    code, _, err = cli("index", "build", survey / "cutouts", "--index", "idx", "--catalog", survey / "catalog.csv",
                       *ENCODER, "--denoise", "den")
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return work


def recorded(index_dir):
    return [dict(p) for p in ulisse.open_index(index_dir).encoder_spec.preprocessors]


def test_the_index_records_the_absolute_folder_and_works_from_any_folder(built, survey, tmp_path, cli):
    assert [(p["name"], p["arg"]) for p in recorded(built / "idx")] == [("denoise", str((built / "den").resolve()))]
    query_self(cli, built / "idx", survey / "cutouts" / "obj001.png")
    make_survey(tmp_path / "more", n_per_kind=1, prefix="new").to_csv(tmp_path / "more.csv", index=False)
    code, _, err = cli("index", "add", tmp_path / "more", "--index", built / "idx", "--catalog", tmp_path / "more.csv")
    assert code == 0, err
    assert len(ulisse.open_index(built / "idx")) == 24 + 3


def test_a_moved_model_is_a_one_line_error_and_relink_points_the_index_at_it(built, survey, tmp_path, cli):
    index, probe = built / "idx", survey / "cutouts" / "obj001.png"
    old = str((built / "den").resolve())
    moved = tmp_path / "models" / "den"
    moved.parent.mkdir()
    shutil.move(built / "den", moved)
    line = one_line_error(*cli("query", index, "--image", probe)[:3:2], "the index's recorded preprocessing step",
                          f"{old}: no such denoiser model folder", "move the model back", "ulisse denoise relink")
    assert line.count(old) == 1 and f"ulisse denoise relink {index} NEW_MODEL_DIR" in line
    make_survey(tmp_path / "more", n_per_kind=1, prefix="new")
    one_line_error(*cli("index", "add", tmp_path / "more", "--index", index)[:3:2], "recorded preprocessing step")
    other = tmp_path / "other"
    train_on(survey, other, seed=3)
    one_line_error(*cli("denoise", "relink", index, other)[:3:2], "not the denoiser the index was built with")
    one_line_error(*cli("denoise", "relink", index, tmp_path / "nowhere")[:3:2], "no such denoiser model folder")
    one_line_error(*cli("denoise", "relink", survey / "cutouts", moved)[:3:2], "cutouts")
    assert recorded(index)[0]["arg"] == old  # nothing written by the refusals
    code, out, err = cli("denoise", "relink", index, moved)
    assert code == 0 and f"now loads {moved.resolve()}" in out, err
    assert recorded(index)[0]["arg"] == str(moved.resolve())
    history = ulisse.open_index(index).manifest.history
    assert history[-1]["action"] == "denoise relink" and history[-1]["from"] == [old]
    query_self(cli, index, probe)
    code, out, _ = cli("denoise", "relink", index, moved)
    assert code == 0 and "nothing changed" in out


def test_an_index_without_a_denoise_step_cannot_be_relinked(built, survey, tmp_path, cli):
    code, _, err = cli("index", "build", survey / "cutouts", "--index", tmp_path / "plain", *ENCODER)
    assert code == 0, err
    one_line_error(*cli("denoise", "relink", tmp_path / "plain", built / "den")[:3:2], "no denoise step")


def test_a_path_recorded_relative_before_says_so_and_relink_records_it_absolute(built, survey, cli, monkeypatch):
    """Indexes built before this fix recorded ``--denoise`` as given: they work from the folder they were built
    in, and elsewhere the error says where the path is relative to."""
    index = built / "idx"
    path = index / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["encoder"]["preprocessors"][0]["arg"] = "den"
    path.write_text(json.dumps(manifest))
    one_line_error(*cli("query", index, "--image", survey / "cutouts" / "obj001.png")[:3:2],
                   "step denoise (den)", "relative to the folder it was built from")
    monkeypatch.chdir(built)
    query_self(cli, index, survey / "cutouts" / "obj001.png")
    code, _, err = cli("denoise", "relink", "idx", "den")
    assert code == 0, err
    assert recorded(index)[0]["arg"] == str((built / "den").resolve())


def test_a_changed_model_in_the_recorded_folder_is_still_refused(built, survey, tmp_path, cli):
    shutil.rmtree(built / "den")
    train_on(survey, built / "den", seed=7)
    one_line_error(*cli("query", built / "idx", "--image", survey / "cutouts" / "obj001.png")[:3:2],
                   "fingerprint changed")


# -- fingerprints ---------------------------------------------------------------------

def test_identical_seeded_trainings_have_one_fingerprint(survey, tmp_path):
    a, b = train_on(survey, tmp_path / "a"), train_on(survey, tmp_path / "b")
    assert a.fingerprint == b.fingerprint == denoise.fingerprint_of(tmp_path / "a")
    assert denoise.load(tmp_path / "b").fingerprint == a.fingerprint
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["version"] == 2 and "seconds" in config["training"]
    config["training"].update(seconds=12345.6, device="cuda:3", threads=64)  # when and where: not the model
    (tmp_path / "a" / "config.json").write_text(json.dumps(config, indent=4))
    assert denoise.fingerprint_of(tmp_path / "a") == a.fingerprint
    config["scale"] = [s * 2 for s in config["scale"]]  # how it normalises: the model
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    assert denoise.fingerprint_of(tmp_path / "a") != a.fingerprint
    assert train_on(survey, tmp_path / "c", seed=1).fingerprint != a.fingerprint  # other weights


def test_a_version_1_model_keeps_its_fingerprint_and_its_indexes_open(survey, tmp_path, cli):
    """A model saved before (config version 1) is fingerprinted as it was then, so its indexes still open."""
    import hashlib

    from ulisse._io import sha256_file

    train_on(survey, tmp_path / "v1")
    config = json.loads((tmp_path / "v1" / "config.json").read_text())
    config["version"] = 1
    for key in ("train_keys", "held_out_keys"):
        del config["training"][key]
    (tmp_path / "v1" / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    legacy = hashlib.sha256(sha256_file(tmp_path / "v1" / "model.safetensors").encode())
    legacy.update((tmp_path / "v1" / "config.json").read_bytes())
    assert denoise.load(tmp_path / "v1").fingerprint == denoise.fingerprint_of(tmp_path / "v1") == legacy.hexdigest()
    code, _, err = cli("index", "build", survey / "cutouts", "--index", tmp_path / "idx", *ENCODER, "--denoise",
                       tmp_path / "v1")
    assert code == 0, err
    assert recorded(tmp_path / "idx")[0]["fingerprint"] == legacy.hexdigest()
    query_self(cli, tmp_path / "idx", survey / "cutouts" / "obj002.png")
    config["version"] = 3
    (tmp_path / "v1" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ulisse.InputError, match="version 3; this ulisse reads versions 1, 2"):
        denoise.load(tmp_path / "v1")


def test_an_in_memory_model_has_the_fingerprint_it_will_be_saved_with(survey, tmp_path):
    files = sorted((survey / "cutouts").glob("*.png"))
    den = denoise.train(files, self_supervised=True, options=TINY, device="cpu", progress=False)
    before = den.fingerprint
    den.save(tmp_path / "m")
    assert before == den.fingerprint == denoise.fingerprint_of(tmp_path / "m")
    assert np.isfinite(den.config.training["seconds"])
