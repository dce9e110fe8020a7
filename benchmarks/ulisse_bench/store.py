"""``ulisse benchmark store``: the index store at survey scale, on synthetic 1280-d vectors through the API.

Measures, in one run:

1. time and bytes written to add 10,000 vectors to indexes of 10^4, 10^5 and 10^6
   objects (Flat, and the ``auto`` index), in this process, the index already open;
2. a cold-process ``ulisse query DIR --id X`` at the largest size: wall time and peak
   RSS (the child's ``ru_maxrss``), for Flat and for ``auto``;
3. recall@16 of ``auto`` against exact search (the Flat index holds the same vectors);
4. 8 concurrent writer processes x 20 adds each: the count at the end.

The synthetic vectors have survey-like structure (clusters on a low-dimensional
manifold plus noise), seeded, generated in chunks. Indexes go to ``--out`` and are
deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

import ulisse

DIM = 1280
LATENT = 48
CLUSTERS = 2000
CHUNK = 100_000
ADD = 10_000
BLOCK = 10_000
K = 16


class Synthetic:
    """Rows ``lo .. hi`` of a fixed synthetic survey (the same vectors for every index and every run)."""

    def __init__(self, dim: int = DIM, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        self.centres = rng.normal(size=(CLUSTERS, LATENT)).astype(np.float32)
        self.mixing = (rng.normal(size=(LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)

    def rows(self, lo: int, hi: int) -> tuple[np.ndarray, pd.DataFrame]:
        """Vectors and metadata of rows ``lo .. hi`` (multiples of BLOCK: row r is the same whatever the chunks)."""
        if lo % BLOCK or hi % BLOCK:
            raise ValueError(f"rows {lo}..{hi}: multiples of {BLOCK} only")
        parts = [self._block(b) for b in range(lo // BLOCK, hi // BLOCK)]
        return np.concatenate([p[0] for p in parts]), pd.concat([p[1] for p in parts], ignore_index=True)

    def _block(self, b: int):
        rng = np.random.default_rng([self.seed, b])
        lo, n = b * BLOCK, BLOCK
        z = self.centres[rng.integers(0, CLUSTERS, n)] + 0.35 * rng.standard_normal((n, LATENT), dtype=np.float32)
        x = z @ self.mixing
        x += 0.1 * rng.standard_normal((n, self.dim), dtype=np.float32)
        meta = pd.DataFrame({"id": [f"s{i}" for i in range(lo, lo + n)], "ra": rng.uniform(0, 360, n),
                             "dec": rng.uniform(-30, 60, n)})
        return np.maximum(x, 0.0, out=x), meta  # EfficientNet features are post-ReLU: non-negative


def _spec(dim: int):
    return ulisse.EncoderSpec("synthetic", "random", None, dim=dim)


def _wchar() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _grow(path: Path, data: Synthetic, target: int, factory: str, expected: int | None, log) -> ulisse.Index:
    """Open (or create) the index at ``path`` and add chunks until it holds ``target`` rows."""
    try:
        index = ulisse.open_index(path, device="cpu")
    except ulisse.IndexNotFound:
        first = min(target, CHUNK)
        v, m = data.rows(0, first)
        t = time.perf_counter()
        index = ulisse.create_index(path, v, m, _spec(data.dim), factory=factory, expected=expected, device="cpu")
        log(f"  created {path.name} with {first} rows ({index.manifest['factory']}) in {time.perf_counter() - t:.1f} s")
    while len(index) < target:
        lo = len(index)
        hi = min(target, lo + CHUNK)
        v, m = data.rows(lo, hi)
        index.add_vectors(v, m)
    return index


def measure_adds(index: ulisse.Index, data: Synthetic, repeats: int = 3) -> dict:
    """Adds of ADD vectors to an open index: the first (builds the id lookup) and the median of the next ones."""
    times, written, wchars = [], [], []
    for r in range(repeats + 1):
        lo = len(index)
        v, m = data.rows(lo, lo + ADD)
        before_w = _wchar()
        t = time.perf_counter()
        index.add_vectors(v, m)
        times.append(time.perf_counter() - t)
        wchars.append(_wchar() - before_w)
        seg = index.manifest["segments"][-1]
        written.append(sum(seg[k]["bytes"] for k in ("vectors", "metadata", "faiss") if seg.get(k))
                       + (index.path / "manifest.json").stat().st_size)
    return {"objects": len(index) - (repeats + 1) * ADD, "first_s": times[0], "median_s": float(np.median(times[1:])),
            "bytes_written": int(np.median(written[1:])), "wchar": int(np.median(wchars[1:])),
            "segments": len(index.manifest["segments"])}


def _peak_rss_of(cmd: list[str]) -> tuple[float, float, str, str, int]:
    """Run ``cmd`` under ``/usr/bin/time``; (wall seconds, peak RSS MB, stdout, stderr, return code).

    The child is forked by ``time`` (a small process), so its peak RSS is its own, not this
    process's pages inherited at fork.
    """
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "ULISSE_TIME %e %M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    err_lines = p.stderr.rstrip().splitlines()
    rss = -1.0
    if err_lines and err_lines[-1].startswith("ULISSE_TIME"):
        _, secs, kb = err_lines.pop().split()
        wall, rss = float(secs), int(kb) / 1024
    return wall, rss, p.stdout, "\n".join(err_lines), p.returncode


def cold_query_rss(path: Path, object_id: str) -> dict:
    cmd = [sys.executable, "-m", "ulisse", "-q", "query", str(path), "--id", object_id, "-k", str(K), "--format", "csv"]
    wall, rss, out, err, rc = _peak_rss_of(cmd)
    probe = [sys.executable, "-c", "import sys, runpy; sys.argv = ['ulisse'] + sys.argv[1:]; "
             "from ulisse.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules, file=sys.stderr)", "-q", "query", str(path), "--id", object_id, "-k", "1"]
    _, _, _, perr, _ = _peak_rss_of(probe)
    core = [sys.executable, "-c", f"import ulisse; i = ulisse.open_index({str(path)!r}); "
                                  f"print(i.search(i.vectors_of_rows([i.row_of({object_id!r})]), {K})[1][0][:3])"]
    cwall, crss, _, cerr, crc = _peak_rss_of(core)
    return {"seconds": wall, "rss_mb": rss, "rc": rc, "rows": max(0, len(out.strip().splitlines()) - 1),
            "error": err.strip().splitlines()[-1] if rc else "", "torch": perr.strip().endswith("True"),
            "core_seconds": cwall, "core_rss_mb": crss, "core_rc": crc,
            "command": f"ulisse -q query {path} --id {object_id} -k {K} --format csv"}


def recall_at_k(auto: ulisse.Index, flat: ulisse.Index, n_queries: int = 100, seed: int = 1) -> float:
    rows = np.random.default_rng(seed).choice(len(flat), n_queries, replace=False)
    q = flat.vectors_of_rows(rows)
    excl = [[int(r)] for r in rows]
    _, truth = flat.search(q, K, exclude=excl)
    _, got = auto.search(q, K, exclude=excl)
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got, truth)]))


WRITER = textwrap.dedent("""
    import sys, numpy as np, pandas as pd, ulisse
    path, w, adds, n, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    for a in range(adds):
        rng = np.random.default_rng([w, a])
        v = rng.standard_normal((n, dim), dtype=np.float32)
        index = ulisse.open_index(path, device="cpu")
        index.add_vectors(v, pd.DataFrame({"id": [f"w{w}-{a}-{i}" for i in range(n)]}), wait=600)
