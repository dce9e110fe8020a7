"""Embedding speed: ulisse's runtimes against a ULISSE-style reference, in one process, on the same cutouts.

The reference does what ULISSE's code does: PIL open and bilinear resize per
image, torch fp32 (NCHW), batches of 64, the spatial mean of ``forward_features``.
ulisse runs every available runtime (torch, ONNX Runtime, OpenVINO) through its
own pipeline (loader threads reading and resizing ahead of the network). For each:

* end to end: encoder load + PNG files on disk -> vectors, in this process;
* model only: prepared (already resized) cutouts -> vectors, at each batch size tried;
* the cosine of its vectors to the reference's (ULISSE's fp32 features).

With ``whole_process=True`` it also times the two as separate processes from the
shell (``ulisse embed`` against ``python -m ulisse.plugins.sim.speed reference``),
imports included.

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


def reference_model(weights: str = "lite0"):
    """The reference network, built apart from ulisse's encoder: timm ``num_classes=0``, fp32, NCHW."""
    import timm

    from ulisse.encoder import lite0_state_dict

    if weights != "lite0":
        raise ValueError("the reference uses the offline Lite0 weights")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    model.load_state_dict(lite0_state_dict(0)[0])
    return model.eval(), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


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


def run_speed_benchmark(n_images: int = 512, weights: str = "lite0", batch_sizes=(1, 4, 8, 16, 32),
                        n_model: int = 64, whole_process: bool = True, threads: int = 2,
                        command: str | None = None, workdir: str | os.PathLike | None = None) -> str:
    """Measure and return the Markdown report (see the module docstring)."""
    import torch

    import ulisse
    from ulisse import runtime as rt
    from ulisse.embedding import embed_files

    torch.set_num_threads(threads)
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ulisse-speed-"))
    try:
        paths = write_cutouts(tmp / "cutouts", n_images)
        runtimes = [r for r in ("torch", "onnx", "openvino") if rt.available(r)]
        for r in runtimes:  # exports happen once per network and are cached: warm the cache first (timed apart)
            t = time.perf_counter()
            ulisse.Encoder.load(weights=weights, device="cpu", runtime=r)
        # reference, end to end (model build + files -> vectors)
        t = time.perf_counter()
        model, mean, std = reference_model(weights)
        ref = reference_embed(paths, model, mean, std)
        t_ref = time.perf_counter() - t
        sample = paths[:n_model]
        from PIL import Image

        ref_inputs = [np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)) for p in sample]
        x = torch.from_numpy(((np.stack(ref_inputs).astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())
        with torch.inference_mode():
            model.forward_features(x[:4])
            t = time.perf_counter()
            for i in range(0, len(x), REFERENCE_BATCH):
                model.forward_features(x[i:i + REFERENCE_BATCH])
            t_ref_model = time.perf_counter() - t
        rows, sweeps, cosines = [], {}, {}
        for r in runtimes:
            t = time.perf_counter()
            enc = ulisse.Encoder.load(weights=weights, device="cpu", runtime=r)
            emb = embed_files(enc, paths, progress=False)
            t_e2e = time.perf_counter() - t
            cosines[r] = float(_cos(emb.vectors, ref).min())
            prepared = enc.prepare([np.asarray(Image.open(p).convert("RGB")) for p in sample])
            enc.embed_prepared(prepared[:4])
            sweeps[r] = {b: len(prepared) / _model_only(enc, prepared, b) for b in batch_sizes}
            t_model = len(prepared) / sweeps[r][enc.default_batch_size] if enc.default_batch_size in sweeps[r] else \
                _model_only(enc, prepared, enc.default_batch_size)
            rows.append((r, enc.default_batch_size, t_e2e, t_model))
        proc = _whole_process(tmp, paths, weights, threads) if whole_process else None
    finally:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    return _report(n_images, n_model, t_ref, t_ref_model, rows, sweeps, cosines, proc, threads, command)


def _whole_process(tmp: Path, paths, weights: str, threads: int) -> dict:
    """Wall time of ``ulisse embed`` and of the reference as separate processes (imports included)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    folder = str(paths[0].parent)
    ulisse_bin = shutil.which("ulisse") or "ulisse"
    cmds = {
        "reference": [sys.executable, "-m", "ulisse.plugins.sim.speed", "reference", folder, str(tmp / "ref.npy")],
        "ulisse embed": [ulisse_bin, "-q", "embed", folder, "--out", str(tmp / "v.npz"), "--weights", weights,
                         "--device", "cpu"],
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


def _report(n, n_model, t_ref, t_ref_model, rows, sweeps, cosines, proc, threads, command) -> str:
    import torch

    lines = [
        f"{n} PNG cutouts of 64x64 px on disk, resized to 224; Lite0 ImageNet weights (offline package); "
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
    lines += ["", "Model only, cutouts/s by batch size (the defaults were chosen from this sweep):", "",
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


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "reference":
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    files = sorted(Path(sys.argv[2]).glob("*.png"))
    net, mu, sd = reference_model()
    np.save(sys.argv[3], reference_embed(files, net, mu, sd))
