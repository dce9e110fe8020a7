"""The AGN benchmark command, end to end on a small simulated set."""

from __future__ import annotations

import re

import pytest


def test_agn_benchmark_small(tmp_path, cli):
    out, report = tmp_path / "bench", tmp_path / "report.md"
    args = ("-q", "benchmark", "agn", "--out", out, "--n", "80", "--prototypes", "3", "--model", "test_efficientnet",
            "--weights", "random", "--device", "cpu", "--report", report)
    code, stdout, err = cli(*args)
    assert code == 0, err
    text = report.read_text()
    assert text.startswith("# AGN retrieval benchmark") and stdout in text
    assert "| 16 |" in text and "| 89 |" in text and "recursive" in text and "AGN precision" in text
    base = float(re.search(r"base rate ([\d.]+)%\)", text).group(1))
    n_agn = int(re.search(r"80 cutouts, (\d+) AGN", text).group(1))
    assert abs(base - 100 * n_agn / 80) < 0.06
    assert len(re.findall(r"^\| sim-\d+ \|", text, re.M)) == 3
    # second run reuses the simulated set and the index
    code, stdout, err = cli(*args)
    assert code == 0 and "simulate (reused)" in stdout and "index (reused)" in stdout


def test_speed_benchmark_small(tmp_path, cli):
    report = tmp_path / "speed.md"
    code, stdout, err = cli("-q", "benchmark", "speed", "--images", "8", "--model", "test_efficientnet",
                            "--weights", "random", "--device", "cpu", "--report", report)
    assert code == 0, err
    text = report.read_text()
    assert "| reference (ULISSE-style" in text and "| ulisse, runtime torch |" in text
    assert "| ulisse, runtime onnx |" in text  # onnxruntime is a core dependency
    # every runtime's vectors are ULISSE's (same network, same preprocessing)
    cosines = [float(c) for c in re.findall(r"\| ([01]\.\d{6}) \|$", text, re.M)]
    assert cosines and min(cosines) >= 0.999
    assert re.search(r"\| \d+\.\d\d \|", text) and "Machine:" in text and "Command:" in text


# --------------------------------------------------------------------------- discovery grid

def test_pooling_and_d4_transforms():
    import numpy as np
    import torch

    from ulisse.plugins.sim.discovery import d4_transform, parse_pool, pool_map

    maps = np.random.default_rng(0).random((2, 5, 7, 7)).astype(np.float32)
    assert np.allclose(pool_map(maps, "centre:7"), pool_map(maps, "mean"))
    assert np.allclose(pool_map(maps, "centre:1"), maps[:, :, 3, 3])
    assert np.allclose(pool_map(torch.from_numpy(maps), "centre:3").numpy(), maps[:, :, 2:5, 2:5].mean((2, 3)))
    for bad in ("centre:2", "max", "centre:x"):
        with pytest.raises(Exception, match="pool"):
            parse_pool(bad)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    images = {tuple(d4_transform(x, t).flatten().tolist()) for t in range(8)}
    assert len(images) == 8  # the 8 elements of D4 are distinct
    for t in range(8):  # and closed: every transform of a transform is one of them
        for u in range(8):
            assert tuple(d4_transform(d4_transform(x, t), u).flatten().tolist()) in images


def test_d4_vectors_are_rotation_invariant(tiny_encoder):
    import numpy as np

    from ulisse.plugins.sim.discovery import transform_features

    rng = np.random.default_rng(1)
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    feats, seconds = transform_features(tiny_encoder, [image, np.rot90(image).copy(), image[:, ::-1].copy()],
                                        ("mean", "centre:3"))
    assert feats.shape == (8, 2, 3, tiny_encoder.spec.dim) and (seconds > 0).all()
    assert np.allclose(feats[0, 0], tiny_encoder.embed_images([image, np.rot90(image).copy(), image[:, ::-1].copy()]),
                       atol=1e-5)  # identity + mean pooling is the encoder's own vector
    d4 = feats.mean(axis=0)
    for p in range(2):
        for other in (1, 2):  # a rotated or flipped cutout has the same D4 vector
            cos = d4[p, 0] @ d4[p, other] / np.linalg.norm(d4[p, 0]) / np.linalg.norm(d4[p, other])
            assert cos > 0.9999
        assert not np.allclose(feats[0, p, 0], feats[0, p, 1], atol=1e-3)  # but not its plain vector


@pytest.mark.slow
def test_discovery_benchmark_small(tmp_path, cli):
    cache, report = tmp_path / "cache", tmp_path / "discovery.md"
    args = ("-q", "benchmark", "discovery", "--cache", cache, "--n", "30", "--prototypes", "2", "--model",
            "test_efficientnet", "--weights", "random", "--verify", "0", "--report", report)
    code, stdout, err = cli(*args)
    assert code == 0, err
    text = report.read_text()
    assert text.startswith("# Discovery quality") and "### agn" in text and "### morphology" in text
    for pool in ("mean", "centre:3"):
        for tta in ("none", "rot4", "d4"):
            assert re.search(rf"^\| {pool} \| {tta} \| {dict(none=1, rot4=4, d4=8)[tta]} \|", text, re.M)
    assert "| mean | none | 1 |" in text and "1.00x" in text  # ULISSE's setting against itself
    assert "confirmed" in text and "Machine:" in text and "Command:" in text
    chunks = sorted((cache / "agn-n30-seed0" / "features").rglob("chunk-*.npz"))
    assert chunks
    stamp = [c.stat().st_mtime_ns for c in chunks]
    code, stdout, err = cli(*args[:-2], "--task", "agn", "--limit", "20", "--no-expansion")  # a prefix: cached features
    assert code == 0, err
    assert "20 cutouts" in stdout and "### morphology" not in stdout
    assert [c.stat().st_mtime_ns for c in chunks] == stamp
    code, _, err = cli("benchmark", "discovery", "--cache", cache, "--n", "30", "--limit", "50")
    assert code != 0 and "--limit 50" in err
