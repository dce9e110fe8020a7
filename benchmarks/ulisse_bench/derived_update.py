"""A derived set after an add: brought up to date (``DerivedColumns.update``) against computed again.

``python -m ulisse_bench.derived_update --index DIR --add FOLDER`` copies the index to ``--work``
(outside the project), stores the set (``--set``, default ``anomaly``: the kNN anomaly scores) as the
product does, adds the cutouts of ``FOLDER`` with ``Index.add`` (or ``--add-twins N``: N stored vectors
again, slightly moved, under new ids, for an index without cutouts), then in one process times the
product's read of the stale set (``index.derived``: the update) and the set's ``compute`` on the grown
index (the reference), and compares the two tables. Both are the product's own code paths.

Example (the 10^5-object load index of benchmarks/anomalies.md)::

    python -m ulisse_bench.derived_update --index /work/scratch/s9/load/idx \\
        --add /work/scratch/s11/load/nw0 --work /tmp/derived-update --json /tmp/du.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

import ulisse
from ulisse.registry import derived_columns


def _add_twins(index, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(index), n, replace=False))
    v = index.vectors_of_rows(rows)
    v = v + rng.normal(scale=1e-2 * float(np.linalg.norm(v, axis=1).mean()) / np.sqrt(v.shape[1]), size=v.shape)
    index.add_vectors(v.astype(np.float32), pd.DataFrame({"id": [f"twin-{seed}-{r}" for r in rows]}))


def run(index_dir: Path, work: Path, name: str, add: Path | None, twins: int) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(index_dir, work)
    index = ulisse.open_index(work, device="cpu")
    provider = derived_columns()[name]
    t = time.perf_counter()
    index.derived(name, recompute=True)
    stored = time.perf_counter() - t
    before = len(index)
    if add is not None:
        index.add([add], progress=False)
    else:
        _add_twins(index, twins)
    index = ulisse.open_index(work, device="cpu")
    pending = index.derived_pending(name)
    t = time.perf_counter()
    updated = index.derived(name)
    t_update = time.perf_counter() - t
    opts = {**provider.options, **(index.derived_info(name) or {}).get("options", {})}
    t = time.perf_counter()
    again = provider.compute(index, progress=False, **opts)
    t_again = time.perf_counter() - t
    numeric = list(updated.select_dtypes("number").columns)
    others = [c for c in updated.columns if c not in numeric]
    diff = np.abs(updated[numeric].to_numpy(np.float64) - again[numeric].to_numpy(np.float64))
    differing = (np.nan_to_num(diff) > 0).any(axis=1) | (updated[others] != again[others]).any(axis=1).to_numpy()
    top = [np.argsort(-t[numeric[0]].to_numpy(), kind="stable")[:50].tolist() if numeric else []
           for t in (updated, again)]
    return {"set": name, "objects_before": before, "objects_after": len(index), "added": len(index) - before,
            "update_was_used": pending.start == before, "stored_in_s": round(stored, 2),
            "update_s": round(t_update, 2), "computed_again_s": round(t_again, 2),
            "ratio": round(t_again / t_update, 2),
            "max_abs_diff": float(np.nanmax(diff)) if diff.size and not np.isnan(diff).all() else 0.0,
            "rows_differing": int(differing.sum()), "top50_same": top[0] == top[1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/ulisse-derived-update"))
    p.add_argument("--set", default="anomaly")
    p.add_argument("--add", type=Path, help="a folder of cutouts to add")
    p.add_argument("--add-twins", type=int, default=150, help="without --add: this many vectors again, moved")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    result = run(a.index, a.work, a.set, a.add, a.add_twins)
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(a.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
