"""``ulisse benchmark speed``: embedding against a ULISSE-style reference, and the index's search, in one process.

The reference does what ULISSE's code does: PIL open and bilinear resize per
image, torch fp32 (NCHW), batches of 64, the spatial mean of ``forward_features``.
ulisse runs every available runtime (torch, ONNX Runtime, OpenVINO) through its
own pipeline (loader threads reading and resizing ahead of the network). For each:

* end to end: encoder load + PNG files on disk -> vectors, in this process;
* model only: prepared (already resized) cutouts -> vectors, at each batch size tried;
* the cosine of its vectors to the reference's (ULISSE's fp32 features).

With ``whole_process=True`` it also times the two as separate processes from the
shell (``ulisse embed`` against ``python -m ulisse_bench.speed reference``),
imports included. On a GPU (``--device cuda``) it measures the CUDA path instead
(:func:`run_gpu_benchmark`).

Search (:func:`search_benchmark`): ``--vectors`` synthetic vectors of the encoder's
dimension in an index made by :func:`ulisse.create_index` on ``--device``; ``--queries``
queries through the product's ``Index.search`` (all at once) and ``Index.query(id=)``
(one at a time, as the CLI and the web UI ask), against exact kNN in NumPy, with the
recall of the index's answers.

Run: ``ulisse benchmark speed --images 512 --report benchmarks/speed-cpu.md``.
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

import numpy as np

REFERENCE_BATCH = 64


def write_cutouts(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[Path]:
    """``n`` PNG cutouts of simulated sources (round, streak, double) with noise."""
    from ulisse.testing import KINDS, blob, cube_to_png

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"c{i:05d}.png"
        cube_to_png(p, blob(size, rng, KINDS[i % len(KINDS)]))
        paths.append(p)
    return paths


def reference_model(model_name: str = "efficientnet_b0", weights: str = "lite0"):
    """The reference network: the same timm model and weights (``num_classes=0``), kept fp32 and NCHW."""
    from ulisse.encoder import _timm_model

    model, spec = _timm_model(model_name, weights, 224)
    return model.eval().float(), spec.mean, spec.std


def reference_embed(paths, model, mean, std, batch: int = REFERENCE_BATCH) -> np.ndarray:
    """ULISSE-style: PIL open + bilinear resize per image, /255, normalise, torch fp32 in batches of 64."""
    import torch
    from PIL import Image

    m = np.array(mean, np.float32)
    s = np.array(std, np.float32)
    out = []
    for i in range(0, len(paths), batch):
        xs = []
        for p in paths[i:i + batch]:
            im = Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)
            xs.append(((np.asarray(im, dtype=np.float32) / 255.0 - m) / s).transpose(2, 0, 1))
        with torch.inference_mode():
            out.append(model.forward_features(torch.from_numpy(np.stack(xs))).mean((2, 3)).numpy())
    return np.concatenate(out)


def _cos(a, b) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:.1f}"


def _model_only(encoder, prepared: np.ndarray, batch_size: int, repeat: int = 2) -> float:
    """Best time to embed prepared cutouts at ``batch_size``."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for i in range(0, len(prepared), batch_size):
            encoder.embed_prepared(prepared[i:i + batch_size])
        best = min(best, time.perf_counter() - t)
    return best


