"""The denoise plugin: real torch training on small data, formats kept, FITS headers kept, the preprocessor,
the encoder spec, the report, the UI page and one-line errors."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest

from ulisse.errors import InputError
from ulisse.plugins import denoise
from ulisse.plugins.denoise.reporting import psnr
from ulisse.plugins.denoise.training import TrainOptions

SIDE = 32
SIGMA = 0.1  # noise, flux units
FAST = TrainOptions(steps=120, batch_size=8, crop=16, width=8, depth=2, lr=5e-3, validate_every=40)


def scene(rng, side=SIDE):
    """A clean g, r, i cube: two or three Gaussian blobs of different widths and colours."""
    y, x = np.mgrid[0:side, 0:side]
    cube = np.zeros((3, side, side))
    for _ in range(rng.integers(2, 4)):
        cy, cx, s = rng.uniform(6, side - 6, 2).tolist() + [rng.uniform(1.5, 4)]
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s**2))
        cube += rng.uniform(0.5, 2.0) * rng.uniform(0.5, 1.0, 3)[:, None, None] * blob
    return cube.astype(np.float32)


def write_fits(path, data, **cards):
    from astropy.io import fits

    hdu = fits.PrimaryHDU(data)
    for k, v in cards.items():
        hdu.header[k] = v
    fits.HDUList([hdu, fits.ImageHDU(np.arange(6.0).reshape(2, 3), name="EXTRA")]).writeto(path)


def write_png(path, cube):
    from PIL import Image

    Image.fromarray(np.clip(cube.transpose(1, 2, 0) / 2.5 * 255, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """30 noisy/clean pairs as FITS cubes and as PNGs, plus 6 held-out ones."""
    root = tmp_path_factory.mktemp("denoise-pairs")
    rng = np.random.default_rng(1)
    for split, n in (("train", 30), ("test", 6)):
        for kind in ("noisy_fits", "clean_fits", "noisy_png", "clean_png"):
            (root / split / kind).mkdir(parents=True)
        for k in range(n):
            clean = scene(rng)
            noisy = clean + rng.normal(0, SIGMA, clean.shape).astype(np.float32)
            write_fits(root / split / "clean_fits" / f"o{k:03d}.fits", clean)
            write_fits(root / split / "noisy_fits" / f"o{k:03d}.fits", noisy, OBSERVER="ulisse", BUNIT="nanomaggy")
            write_png(root / split / "clean_png" / f"o{k:03d}.png", clean)
            write_png(root / split / "noisy_png" / f"o{k:03d}.png", noisy + rng.normal(0, 0.15, clean.shape))
    return root


def supervised_model(pairs, tmp_path_factory, kind):
    out = tmp_path_factory.mktemp("models") / f"{kind}-sup"
    denoise.train(pairs / "train" / f"noisy_{kind}", pairs / "train" / f"clean_{kind}", options=FAST, device="cpu",
                  out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def fits_model(pairs, tmp_path_factory):
    return supervised_model(pairs, tmp_path_factory, "fits")


@pytest.fixture(scope="module")
def png_model(pairs, tmp_path_factory):
    return supervised_model(pairs, tmp_path_factory, "png")


def mean_psnr(model, pairs, kind):
    from ulisse.plugins.denoise.images import read_image

    den = denoise.load(model)
    files = sorted((pairs / "test" / f"noisy_{kind}").iterdir())
    noisy = [read_image(f) for f in files]
    clean = [read_image(pairs / "test" / f"clean_{kind}" / f.name) for f in files]
    out = den.denoise_arrays([n.data for n in noisy])
    before = np.mean([psnr(c.data, n.data, c.domain) for c, n in zip(clean, noisy)])
    after = np.mean([psnr(c.data, o, c.domain) for c, o in zip(clean, out)])
    return before, after


# -- training ----------------------------------------------------------------------

@pytest.mark.slow
def test_supervised_fits_training_denoises_held_out_cutouts(fits_model, pairs):
    before, after = mean_psnr(fits_model, pairs, "fits")
    assert after > before + 3.0, (before, after)
    cfg = json.loads((fits_model / "config.json").read_text())
    assert cfg["domain"] == "flux" and cfg["channels"] == 3 and cfg["objective"] == "supervised"
    assert cfg["scale"][0] == pytest.approx(SIGMA, rel=0.5)  # the noise sigma, in flux units
    assert (fits_model / "model.safetensors").stat().st_size > 1000


@pytest.mark.slow
def test_supervised_png_training_denoises_held_out_cutouts(png_model, pairs):
    before, after = mean_psnr(png_model, pairs, "png")
    assert after > before + 2.0, (before, after)


@pytest.mark.slow
def test_self_supervised_training_beats_the_noisy_input(pairs, tmp_path):
    den = denoise.train(pairs / "train" / "noisy_fits", self_supervised=True, device="cpu", out=tmp_path / "ss",
                        options=TrainOptions(steps=200, batch_size=8, crop=16, width=8, depth=2, lr=5e-3,
                                             mask_fraction=0.1, validate_every=50), progress=False)
    assert den.config.objective == "self-supervised" and not den.config.residual
    before, after = mean_psnr(tmp_path / "ss", pairs, "fits")
    assert after > before + 1.0, (before, after)


def test_single_band_and_odd_sizes(tmp_path):
    rng = np.random.default_rng(3)
    for d in ("n", "c"):
        (tmp_path / d).mkdir()
    for k in range(6):
        clean = scene(rng, 40)[1]
        write_fits(tmp_path / "c" / f"x{k}.fits", clean)
        write_fits(tmp_path / "n" / f"x{k}.fits", clean + rng.normal(0, SIGMA, clean.shape).astype(np.float32))
    den = denoise.train(tmp_path / "n", tmp_path / "c", options=TrainOptions(steps=5, batch_size=4, crop=16, width=4,
                                                                            depth=2), device="cpu", progress=False)
    assert den.config.channels == 1
    out = den.denoise_arrays([rng.normal(size=(1, 37, 29)).astype(np.float32)])[0]  # padded to a multiple of 4, cropped
    assert out.shape == (1, 37, 29) and out.dtype == np.float32


# -- saving, loading, fingerprints -------------------------------------------------

def test_save_load_round_trip_and_fingerprint(fits_model, pairs, tmp_path):
    a, b = denoise.load(fits_model), denoise.load(fits_model)
    x = np.random.default_rng(0).normal(size=(3, SIDE, SIDE)).astype(np.float32)
    np.testing.assert_array_equal(a.denoise_arrays([x])[0], b.denoise_arrays([x])[0])
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    other = denoise.train(pairs / "train" / "noisy_fits", pairs / "train" / "clean_fits", device="cpu",
                          options=TrainOptions(steps=3, batch_size=4, crop=16, width=8, depth=2, seed=5),
                          out=tmp_path / "other", progress=False)
    assert other.fingerprint != a.fingerprint


# -- apply: formats, shapes, dtypes, headers ---------------------------------------------

def test_apply_fits_keeps_float_shape_and_header(fits_model, pairs, tmp_path, cli):
    from astropy.io import fits

    src = pairs / "test" / "noisy_fits" / "o000.fits"
    code, out, err = cli("denoise", "apply", fits_model, src, "--out", tmp_path / "out")
    assert code == 0, err
    with fits.open(src) as a, fits.open(tmp_path / "out" / "o000.fits") as b:
        assert len(b) == 2 and b[1].name == "EXTRA"
        np.testing.assert_array_equal(a[1].data, b[1].data)
        assert b[0].data.dtype.kind == "f" and b[0].data.shape == a[0].data.shape == (3, SIDE, SIDE)
        assert b[0].header["OBSERVER"] == "ulisse" and b[0].header["BUNIT"] == "nanomaggy"
        assert "denoised by ulisse denoise" in str(b[0].header["HISTORY"])
        assert not np.array_equal(a[0].data, b[0].data)
        assert np.std(b[0].data - a[0].data) > SIGMA / 3  # noise removed, in flux units


def test_apply_png_gives_png_of_same_size_and_mode(png_model, pairs, tmp_path, cli):
    from PIL import Image

    code, out, err = cli("denoise", "apply", png_model, pairs / "test" / "noisy_png", "--out", tmp_path / "out")
    assert code == 0, err
    assert "6 denoised cutout(s) written" in out
    for f in sorted((pairs / "test" / "noisy_png").iterdir()):
        with Image.open(f) as a, Image.open(tmp_path / "out" / f.name) as b:
            assert (b.format, b.mode, b.size) == ("PNG", a.mode, a.size)


def test_2d_float64_fits_stays_2d_float64(tmp_path):
    from astropy.io import fits

    rng = np.random.default_rng(4)
    for d in ("n", "c"):
        (tmp_path / d).mkdir()
    for k in range(4):
        clean = scene(rng)[0].astype(np.float64)
        fits.PrimaryHDU(clean).writeto(tmp_path / "c" / f"b{k}.fits")
        fits.PrimaryHDU(clean + rng.normal(0, SIGMA, clean.shape)).writeto(tmp_path / "n" / f"b{k}.fits")
    den = denoise.train(tmp_path / "n", tmp_path / "c", options=TrainOptions(steps=3, batch_size=4, crop=16, width=4,
                                                                            depth=2), device="cpu", progress=False)
    denoise.apply(den, [tmp_path / "n" / "b0.fits"], tmp_path / "out")
    data = fits.getdata(tmp_path / "out" / "b0.fits")
    assert data.dtype == np.dtype(">f8") and data.shape == (SIDE, SIDE)


# -- the preprocessor before embedding ---------------------------------------------------

def test_preprocessor_is_registered_and_keeps_uint8_shapes(png_model):
    from ulisse.registry import preprocessors

    step = preprocessors()["denoise"].load(str(png_model))
    assert step.fingerprint == denoise.load(png_model).fingerprint
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8), rng.integers(0, 255, (40, 24, 3), dtype=np.uint8)]
    out = step(images)
    assert [o.shape for o in out] == [(SIDE, SIDE, 3), (40, 24, 3)] and all(o.dtype == np.uint8 for o in out)
    assert np.abs(out[0].astype(int) - images[0]).mean() > 5  # it changed the noise


def test_preprocessor_refuses_a_flux_model(fits_model):
    from ulisse.registry import preprocessors

    with pytest.raises(InputError, match="8-bit"):
        preprocessors()["denoise"].load(str(fits_model))


def test_encoder_spec_changes_with_the_denoiser(png_model, pairs, tmp_path, tiny_encoder):
    from ulisse import Encoder

    if "preprocess" not in inspect.signature(Encoder.load).parameters:
        pytest.skip("Encoder.load(preprocess=...) is not wired in this version of ulisse")
    other = tmp_path / "other"
    denoise.train(pairs / "train" / "noisy_png", pairs / "train" / "clean_png", device="cpu", out=other,
                  options=TrainOptions(steps=3, batch_size=4, crop=16, width=8, depth=2, seed=9), progress=False)
    specs = [Encoder.load("test_efficientnet", weights="random", device="cpu", preprocess=p).spec
             for p in ([], [("denoise", str(png_model))], [("denoise", str(other))])]
    assert len({json.dumps(s.to_dict(), sort_keys=True) for s in specs}) == 3
    assert not specs[0].compatible_with(specs[1]) and not specs[1].compatible_with(specs[2])
    fingerprints = [p["fingerprint"] for p in specs[1].preprocessors]
    assert fingerprints == [denoise.load(png_model).fingerprint]


# -- report -------------------------------------------------------------------------------

def test_report_compares_with_classical_denoisers(fits_model, pairs, tmp_path, cli):
    code, out, err = cli("denoise", "report", fits_model, "--noisy", pairs / "test" / "noisy_fits", "--clean",
                         pairs / "test" / "clean_fits", "--out", tmp_path / "rep")
    assert code == 0, err
    import pandas as pd

    summary = pd.read_csv(tmp_path / "rep" / "summary.csv", index_col="method")
    assert list(summary.index) == ["input", "gaussian", "nl-means", "wavelet", "model"]
    assert summary.loc["gaussian", "psnr_mean"] > summary.loc["input", "psnr_mean"]
    assert summary.loc["model", "psnr_mean"] > summary.loc["input", "psnr_mean"] + 3
    assert 0 < summary.loc["model", "ssim_mean"] <= 1
    assert len(pd.read_csv(tmp_path / "rep" / "metrics.csv")) == 6 * 5
    from PIL import Image

    with Image.open(tmp_path / "rep" / "before_after.png") as im:
        assert im.format == "PNG" and im.size[0] > 500
    assert "Gaussian filter, best sigma" in out
    assert "none of them is a pair the model was trained on" in (tmp_path / "rep" / "report.md").read_text()


def test_report_leaves_out_the_pairs_the_model_trained_on(fits_model, pairs, tmp_path, cli):
    from ulisse.plugins.denoise.images import read_image
    from ulisse.plugins.denoise.model import image_key

    noisy, clean = pairs / "train" / "noisy_fits", pairs / "train" / "clean_fits"
    training = json.loads((fits_model / "config.json").read_text())["training"]
    assert (len(training["train_keys"]), len(training["held_out_keys"])) == (27, 3)
    r = denoise.report(fits_model, noisy, clean)
    assert len(r.trained_on) == 27 and r.per_image["id"].nunique() == 3
    assert "27 pair(s) the model was trained on left out; 3 of them were held out" in r.markdown
    code, out, err = cli("denoise", "report", fits_model, "--noisy", noisy, "--clean", clean, "--out", tmp_path / "all",
                         "--include-training")
    assert code == 0 and "30 noisy/clean pairs" in out and "27 of them are pairs the model was trained on" in out, err
    assert pd.read_csv(tmp_path / "all" / "metrics.csv")["id"].nunique() == 30
    # --limit: the counts are those of the pairs judged, not of the whole folder
    first = sorted(noisy.iterdir())[:5]
    among = sum(image_key(read_image(f).data) in seen for f in first) if (seen := set(training["train_keys"])) else 0
    r = denoise.report(fits_model, noisy, clean, limit=5, include_training=True)
    assert r.per_image["id"].nunique() == 5 and (f"{among} of them are pairs" in r.markdown
                                                  or "none of them is a pair" in r.markdown and among == 0)
    r = denoise.report(fits_model, noisy, clean, limit=2)
    assert r.per_image["id"].nunique() == 2 and "2 of them were held out" in r.markdown
    seen = set(training["train_keys"])
    only = tmp_path / "seen"
    for side in ("noisy", "clean"):
        (only / side).mkdir(parents=True)
    for f in [f for f in sorted(noisy.iterdir()) if image_key(read_image(f).data) in seen][:2]:
        (only / "noisy" / f.name).write_bytes(f.read_bytes())
        (only / "clean" / f.name).write_bytes((clean / f.name).read_bytes())
    one_line_error(*cli("denoise", "report", fits_model, "--noisy", only / "noisy", "--clean", only / "clean",
                        "--out", tmp_path / "r2")[:3:2], "all 2 pairs are pairs the model was trained on",
                   "--include-training")
    old = tmp_path / "old-model"
    old.mkdir()
    (old / "model.safetensors").write_bytes((fits_model / "model.safetensors").read_bytes())
    config = json.loads((fits_model / "config.json").read_text())
    for key in ("train_keys", "held_out_keys"):
        del config["training"][key]
    (old / "config.json").write_text(json.dumps(config))
    r = denoise.report(old, only / "noisy", only / "clean")
    assert "does not record the images it was trained on" in r.markdown and len(r.per_image) == 2 * 5


# -- bad input: one line, non-zero, nothing damaged -----------------------------------

def one_line_error(code, err, *fragments):
    assert code != 0
    lines = [x for x in err.strip().splitlines() if x.startswith("ulisse: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_bad_inputs_are_one_line_errors(fits_model, png_model, pairs, tmp_path, cli):
    noisy, clean = pairs / "train" / "noisy_fits", pairs / "train" / "clean_fits"
    one_line_error(*cli("denoise", "train", "--noisy", noisy, "--out", tmp_path / "m")[:3:2], "--self-supervised")
    one_line_error(*cli("denoise", "train", "--noisy", noisy, "--clean", clean, "--self-supervised", "--out",
                        tmp_path / "m")[:3:2], "not both")
    one_line_error(*cli("denoise", "train", "--noisy", tmp_path / "nowhere", "--self-supervised", "--out",
                        tmp_path / "m")[:3:2], "nowhere: no such folder (noisy cutouts)")
    one_line_error(*cli("denoise", "train", "--noisy", noisy, "--clean", tmp_path / "nowhere", "--out",
                        tmp_path / "m")[:3:2], "nowhere: no such folder (clean cutouts)")
    (tmp_path / "empty").mkdir()
    one_line_error(*cli("denoise", "train", "--noisy", tmp_path / "empty", "--self-supervised", "--out",
                        tmp_path / "m")[:3:2], "no cutouts")
    assert not (tmp_path / "m").exists()  # a failed training leaves no empty model folder behind
    # an --out folder that cannot be made, or a file (click says so): one line, before any work
    for out, why in (("/proc/x", "cannot make this folder"), (fits_model / "config.json", "is a file")):
        code, _, err = cli("denoise", "train", "--noisy", noisy, "--self-supervised", "--out", out)
        one_line_error(code, err, str(out), why)
        assert "trained" not in err
        one_line_error(*cli("denoise", "apply", fits_model, noisy, "--out", out)[:3:2], str(out), why)
        one_line_error(*cli("denoise", "report", fits_model, "--noisy", pairs / "test" / "noisy_fits", "--clean",
                            pairs / "test" / "clean_fits", "--out", out)[:3:2], str(out), why)
    one_line_error(*cli("denoise", "train", "--noisy", noisy, "--clean", pairs / "train" / "clean_png", "--out",
                        tmp_path / "m")[:3:2], "does not match")
    one_line_error(*cli("denoise", "train", "--noisy", noisy, "--self-supervised", "--out", fits_model)[:3:2],
                   "--overwrite")
    one_line_error(*cli("denoise", "apply", tmp_path / "no-model", noisy, "--out", tmp_path / "o")[:3:2],
                   "no such denoiser model folder")
    one_line_error(*cli("denoise", "apply", png_model, noisy / "o000.fits", "--out", tmp_path / "o")[:3:2],
                   "o000.fits", "trained on 8-bit")
    one_line_error(*cli("denoise", "apply", fits_model, noisy, "--out", noisy)[:3:2], "overwrite the input")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    one_line_error(*cli("denoise", "apply", png_model, tmp_path / "broken.png", "--out", tmp_path / "o")[:3:2],
                   "broken.png", "not a readable image")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "model.safetensors").write_bytes((png_model / "model.safetensors").read_bytes()[:100])
    (damaged / "config.json").write_text((png_model / "config.json").read_text())
    one_line_error(*cli("denoise", "apply", damaged, pairs / "test" / "noisy_png", "--out", tmp_path / "o")[:3:2],
                   "safetensors")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_skip_bad_goes_on(png_model, pairs, tmp_path, cli):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "in" / "good.png").write_bytes((pairs / "test" / "noisy_png" / "o001.png").read_bytes())
    code, out, err = cli("denoise", "apply", png_model, tmp_path / "in", "--out", tmp_path / "o", "--skip-bad")
    assert code == 0 and "1 denoised cutout(s) written, 1 skipped" in out
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["good.png"]
    (tmp_path / "in" / "good.png").unlink()  # nothing usable left: nothing done is no success
    one_line_error(*cli("denoise", "apply", png_model, tmp_path / "in", "--out", tmp_path / "o2", "--skip-bad")[:3:2],
                   "no cutout could be denoised: 1 skipped", "bad.png")
    assert not (tmp_path / "o2").exists()
    one_line_error(*cli("denoise", "apply", png_model, tmp_path / "in", "--out", tmp_path / "o3")[:3:2], "bad.png")
    assert not (tmp_path / "o3").exists()  # a failed run leaves no empty folder


# -- the web UI page ------------------------------------------------------------------

def test_ui_page_shows_before_and_after(png_model, tiny_index):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from ulisse.testing import page_script

    at = AppTest.from_file(str(page_script("Denoise")), default_timeout=60)
    at.session_state["index_path"] = str(tiny_index.path)
    at.session_state["denoise.model"] = str(png_model)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    captions = [c for im in at.image for c in im.captions]
    assert any("before" in c for c in captions) and any("after" in c for c in captions), captions
    at.text_input(key="denoise.id").set_value("no-such-object").run()
    assert not at.exception and any("not in this index" in w.value for w in at.warning)
    at.session_state["denoise.model"] = str(png_model.parent / "missing")
    at.run()
    assert not at.exception and any("no such denoiser" in e.value for e in at.error)


def test_ui_page_is_registered():
    from ulisse.registry import ui_pages

    assert "Denoise" in [p.title for p in ui_pages()]


def test_index_build_with_denoise_records_it_and_queries_by_image_apply_it(png_model, survey, tmp_path, cli):
    import ulisse

    code, out, err = cli("index", "build", survey / "cutouts", "--index", tmp_path / "idx", "--catalog",
                         survey / "catalog.csv", "--model", "test_efficientnet", "--weights", "random",
                         "--device", "cpu", "--denoise", png_model)
    assert code == 0, err
    index = ulisse.open_index(tmp_path / "idx")
    steps = index.encoder_spec.preprocessors
    assert [(s["name"], s["fingerprint"]) for s in steps] == [("denoise", denoise.load(png_model).fingerprint)]
    probe = survey / "cutouts" / "obj001.png"
    code, out, err = cli("query", tmp_path / "idx", "--image", probe, "-k", "3", "--format", "csv")
    assert code == 0, err
    import io

    import pandas as pd

    table = pd.read_csv(io.StringIO(out))
    assert table["id"].iloc[0] == "obj001" and table["distance"].iloc[0] < 1e-3  # the same denoised vector


def test_fits_fluxes_are_shown_with_their_first_row_at_the_bottom():
    """The before/after pictures of FITS fluxes keep the orientation the index's thumbnails have."""
    from ulisse.plugins.denoise.images import FLUX

    data = np.zeros((3, 8, 8), np.float32)
    data[:, 0, :] = 1.0  # the FITS file's first row: south on a north-up cutout
    shown = denoise.display_rgb(data, FLUX, 0.0, 1.0)
    assert shown.shape == (8, 8, 3) and shown[-1].min() == 255 and shown[:-1].max() == 0
    old = denoise.display_rgb(data, FLUX, 0.0, 1.0, fits_rows="top-down")
    assert old[0].min() == 255 and old[1:].max() == 0
