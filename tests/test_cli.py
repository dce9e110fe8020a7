"""Every CLI verb, and every bad input: one-line error, non-zero exit, indexes left byte-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ulisse
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.table import Table
from PIL import Image

from conftest import make_survey, tree_digest

TINY = ("--model", "test_efficientnet", "--weights", "random", "--device", "cpu")


@pytest.fixture()
def built(tmp_path, survey, cli):
    d = tmp_path / "idx"
    code, out, err = cli("-q", "index", "build", survey / "cutouts", "--index", d, "--catalog", survey / "catalog.csv", *TINY)
    assert code == 0, err
    return d


def test_index_build_info_and_json(built, cli):
    code, out, err = cli("index", "info", built)
    assert code == 0 and "objects    24" in out and "test_efficientnet" in out and "label" in out
    assert "FITS       Lupton RGB q 8, stretch 0.5, minimum 0, i,r,g scales 1,1,1; first row at the bottom" in out
    code, out, _ = cli("index", "info", built, "--format", "json")
    m = json.loads(out)
    assert m["count"] == 24 and m["encoder"]["dim"] == 256 and "label" in m["columns"]


def test_query_formats(built, cli, tmp_path):
    code, out, err = cli("query", built, "--id", "obj004", "-k", "5", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and all("obj004" != r["id"] for r in rows)
    assert {"id", "rank", "distance", "ra", "dec", "label", "r_mag"} <= set(rows[0])
    code, out, _ = cli("query", built, "--id", "obj004", "-k", "5", "--format", "csv")
    assert out.splitlines()[0].startswith("rank,id,distance") and len(out.splitlines()) == 6
    code, out, _ = cli("query", built, "--id", "obj004", "-k", "5")
    lines = out.splitlines()
    assert lines[0] == f"# {built}: 5 nearest neighbour(s) of obj004" and "rank" in lines[1] and len(lines) == 7
    vot = tmp_path / "r.xml"
    code, out, _ = cli("query", built, "--id", "obj004", "-k", "5", "--format", "votable", "--output", vot)
    assert code == 0 and parse_single_table(str(vot)).to_table()["id"][0] == rows[0]["id"]
    f = tmp_path / "r.fits"
    code, _, err = cli("-q", "query", built, "--id", "obj004", "-k", "5", "--output", f, "--png", tmp_path / "g.png")
    assert code == 0, err
    t = Table.read(f)
    assert list(t["id"]) == [r["id"] for r in rows] and np.allclose(t["distance"], [r["distance"] for r in rows])
    assert Image.open(tmp_path / "g.png").size[0] > 500


def test_query_by_image_and_coordinates(built, cli, survey):
    code, out, err = cli("query", built, "--image", survey / "cutouts" / "obj000.fits", "-k", "2", "--format", "json")
    assert code == 0, err and json.loads(out)["rows"][0]["id"] == "obj000"
    code, out, err = cli("query", built, "--ra", "150.02", "--dec", "2.01", "-k", "2", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["prototype"].endswith("obj002") and "obj002" not in out.split('"rows"')[1]


def test_index_add_verb(built, cli, tmp_path):
    more = tmp_path / "more"
    make_survey(more, n_per_kind=1, seed=3, prefix="add")
    code, _, err = cli("index", "add", more, "--index", built)
    assert code == 0, err and "added" in err
    code, out, _ = cli("index", "info", built, "--format", "json")
    assert json.loads(out)["count"] == 27


def test_busy_index_is_said_before_any_embedding_and_the_add_records_its_catalogue(built, cli, tmp_path, monkeypatch):
    from ulisse.indexes.lock import writer_lock

    monkeypatch.setattr(ulisse.index, "WAIT_BEFORE", 0.5)  # 30 s by default: a short writer is waited for

    more = tmp_path / "more"
    make_survey(more, n_per_kind=1, seed=3, prefix="add").to_csv(tmp_path / "more.csv", index=False)
    before = tree_digest(built)
    with writer_lock(built):
        code, _, err = cli("index", "add", more, "--index", built, "--catalog", tmp_path / "more.csv")
    assert code == 1 and "another writer" in err and "embedding" not in err and err.count("\n") == 1
    assert tree_digest(built) == before
    import threading
    import time

    monkeypatch.setattr(ulisse.index, "WAIT_BEFORE", 20.0)
    holding = threading.Event()

    def short_writer():  # another writer's commit: a second or so; the add waits for it without --wait
        with writer_lock(built):
            holding.set()
            time.sleep(1.0)

    writer = threading.Thread(target=short_writer)
    writer.start()
    holding.wait()
    code, _, err = cli("index", "add", more, "--index", built, "--catalog", tmp_path / "more.csv")
    writer.join()
    assert code == 0, err
    code, out, _ = cli("index", "info", built, "--format", "json")
    assert json.loads(out)["history"][-1]["catalog"] == str(tmp_path / "more.csv")


def test_a_build_where_nothing_can_be_written_stops_before_embedding(survey, cli, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = cli("index", "build", survey / "cutouts", "--index", target / "idx", *TINY)
    assert code == 1 and "not a directory" in err and "embedding" not in err
    code, _, err = cli("index", "build", survey / "cutouts", "--index", "/proc/ulisse-idx", *TINY)
    assert code == 1 and "/proc/ulisse-idx: cannot write there" in err and "embedding" not in err


def test_embed_verb(survey, cli, tmp_path):
    code, _, err = cli("-q", "embed", survey / "cutouts" / "obj001.png", survey / "cutouts" / "obj000.fits",
                       "--out", tmp_path / "v.npz", *TINY)
    assert code == 0, err
    z = np.load(tmp_path / "v.npz")
    assert list(z["ids"]) == ["obj001", "obj000"] and z["vectors"].shape == (2, 256)


def test_plugins_verb_lists_first_party_plugins(cli):
    code, out, _ = cli("plugins", "--format", "json")
    info = json.loads(out)
    demo = next(p for p in info if p["name"] == "demo")
    assert demo["distribution"] == "ulisse" and "register_commands" in demo["hooks"]
    assert "demo" in demo["provides"]["commands"]  # (and 'sample', the labelled sample)


@pytest.mark.slow
def test_export_formats_are_looked_up_by_extension_and_name(built, cli, tmp_path):
    """The core registers its formats like a plugin: ECSV is one more registration, found by its extension."""
    ecsv = tmp_path / "r.ecsv"
    code, out, err = cli("query", built, "--id", "obj004", "-k", "3", "--format", "csv", "--output", ecsv)
    assert code == 0, err
    t = Table.read(ecsv, format="ascii.ecsv")
    assert list(t["id"]) == [line.split(",")[1] for line in out.splitlines()[1:]] and t.meta["prototype"] == "obj004"
    code, out, err = cli("anomalies", built, "--top", "2", "--format", "ecsv")
    assert code == 0 and out.startswith("# %ECSV"), err
    code, _, err = cli("anomalies", built, "--format", "fits")  # bytes: never printed, only written to a file
    assert code == 2 and "fits" in err and "ecsv" in err


@pytest.mark.slow
def test_the_global_device_is_the_verbs_default(cli, survey, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    args = ("-q", "embed", survey / "cutouts" / "obj001.png", "--out", tmp_path / "v.npz", "--model", "test_efficientnet",
            "--weights", "random")
    code, _, err = cli("--device", "cuda", *args)  # no CUDA: one note, and the CPU computes (issue 22)
    assert code == 0 and "--device cuda: no CUDA GPU" in err
    code, _, err = cli("--device", "cuda", *args, "--device", "cpu")  # the verb's own option wins
    assert code == 0 and "no CUDA GPU" not in err, err


def _bad_files(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.png").write_bytes(b"")
    (d / "junk.jpg").write_bytes(b"garbage")
    fits.PrimaryHDU(np.full((32, 32), np.nan)).writeto(d / "nan.fits")
    fits.PrimaryHDU(np.ones((5, 32, 32))).writeto(d / "shape.fits")
    return d


@pytest.mark.parametrize("name,reason", [("empty.png", "empty file"), ("junk.jpg", "not a readable image"),
                                         ("nan.fits", "all pixels are NaN"), ("shape.fits", "wrong shape")])
@pytest.mark.slow
def test_bad_cutouts_leave_index_byte_identical(built, cli, tmp_path, name, reason):
    bad = _bad_files(tmp_path) / name
    digest = tree_digest(built)
    code, out, err = cli("index", "add", bad, "--index", built)
    assert code != 0 and err.strip().splitlines()[-1] == f"ulisse: error: {bad}: {reason}" or reason in err
    lines = [line for line in err.splitlines() if line.startswith("ulisse: error")]
    assert len(lines) == 1 and str(bad) in lines[0] and reason in lines[0] and "Traceback" not in err
    assert tree_digest(built) == digest


def test_skip_bad_skips_and_reports(built, cli, tmp_path, survey):
    bad = _bad_files(tmp_path)
    Image.open(survey / "cutouts" / "obj001.png").save(bad / "good1.png")
    digest = tree_digest(built)
    code, _, err = cli("index", "add", bad, "--index", built, "--skip-bad")
    assert code == 0, err
    assert err.count("skipped") >= 4 and "added to" in err and tree_digest(built) != digest
    code, out, _ = cli("index", "info", built, "--format", "json")
    assert json.loads(out)["count"] == 25


@pytest.mark.parametrize("args,needle", [
    (("query", "{idx}", "--id", "nope"), "unknown id"),
    (("query", "{idx}", "--id", "obj001", "-k", "0"), "must be at least 1"),
    (("query", "{tmp}/missing", "--id", "obj001"), "no index here"),
    (("query", "{idx}", "--image", "{tmp}/none.png"), "no such file"),
    (("query", "{idx}", "--ra", "10"), "--ra and --dec go together"),
    (("query", "{idx}", "--ra", "10", "--dec", "10"), "no object within"),
    (("query", "{idx}", "--id", "obj001", "--output", "{tmp}/r.docx"), "unknown output format"),
    (("index", "info", "{tmp}/missing"), "no index here"),
    (("index", "add", "{tmp}/nothing", "--index", "{idx}"), "no such file or folder"),
    (("index", "add", "{survey}/cutouts", "--index", "{idx}"), "already in the index"),
    (("index", "build", "{survey}/cutouts", "--index", "{idx}", *TINY), "an index exists here already"),
    (("index", "build", "{survey}/cutouts", "--index", "{tmp}/new", "--factory", "Nope", *TINY), "not a FAISS index factory"),
    (("index", "build", "{survey}/cutouts", "--index", "{tmp}/new", "--catalog", "{tmp}/nocat.csv", *TINY), "catalogue not found"),
    (("index", "build", "{survey}/cutouts", "--index", "{tmp}/new", "--weights", "{tmp}/w.pth"), "weights file not found"),
    # checked before any model loads: the weights file named here does not exist, and is not what is reported
    (("index", "build", "{tmp}/nothing", "--index", "{tmp}/new", "--weights", "{tmp}/w.pth"), "no such file or folder"),
    (("index", "build", "{survey}/cutouts", "--index", "{tmp}/new", "--factory", "IVF1024,PQ32", "--weights",
      "{tmp}/w.pth"), "needs at least 1024 vectors to train"),
    (("index", "build", "{survey}/cutouts", "--index", "{tmp}/new", "--catalog", "{tmp}/nocat.csv", "--weights",
      "{tmp}/w.pth"), "catalogue not found"),
])  # (--device cuda without CUDA is no longer an error but a note and the CPU: test_the_global_device_is_the_verbs_default)
@pytest.mark.slow
def test_bad_input_one_line_error(built, cli, tmp_path, survey, args, needle):
    digest = tree_digest(built)
    fmt = {"idx": built, "tmp": tmp_path, "survey": survey}
    code, out, err = cli(*[a.format(**fmt) for a in args])
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert code != 0 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert tree_digest(built) == digest
    assert not (tmp_path / "new" / "manifest.json").exists()


def test_encoder_mismatch_is_an_error(built, cli, survey, tmp_path):
    """An index built with one encoder refuses another's weights (by sha256)."""
    import torch

    from ulisse.encoder import Encoder

    other = Encoder.load("test_efficientnet", weights="random", device="cpu").model.state_dict()
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in other.items()}
    w = tmp_path / "other.pth"
    torch.save(other, w)
    digest = tree_digest(built)
    code, _, err = cli("query", built, "--image", survey / "cutouts" / "obj001.png", "--weights", w)
    errors = [line for line in err.splitlines() if line.startswith("ulisse: error:")]
    assert code != 0 and len(errors) == 1 and "encoder mismatch" in errors[0]
    more = tmp_path / "more"
    make_survey(more, n_per_kind=1, seed=9, prefix="mm")
    code, _, err = cli("index", "add", more, "--index", built, "--weights", w)
    assert code != 0 and "encoder mismatch" in err
    assert tree_digest(built) == digest