def run_speed_benchmark(n_images: int = 512, weights: str = "lite0", model_name: str = "efficientnet_b0",
                        batch_sizes=(1, 4, 8, 16, 32), n_model: int = 64, whole_process: bool | None = None,
                        threads: int = 2,
                        command: str | None = None, workdir: str | os.PathLike | None = None) -> str:
    """Measure and return the Markdown report (see the module docstring)."""
    import torch

    import ulisse
    from ulisse import runtime as rt
    from ulisse.embedding import embed_files

    torch.set_num_threads(threads)
    n_model = min(n_model, n_images)
    if whole_process is None:  # two more processes: worth it for real runs, not for a smoke test
        whole_process = n_images >= 128
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ulisse-speed-"))
    try:
        paths = write_cutouts(tmp / "cutouts", n_images)
        runtimes = [r for r in ("torch", "onnx", "openvino") if rt.available(r)]
        for r in runtimes:  # exports happen once per network and are cached: warm the cache first (timed apart)
            t = time.perf_counter()
            ulisse.Encoder.load(model_name, weights=weights, device="cpu", runtime=r, preset="ulisse")
        # reference, end to end (model build + files -> vectors)
        t = time.perf_counter()
        model, mean, std = reference_model(model_name, weights)
        ref = reference_embed(paths, model, mean, std)
        t_ref = time.perf_counter() - t
        sample = paths[:n_model]
        from PIL import Image

        ref_inputs = [np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)) for p in sample]
        norm = (np.stack(ref_inputs).astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std)
        x = torch.from_numpy(norm.transpose(0, 3, 1, 2).copy())
        with torch.inference_mode():
            model.forward_features(x[:4])
            t = time.perf_counter()
            for i in range(0, len(x), REFERENCE_BATCH):
                model.forward_features(x[i:i + REFERENCE_BATCH])
            t_ref_model = time.perf_counter() - t
        rows, sweeps, cosines = [], {}, {}
        for r in runtimes:
            t = time.perf_counter()
            enc = ulisse.Encoder.load(model_name, weights=weights, device="cpu", runtime=r, preset="ulisse")
            emb = embed_files(enc, paths, progress=False)
            t_e2e = time.perf_counter() - t
            cosines[r] = float(_cos(emb.vectors, ref).min())
            prepared = enc.prepare([np.asarray(Image.open(p).convert("RGB")) for p in sample])
            enc.embed_prepared(prepared[:4])
            sweeps[r] = {b: len(prepared) / _model_only(enc, prepared, b) for b in batch_sizes}
            t_model = len(prepared) / sweeps[r][enc.default_batch_size] if enc.default_batch_size in sweeps[r] else \
                _model_only(enc, prepared, enc.default_batch_size)
            rows.append((r, enc.default_batch_size, t_e2e, t_model))
        proc = _whole_process(tmp, paths, model_name, weights, threads) if whole_process else None
    finally:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    return _report(enc.spec, n_images, n_model, t_ref, t_ref_model, rows, sweeps, cosines, proc, threads, command)


