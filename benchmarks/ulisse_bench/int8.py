"""INT8 against fp32 (issue 28): post-training static quantisation of the product's exported graph, measured
through the product's own ``Encoder`` (its cutout preparation, its ONNX Runtime session options, its pooling)
with the quantised graph in place of the fp32 one.

ulisse itself has no int8 path any more (no setup tried kept fp32's neighbours: benchmarks/speed-cpu.md, INT8);
this module is how those numbers were made, and how to make them again.

Each variant: ``METHOD[,OPTION...]``: METHOD ``minmax``, ``pct`` (percentile, ``pct=99.99`` by default) or
``entropy`` (ONNX Runtime QDQ, per-channel int8 weights); options ``s8`` (int8 activations, S8S8; default
uint8, U8S8), ``rr`` (reduce_range), ``sym`` (symmetric activations), ``ma`` (moving-average min-max),
``pt`` (per-tensor weights), ``x-stemhead`` (stem and head kept float), ``x-head``, ``x-dw`` (depthwise
convolutions kept float), ``x-last`` (the last stage and the head kept float). Also ``bf16`` (OpenVINO bf16, for
scale), ``weights-only`` (per-channel int8 weights, float activations: the floor of any int8 weights) and
``nncf`` / ``nncf-mixed`` (OpenVINO's own INT8 through NNCF, when ``nncf`` is installed; not a dependency).

Run: ``python -m ulisse_bench.int8 quality CUTOUTS [--eval N] [--calibration N] [VARIANT ...]`` (1 thread) and
``python -m ulisse_bench.int8 speed CUTOUTS VARIANT ...`` (model only and whole process against fp32, 2 threads).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K = 16


def load_set(folder, n_eval: int, n_calibration: int, preset: str = "ulisse"):
    """The fp32 encoder (ONNX Runtime), ``n_eval`` prepared cutouts (seed 0) and ``n_calibration`` others drawn
    from the whole set (seed 1: the index's own cutouts, as a product would calibrate)."""
    import ulisse
    from ulisse.cutouts import read_cutout

    paths = sorted(Path(folder).glob("*.png"))
    rows = (np.sort(np.random.default_rng(0).choice(len(paths), n_eval, replace=False)) if n_eval < len(paths)
            else np.arange(len(paths)))
    calib = np.random.default_rng(1).choice(len(paths), min(n_calibration, len(paths)), replace=False)
    fp32 = ulisse.Encoder.load(device="cpu", preset=preset, runtime="onnx", precision="fp32")
    return (fp32, fp32.prepare([read_cutout(paths[i]).image for i in rows]),
            fp32.prepare([read_cutout(paths[i]).image for i in calib]), paths)


class GraphRuntime:
    """A runtime for the product's ``Encoder``: ONNX Runtime with the product's session options on another graph."""

    name = "onnx"
    batch_size = 8

    def __init__(self, graph: bytes | str, threads: int):
        from ulisse.runtime import _OrtSession

        self._session = _OrtSession(graph if isinstance(graph, bytes) else Path(graph), threads)

    def maps(self, batch):
        return self._session.maps(batch)


class OpenVinoGraph:
    """A runtime for the product's ``Encoder`` from an OpenVINO model (NNCF's int8), f32 elsewhere."""

    name = "openvino"
    batch_size = 8

    def __init__(self, model, threads: int):
        import openvino as ov

        self._compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                "INFERENCE_PRECISION_HINT": "f32",
                                                                "PERFORMANCE_HINT": "LATENCY"})
        self._request = self._compiled.create_infer_request()

    def maps(self, batch):
        out = self._request.infer({0: np.ascontiguousarray(batch)})
        return np.array(out[self._compiled.output(0)], dtype=np.float32, copy=True)


def with_runtime(encoder, runtime):
    """The same ``Encoder`` (preparation, pooling, symmetry) with ``runtime`` computing its maps."""
    enc = copy.copy(encoder)
    enc.runtime = runtime
    return enc


def _batches(x, n: int = 8):
    return [x[i:i + n] for i in range(0, len(x), n)]