def test_exit_code_and_single_line_in_a_real_process(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ulisse", "query", str(tmp_path / "none"), "--id", "x"],
                       capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert p.returncode == 1 and p.stderr.strip() == f"ulisse: error: {tmp_path / 'none'}: no index here (not a directory)"


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """`ulisse demo` in a real process: HDF sources -> index -> query -> table and PNG."""
    out = tmp_path / "hdf"
    p = subprocess.run([sys.executable, "-m", "ulisse", "demo", "--out", str(out), "--max-sources", "60", "-k", "6"],
                       capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)
    assert p.returncode == 0, p.stderr
    assert "nearest neighbours" in p.stdout and "rank" in p.stdout and "tf_efficientnet_lite0" in p.stdout
    table = p.stdout.split("neighbours:")[1].strip().splitlines()
    assert len(table) == 1 + 6 + 1  # header, 6 rows, PNG line
    assert Image.open(out / "demo_query.png").format == "PNG"
    assert json.loads((out / "manifest.json").read_text())["count"] == 60
    # the demo has (approximate) sky positions, so the README's query by position can be tried on it
    index = ulisse.open_index(out, device="cpu")
    first = index.metadata.iloc[5]
    assert -28.0 < first["dec"] < -27.5 and 52.9 < first["ra"] < 53.4  # the XDF, in Fornax
    p = subprocess.run([sys.executable, "-m", "ulisse", "query", str(out), "--ra", f"{first['ra']:.6f}", "--dec",
                        f"{first['dec']:.6f}", "-k", "3"], capture_output=True, text=True,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)
    assert p.returncode == 0 and f"sky position matched {first['id']}" in p.stdout, p.stderr


def test_index_build_reads_its_inputs_once(survey, cli, tmp_path, monkeypatch):
    """The early input check and the build share one gather (the folders and the catalogue are read once)."""
    import ulisse.inputs

    calls = []
    real = ulisse.inputs.gather
    monkeypatch.setattr(ulisse.inputs, "gather", lambda *a, **k: calls.append(a) or real(*a, **k))
    code, out, err = cli("-q", "index", "build", survey / "cutouts", "--index", tmp_path / "once",
                         "--catalog", survey / "catalog.csv", *TINY)
    assert code == 0, err
    assert len(calls) == 1


# -- issue 26: the rough edges a new user meets ------------------------------------------------

def test_a_missing_input_fails_before_the_heavy_imports(tmp_path):
    """`index build MISSING` checks its inputs before torch, timm, faiss or pandas are imported (as fast as --help)."""
    code = ("import sys\nfrom ulisse.cli import main\ntry:\n    main(['index', 'build', sys.argv[1], '--index', sys.argv[2]])\n"
            "except SystemExit as e:\n    print(e.code, sorted(m for m in ('torch', 'timm', 'faiss', 'pandas') if m in sys.modules))")
    for verb in (["index", "build"], ["embed"]):
        args = [str(tmp_path / "MISSING"), str(tmp_path / "X")]
        p = subprocess.run([sys.executable, "-c", code.replace("'index', 'build'", repr(verb)[1:-1]).replace(
            "'--index'", "'--out'" if verb == ["embed"] else "'--index'"), *args], capture_output=True, text=True,
            timeout=120)
        assert p.stdout.split() == ["1", "[]"], p.stdout + p.stderr
        assert p.stderr.strip() == f"ulisse: error: {tmp_path / 'MISSING'}: no such file or folder"


@pytest.mark.slow
def test_quiet_silences_the_weights_note(survey, cli, tmp_path):
    """With no --weights and no hub, the offline default (Lite0) is used with a note that -q silences."""
    args = ("embed", survey / "cutouts" / "obj001.png", "--out", tmp_path / "v.npz", "--device", "cpu")
    code, _, err = cli(*args)
    assert code == 0 and "offline default" in err, err
    code, _, err = cli("-q", *args)
    assert code == 0 and err == "", err
    code, _, err = cli("-q", "index", "build", survey / "cutouts", "--index", tmp_path / "i", "--device", "cpu")
    assert code == 0 and err == "", err


@pytest.mark.slow
def test_compact_after_a_clean_add_calls_the_old_segments_superseded(built, cli, survey, tmp_path):
    more = tmp_path / "more"
    make_survey(more, n_per_kind=1, prefix="new")
    code, _, err = cli("index", "add", more, "--index", built)
    assert code == 0, err
    code, _, err = cli("index", "compact", built)
    assert code == 0, err
    assert "interrupted" not in err and "superseded file(s) of generation 2 (generation 3 no longer uses them)" in err
    assert "2 segment(s) -> 1" in err


def test_text_tables_have_one_number_of_decimals_per_column():
    import pandas as pd

    from ulisse.results import text_table

    t = pd.DataFrame({"rank": [1, 2, 3], "id": ["a", "b", "c"], "distance": [9.10953, 10.1111, 9.3439],
                      "ra": [53.1687361, 53.2, 53.3], "score": [0.5, 12.25, 3.0], "area": [2420.0, 1570.0, 43.0],
                      "flux": [183321.33, 78565.7, 2805.2], "z": [0.0123, 0.1, np.nan]})
    rows = [line.split() for line in text_table(t).splitlines()[1:]]
    cols = dict(zip(t.columns, zip(*rows)))
    assert cols["distance"] == ("9.1095", "10.1111", "9.3439") and cols["ra"][0] == "53.168736"
    assert cols["score"] == ("0.5000", "12.2500", "3.0000") and cols["area"] == ("2420", "1570", "43")
    assert cols["flux"] == ("183321", "78566", "2805") and cols["z"] == ("0.01230", "0.10000", "-")


def test_exports_ecsv_with_relative_sources_and_write_before_printing(built, cli, tmp_path):
    ecsv = tmp_path / "a.ecsv"
    code, out, err = cli("anomalies", built, "--top", "3", "--output", ecsv)
    assert code == 0, err
    t = Table.read(ecsv, format="ascii.ecsv")
    assert len(t) == 3 and t.meta["method"] == "kth"
    assert all(not os.path.isabs(s) and s.startswith("..") for s in t["source"])  # relative to the index
    code, out, err = cli("query", built, "--id", "obj004", "-k", "3", "--format", "csv")
    sources = [line.split(",")[5] for line in out.splitlines()[1:]]
    assert code == 0 and sources and all(not os.path.isabs(s) for s in sources), out
    for verb in (("query", built, "--id", "obj004"), ("anomalies", built)):
        code, out, err = cli(*verb, "--output", "/nonexistent/x.csv")
        assert code == 1 and out == "" and err.strip() == "ulisse: error: --output /nonexistent/x.csv: no such folder /nonexistent"


def test_value_errors_are_one_line_without_a_usage_block(built, cli):
    for args in (("query", built, "--id", "obj004", "-k", "x"), ("anomalies", built, "--method", "nope"),
                 ("index", "build", "x", "--index", "y", "--metric", "nope")):
        code, out, err = cli(*args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Usage" not in err, err
        assert err.startswith("ulisse: error: Invalid value for")
    for args in (("--ra", "150", "--dec", "2"), ("--id", "obj004")):
        code, out, err = cli("query", built, *args, "--radius", "-1")
        assert code == 1 and out == "" and err.strip() == "ulisse: error: --radius -1: must be a positive number of arcsec"
    code, _, err = cli("index", "build", "x")  # a missing option is a usage mistake: click's usage block
    assert code == 2 and "Usage" in err and "--index" in err


def test_anomaly_fractions_speak_of_no_prototypes(built, cli):
    code, out, err = cli("anomalies", built, "--top", "5", "--label", "label")
    assert code == 0, err
    assert "class fractions at the top (label; labelled objects only):" in out and "prototype" not in out


def test_head_train_counts_agree_and_report_says_which_rows_it_scores(built, cli, tmp_path):
    code, out, err = cli("head", "train", built, "--target", "r_mag", "--name", "rm", "--members", "1",
                         "--epochs", "5")
    assert code == 0, err
    import re

    # one set of counts, said alike on stdout and in the log: trained on + held out = 24 objects
    m = re.search(r"trained on (\d+) objects; (\d+) held out \((\d+) to stop the training early, (\d+) to calibrate "
                  r"the error bars and give the metrics below\)", out)
    assert m, out
    trained, held, stop, scored = map(int, m.groups())
    assert trained + held == 24 and stop + scored == held
    assert f"held out ({scored} objects, too few to trust: 10 or more wanted): RMSE" in out  # 24 objects in all
    assert f"trained on {trained} objects, {held} held out: RMSE" in err and f"on {scored} of them" in err, err
    code, out, err = cli("head", "train", built, "--target", "r_mag", "--name", "rr", "--method", "ridge")
    assert code == 0 and re.search(r"; (\d+) held out \(all of them give the metrics below\)", out), out
    code, out, err = cli("head", "report", built, "--name", "rm", "--truth", "r_mag", "--out", tmp_path / "rep")
    assert code == 0, err  # every object was used: the held-out ones are scored, never the training ones
    assert f"the {scored} held-out objects (validation), not the {trained} it trained on" in out
    assert re.search(rf"objects +{scored}\n", out), out
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"obj{i:03d}" for i in range(24)) + "\n")
    code, out, err = cli("head", "report", built, "--name", "rm", "--truth", "r_mag", "--ids", ids, "--out",
                         tmp_path / "rep2")
    assert code == 0 and f"({trained} of the 24 trained the head: scores on them flatter it)" in out, out


