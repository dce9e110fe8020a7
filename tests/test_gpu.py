"""The GPU path as one switch with a fallback: ``--device auto|cpu|cuda``.

Without CUDA (this project's test machine), ``--device cuda`` gives one note and the
CPU answers; searches never leave the CPU and the GPU helpers stay out of the way.
Tests marked ``gpu`` (skipped without a CUDA GPU) run the encoder's CUDA path (bf16
autocast, channels_last), a build and queries whose FAISS search runs on the GPU
(faiss-gpu), and the web UI's open index kept resident on the GPU between queries.
"""

from __future__ import annotations

import json
import subprocess
import sys

import faiss
import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse.indexes import _gpu, faiss_backend

ENCODER = ["--model", "test_efficientnet", "--weights", "random"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _build(cli, survey, out, *device):
    code, _, err = cli("-q", "index", "build", survey / "cutouts", "--index", out, "--catalog",
                       survey / "catalog.csv", "--factory", "Flat", *ENCODER, *device)
    assert code == 0, err
    return out


# --------------------------------------------------------------------------- the fallback (runs everywhere)

@pytest.mark.slow
def test_device_cuda_without_cuda_is_one_note_and_the_cpu_answers(cli, survey, tmp_path):
    if _cuda():
        pytest.skip("CUDA is here: nothing falls back")
    idx = _build(cli, survey, tmp_path / "idx", "--device", "cpu")
    first = ulisse.open_index(idx, device="cpu").ids[0]
    run = [sys.executable, "-m", "ulisse", "query", str(idx), "--id", first, "-k", "5", "--format", "json"]
    cpu = subprocess.run(run + ["--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert cpu.returncode == 0, cpu.stderr
    cuda = subprocess.run(run + ["--device", "cuda"], capture_output=True, text=True, timeout=300)
    assert cuda.returncode == 0, cuda.stderr
    notes = cuda.stderr.strip().splitlines()
    assert notes[1:] == cpu.stderr.strip().splitlines(), cuda.stderr  # one line more than on the CPU...
    assert "--device cuda" in notes[0] and "CPU" in notes[0], cuda.stderr  # ...the note, first
    assert json.loads(cuda.stdout)["rows"] == json.loads(cpu.stdout)["rows"]  # and the CPU's answer
    # the run's own --device (before the verb) falls back the same way, once
    glob = subprocess.run([sys.executable, "-m", "ulisse", "--device", "cuda"] + run[3:], capture_output=True,
                          text=True, timeout=300)
    assert glob.returncode == 0 and glob.stderr.strip().splitlines() == notes, glob.stderr


def test_without_a_gpu_every_search_stays_on_the_cpu(tiny_index):
    if _gpu.num_gpus():
        pytest.skip("FAISS has a GPU here")
    assert not faiss_backend.gpu_available()
    q = tiny_index.vectors_of_rows([0, 1, 2])
    d_auto, i_auto = tiny_index.search(q, 5)
    cpu = ulisse.open_index(tiny_index.path, device="cpu")
    d_cpu, i_cpu = cpu.search(q, 5)
    np.testing.assert_array_equal(i_auto, i_cpu)
    np.testing.assert_allclose(d_auto, d_cpu)
    for seg in tiny_index._state.searchables:
        assert getattr(seg, "_ulisse_gpu", None) is None  # no clone was ever attempted
        with _gpu.searching_on("cuda"):
            assert _gpu.for_segment(seg, 5) is None


@pytest.mark.parametrize("metric", ["L2", "IP", "cosine"])
def test_exact_knn_of_the_float16_check_is_faiss_exact_knn(metric):
    """The float32 reference the GPU's float16 storage is checked against (by chunks, on the CPU)."""
    rng = np.random.default_rng(1)
    x = np.maximum(rng.standard_normal((3000, 40), dtype=np.float32), 0)
    q = faiss_backend.prepared(x[:20] + 0.1, metric)
    flat = faiss.IndexFlat(40, faiss_backend.METRICS[metric])
    flat.add(faiss_backend.prepared(x, metric))
    _, want = flat.search(q, 16)
    old = _gpu.ADD_ROWS
    try:
        _gpu.ADD_ROWS = 700  # several chunks
        got = _gpu.exact_knn(x, q, 16, metric)
    finally:
        _gpu.ADD_ROWS = old
    assert np.mean([len(set(a) & set(b)) / 16 for a, b in zip(got, want)]) == 1.0


# --------------------------------------------------------------------------- on a GPU

@pytest.mark.gpu
def test_gpu_embedding_bf16_channels_last_matches_the_cpu(survey):
    import torch

    from ulisse.embedding import embed_files

    paths = sorted((survey / "cutouts").glob("*.png"))
    gpu = ulisse.Encoder.load("test_efficientnet", weights="random", device="cuda")
    cpu = ulisse.Encoder.load("test_efficientnet", weights="random", device="cpu", precision="fp32", runtime="torch")
    assert gpu.spec.precision == "bf16" and gpu.runtime.name == "torch" and gpu.cuda
    assert next(gpu.model.parameters()).is_cuda
    assert next(p for p in gpu.model.parameters() if p.ndim == 4).is_contiguous(memory_format=torch.channels_last)
    a = embed_files(gpu, paths, progress=False).vectors
    b = embed_files(cpu, paths, progress=False).vectors
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99, cos.min()


@pytest.mark.gpu
def test_gpu_build_and_query_search_on_the_gpu_and_files_stay_cpu_format(cli, survey, tmp_path):
    idx = _build(cli, survey, tmp_path / "idx", "--device", "cuda")
    assert json.loads((idx / "manifest.json").read_text())["encoder"]["precision"] == "bf16"
    first = ulisse.open_index(idx, device="cpu").ids[0]
    answers = {}
    for device in ("cuda", "cpu"):
        code, out, err = cli("query", idx, "--id", first, "-k", 5, "--format", "json", "--device", device)
        assert code == 0, err
        answers[device] = [r["id"] for r in json.loads(out)["rows"]]
    assert len(set(answers["cuda"]) & set(answers["cpu"])) >= 4 and first not in answers["cuda"]
    index = ulisse.open_index(idx, device="cuda")
    index.query(id=first, k=5)
    assert all(_gpu.is_on_gpu(getattr(s, "_ulisse_gpu")) for s in index._state.searchables)
    if _gpu.num_gpus():  # the files on disk are the CPU's: readable by faiss-cpu anywhere
        for f in idx.rglob("*.faiss"):
            assert "Gpu" not in type(faiss.read_index(str(f))).__name__


@pytest.mark.gpu
@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat"])
def test_gpu_search_recall_against_the_cpu(tmp_path, factory):
    if not _gpu.num_gpus():
        pytest.skip("faiss-gpu is not installed")
    rng = np.random.default_rng(0)
    data = np.maximum(rng.standard_normal((20000, 1280), dtype=np.float32), 0)
    spec = ulisse.Encoder.load("test_efficientnet", weights="random", device="cpu").spec
    from dataclasses import replace

    spec = replace(spec, dim=1280)
    ulisse.create_index(tmp_path / "i", data, pd.DataFrame({"id": [f"v{i}" for i in range(len(data))]}), spec,
                        factory=factory, nprobe=64)
    gpu, cpu = ulisse.open_index(tmp_path / "i", device="cuda"), ulisse.open_index(tmp_path / "i", device="cpu")
    q = data[:200] + 0.05
    _, ig = gpu.search(q, 16)
    _, ic = cpu.search(q, 16)
    assert np.mean([len(set(a) & set(b)) / 16 for a, b in zip(ig, ic)]) >= 0.99
    assert _gpu.is_on_gpu(gpu._state.searchables[0]._ulisse_gpu)


@pytest.mark.gpu
def test_gpu_ui_keeps_the_open_index_resident_between_queries(cli, survey, tmp_path):
    if not _gpu.num_gpus():
        pytest.skip("faiss-gpu is not installed")
    from ulisse.ui.kit import _index as kit_index

    idx = _build(cli, survey, tmp_path / "idx", "--device", "cuda")
    index = kit_index.open_path(str(idx))
    clones = [s._ulisse_gpu for s in index._state.searchables]
    assert all(_gpu.is_on_gpu(c) for c in clones)  # made while the index opened
    first = index.ids[0]
    for _ in range(3):
        with kit_index.index_lock(index):
            index.query(id=first, k=5)
    assert kit_index.open_path(str(idx)) is index  # the same open index for the next query...
    assert [s._ulisse_gpu for s in index._state.searchables] == clones  # ...with the same GPU copy