def quantize_ort(encoder, calibration: np.ndarray, variant: str, cache: Path) -> bytes:
    """The encoder's exported graph quantised by ONNX Runtime (QDQ, per-channel int8 weights) as ``variant`` says."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from ulisse.runtime import exported_model

    method, *parts = variant.split(",")
    opts = dict(p.split("=", 1) if "=" in p else (p, True) for p in parts)
    pre = cache / f"pre-{encoder.spec.network_digest()}.onnx"
    if not pre.exists():
        quant_pre_process(str(exported_model(encoder)), str(pre), skip_symbolic_shape=True)
    names = [n.name for n in onnx.load(str(pre)).graph.node]
    nodes = onnx.load(str(pre)).graph.node
    groups = {
        "x-stemhead": [n for n in names if n.startswith(("/conv_stem", "/bn1", "/conv_head", "/bn2"))],
        "x-head": [n for n in names if n.startswith(("/conv_head", "/bn2"))],
        "x-dw": [n.name for n in nodes if n.op_type == "Conv" and any(a.name == "group" and a.i > 1
                                                                       for a in n.attribute)],
        "x-last": [n for n in names if n.startswith(("/blocks/blocks.6", "/conv_head", "/bn2"))],
    }
    exclude = sorted({n for key, group in groups.items() if opts.get(key) for n in group})
    extra = {"CalibPercentile": float(opts.get("pct", 99.99))} if method == "pct" else {}
    if opts.get("sym"):
        extra["ActivationSymmetric"] = True
    if opts.get("ma"):
        extra["CalibMovingAverage"] = True

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(_batches(calibration))

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"cutouts": b}

    methods = {"minmax": CalibrationMethod.MinMax, "pct": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    ranges = cache / (f"calib-{encoder.spec.network_digest()}-{len(calibration)}-{method}-{opts.get('pct', '')}"
                      f"{'-ma' if opts.get('ma') else ''}.json")
    out = cache / f"q-{os.getpid()}.onnx"
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=not opts.get("pt"),
                    reduce_range=bool(opts.get("rr")),
                    activation_type=QuantType.QInt8 if opts.get("s8") else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=methods[method], nodes_to_exclude=exclude or None,
                    extra_options=extra, calibration_cache_path=str(ranges))
    data = out.read_bytes()
    out.unlink()
    return data


def weights_only(encoder) -> bytes:
    """The fp32 graph with every convolution's weights rounded to per-channel symmetric int8 (activations float)."""
    import onnx
    from onnx import numpy_helper
    from ulisse.runtime import exported_model

    g = onnx.load(str(exported_model(encoder)))
    inits = {i.name: i for i in g.graph.initializer}
    for n in g.graph.node:
        if n.op_type == "Conv" and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            s = np.abs(w).reshape(w.shape[0], -1).max(1) / 127
            s[s == 0] = 1
            s = s.reshape(-1, *([1] * (w.ndim - 1)))
            inits[n.input[1]].CopyFrom(numpy_helper.from_array((np.clip(np.round(w / s), -127, 127) * s)
                                                               .astype(np.float32), n.input[1]))
    return g.SerializeToString()


def nncf_model(encoder, calibration: np.ndarray, mixed: bool):
    """OpenVINO's own INT8: NNCF post-training quantisation of the exported graph (default or MIXED preset)."""
    import nncf
    import openvino as ov
    from ulisse.runtime import exported_model

    model = ov.Core().read_model(str(exported_model(encoder)))
    kw = {"preset": nncf.QuantizationPreset.MIXED} if mixed else {}
    batches = _batches(calibration)
    return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches), **kw)


def make_encoder(fp32, calibration, variant: str, threads: int, cache: Path):
    """``(encoder, seconds to make it, graph bytes or None)`` for one variant."""
    import ulisse

    t = time.perf_counter()
    if variant == "fp32":
        return fp32, 0.0, None
    if variant == "bf16":
        return ulisse.Encoder.load(device="cpu", preset=fp32.spec.preset, runtime="openvino",
                                   precision="bf16"), 0.0, None
    if variant.startswith("nncf"):
        model = nncf_model(fp32, calibration, mixed=variant == "nncf-mixed")
        return with_runtime(fp32, OpenVinoGraph(model, threads)), time.perf_counter() - t, None
    graph = weights_only(fp32) if variant == "weights-only" else quantize_ort(fp32, calibration, variant, cache)
    return with_runtime(fp32, GraphRuntime(graph, threads)), time.perf_counter() - t, graph


def embed(encoder, prepared):
    return np.concatenate([encoder.embed_prepared(b) for b in _batches(prepared)])


def knn(v: np.ndarray, k: int = K) -> np.ndarray:
    """Each row's ``k`` nearest other rows, exact L2."""
    sq = (v * v).sum(1)
    d = sq[:, None] + sq[None] - 2 * v @ v.T
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, 1)[:, :k]


def compare(v: np.ndarray, ref: np.ndarray, ref_nn: np.ndarray) -> dict:
    """Overlap@16 of every object's neighbours with fp32's, and the cosine of each vector to its fp32 vector."""
    nn = knn(v)
    cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
    return {"overlap": float(np.mean([len(set(a) & set(b)) / K for a, b in zip(nn, ref_nn)])),
            "cos_mean": float(cos.mean()), "cos_median": float(np.median(cos)), "cos_min": float(cos.min())}


