"""SDSS indexing at scale: fields per minute on loopback fields, per-object costs, index size per factory.

Run from a checkout of the repository (writes JSON to stdout; benchmarks/sdss-scale.md reports a run)::

    nice -n 5 python -m ulisse_bench.sdss_scale --fields 4 --objects 150 --model efficientnet_b0

The loopback server (the repository's tests/sdss_server.py) serves full-size (2048 x 1489) frames
and photoObj files; the frames are drawn before any timing. Dask runs
(``local:1`` and ``local:2``) each index the same fields into a fresh index;
the in-process breakdown (frames, catalogue, cutting, embedding) uses one field.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the repository: benchmarks/ulisse_bench/sdss_scale.py


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def breakdown(server, field, args) -> dict:
    """One field in this process, part by part (seconds and bytes)."""
    import torch

    from ulisse.encoder import Encoder
    from ulisse.plugins.sdss.catalog import read_photoobj
    from ulisse.plugins.sdss.config import SDSSConfig
    from ulisse.plugins.sdss.cutting import cut_field
    from ulisse.plugins.sdss.frames import ScienceArchive

    torch.set_num_threads(1)  # per-core rates
    archive = ScienceArchive(SDSSConfig(sas_url=server.sas_url))
    t0 = time.perf_counter()
    raw = archive.photoobj(field)
    objects = read_photoobj(raw, "photoObj", field)
    t_cat = time.perf_counter() - t0
    before = server.bytes_sent
    t0 = time.perf_counter()
    frames = {b: archive.frame(b, field) for b in "gri"}
    t_frames = time.perf_counter() - t0
    frame_bytes = server.bytes_sent - before
    cut_field(frames, objects.head(2))  # imports
    t0, c0 = time.perf_counter(), time.process_time()
    cut = cut_field(frames, objects)
    t_cut, c_cut = time.perf_counter() - t0, time.process_time() - c0
    encoder = Encoder.load(args.model, weights="random", device="cpu")
    encoder.embed_images(cut.images[:4])
    t0, c0 = time.perf_counter(), time.process_time()
    vectors = encoder.embed_images(cut.images)
    t_embed, c_embed = time.perf_counter() - t0, time.process_time() - c0
    n = len(cut.images)
    return {"objects": len(objects), "cut": n, "dim": int(vectors.shape[1]),
            "catalogue_s": round(t_cat, 3), "catalogue_bytes": len(raw),
            "frames_s": round(t_frames, 3), "frames_bytes_bz2": frame_bytes,
            "cut_ms_per_object": round(1e3 * t_cut / n, 2), "embed_ms_per_object": round(1e3 * t_embed / n, 2),
            "cut_cpu_ms_per_object": round(1e3 * c_cut / n, 2), "embed_cpu_ms_per_object": round(1e3 * c_embed / n, 2),
            "encoder": f"{args.model} (random weights, {encoder.spec.input_size} px input, 1 torch thread)"}


def dask_runs(server, fields, args, work: Path) -> dict:
    from ulisse.plugins.sdss.batch import FieldTask, index_fields
    from ulisse.plugins.sdss.config import SDSSConfig
    from ulisse.plugins.sdss.dask_runner import DaskRunner

    out = {}
    for spec in args.dask:
        path = work / f"idx-{spec.replace(':', '-')}"
        runner = DaskRunner(spec)
        t0 = time.perf_counter()
        report = index_fields(path, [FieldTask(f) for f in fields], SDSSConfig(sas_url=server.sas_url),
                              model=args.model, weights="random", device="cpu", runner=runner, progress=False)
        dt = time.perf_counter() - t0
        assert not report.failed, report.failed
        out[spec] = {"seconds": round(dt, 1), "fields": len(fields), "objects": report.added,
                     "fields_per_minute": round(60 * len(fields) / dt, 2),
                     "objects_per_second": round(report.added / dt, 2),
                     "index_bytes": dir_bytes(path) - dir_bytes(path / ".sdss-work") - dir_bytes(path / ".sdss-cache")
                     - dir_bytes(path / "cutouts"), "cutout_png_bytes": dir_bytes(path / "cutouts")}
    return out


def factory_sizes(spec, n: int = 20000) -> dict:
    """Bytes per object on disk for a few factories (random vectors; metadata: id, ra, dec and 12 columns)."""
    import pandas as pd

    import ulisse

    dim = spec.dim
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    meta = pd.DataFrame({"id": [str(1237648720693755000 + i) for i in range(n)], "ra": rng.uniform(0, 360, n),
                         "dec": rng.uniform(-10, 70, n), **{f"c{k}": rng.standard_normal(n) for k in range(12)}})
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for factory, dtype in (("Flat", "float32"), ("Flat", "float16"), ("IVF256,PQ64", "float16"),
                               ("HNSW32", "float32")):
            path = Path(tmp) / f"{factory}-{dtype}".replace(",", "_")
            ulisse.create_index(path, x, meta, spec, factory=factory, dtype=dtype, device="cpu")
            out[f"{factory} ({dtype} raw vectors)"] = round(dir_bytes(path) / n, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--objects", type=int, default=150, help="primary objects per field")
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--dask", nargs="*", default=["local:1", "local:2"])
    parser.add_argument("--no-sizes", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))  # the loopback SDSS server lives with the tests
    from sdss_server import FieldSpec, SDSSServer, make_sky

    from ulisse.plugins.sdss.config import Field

    specs = [FieldSpec(756, 1, 300 + k, 150.0 + 0.25 * k, 2.0, nx=2048, ny=1489) for k in range(args.fields)]
    sky = make_sky(specs, per_field=args.objects, secondaries=args.objects // 10)
    fields = [Field(s.run, s.camcol, s.field) for s in specs]
    result = {"command": " ".join(sys.argv), "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()}", "fields": args.fields,
              "objects_per_field": args.objects}
    with SDSSServer(sky, specs) as server, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        server.prepare()
        result["frames_drawn_s"] = round(time.perf_counter() - t0, 1)
        result["breakdown"] = breakdown(server, fields[0], args)
        result["dask"] = dask_runs(server, fields, args, Path(tmp))
        if not args.no_sizes:
            from ulisse.encoder import Encoder

            spec = Encoder.load(args.model, weights="random", device="cpu").spec
            result["bytes_per_object"] = factory_sizes(spec)
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