@pytest.mark.slow
def test_demo_says_how_many_sources_it_detected_and_which_it_indexes():
    from ulisse.plugins.demo import detect_hdf_sources, detection_note

    sources = detect_hdf_sources(max_sources=40)
    note = detection_note(sources)
    top = max(int(i.split("-")[1]) for i in sources.catalog["id"])
    assert top <= sources.detected and f"detected {sources.detected} sources" in note
    assert f"hdf-{sources.detected:04d}" in note and "indexing the 40 brightest" in note


def test_every_cache_is_under_the_one_cache_folder(monkeypatch, tmp_path):
    from ulisse import runtime
    from ulisse.registry import Config
    from ulisse_bench import discovery, plugin

    monkeypatch.delenv("ULISSE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "ulisse"
    assert Config().cache_dir == expected and runtime.cache_dir() == expected
    assert discovery.default_cache() == expected / "benchmarks"
    assert plugin._in_cache("benchmarks", "agn-retrieval")() == str(expected / "benchmarks" / "agn-retrieval")
    monkeypatch.setenv("ULISSE_CACHE_DIR", str(tmp_path / "mine"))
    assert runtime.cache_dir() == tmp_path / "mine" == Config().cache_dir


def test_omp_threads_sleep_only_when_other_work_holds_the_cores(monkeypatch):
    import os

    from ulisse.cli import _busy

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 2.0, 2.0))
    assert not _busy()  # an idle machine: libgomp's short spin (faster steps)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.1, 0.1))
    assert _busy()  # a core held by another job: threads sleep when they wait

    def no_load():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", no_load)
    assert _busy()