def quality(folder, variants, n_eval: int = 500, n_calibration: int = 128, threads: int = 1) -> str:
    """Markdown rows: each variant's overlap@16 and cosine against fp32 ONNX Runtime (preset ulisse)."""
    import torch

    torch.set_num_threads(threads)
    fp32, x, calib, _ = load_set(folder, n_eval, n_calibration)
    ref = embed(fp32, x)
    ref_nn = knn(ref)
    cache = Path(tempfile.mkdtemp(prefix="ulisse-int8-"))
    lines = [f"{len(x)} cutouts of {folder}, calibration on {len(calib)} of the set, {threads} thread(s):", "",
             "| variant | overlap@16 | cosine mean / median / min | s to quantise | load |", "|---|---|---|---|---|"]
    for variant in variants:
        enc, seconds, _ = make_encoder(fp32, calib, variant, threads, cache)
        c = compare(embed(enc, x), ref, ref_nn)
        lines.append(f"| {variant} | {c['overlap']:.3f} | {c['cos_mean']:.4f} / {c['cos_median']:.4f} / "
                     f"{c['cos_min']:.4f} | {seconds:.0f} | {os.getloadavg()[0]:.1f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines) + "\n"


WHOLE = """
import sys, time, torch
torch.set_num_threads({threads})
from pathlib import Path
import ulisse
from ulisse.embedding import embed_files
from ulisse_bench.int8 import GraphRuntime, with_runtime
enc = ulisse.Encoder.load(device="cpu", preset="ulisse", runtime="onnx", precision="fp32")
if sys.argv[1] != "fp32":
    enc = with_runtime(enc, GraphRuntime(sys.argv[1], {threads}))
embed_files(enc, sorted(Path(sys.argv[2]).glob("*.png"))[:{n}], progress=False)
"""


def speed(folder, variants, rounds: int = 3, threads: int = 2, n_files: int = 512, n_calibration: int = 128) -> str:
    """Model only (128 prepared cutouts) and whole process (a fresh ``python``: imports, the product's encoder
    load, ``embed_files`` of ``n_files`` PNG cutouts), each variant against fp32 ONNX Runtime, in turn."""
    import torch

    torch.set_num_threads(threads)
    fp32, x, calib, _ = load_set(folder, 128, n_calibration)
    cache = Path(tempfile.mkdtemp(prefix="ulisse-int8-"))
    encs, graphs = {"fp32": fp32}, {"fp32": "fp32"}
    for v in variants:
        enc, _, graph = make_encoder(fp32, calib, v, threads, cache)
        encs[v] = enc
        if graph is not None:  # bf16 and NNCF: model only
            graphs[v] = str(cache / f"{hashlib.sha256(graph).hexdigest()[:16]}.onnx")
            Path(graphs[v]).write_bytes(graph)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    model, whole, loads = {v: [] for v in encs}, {v: [] for v in encs}, []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        for v, enc in encs.items():
            t = time.perf_counter()
            embed(enc, x)
            model[v].append(len(x) / (time.perf_counter() - t))
        for v in graphs:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", WHOLE.format(threads=threads, n=n_files), graphs[v], str(folder)],
                           check=True, env=env)
            whole[v].append(time.perf_counter() - t)
    m0, w0 = np.median(model["fp32"]), np.median(whole["fp32"])
    lines = [f"{threads} threads, {rounds} rounds, variants in turn (load average at each round's start: "
             f"{', '.join(f'{x:.1f}' for x in loads)}):", "",
             "| variant | model only, cutouts/s (each round) | median | x fp32 | whole process, s (each round) | median "
             "| x fp32 speed |", "|---|---|---|---|---|---|---|"]
    for v in encs:
        m = np.median(model[v])
        w = (f"{', '.join(f'{r:.1f}' for r in whole[v])} | {np.median(whole[v]):.1f} | "
             f"{w0 / np.median(whole[v]):.2f}") if whole[v] else "- | - | -"
        lines.append(f"| {v} | {', '.join(f'{r:.1f}' for r in model[v])} | {m:.1f} | {m / m0:.2f} | {w} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ulisse_bench.int8")
    ap.add_argument("what", choices=["quality", "speed"])
    ap.add_argument("cutouts")
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--eval", type=int, default=500)
    ap.add_argument("--calibration", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_intermixed_args(argv)
    if a.what == "speed":
        print(speed(a.cutouts, a.variants or ["pct,x-stemhead"], rounds=a.rounds, threads=a.threads or 2,
                    n_calibration=a.calibration))
    else:
        print(quality(a.cutouts, a.variants or ["bf16", "weights-only", "minmax", "pct,x-stemhead"], a.eval,
                      a.calibration, threads=a.threads or 1))


if __name__ == "__main__":
    main()