def _whole_process(tmp: Path, paths, model_name: str, weights: str, threads: int) -> dict:
    """Wall time of ``ulisse embed`` and of the reference as separate processes (imports included)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    folder = str(paths[0].parent)
    ulisse_bin = shutil.which("ulisse") or "ulisse"
    cmds = {
        "reference": [sys.executable, "-m", "ulisse_bench.speed", "reference", folder, str(tmp / "ref.npy"),
                      model_name, weights],
        "ulisse embed": [ulisse_bin, "-q", "embed", folder, "--out", str(tmp / "v.npz"), "--model", model_name,
                         "--weights", weights, "--device", "cpu", "--preset", "ulisse"],
    }
    out = {}
    for name, cmd in cmds.items():
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        out[name] = time.perf_counter() - t
    a = np.load(tmp / "v.npz")["vectors"]
    b = np.load(tmp / "ref.npy")
    out["cosine"] = float(_cos(a, b).min())
    return out


def _report(spec, n, n_model, t_ref, t_ref_model, rows, sweeps, cosines, proc, threads, command) -> str:
    import torch

    lines = [
        f"{n} PNG cutouts of 64x64 px on disk, resized to 224; encoder {spec.model_name} ({spec.weights_source}); "
        f"{threads} threads; every number from one run of one process.",
        "",
        "End to end (encoder load + files on disk -> vectors) and model only (prepared cutouts -> vectors, "
        f"{n_model} cutouts), cutouts/s:",
        "",
        "| pipeline | batch | end to end | x reference | model only | x reference | files / model-only | "
        "min cosine to reference |",
        "|---|---|---|---|---|---|---|---|",
        f"| reference (ULISSE-style: PIL per image, torch fp32 NCHW) | {REFERENCE_BATCH} | {_rate(n, t_ref)} | 1.00 | "
        f"{_rate(n_model, t_ref_model)} | 1.00 | {(n / t_ref) / (n_model / t_ref_model):.2f} | 1 |",
    ]
    for r, bs, t_e2e, t_model in rows:
        e2e, model = n / t_e2e, n_model / t_model
        lines.append(f"| ulisse, runtime {r} | {bs} | {e2e:.1f} | {t_ref / t_e2e:.2f} | {model:.1f} | "
                     f"{t_ref_model / t_model:.2f} | {e2e / model:.2f} | {cosines[r]:.6f} |")
    lines += ["", "Model only, cutouts/s by batch size (defaults: BATCH_SIZES in ulisse/runtime.py):", "",
              "| runtime | " + " | ".join(f"batch {b}" for b in next(iter(sweeps.values()))) + " |",
              "|---|" + "---|" * len(next(iter(sweeps.values())))]
    for r, sweep in sweeps.items():
        lines.append(f"| {r} | " + " | ".join(f"{v:.1f}" for v in sweep.values()) + " |")
    if proc:
        lines += ["", f"Whole process from the shell ({n} cutouts, imports and model load included): "
                      f"reference {proc['reference']:.1f} s, `ulisse embed` (default runtime) {proc['ulisse embed']:.1f} s: "
                      f"**{proc['reference'] / proc['ulisse embed']:.2f}x**; min cosine to the reference "
                      f"{proc['cosine']:.6f}."]
    lines += ["", f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                  f"torch {torch.__version__}, numpy {np.__version__}" + _versions() + "."]
    if command:
        lines.append(f"Command: `{command}`")
    return "\n".join(lines) + "\n"


def _versions() -> str:
    out = ""
    for mod, name in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        try:
            out += f", {name} {__import__(mod).__version__}"
        except Exception:
            pass
    return out


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def numpy_knn(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact L2 kNN in NumPy (``|q|^2 - 2 q.x + |x|^2``, then a partial sort): rows ``Q x k``, nearest first."""
    norms = (data * data).sum(1)
    step = max(1, 50_000_000 // max(1, len(data)))  # queries per block: about 200 MB of distances
    out = []
    for i in range(0, len(queries), step):
        q = queries[i:i + step]
        d2 = (q * q).sum(1)[:, None] - 2.0 * q @ data.T + norms[None, :]
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d2, part, 1).argsort(1, kind="stable")
        out.append(np.take_along_axis(part, order, 1))
    return np.concatenate(out)