def test_an_output_inside_the_index_is_refused_before_any_work(built, cli, tmp_path):
    """--output or --png into the index's own folder (or below it) could replace one of its files: refused, and
    the index is left as it was."""
    from ulisse.testing import tree_digest

    before = tree_digest(built)
    for args in (("--output", built / "manifest.json"), ("--output", built / "derived" / "x.csv"),
                 ("--png", built / "grid.png")):
        code, out, err = cli("query", built, "--id", "obj001", "-k", "3", *args)
        assert code == 1 and "inside the index" in err and len(err.strip().splitlines()) == 1, err
    code, out, err = cli("anomalies", built, "--top", "3", "--output", built / "manifest.json")
    assert code == 1 and "inside the index" in err
    assert tree_digest(built) == before
    code, out, err = cli("query", built, "--id", "obj001", "-k", "3", "--png", tmp_path / "grid.txt")
    assert code == 1 and "expected a .png file name" in err


def test_an_error_of_the_machine_is_one_line_naming_the_path(cli, tmp_path):
    """An OSError (a folder that cannot be made, a full disk) is the CLI's one line naming the path, not a
    traceback; an --out that cannot be written fails before the work."""
    code, out, err = cli("sample", "/proc/no-such-folder/hdf")
    assert code == 1 and err.startswith("ulisse: error: /proc/no-such-folder") and len(err.strip().splitlines()) == 1
    code, out, err = cli("embed", tmp_path, "--out", tmp_path / "missing" / "v.npz")
    assert code == 1 and "--out" in err and "no such folder" in err and "embedding" not in err