""")


def concurrent_writers(path: Path, writers: int = 8, adds: int = 20, n: int = 100, dim: int = DIM) -> dict:
    v = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    ulisse.create_index(path, v, pd.DataFrame({"id": [f"base-{i}" for i in range(n)]}), _spec(dim), device="cpu")
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(adds), str(n), str(dim)],
                              stderr=subprocess.PIPE, text=True) for w in range(writers)]
    errors = [p.communicate()[1].strip() for p in procs]
    wall = time.perf_counter() - t
    index = ulisse.open_index(path, device="cpu")
    ids = set(index.metadata["id"])
    missing = [f"w{w}-{a}" for w in range(writers) for a in range(adds) if f"w{w}-{a}-0" not in ids]
    exact = True
    for w in range(writers):  # every vector equal to what was added
        for a in range(adds):
            if f"w{w}-{a}-0" in ids:
                want = np.random.default_rng([w, a]).standard_normal((n, dim), dtype=np.float32)
                got = index.vectors_of_rows([index.row_of(f"w{w}-{a}-{i}") for i in range(n)])
                exact &= bool(np.array_equal(got, want))
    return {"writers": writers, "adds_each": adds, "batches": writers * adds, "lost_batches": len(missing),
            "count": len(index), "expected": n + writers * adds * n, "vectors_exact": exact, "seconds": wall,
            "failed_processes": sum(p.returncode != 0 for p in procs), "errors": [e for e in errors if e][:3],
            "generation": index.manifest["generation"]}


def run_store_benchmark(out: Path, sizes=(10_000, 100_000, 1_000_000), dim: int = DIM, keep: bool = False,
                        log=print) -> dict:
    """Run every measurement; returns the numbers (see :func:`report`)."""
    out.mkdir(parents=True, exist_ok=True)
    data = Synthetic(dim)
    results = {"adds": {}, "sizes": list(sizes), "dim": dim}
    largest = max(sizes)
    try:
        for name, factory, expected in (("Flat", "Flat", None), ("auto", "auto", largest)):
            path = out / f"{name.lower()}"
            results["adds"][name] = []
            for size in sorted(sizes):
                if name == "auto" and size < min(CHUNK, largest):
                    continue  # auto is built for the final size from a first batch of 100,000
                index = _grow(path, data, size, factory, expected, log)  # measured adds stay: sizes grow from here
                r = measure_adds(index, data)
                r["factory"] = index.manifest["factory"]
                results["adds"][name].append(r)
                log(f"  {name} at {r['objects']}: add {ADD}: first {r['first_s']:.2f} s, median {r['median_s']:.2f} s, "
                    f"{r['bytes_written'] / 1e6:.1f} MB written")
        flat = ulisse.open_index(out / "flat", device="cpu")
        auto = ulisse.open_index(out / "auto", device="cpu")
        results["auto_factory"] = auto.manifest["factory"]
        results["auto_search"] = auto.search_parameters()
        results["auto_reason"] = (auto.manifest.get("auto") or {}).get("reason")
        target = flat.ids[len(flat) // 2]
        for name, idx in (("Flat", flat), ("auto", auto)):
            r = cold_query_rss(idx.path, target)
            results.setdefault("cold", {})[name] = r
            log(f"  cold query {name}: {r['seconds']:.2f} s, {r['rss_mb']:.0f} MB (core {r['core_seconds']:.2f} s, "
                f"{r['core_rss_mb']:.0f} MB); torch imported: {r['torch']}")
        common = min(len(flat), len(auto))
        results["recall_rows"] = common
        results["recall"] = recall_at_k(auto, flat) if len(flat) == len(auto) else None
        log(f"  recall@{K} of auto: {results['recall']}")
        del flat, auto
        results["writers"] = concurrent_writers(out / "writers", dim=dim)
        log(f"  8 writers: {results['writers']['count']} of {results['writers']['expected']}, "
            f"{results['writers']['lost_batches']} batches lost")
    finally:
        if not keep:
            for p in ("flat", "auto", "writers"):
                shutil.rmtree(out / p, ignore_errors=True)
    return results


def report(results: dict, command: str, seconds: float) -> str:
    lines = [f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, Python "
             f"{platform.python_version()}; ulisse {ulisse.__version__}. Total {seconds / 60:.1f} min.", "",
             f"Synthetic {results['dim']}-d vectors ({CLUSTERS} clusters on a {LATENT}-d manifold, noise, non-negative), "
             "through `ulisse.create_index` / `Index.add_vectors`.", "",
             f"## Adding {ADD:,} vectors", "",
             "| index | objects before | factory | segments | first add (s) | median of next 3 (s) | bytes written | write() bytes |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in results["adds"].items():
        for r in rows:
            lines.append(f"| {name} | {r['objects']:,} | {r['factory']} | {r['segments']} | {r['first_s']:.2f} | "
                         f"{r['median_s']:.2f} | {r['bytes_written'] / 1e6:.1f} MB | {r['wchar'] / 1e6:.1f} MB |")
    flat = results["adds"].get("Flat", [])
    if len(flat) >= 2:
        lines += ["", f"Flat: adding at {flat[-1]['objects']:,} objects takes {flat[-1]['median_s'] / flat[0]['median_s']:.2f}x "
                      f"what it takes at {flat[0]['objects']:,} (median of 3 adds; target: at most 2x)."]
    lines += ["", "## Cold-process query by id", "",
              "| index | wall (s) | peak RSS (MB) | torch imported | core only: wall (s) | core only: RSS (MB) |",
              "|---|---|---|---|---|---|"]
    for name, r in results.get("cold", {}).items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['rss_mb']:.0f} | {r['torch']} | {r['core_seconds']:.2f} | "
                     f"{r['core_rss_mb']:.0f} |")
    lines += ["", f"`auto` chose {results.get('auto_factory')} ({results.get('auto_reason')}); search {results.get('auto_search')}.",
              "", f"recall@{K} of `auto` against exact search (100 queries by id): {results.get('recall')}", "",
              "## 8 concurrent writers x 20 adds", "", "```", json.dumps(results.get("writers"), indent=1), "```", ""]
    return "\n".join(lines)