def search_benchmark(spec, n_vectors: int = 20000, n_queries: int = 256, k: int = 16, device: str = "cpu",
                     seed: int = 0, workdir: str | os.PathLike | None = None) -> str:
    """The product's search against exact kNN in NumPy, on ``n_vectors`` synthetic vectors of ``spec.dim``.

    The index is made by :func:`ulisse.create_index` (its default factory) and opened with
    :func:`ulisse.open_index` on ``device``; ``Index.search`` answers all ``n_queries`` at once,
    ``Index.query(id=)`` one prototype at a time (neighbour table with metadata, as ``ulisse query``
    and the web UI ask). Returns a Markdown section.
    """
    import pandas as pd

    import ulisse

    rng = np.random.default_rng(seed)
    k = min(k, n_vectors)
    data = np.maximum(rng.standard_normal((n_vectors, spec.dim), dtype=np.float32), 0)  # post-ReLU-like
    queries = np.maximum(rng.standard_normal((n_queries, spec.dim), dtype=np.float32), 0)
    meta = pd.DataFrame({"id": [f"v{i}" for i in range(n_vectors)]})
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ulisse-search-speed-"))
    try:
        t = time.perf_counter()
        # raw vectors (no whitening, whatever the spec's preset): recall is against exact kNN of the raw vectors
        ulisse.create_index(tmp / "index", data, meta, spec, device=device, overwrite=True, whiten="none")
        t_build = time.perf_counter() - t
        index = ulisse.open_index(tmp / "index", device=device)
        index.search(queries[:1], k)  # warm (the first search loads what it needs)
        t_search = _best_of(lambda: index.search(queries, k))
        ids = [f"v{i}" for i in rng.choice(n_vectors, size=min(n_queries, 64), replace=False)]
        index.query(id=ids[0], k=k)
        t_query = _best_of(lambda: [index.query(id=i, k=k) for i in ids]) / len(ids)
        t_numpy = _best_of(lambda: numpy_knn(data, queries, k))
        _, got = index.search(queries, k)
        truth = numpy_knn(data, queries, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth)]))
        factory, params = index.manifest["factory"], index.search_parameters()
    finally:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join([
        f"Search: {n_vectors} synthetic {spec.dim}-d vectors (non-negative, as the encoder's) in an index made by "
        f"`ulisse.create_index` (factory {factory}, search {params or 'exact'}; built in {t_build:.1f} s), opened on "
        f"device {device}; {n_queries} queries, k = {k}; best of 3 runs.",
        "",
        "| path | queries/s | x reference |",
        "|---|---|---|",
        f"| reference: exact kNN in NumPy (GEMM + partial sort), all queries at once | {n_queries / t_numpy:.1f} | 1.00 |",
        f"| ulisse `Index.search`, all queries at once | {n_queries / t_search:.1f} | {t_numpy / t_search:.2f} |",
        f"| ulisse `Index.query(id=...)`, one at a time ({len(ids)} ids; neighbour table with metadata) | "
        f"{1 / t_query:.1f} | {t_numpy / n_queries / t_query:.2f} |",
        "",
        f"Recall@{k} of `Index.search` against the exact NumPy kNN: {recall:.3f}.",
    ]) + "\n"


