"""The benchmarks of ulisse-bench (``ulisse benchmark ...``, benchmarks/ulisse_bench), end to end on small sets."""

from __future__ import annotations

import re

import pytest


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_speed_benchmark_times_the_index_search_with_its_options(tmp_path, cli):
    """--vectors, --queries and --device reach the search part, which runs the product's Index.search/query."""
    report = tmp_path / "speed.md"
    code, stdout, err = cli("-q", "benchmark", "speed", "--images", "8", "--vectors", "300", "--queries", "7",
                            "--model", "test_efficientnet", "--weights", "random", "--device", "cpu",
                            "--report", report)
    assert code == 0, err
    text = report.read_text()
    assert text.startswith("# Speed on CPU")
    assert re.search(r"Search: 300 synthetic \d+-d vectors .* `ulisse.create_index` \(factory \w+.*device cpu; "
                     r"7 queries, k = 16", text)
    assert "| ulisse `Index.search`, all queries at once |" in text and "| ulisse `Index.query(id=...)`" in text
    assert re.search(r"Recall@16 of `Index.search` against the exact NumPy kNN: 1\.000\.", text)  # Flat: exact


# --------------------------------------------------------------------------- discovery grid

def test_discovery_settings_are_the_encoders():
    """The grid's settings are parsed, pooled and transformed by the encoder itself (no copy in the benchmark)."""
    import numpy as np

    from ulisse.encoder import SYMMETRIES, pool_maps
    from ulisse_bench.discovery import parse_settings, passes

    assert parse_settings(["centre", "centre:3", "mean"], ["d4", "none"]) == (("mean", "centre:3"), ("d4", "none"))
    assert [passes(t) for t in ("none", "rot4", "d4")] == [1, 4, 8]
    maps = np.random.default_rng(0).random((2, 5, 7, 7)).astype(np.float32)
    assert np.allclose(pool_maps(maps, "centre:7"), pool_maps(maps, "mean"))
    assert np.allclose(pool_maps(maps, "centre:1"), maps[:, :, 3, 3])
    assert np.allclose(pool_maps(maps, "centre:3"), maps[:, :, 2:5, 2:5].mean((2, 3)))
    for bad in ("centre:0", "max", "centre:x"):
        with pytest.raises(Exception, match="pool"):
            parse_settings([bad], ["none"])
    with pytest.raises(Exception, match="tta"):
        parse_settings(["mean"], ["rot8"])
    x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    d4 = [t if t is not None else (lambda b: b) for t in SYMMETRIES["d4"]]
    images = {tuple(t(x).flatten().tolist()) for t in d4}
    assert len(images) == 8  # the 8 elements of D4 are distinct
    for t in d4:  # and closed: every transform of a transform is one of them
        for u in d4:
            assert tuple(u(t(x)).flatten().tolist()) in images


def test_setting_vectors_are_the_encoders_and_d4_is_rotation_invariant(tmp_path, tiny_encoder):
    import numpy as np
    import pandas as pd
    from PIL import Image

    from ulisse_bench.discovery import setting_vectors

    rng = np.random.default_rng(1)
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    images = [image, np.rot90(image).copy(), image[:, ::-1].copy()]
    (tmp_path / "cutouts").mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / "cutouts" / f"c{i}.png")
    pd.DataFrame({"id": ["c0", "c1", "c2"], "label": ["a", "a", "b"]}).to_csv(tmp_path / "labels.csv", index=False)
    plain = setting_vectors(tmp_path, tiny_encoder, progress=False)
    assert plain.ids == ["c0", "c1", "c2"] and plain.seconds > 0 and plain.spec == tiny_encoder.spec
    assert np.allclose(plain.vectors, tiny_encoder.embed_images(images), atol=1e-5)  # the encoder's own vectors
    for pool in ("mean", "centre:3"):
        d4 = setting_vectors(tmp_path, tiny_encoder.with_options(pool=pool, tta="d4"), progress=False)
        assert d4.spec.pool == pool and d4.spec.tta == "d4"
        v = d4.vectors
        for other in (1, 2):  # a rotated or flipped cutout has the same D4 vector
            assert v[0] @ v[other] / np.linalg.norm(v[0]) / np.linalg.norm(v[other]) > 0.9999
        p = setting_vectors(tmp_path, tiny_encoder.with_options(pool=pool), progress=False).vectors
        assert not np.allclose(p[0], p[1], atol=1e-3)  # but not the same plain vector
    again = setting_vectors(tmp_path, tiny_encoder, limit=2, progress=False)  # a prefix of the cached chunk
    assert again.ids == ["c0", "c1"] and np.array_equal(again.vectors, plain.vectors[:2])


@pytest.mark.slow
def test_discovery_benchmark_small(tmp_path, cli):
    cache, report = tmp_path / "cache", tmp_path / "discovery.md"
    args = ("-q", "benchmark", "discovery", "--cache", cache, "--n", "30", "--prototypes", "2", "--model",
            "test_efficientnet", "--weights", "random", "--device", "cpu", "--runtime", "torch", "--report", report)
    code, stdout, err = cli(*args)
    assert code == 0, err
    text = report.read_text()
    assert text.startswith("# Discovery quality") and "### agn" in text and "### morphology" in text
    for pool in ("mean", "centre:3"):
        for tta in ("none", "rot4", "d4"):
            assert re.search(rf"^\| {pool} \| {tta} \| {dict(none=1, rot4=4, d4=8)[tta]} \|", text, re.M)
    assert "| mean | none | 1 |" in text and "1.00x" in text  # ULISSE's setting against itself
    assert "confirmed" in text and "Machine:" in text and "Command:" in text
    assert "`Encoder.load(...).with_options(pool=, tta=)` on runtime torch" in text  # the product's encoder
    chunks = sorted((cache / "agn-n30-seed0" / "features").rglob("chunk-*.npz"))
    assert chunks
    stamp = [c.stat().st_mtime_ns for c in chunks]
    code, stdout, err = cli(*args[:-2], "--task", "agn", "--limit", "20", "--no-expansion")  # a prefix: cached features
    assert code == 0, err
    assert "20 cutouts" in stdout and "### morphology" not in stdout
    assert [c.stat().st_mtime_ns for c in chunks] == stamp
    code, _, err = cli("benchmark", "discovery", "--cache", cache, "--n", "30", "--limit", "50")
    assert code != 0 and "--limit 50" in err


@pytest.mark.parametrize("name", ["anomaly", "artefacts"])
def test_derived_update_benchmark_small(tiny_index, tmp_path, name):
    """The update of a derived set after an add, against computing it again: the same values, the update used."""
    from ulisse_bench.derived_update import main, run

    result = run(tiny_index.path, tmp_path / "work", name, None, 3)
    assert result["objects_before"] == 24 and result["objects_after"] == 27 and result["update_was_used"]
    assert result["max_abs_diff"] < 1e-4 and result["top50_same"]
    out = tmp_path / "r.json"
    assert main(["--index", str(tiny_index.path), "--work", str(tmp_path / "w2"), "--add-twins", "2",
                 "--json", str(out)]) == 0 and '"update_was_used": true' in out.read_text()
    assert not (tmp_path / "w2").exists()
