"""``ulisse benchmark gpu``: the GPU path measured through the product's own code (only where a GPU exists).

Embedding (torch on CUDA: bf16 autocast, channels_last, pinned memory, loader threads):

* model only: prepared 224 px cutouts -> vectors with ``Encoder.embed_prepared``, per batch size;
* from PNG files, in this process: ``ulisse.embedding.embed_files`` (decode and resize on CPU threads);
* from PNG files, the whole process: ``ulisse embed DIR --device cuda`` timed from the shell (imports,
  model load, decode, network, the .npz written).

Search (FAISS on the GPU through ``indexes._gpu``): ``--vectors`` synthetic non-negative vectors of
``--dim`` (10^6 x 1280 by default) written by ``ulisse.create_index`` (Flat: exact; ``IVF1024,Flat``,
nprobe 32) and searched through ``Index.search`` on ``--device cuda``: all queries at once (batch QPS)
and one at a time (single-query QPS), with recall@16 against exact float32 kNN computed on the GPU.
The storage the product chose for the Flat copy (float16 or float32) is reported.

Run on a GPU machine: ``ulisse benchmark gpu --report benchmarks/gpu.md``. Without a CUDA GPU it
stops with a message and writes nothing. It needs about 2 x 5 GB of disk for 10^6 x 1280 (``--workdir``).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPORT = "benchmarks/gpu.md"
TITLE = "GPU: embedding throughput and FAISS search"


def _sync():
    import torch

    torch.cuda.synchronize()


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - t)
    return best


def check_gpu() -> str:
    """The GPU's name; ``InputError`` when torch sees no CUDA GPU (nothing is measured then)."""
    import torch

    import ulisse

    if not torch.cuda.is_available():
        raise ulisse.InputError("ulisse benchmark gpu: no CUDA GPU is visible to torch; nothing measured "
                                "(run it on a GPU machine: ulisse benchmark gpu --report benchmarks/gpu.md)")
    return torch.cuda.get_device_name(0)


def embedding_rates(n_images: int, batch_sizes, model: str, weights: str, workdir: Path) -> list[str]:
    """Markdown rows: model-only cutouts/s per batch size, then from PNG files (in process and whole process)."""
    import numpy as np

    import ulisse
    from ulisse.embedding import embed_files

    from .speed import write_cutouts

    rows = []
    enc = ulisse.Encoder.load(model, weights=weights, device="cuda", preset="ulisse", input_size=224, pool="mean",
                              tta="none", runtime="torch", precision="bf16")  # one forward pass a cutout
    rng = np.random.default_rng(0)
    for bs in batch_sizes:
        x = rng.integers(0, 256, (bs, 224, 224, 3), dtype=np.uint8)
        enc.embed_prepared(x)  # warm-up (cuDNN picks its kernels)
        reps = max(2, 4096 // bs)
        t = _best_of(lambda: [enc.embed_prepared(x) for _ in range(reps)])
        rows.append(f"| model only, bf16, 224 px, batch {bs} | {reps * bs / t:,.0f} |")
    paths = write_cutouts(workdir / "cutouts", n_images)
    embed_files(enc, paths[:min(len(paths), 512)], progress=False)  # warm-up
    t = _best_of(lambda: embed_files(enc, paths, progress=False), repeat=2)
    rows.append(f"| from {n_images} PNG files (64 px), `embed_files` in this process (loader threads) "
                f"| {n_images / t:,.0f} |")
    cmd = [sys.executable, "-m", "ulisse", "-q", "embed", str(workdir / "cutouts"), "--out", str(workdir / "v.npz"),
           "--device", "cuda", "--model", model, "--weights", weights, "--preset", "ulisse", "--runtime", "torch",
           "--precision", "bf16"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    whole = time.perf_counter() - t
    rows.append(f"| from {n_images} PNG files, whole process (`ulisse embed --device cuda`: imports, model "
                f"load, decode, network, .npz) | {n_images / whole:,.0f} |")
    return rows


def _truth(data, queries, k: int):
    """Exact float32 L2 kNN on the GPU (FAISS's brute force), the reference of every recall."""
    import faiss

    from ulisse.indexes import _gpu

    cfg = faiss.GpuIndexFlatConfig()
    cfg.useFloat16 = False
    flat = faiss.GpuIndexFlat(_gpu.resources()[0], data.shape[1], faiss.METRIC_L2, cfg)
    for lo in range(0, len(data), 65536):
        flat.add(data[lo:lo + 65536])
    _, rows = flat.search(queries, k)
    del flat
    return rows


def search_rates(n: int, dim: int, n_queries: int, n_single: int, k: int, workdir: Path) -> list[str]:
    """Markdown rows: batch and single-query QPS and recall@k, exact (Flat) and IVF, through ``Index.search``."""
    import numpy as np
    import pandas as pd

    import ulisse
    from ulisse.indexes import _gpu

    rng = np.random.default_rng(0)
    data = np.maximum(rng.standard_normal((n, dim), dtype=np.float32), 0)
    queries = np.maximum(rng.standard_normal((n_queries, dim), dtype=np.float32), 0)
    truth = _truth(data, queries, k)
    spec = ulisse.Encoder.load("efficientnet_b0", weights="lite0", device="cpu", preset="ulisse").spec
    if spec.dim != dim:
        from dataclasses import replace

        spec = replace(spec, dim=dim)
    meta = pd.DataFrame({"id": [f"v{i}" for i in range(n)]})
    rows = []
    for factory, nprobe in (("Flat", None), ("IVF1024,Flat", 32)):
        path = workdir / f"index-{factory.replace(',', '-')}"
        t = time.perf_counter()
        ulisse.create_index(path, data, meta, spec, factory=factory, nprobe=nprobe, overwrite=True)
        built = time.perf_counter() - t
        index = ulisse.open_index(path, device="cuda")
        t = time.perf_counter()
        index.search(queries[:1], k)  # the first search copies the index to the GPU (kept resident)
        resident = time.perf_counter() - t
        clone = getattr(index._state.searchables[0], "_ulisse_gpu", None)
        storage = ("float16" if getattr(clone, "float16", False) else "float32") if clone else "CPU (no GPU copy)"
        t_batch = _best_of(lambda: index.search(queries, k))
        _, got = index.search(queries, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth)]))
        single = queries[:n_single]
        t_single = _best_of(lambda: [index.search(single[i:i + 1], k) for i in range(len(single))], repeat=2)
        what = "exact (Flat)" if factory == "Flat" else f"IVF ({factory}, nprobe {nprobe})"
        rows.append(f"| {what} | {storage} | {n_queries / t_batch:,.0f} | {n_single / t_single:,.0f} | "
                    f"{recall:.4f} | {built:.0f} s / {resident:.1f} s |")
        del index, clone
        shutil.rmtree(path, ignore_errors=True)
    del data
    return rows


