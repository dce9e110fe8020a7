"""Inference runtimes: ONNX Runtime and OpenVINO give torch fp32's vectors; the export is cached; precision is in the spec."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import ulisse
from ulisse import Encoder
from ulisse import runtime as rt


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def cutouts(survey):
    from ulisse.cutouts import read_cutout
    from ulisse.inputs import list_cutout_files

    files, _ = list_cutout_files([survey / "cutouts"])
    return [read_cutout(f).image for f in files[:8]]


@pytest.fixture(scope="module")
def lite0_torch():
    return Encoder.load(weights="lite0", device="cpu", runtime="torch", preset="ulisse")


@pytest.mark.slow
def test_onnx_runtime_gives_torch_fp32_vectors(lite0_torch, cutouts):
    onnx = Encoder.load(weights="lite0", device="cpu", runtime="onnx", preset="ulisse")
    assert onnx.runtime.name == "onnx" and onnx.spec.compatible_with(lite0_torch.spec)
    v, maps = onnx.embed_images(cutouts, return_maps=True)
    ref, ref_maps = lite0_torch.embed_images(cutouts, return_maps=True)
    assert maps.shape == ref_maps.shape == (len(cutouts), 1280, 7, 7)
    assert _cos(v, ref).min() >= 0.999
    # pooling and symmetry act on the maps, so they agree on every runtime too
    a = onnx.with_options(pool="centre:3", tta="d4").embed_images(cutouts[:3])
    b = lite0_torch.with_options(pool="centre:3", tta="d4").embed_images(cutouts[:3])
    assert _cos(a, b).min() >= 0.999


def test_auto_is_onnx_runtime_on_a_cpu(lite0_encoder):
    assert lite0_encoder.runtime.name == ("onnx" if rt.available("onnx") else "torch")


@pytest.mark.slow
@pytest.mark.skipif(not rt.available("openvino"), reason="OpenVINO is not installed")
def test_openvino_runtime_gives_torch_fp32_vectors(lite0_torch, cutouts):
    ov = Encoder.load(weights="lite0", device="cpu", runtime="openvino", preset="ulisse")
    assert ov.runtime.name == "openvino"
    assert _cos(ov.embed_images(cutouts), lite0_torch.embed_images(cutouts)).min() >= 0.999


@pytest.mark.slow
@pytest.mark.skipif(not rt.cpu_has_bf16(), reason="no OpenVINO, or a CPU without bf16 arithmetic")
def test_openvino_bf16_is_the_auto_precision_on_a_bf16_cpu(lite0_torch, cutouts):
    auto = Encoder.load(weights="lite0", device="cpu", preset="ulisse", precision="auto")
    assert (auto.spec.precision, auto.runtime.name) == ("bf16", "openvino")
    assert _cos(auto.embed_images(cutouts), lite0_torch.embed_images(cutouts)).min() >= 0.99
    # auto is fp32 where the runtime asked for cannot compute in bf16; the preset ulisse pins fp32
    assert Encoder.load(weights="lite0", device="cpu", precision="auto", runtime="onnx").spec.precision == "fp32"
    assert Encoder.load(weights="lite0", device="cpu", preset="ulisse").spec.precision == "fp32"


@pytest.mark.slow
def test_export_is_cached_per_network_and_a_damaged_file_is_replaced(tmp_path, monkeypatch, caplog, cutouts):
    monkeypatch.setenv("ULISSE_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="ulisse"):
        first = Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="onnx")
    assert "exporting test_efficientnet" in caplog.text
    files = list((tmp_path / "cache" / "onnx").iterdir())
    assert len(files) == 1 and files[0].suffix == ".onnx" and first.spec.network_digest() in files[0].name
    stamp = files[0].stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ulisse"):
        again = Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="onnx", pool="centre:1",
                             tta="rot4")  # pooling and symmetry do not change the network: same file
    assert "exporting" not in caplog.text and files[0].stat().st_mtime_ns == stamp
    assert list((tmp_path / "cache" / "onnx").iterdir()) == files
    files[0].write_bytes(b"not an onnx model")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ulisse"):
        fixed = Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="onnx")
    assert "unusable" in caplog.text and "exporting" in caplog.text
    torch_enc = Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="torch")
    assert _cos(fixed.embed_images(cutouts), torch_enc.embed_images(cutouts)).min() >= 0.999
    assert again.spec.pool == "centre:1"


def test_runtime_choices_are_checked(cli, survey, tmp_path):
    with pytest.raises(ulisse.InputError, match="--runtime tensorrt"):
        Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="tensorrt")
    with pytest.raises(ulisse.InputError, match="bf16 runs on torch or openvino"):
        Encoder.load("test_efficientnet", weights="random", device="cpu", runtime="onnx", precision="bf16")
    code, _, err = cli("embed", survey / "cutouts", "--out", tmp_path / "v.npz", "--runtime", "nope")
    assert code == 2 and "nope" in err
    code, _, err = cli("--quiet", "embed", survey / "cutouts", "--out", tmp_path / "v.npz", "--pool", "middle",
                       "--model", "test_efficientnet", "--weights", "random", "--device", "cpu")
    assert code == 1 and err.startswith("ulisse: error: --pool middle") and not (tmp_path / "v.npz").exists()


def test_precision_is_part_of_the_spec_and_never_mixed(tiny_index, cutouts):
    bf16 = Encoder.load("test_efficientnet", weights="random", device="cpu", precision="bf16", preset="ulisse")
    assert bf16.spec.precision == "bf16" and bf16.runtime.name == ("openvino" if rt.cpu_has_bf16() else "torch")
    assert tiny_index.encoder_spec.precision == "fp32"
    with pytest.raises(ulisse.EncoderMismatch, match="precision"):
        tiny_index.use_encoder(bf16)
    fp32 = Encoder.from_spec(tiny_index.encoder_spec, device="cpu")
    assert fp32.spec.precision == "fp32"
    assert _cos(bf16.embed_images(cutouts), fp32.embed_images(cutouts)).min() > 0.99  # close, yet kept apart


def test_cli_runtimes_write_the_same_vectors(cli, survey, tmp_path):
    got = {}
    for name in ("torch", "onnx"):
        out = tmp_path / f"{name}.npz"
        code, _, err = cli("--quiet", "embed", survey / "cutouts", "--out", out, "--model", "test_efficientnet",
                           "--weights", "random", "--device", "cpu", "--runtime", name)
        assert code == 0, err
        got[name] = np.load(out)
    assert list(got["torch"]["ids"]) == list(got["onnx"]["ids"])
    assert _cos(got["torch"]["vectors"], got["onnx"]["vectors"]).min() >= 0.999


def test_int8_was_removed_and_an_int8_index_stays_readable(tiny_index, survey, cli):
    # INT8 never kept fp32's neighbours (benchmarks/speed-cpu.md, INT8): no new int8 vectors, with one line why
    with pytest.raises(ulisse.InputError, match="int8 was removed") as err:
        Encoder.load("test_efficientnet", weights="random", device="cpu", precision="int8")
    assert "\n" not in str(err.value) and "speed-cpu.md" in str(err.value)
    with pytest.raises(ulisse.InputError, match="expected one of fp32, bf16"):
        Encoder.load("test_efficientnet", weights="random", device="cpu", precision="int4")
    # an index built with int8 before the removal: its manifest's spec says so
    manifest = tiny_index.path / "manifest.json"
    data = json.loads(manifest.read_text())
    data["encoder"].update(precision="int8", quantization="ab" * 32)
    manifest.write_text(json.dumps(data))
    old = ulisse.open_index(tiny_index.path, device="cpu")
    assert old.encoder_spec.precision == "int8" and "quantised graph abababababab" in old.encoder_spec.describe()
    first = old.ids[0]
    got = old.query(first, k=3).ids  # by id: its stored vectors, no encoder needed
    assert len(got) == 3 and first not in got
    with pytest.raises(ulisse.InputError, match="int8 was removed"):
        old.query(image=next((survey / "cutouts").glob("*.png")), k=3)
    code, out, err = cli("query", tiny_index.path, "--image", next((survey / "cutouts").glob("*.png")), "-k", "3")
    assert code != 0 and "int8 was removed" in out + err and "Traceback" not in out + err