def test_a_number_compared_with_text_in_where_is_an_error(built, cli):
    code, out, err = cli("query", built, "--id", "obj001", "-k", "3", "--where", "ra > 'abc'")
    assert code == 1 and "column 'ra' holds numbers, compared with the text 'abc'" in err


def test_a_where_value_no_object_has_is_named_with_the_columns_values(built, cli):
    before = tree_digest(built)
    code, out, err = cli("query", built, "--id", "obj001", "-k", "3", "--where", "label == 'agnn'")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "no object has label 'agnn' (its values: double, round, streak)" in err
    code, out, err = cli("anomalies", built, "--top", "3", "--where", "label == 'agnn' and ra > 0")
    assert code == 1 and "no object has label 'agnn'" in err and tree_digest(built) == before
    code, out, _ = cli("query", built, "--id", "obj001", "-k", "3", "--where", "ra > 1000", "--format", "json")
    assert code == 0 and json.loads(out)["rows"] == []  # a range that no object falls in is an empty answer


def test_an_index_moved_with_its_cutouts_keeps_its_thumbnails_and_moved_cutouts_are_said(survey, cli, tmp_path, caplog):
    import shutil

    from ulisse.plot import thumbnail

    inside = tmp_path / "idx"
    shutil.copytree(survey / "cutouts", inside / "cutouts")  # as the demo and the SDSS batch keep them
    code, _, err = cli("-q", "index", "build", inside / "cutouts", "--index", inside, *TINY)
    assert code == 0, err
    index = ulisse.open_index(inside)
    assert index.metadata["source"].iloc[0].startswith("cutouts/")  # relative: the folder moves whole
    moved = tmp_path / "moved"
    inside.rename(moved)
    assert thumbnail(ulisse.open_index(moved), "obj004") is not None
    outside = tmp_path / "outside"
    code, _, err = cli("-q", "index", "build", moved / "cutouts", "--index", outside, *TINY)
    assert code == 0, err
    assert os.path.isabs(ulisse.open_index(outside).metadata["source"].iloc[0])  # kept where it is
    shutil.rmtree(moved / "cutouts")
    code, _, err = cli("query", outside, "--id", "obj004", "-k", "3", "--png", tmp_path / "g.png")
    assert code == 0 and "4 of 4 tiles show no image (their cutout files are missing, or were moved)" in err + caplog.text