def run_gpu_benchmark(n_images: int = 4096, weights: str = "lite0", batch_size: int = 256,
                      model_name: str = "efficientnet_b0") -> str:
    """The CUDA path (torch, bf16 autocast, channels_last, pinned memory, loader threads) against the same
    network in fp32 NCHW on the GPU, model only and from PNG files. Only where a GPU is present.

    Run: ``ulisse benchmark speed --device cuda`` (or ``python -m ulisse_bench.speed gpu``).
    """
    import torch

    import ulisse
    from ulisse.embedding import embed_files

    if not torch.cuda.is_available():
        return "No CUDA GPU is visible to torch: nothing measured.\n"
    tmp = Path(tempfile.mkdtemp(prefix="ulisse-gpu-speed-"))
    try:
        paths = write_cutouts(tmp / "cutouts", n_images)
        enc = ulisse.Encoder.load(model_name, weights=weights, device="cuda")  # bf16 autocast, torch runtime
        model, mean, std = reference_model(model_name, weights)
        model = model.cuda()
        x = torch.randint(0, 256, (batch_size, 224, 224, 3), dtype=torch.uint8).numpy()
        enc.embed_prepared(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(8):
            enc.embed_prepared(x)
        torch.cuda.synchronize()
        t_bf16 = (time.perf_counter() - t) / (8 * batch_size)
        xf = torch.randn(batch_size, 3, 224, 224, device="cuda")
        with torch.inference_mode():
            model.forward_features(xf)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(8):
                model.forward_features(xf).mean((2, 3)).cpu()
            torch.cuda.synchronize()
        t_fp32 = (time.perf_counter() - t) / (8 * batch_size)
        t = time.perf_counter()
        embed_files(enc, paths, progress=False, batch_size=batch_size)
        t_files = (time.perf_counter() - t) / n_images
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (f"GPU {torch.cuda.get_device_name(0)}, batch {batch_size}: model only bf16 channels_last "
            f"{1 / t_bf16:.0f} cutouts/s, fp32 NCHW {1 / t_fp32:.0f} cutouts/s ({t_fp32 / t_bf16:.2f}x); "
            f"from {n_images} PNG files {1 / t_files:.0f} cutouts/s ({t_bf16 / t_files:.2f} of model only).\n")


if __name__ == "__main__" and len(sys.argv) == 2 and sys.argv[1] == "gpu":
    print(run_gpu_benchmark(), end="")


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "reference":
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    files = sorted(Path(sys.argv[2]).glob("*.png"))
    net, mu, sd = reference_model(sys.argv[4], sys.argv[5])
    np.save(sys.argv[3], reference_embed(files, net, mu, sd))


PRESET_VARIANTS = {  # name -> extra `ulisse embed` arguments; the first is the reference (today's ULISSE default)
    "ulisse (--preset ulisse: mean, none, ONNX Runtime fp32)": ["--preset", "ulisse"],
    "default (discovery)": [],
}


def preset_race(n_images: int = 512, variants: dict | None = None, rounds: int = 2, threads: int = 2,
                weights: str = "lite0", workdir: str | os.PathLike | None = None,
                command: str | None = None) -> str:
    """Whole-process ``ulisse -q embed`` of ``n_images`` PNG cutouts (64 px) per variant, the variants run in
    turn ``rounds`` times (so load changes hit them all alike); returns a Markdown table of the median
    wall times and their ratio to the first variant, with the load average beside each round."""
    variants = variants or PRESET_VARIANTS
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ulisse-presets-"))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    ulisse_bin = shutil.which("ulisse") or "ulisse"
    times: dict = {name: [] for name in variants}
    loads = []
    try:
        paths = write_cutouts(tmp / "cutouts", n_images)
        folder = str(paths[0].parent)
        for name, extra in variants.items():  # warm the export caches (once per network), untimed
            subprocess.run([ulisse_bin, "-q", "embed", str(paths[0]), "--out", str(tmp / "w.npz"), "--weights",
                            weights, "--device", "cpu", *extra], check=True, env=env, stdout=subprocess.DEVNULL)
        for _ in range(rounds):
            loads.append(os.getloadavg()[0])
            for name, extra in variants.items():
                t = time.perf_counter()
                subprocess.run([ulisse_bin, "-q", "embed", folder, "--out", str(tmp / "v.npz"), "--weights", weights,
                                "--device", "cpu", *extra], check=True, env=env, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t)
    finally:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    ref = float(np.median(times[next(iter(variants))]))
    lines = [f"Whole-process `ulisse -q embed` of {n_images} PNG cutouts (64 px), {threads} threads, {rounds} rounds "
             f"(load average at each round's start: {', '.join(f'{x:.1f}' for x in loads)}):", "",
             "| variant | arguments | wall s (each round) | median | x first | x first, each round |",
             "|---|---|---|---|---|---|"]
    first = times[next(iter(variants))]
    for name, extra in variants.items():
        med = float(np.median(times[name]))
        per_round = ", ".join(f"{x / r:.2f}" for x, r in zip(times[name], first))
        lines.append(f"| {name} | `{' '.join(extra) or '(defaults)'}` | {', '.join(f'{x:.1f}' for x in times[name])} "
                     f"| {med:.1f} | {med / ref:.2f} | {per_round} |")
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__" and len(sys.argv) >= 2 and sys.argv[1] == "presets":
    # python -m ulisse_bench.speed presets [ROUNDS] ["NAME=ARGS" ...]
    extra_variants = dict(PRESET_VARIANTS)
    for item in sys.argv[3:]:
        key, _, args = item.partition("=")
        extra_variants[key] = args.split()
    print(preset_race(variants=extra_variants, rounds=int(sys.argv[2]) if len(sys.argv) > 2 else 2,
                      command="python -m ulisse_bench.speed " + " ".join(sys.argv[1:])))

# INT8 against fp32 (issue 28): python -m ulisse_bench.int8 (benchmarks/ulisse_bench/int8.py)
