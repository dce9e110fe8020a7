"""The store at 10^7 objects on one machine: ``python -m ulisse_bench.store_scale build|measure``.

``build`` streams synthetic 1280-d vectors (:class:`ulisse_bench.store.Synthetic`) into an
``auto`` index chunk by chunk (never the whole float32 array in memory: 10^7 x 1280 float32
is 51 GB), raw vectors stored as ``--dtype`` (float16: half the disk, memory-mapped for
``--rerank``). While it streams, it keeps the exact top-16 of a fixed sample of query rows
over every stored vector (brute force on the float16 values as stored, read back as float32),
so exact search needs no second pass over 25 GB. The ground truth is saved after every
chunk with the row count it covers, so the build can be stopped (or resumed) at any commit
and measured at the size it reached.

``measure`` takes the index and that ground truth: bytes on disk, a cold-process
``ulisse query --id`` (wall time, peak RSS), warm in-process query latencies (p50/p99),
recall@16 against exact search; JSON to ``--json``.

Example:
    OMP_NUM_THREADS=2 python -m ulisse_bench.store_scale build --out /work/scale-data --size 10000000 \\
        --memory 8GB --dtype float16
    OMP_NUM_THREADS=2 python -m ulisse_bench.store_scale measure --out /work/scale-data --rerank 64 --json r.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import ulisse

from .store import BLOCK, DIM, K, Synthetic, _peak_rss_of, _spec

QUERY_POOL = 1_000_000  # query rows are drawn from the first 10^6 rows (any stopping size covers them)


def _query_rows(n_queries: int, size: int, seed: int = 1) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(min(QUERY_POOL, size), n_queries, replace=False))


def _stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """Vectors as the index stores them and reads them back (float32 of the stored dtype)."""
    return np.asarray(x, dtype=dtype).astype(np.float32)


def _query_vectors(data: Synthetic, rows: np.ndarray, dtype: str) -> np.ndarray:
    out = np.empty((len(rows), data.dim), np.float32)
    for b in np.unique(rows // BLOCK):
        v, _ = data._block(int(b))
        sel = rows // BLOCK == b
        out[sel] = _stored(v[rows[sel] % BLOCK], dtype)
    return out


def _update_truth(state: dict, q: np.ndarray, x: np.ndarray, lo: int) -> None:
    """Merge the exact top-K (squared L2, the query row itself left out) of rows ``lo ..`` into ``state``."""
    d = (q * q).sum(1)[:, None] - 2.0 * (q @ x.T) + (x * x).sum(1)[None, :]
    rows = np.arange(lo, lo + len(x), dtype=np.int64)
    d[state["rows"][:, None] == rows[None, :]] = np.inf
    allD = np.concatenate([state["D"], d], axis=1)
    allI = np.concatenate([state["I"], np.broadcast_to(rows, d.shape)], axis=1)
    part = np.argpartition(allD, K, axis=1)[:, :K]
    D, I = np.take_along_axis(allD, part, 1), np.take_along_axis(allI, part, 1)
    order = np.argsort(D, axis=1)
    state["D"], state["I"] = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


def build(out: Path, size: int, memory: str, dtype: str, chunk: int, n_queries: int, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    path, truth_path = out / "index", out / "truth.npz"
    data = Synthetic(DIM)
    qrows = _query_rows(n_queries, size)
    q = _query_vectors(data, qrows, dtype)
    try:
        index = ulisse.open_index(path, device="cpu")
        saved = dict(np.load(truth_path))
        state = {"rows": saved["rows"], "D": saved["D"], "I": saved["I"]}
        covered = int(saved["covered"])
        log(f"resuming at {len(index)} rows (truth covers {covered})")
    except ulisse.IndexNotFound:
        index, covered = None, 0
        state = {"rows": qrows, "D": np.full((n_queries, K), np.inf, np.float32),
                 "I": np.full((n_queries, K), -1, np.int64)}
    t0, start = time.perf_counter(), covered
    info_path = out / "build.json"
    info = json.loads(info_path.read_text()) if info_path.exists() and index is not None else {"seconds": 0.0, "chunks": []}
    while covered < size:
        lo, hi = covered, min(size, covered + chunk)
        t = time.perf_counter()
        v, m = data.rows(lo, hi)
        gen = time.perf_counter() - t
        _update_truth(state, q, _stored(v, dtype), lo)
        t1 = time.perf_counter()
        if index is None:
            index = ulisse.create_index(path, v, m, _spec(DIM), factory="auto", expected=size, memory=memory,
                                        dtype=dtype, device="cpu")
        elif len(index) < hi:  # a resumed build may have committed this chunk already
            index.add_vectors(v, m)
        add = time.perf_counter() - t1
        covered = hi
        np.savez(truth_path, rows=state["rows"], D=state["D"], I=state["I"], covered=covered)
        info["seconds"] += time.perf_counter() - t
        info["chunks"].append({"hi": hi, "generate_s": gen, "add_s": add})
        info.update(count=len(index), factory=index.manifest.factory, reason=(index.manifest.auto or {}).get("reason"),
                    dtype=dtype, memory=memory, target=size,
                    build_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        info_path.write_text(json.dumps(info, indent=1))
        done = time.perf_counter() - t0
        log(f"{hi:>10,} rows: chunk {time.perf_counter() - t:.1f} s (generate {gen:.1f}, add {add:.1f}); "
            f"{done / 60:.1f} min this run, ETA {(size - hi) * done / (hi - start) / 60:.1f} min")
    return info


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _cold(cmd) -> dict:
    wall, rss, stdout, err, rc = _peak_rss_of(cmd)
    return {"seconds": wall, "rss_mb": rss, "rc": rc, "rows": max(0, len(stdout.strip().splitlines()) - 1),
            "error": err.strip().splitlines()[-1] if rc and err.strip() else ""}


def measure(out: Path, rerank: int | None, nprobe: int | None, log=print, drop_caches: bool = False) -> dict:
    path = out / "index"
    truth = dict(np.load(out / "truth.npz"))
    info = json.loads((out / "build.json").read_text())
    index = ulisse.open_index(path, device="cpu", rerank=rerank, nprobe=nprobe)
    covered = int(truth["covered"])
    if covered > len(index):
        raise SystemExit(f"truth covers {covered} rows, the index holds {len(index)}")
    if covered < len(index):  # the build stopped between its commit and its save of the truth: catch up
        data, state = Synthetic(DIM), {"rows": truth["rows"], "D": truth["D"], "I": truth["I"]}
        q = _query_vectors(data, truth["rows"], index.manifest.dtype)
        for lo in range(covered, len(index), BLOCK):
            _update_truth(state, q, _stored(data.rows(lo, lo + BLOCK)[0], index.manifest.dtype), lo)
        truth.update(state, covered=len(index))
    if truth["rows"].max() >= len(index):
        raise SystemExit(f"query rows up to {truth['rows'].max()}: the index holds {len(index)}")
    res = {"count": len(index), "factory": index.manifest.factory, "search": index.search_parameters(),
           "dtype": index.manifest.dtype, "build_seconds": info["seconds"], "build_peak_rss_mb": info.get("build_peak_rss_mb"),
           "bytes_on_disk": _du(path), "segments": len(index.manifest.segments), "reason": info.get("reason")}
    res["bytes_by_kind"] = {kind: sum(f.stat().st_size for f in path.glob(f"*{kind}")) for kind in
                            (".vectors.npy", ".metadata.parquet", ".faiss")}
    qrows = truth["rows"]
    ids = [f"s{r}" for r in qrows]
    cmd = [sys.executable, "-m", "ulisse", "-q", "query", str(path), "--id", ids[len(ids) // 2], "-k", str(K),
           "--format", "csv"] + (["--rerank", str(rerank)] if rerank is not None else []) + (["--nprobe", str(nprobe)] if nprobe else [])
    colds = []
    for i in range(3):  # three cold processes, different ids
        cmd[cmd.index("--id") + 1] = ids[(len(ids) // 3) * i + 1]
        colds.append(_cold(cmd))
        log(f"cold query: {colds[-1]['seconds']:.2f} s, {colds[-1]['rss_mb']:.0f} MB, rc {colds[-1]['rc']}")
    if drop_caches:  # the first query after the OS dropped its file cache: everything read from disk
        res["cold_uncached"] = []
        for i in range(3):
            cmd[cmd.index("--id") + 1] = ids[(len(ids) // 3) * i + 2]
            subprocess.run(["sync"], check=False)
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            res["cold_uncached"].append(_cold(cmd))
            log(f"cold query, page cache dropped: {res['cold_uncached'][-1]['seconds']:.2f} s")
    res["cold"] = colds
    res["cold_command"] = " ".join(["ulisse", *cmd[3:]])
    # warm: the whole API path (id lookup, search, re-rank, neighbour table), then recall from raw search
    times = []
    for object_id in ids:
        t = time.perf_counter()
        index.query(id=object_id, k=K)
        times.append(time.perf_counter() - t)
    res["warm_ms"] = {"p50": 1e3 * float(np.percentile(times, 50)), "p99": 1e3 * float(np.percentile(times, 99)),
                      "max": 1e3 * max(times), "first": 1e3 * times[0], "n": len(times)}
    q = index.vectors_of_rows(qrows)
    times = []
    for i in range(len(qrows)):  # the search alone (FAISS and re-ranking), one query at a time
        t = time.perf_counter()
        index.search(q[i:i + 1], K, exclude=[[int(qrows[i])]])
        times.append(time.perf_counter() - t)
    res["search_ms"] = {"p50": 1e3 * float(np.percentile(times, 50)), "p99": 1e3 * float(np.percentile(times, 99))}
    t = time.perf_counter()
    _, got = index.search(q, K, exclude=[[int(r)] for r in qrows])
    res["batch_search_s"] = time.perf_counter() - t
    res["recall"] = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got, truth["I"])]))
    log(json.dumps(res, indent=1))
    return res


def real(out: Path, max_sources: int, views: int, n_queries: int, log=print) -> dict:
    """The re-ranked IVF-PQ search on real vectors: Hubble Deep Field cutouts (every source detected whose 64 px
    cutout fits, in ``views`` rotations and flips each), embedded by the default encoder through the product's
    pipeline, indexed by ``auto`` under a memory budget that makes it IVF-PQ; recall@16 of the manifest's default
    search (and without re-ranking) against exact search over the same raw vectors."""
    import faiss
    import pandas as pd

    from ulisse.embedding import embed_arrays
    from ulisse.plugins.demo import CUTOUT_SIZE, detect_hdf_sources

    t0 = time.perf_counter()
    src = detect_hdf_sources(max_sources=max_sources, nsigma=2.0, n_pixels=8)
    images, ids = [], []
    for oid, x0, y0 in zip(src.catalog["id"], src.catalog["x0"], src.catalog["y0"]):
        cut = src.image[y0:y0 + CUTOUT_SIZE, x0:x0 + CUTOUT_SIZE]
        for v in range(views):
            view = np.rot90(cut, v % 4)
            images.append(np.ascontiguousarray(view[:, ::-1] if v >= 4 else view))
            ids.append(f"{oid}-v{v}")
    encoder = ulisse.Encoder.load(device="cpu")
    vectors = embed_arrays(encoder, images, ids, progress=True)
    embed_s = time.perf_counter() - t0
    n, dim = vectors.shape
    budget = int(n * (dim * 4 + 8) * 0.5)  # half of what IVF-Flat would need: auto goes to IVF-PQ
    path = out / "real-index"
    index = ulisse.create_index(path, vectors, pd.DataFrame({"id": ids}), encoder.spec, factory="auto",
                                memory=str(budget), whiten="none", device="cpu", overwrite=True)
    stored = index.vectors_of_rows(np.arange(n))
    exact = faiss.IndexFlatL2(dim)
    exact.add(stored)
    rows = np.sort(np.random.default_rng(1).choice(n, min(n_queries, n), replace=False))
    _, truth = exact.search(stored[rows], K + 1)
    truth = [[j for j in t if j != r][:K] for t, r in zip(truth, rows)]
    excl = [[int(r)] for r in rows]

    def recall(**kw):
        _, got = index.search(stored[rows], K, exclude=excl, **kw)
        return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got, truth)]))

    res = {"sources": int(len(src.catalog)), "views": views, "count": n, "factory": index.manifest.factory,
           "search": index.search_parameters(), "memory": budget, "embed_s": embed_s,
           "encoder": encoder.spec.to_dict().get("preset"), "recall_default": recall(),
           "recall": {f"nprobe {p}, rerank {r}": recall(nprobe=p, rerank=r) for p in (8, 16, 32) for r in (0, 64)}}
    log(json.dumps(res, indent=1))
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ulisse_bench.store_scale")
    p.add_argument("step", choices=("build", "measure", "real"))
    p.add_argument("--out", type=Path, required=True, help="outside the git tree: the data is tens of GB")
    p.add_argument("--size", type=int, default=10_000_000)
    p.add_argument("--memory", default="8GB")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--chunk", type=int, default=250_000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--rerank", type=int, default=None, help="measure: override the manifest's (0: none)")
    p.add_argument("--nprobe", type=int, default=None, help="measure: override the manifest's")
    p.add_argument("--drop-caches", action="store_true", help="measure: also 3 cold queries after dropping "
                   "the OS page cache (root only)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--sources", type=int, default=100_000, help="real: at most this many HDF sources")
    p.add_argument("--views", type=int, default=8, help="real: rotations and flips of each cutout (1-8)")
    a = p.parse_args(argv)
    if a.size % BLOCK or a.chunk % BLOCK:
        raise SystemExit(f"--size and --chunk: multiples of {BLOCK}")
    log = lambda s: print(time.strftime("%H:%M:%S"), s, flush=True)  # noqa: E731
    if a.step == "build":
        build(a.out, a.size, a.memory, a.dtype, a.chunk, a.queries, log)
        return
    res = real(a.out, a.sources, a.views, a.queries, log) if a.step == "real" else measure(a.out, a.rerank, a.nprobe, log, a.drop_caches)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