def run(n_images: int, batch_sizes, n_vectors: int, dim: int, n_queries: int, n_single: int, k: int, model: str,
        weights: str, workdir: str | None, command: str | None) -> str:
    """Every measurement, as the Markdown report (without its title)."""
    import faiss
    import torch

    import ulisse
    from ulisse.indexes import _gpu

    name = check_gpu()
    n_single = min(n_single, n_queries)
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ulisse-gpu-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        emb = embedding_rates(n_images, batch_sizes, model, weights, tmp)
        if _gpu.num_gpus():
            search = search_rates(n_vectors, dim, n_queries, n_single, k, tmp)
        else:
            search = ["| (faiss-gpu is not installed: `pip install 'ulisse[gpu]'`; no search figure) | | | | | |"]
    finally:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        f"Device: **{name}** ({torch.cuda.device_count()} CUDA device(s); FAISS sees {_gpu.num_gpus()} GPU(s)). "
        f"Host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads. "
        f"ulisse {ulisse.__version__}, torch {torch.__version__}, FAISS {faiss.__version__}, "
        f"Python {platform.python_version()}.",
        "",
        f"## Embedding ({model}, weights {weights}, preset ulisse: 224 px, one pass; torch, bf16 autocast, "
        "channels_last)",
        "",
        "| path | cutouts/s |",
        "|---|---|",
        *emb,
        "",
        f"## Search ({n_vectors:,} x {dim} synthetic non-negative vectors, k = {k}, `Index.search` on --device cuda)",
        "",
        f"Batch: {n_queries:,} queries at once; single: {n_single:,} queries one at a time. Recall@{k} against "
        "exact float32 kNN (FAISS brute force on the GPU).",
        "",
        "| index | GPU storage | batch queries/s | single queries/s | recall@16 | written / made resident |",
        "|---|---|---|---|---|---|",
        *search,
        "",
    ]
    if command:
        lines.append(f"Command: `{command}`")
    return "\n".join(lines) + "\n"


@click.command("gpu")
@click.option("--images", "n_images", type=click.IntRange(64, 1_000_000), default=8192, show_default=True,
              help="PNG cutouts embedded from files")
@click.option("--batch-size", "batch_sizes", type=click.IntRange(1, 65536), multiple=True,
              default=(256, 512, 1024), show_default=True, help="model-only batch sizes (repeat the option)")
@click.option("--vectors", "n_vectors", type=click.IntRange(2048, 100_000_000), default=1_000_000, show_default=True,
              help="vectors in the indexes searched")
@click.option("--dim", type=click.IntRange(8, 4096), default=1280, show_default=True)
@click.option("--queries", "n_queries", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True,
              help="queries searched at once")
@click.option("--single", "n_single", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="queries searched one at a time")
@click.option("-k", "k", type=click.IntRange(1, 2048), default=16, show_default=True)
@click.option("--model", default="efficientnet_b0", show_default=True, help="timm model name")
@click.option("--weights", default="lite0", show_default=True, help="encoder weights (lite0: offline)")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="where the cutouts and indexes go (default: a temporary folder, deleted)")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help=f"write the Markdown report to this file (the repository's: {REPORT})")
def gpu_command(n_images, batch_sizes, n_vectors, dim, n_queries, n_single, k, model, weights, workdir, report):
    """Embedding throughput (model only and from PNG files) and FAISS search on the GPU (exact and IVF,
    batch and single-query QPS, recall@16). Only where a CUDA GPU exists."""
    import shlex

    from ulisse._io import atomic_write

    command = "ulisse " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    text = run(n_images, batch_sizes, n_vectors, dim, min(n_queries, n_vectors), n_single, k, model, weights,
               workdir, command)
    click.echo(text, nl=False)
    if report:
        atomic_write(report, f"# {TITLE}\n\n" + text)
