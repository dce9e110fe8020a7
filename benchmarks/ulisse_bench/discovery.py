"""The discovery benchmark: pooling x test-time symmetry settings, and confirmed expansion, on two labelled tasks.

Every setting's vectors are the product's own: one ``ulisse.Encoder.load(model, weights=, device=,
runtime=)`` per run, then ``encoder.with_options(pool=POOL, tta=TTA)`` for each setting (``mean``:
the spatial mean of the final map, ULISSE's vector; ``centre:c``: the mean of its central c x c
cells; ``none``, ``rot4``, ``d4``: the cutout as it is, or the mean over its 4 rotations or its 8
rotations and flips), embedding the cutout files through :func:`ulisse.embedding.embed_files`
(loader threads, the runtime's batches), timed as it runs. So the grid measures what ``ulisse
index build --pool POOL --tta TTA`` does, on the runtime the product would use, at its cost.
Each setting's vectors and measured seconds are cached on disk (resumable, in chunks).

Each setting's vectors go into an ordinary ulisse index (:func:`ulisse.create_index`, with the
encoder's spec), on which the product's own :func:`~ulisse.plugins.prototype.query` and
:func:`~ulisse.plugins.recursive.expand` run from the same random prototypes of the rare classes:
class fraction among the first 16 and 89 neighbours, its spread over prototypes, and recursive
expansion (plain, and through confirmed objects only) against direct kNN with as many objects.

Example:
    >>> from ulisse_bench.discovery import run_task               # doctest: +SKIP
    >>> result = run_task("agn", cache)                           # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

import ulisse
from ulisse._io import atomic_write
from ulisse.encoder import SYMMETRIES, TTAS, parse_pool, parse_tta

DEFAULT_POOLS = ("mean", "centre:3")
ULISSE_SETTING = ("mean", "none")
N_AT = (16, 89)
CHUNK = 50  # cutouts per cached vector file
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """A labelled simulated set and the classes whose objects serve as prototypes."""

    name: str
    simulate: Callable  # simulate(out_dir, n=, seed=, progress=) -> label table
    classes: tuple[str, ...]  # prototype classes (rare ones)
    title: str


def _tasks() -> dict[str, Task]:
    from .sim.agn import simulate_agn_set
    from .sim.morphology import simulate_morphology_set

    return {
        "agn": Task("agn", simulate_agn_set, ("AGN",), "AGN in SDSS-like hosts (nuclear point sources)"),
        "morphology": Task("morphology", simulate_morphology_set, ("spiral", "tidal"),
                           "disc galaxies: spiral arms and tidal streams against smooth discs (extended structure)"),
    }


TASKS = ("agn", "morphology")


def parse_settings(pools: Sequence[str], ttas: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Pools and symmetries as the encoder reads them (``centre`` -> ``centre:3``), ``mean`` first, no repeats.

    Raises:
        InputError: a pool or symmetry the encoder does not know (the encoder's own message).
    """
    return (tuple(dict.fromkeys(["mean", *(parse_pool(p) for p in pools)])),
            tuple(dict.fromkeys(parse_tta(t) for t in ttas)))


def passes(tta: str) -> int:
    """Forward passes per cutout of a symmetry setting, as the encoder runs them."""
    return len(SYMMETRIES[tta])


def simulated_set(task: Task, cache: Path, n: int, seed: int, progress: bool) -> tuple[Path, bool]:
    """The task's simulated set under ``cache`` (simulated once per (n, seed))."""
    sim = cache / f"{task.name}-n{n}-seed{seed}"
    marker = sim / "params.json"
    params = {"task": task.name, "n": n, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == params and (sim / "labels.csv").is_file():
        return sim, False
    task.simulate(sim, n=n, seed=seed, progress=progress)
    atomic_write(marker, json.dumps(params))
    return sim, True


# --------------------------------------------------------------------------- vectors

@dataclass
class SettingVectors:
    """One setting's vectors of a simulated set, as the encoder made them, and what they cost."""

    ids: list[str]
    labels: pd.DataFrame
    vectors: np.ndarray  # N x dim
    seconds: float  # files -> vectors through embed_files, summed over the N cutouts
    spec: ulisse.EncoderSpec  # the encoder's (pool and tta included)
    runtime: str

    @property
    def seconds_per_cutout(self) -> float:
        return self.seconds / max(1, len(self.ids))


def setting_vectors(sim: Path, encoder, limit: int | None = None, progress: bool = True) -> SettingVectors:
    """The vectors of the first ``limit`` cutouts of a simulated set (all by default), by ``encoder``.

    ``encoder`` is one setting (``Encoder.with_options(pool=, tta=)``); the files go through
    :func:`ulisse.embedding.embed_files`. Computed in chunks of :data:`CHUNK` cutouts cached under
    ``sim/features/KEY/`` (KEY: the encoder's spec and runtime), each with the seconds it took, so an
    interrupted run resumes and a smaller ``limit`` reuses a prefix of what a larger one computed.
    """
    from ulisse.embedding import embed_files
    from ulisse.progress import progress_iter

    table = pd.read_csv(sim / "labels.csv")
    every_id = table["id"].astype(str).tolist()
    labels = table.iloc[:limit] if limit is not None else table
    ids = labels["id"].astype(str).tolist()
    runtime = encoder.runtime.name
    spec = {k: v for k, v in encoder.spec.to_dict().items() if k != "preset"}  # a label: not what decides vectors
    key = json.dumps({"spec": spec, "runtime": runtime, "chunk": CHUNK}, sort_keys=True, default=list)
    folder = sim / "features" / hashlib.sha256(key.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "key.json", key)
    parts, seconds, warm = [], 0.0, False
    desc = f"{encoder.spec.pool} {encoder.spec.tta}"
    for start in progress_iter(range(0, len(ids), CHUNK), desc=desc, enabled=progress):
        path = folder / f"chunk-{start:07d}.npz"
        if not path.is_file():
            chunk = every_id[start:start + CHUNK]  # always the whole chunk of the set: a limit only reads a prefix
            files = [sim / "cutouts" / f"{i}.png" for i in chunk]
            if not warm:  # the runtime's first call (allocations, graph compilation) stays out of the timings
                embed_files(encoder, files[:1], progress=False)
                warm = True
            tick = time.perf_counter()
            emb = embed_files(encoder, files, progress=False)
            spent = time.perf_counter() - tick
            if emb.ids != chunk:
                raise ulisse.InputError(f"{sim}: embedded {len(emb.ids)} of the {len(chunk)} cutouts from {start}")
            atomic_write(path, lambda p: np.savez(p, vectors=emb.vectors, seconds=spent), fsync=False)
            LOG.info("%s %s: cutouts %d-%d in %.1f s", sim.name, desc, start, start + len(chunk), spent)
        with np.load(path) as z:
            part = z["vectors"][: len(ids) - start]
            seconds += float(z["seconds"]) * len(part) / len(z["vectors"])
        parts.append(part)
    vectors = np.concatenate(parts) if parts else np.zeros((0, encoder.spec.dim), np.float32)
    return SettingVectors(ids, labels.reset_index(drop=True), vectors, seconds, encoder.spec, runtime)


# --------------------------------------------------------------------------- evaluation

def choose_prototypes(labels: pd.DataFrame, classes: Sequence[str], count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` random objects of each class, as (id, class); the AGN task draws the ids ``benchmark agn`` draws."""
    rng = np.random.default_rng(seed)
    out = []
    for cls in classes:
        ids = labels["id"][labels["label"].astype(str) == cls].astype(str).to_numpy()
        out += [(str(i), cls) for i in rng.choice(ids, size=min(count, len(ids)), replace=False)]
    return out


def setting_index(sv: SettingVectors, folder: Path, whiten="auto"):
    """An ordinary ulisse index of one setting's vectors (labels as metadata, the encoder's spec), rebuilt each run;
    ``whiten``: the index's search space (``ulisse.create_index(whiten=)``; ``auto``: the spec's preset's)."""
    name = f"{sv.spec.pool.replace(':', '')}-{sv.spec.tta}-w{whiten}"
    return ulisse.create_index(folder / name, sv.vectors, sv.labels, sv.spec, device="cpu", overwrite=True,
                               whiten=whiten)


def evaluate_setting(index, prototypes: Sequence[tuple[str, str]], expansion: bool = True, k_expand: int = 8,
                     iterations: int = 5, budget: int = 89) -> pd.DataFrame:
    """Per prototype: class fraction at 16 and 89; with ``expansion``, recursive and confirmed expansion
    (``follow_label=label=<class>``) against direct kNN with as many objects."""
    from ulisse.plugins.prototype import query
    from ulisse.plugins.recursive import expand

    rows = []
    for pid, cls in prototypes:
        r = query(index, pid, k=max(N_AT), n=list(N_AT), label="label")
        row = {"prototype": pid, "class": cls, **{f"at_{n}": float(r.fractions.loc[cls, n]) for n in N_AT}}
        if expansion:
            for name, follow in (("recursive", None), ("confirmed", ("label", cls))):
                e = expand(index, pid, k=k_expand, iterations=iterations, budget=budget, label="label",
                           follow_label=follow)
                row |= {f"{name}_n": len(e), f"{name}": float(e.fractions.loc[cls, "expansion"]),
                        f"{name}_direct": float(e.fractions.loc[cls, "direct"])}
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class TaskResult:
    """One task's grid: per setting and prototype, plus base rates and costs."""

    task: Task
    n: int
    base_rates: dict
    per_setting: dict  # (pool, tta) -> per-prototype DataFrame
    costs: dict  # (pool, tta) -> (forward passes per cutout, measured seconds per cutout, files -> vectors)
    runtime: str = ""
    timings: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """One row per setting: mean, spread and ratio against ULISSE's setting."""
        ref = self.per_setting[ULISSE_SETTING]["at_16"].mean()
        rows = []
        for (pool, tta), per in self.per_setting.items():
            n_passes, secs = self.costs[(pool, tta)]
            plain = self.costs.get((pool, "none"))
            row = {"pool": pool, "tta": tta, "passes": n_passes, "s_per_cutout": secs,
                   "time_vs_none": secs / plain[1] if plain and plain[1] > 0 else float("nan")}
            for n in N_AT:
                row |= {f"at_{n}": per[f"at_{n}"].mean(), f"at_{n}_std": per[f"at_{n}"].std(ddof=0),
                        f"at_{n}_min": per[f"at_{n}"].min(), f"at_{n}_max": per[f"at_{n}"].max()}
            for cls in self.task.classes:
                row[f"{cls}_at_16"] = per.loc[per["class"] == cls, "at_16"].mean()
            row["above_base"] = int(sum(per["at_16"] > per["class"].map(self.base_rates)))
            row["vs_ulisse"] = row["at_16"] / ref if ref > 0 else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)

    def best(self) -> tuple[str, str]:
        s = self.summary()
        top = s.sort_values(["at_16", "passes"], ascending=[False, True]).iloc[0]
        return str(top["pool"]), str(top["tta"])


def run_task(task_name: str, cache: Path, n: int = 2000, seed: int = 0, prototypes: int = 20,
             pools: Sequence[str] = DEFAULT_POOLS, ttas: Sequence[str] = TTAS, limit: int | None = None,
             model: str = "efficientnet_b0", weights=None, device: str = "cpu", runtime: str = "auto",
             expansion: bool = True, progress: bool = True) -> TaskResult:
    """Simulate (once), embed every setting with the encoder (once, cached) and evaluate it on one task.

    ``limit`` evaluates on the first ``limit`` cutouts of the ``n`` simulated (the set is
    the same as one simulated with ``n = limit``). ``device`` and ``runtime`` are the encoder's
    (``Encoder.load``); ULISSE's setting (mean, none) is always in the grid.
    """
    pools, ttas = parse_settings(pools, ("none", *ttas))
    task = _tasks()[task_name]
    timings = {}
    tick = time.perf_counter()
    sim, fresh = simulated_set(task, cache, n, seed, progress)
    timings["simulate" if fresh else "simulate (reused)"] = time.perf_counter() - tick
    tick = time.perf_counter()
    # ULISSE's network and input (224 px, no crop, fp32); each setting changes only pooling and symmetry
    encoder = ulisse.Encoder.load(model, weights=weights, device=device, runtime=runtime, preset="ulisse")
    settings = {(pool, tta): setting_vectors(sim, encoder.with_options(pool=pool, tta=tta), limit, progress)
                for pool in pools for tta in ttas}
    timings["embedding (every setting)"] = time.perf_counter() - tick
    first = settings[ULISSE_SETTING]
    labels = first.labels["label"].astype(str)
    base = {c: float((labels == c).mean()) for c in task.classes}
    protos = choose_prototypes(first.labels, task.classes, prototypes, seed)
    per_setting = {}
    tick = time.perf_counter()
    for key, sv in settings.items():
        per_setting[key] = evaluate_setting(setting_index(sv, sim / "indexes", "none"), protos, expansion=expansion)
    timings["queries and expansions"] = time.perf_counter() - tick
    costs = {(pool, tta): (passes(tta), sv.seconds_per_cutout) for (pool, tta), sv in settings.items()}
    return TaskResult(task, len(first.ids), base, per_setting, costs, encoder.runtime.name, timings)


# --------------------------------------------------------------------------- report

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def task_report(r: TaskResult) -> str:
    """The Markdown section of one task."""
    s = r.summary()
    rates = ", ".join(f"{c} {_pct(b)}" for c, b in r.base_rates.items())
    n_proto = len(next(iter(r.per_setting.values())))
    lines = [f"### {r.task.name}: {r.task.title}", "",
             f"{r.n} cutouts; base rates {rates}; {n_proto} prototypes "
             f"({', '.join(r.task.classes)}, drawn at random; the same for every setting). Vectors: "
             f"`Encoder.load(...).with_options(pool=, tta=)` on runtime {r.runtime}, files -> vectors through "
             "`embed_files` (the seconds per cutout are that path's, measured).", "",
             "| pool | symmetry | forward passes / cutout | s / cutout (measured; x none) | class@16 mean | x ULISSE | "
             "class@16 std | class@16 min-max | class@89 mean | class@89 std | above base rate |"
             + "".join(f" {c}@16 |" for c in r.task.classes if len(r.task.classes) > 1),
             "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * (len(r.task.classes) if len(r.task.classes) > 1 else 0)]
    for x in s.itertuples(index=False):
        per_class = "".join(f" {_pct(getattr(x, f'{c}_at_16'))} |" for c in r.task.classes) if len(r.task.classes) > 1 else ""
        lines.append(f"| {x.pool} | {x.tta} | {x.passes} | {x.s_per_cutout:.3f} ({x.time_vs_none:.1f}x) | {_pct(x.at_16)} | {x.vs_ulisse:.2f}x | "
                     f"{_pct(x.at_16_std)} | {_pct(x.at_16_min)}-{_pct(x.at_16_max)} | {_pct(x.at_89)} | "
                     f"{_pct(x.at_89_std)} | {x.above_base} of {n_proto} |" + per_class)
    best = r.best()
    lines += ["", f"Best class@16: `--pool {best[0]} --tta {best[1]}`."]
    per = next(iter(r.per_setting.values()))
    if "recursive" in per.columns:
        lines += ["", "Recursive expansion (k = 8, 5 iterations, budget 89) against direct kNN with as many objects "
                  "(confirmed: only objects of the prototype's class become new prototypes, `--follow-label label=CLASS`):",
                  "", "| pool | symmetry | expansion | mean objects | class fraction | direct kNN, same count | "
                  "prototypes where expansion is higher / lower |", "|---|---|---|---|---|---|---|"]
        for (pool, tta), p in r.per_setting.items():
            for name in ("recursive", "confirmed"):
                lines.append(f"| {pool} | {tta} | {name} | {p[f'{name}_n'].mean():.1f} | {_pct(p[name].mean())} | "
                             f"{_pct(p[f'{name}_direct'].mean())} | {int((p[name] > p[f'{name}_direct']).sum())} / "
                             f"{int((p[name] < p[f'{name}_direct']).sum())} |")
    return "\n".join(lines) + "\n"


def machine_line() -> str:
    import os
    import platform

    import faiss
    import torch

    return (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"faiss {faiss.__version__}.")


# --------------------------------------------------------------------------- the whole run

def default_cache() -> Path:
    """``<cache>/benchmarks``: under the run's cache folder (``$ULISSE_CACHE_DIR``, else the user cache folder,
    honouring ``$XDG_CACHE_HOME``; :attr:`ulisse.registry.Config.cache_dir`)."""
    from ulisse.registry import current_config

    return Path(current_config().cache_dir) / "benchmarks"


def discovery_report(results: Sequence[TaskResult], command: str | None) -> str:
    """The whole Markdown report: one section per task, the machine and the command."""
    lines = []
    for r in results:
        lines += [task_report(r), "Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()) + ".", ""]
    lines += [machine_line()]
    if command:
        lines.append(f"Command: `{command}`")
    return "\n".join(lines) + "\n"


def run_discovery(tasks: Sequence[str], cache, n: int = 2000, limit: int | None = None, seed: int = 0,
                  prototypes: int = 20, pools: Sequence[str] = DEFAULT_POOLS, ttas: Sequence[str] = TTAS,
                  model: str = "efficientnet_b0", weights=None, device: str = "cpu", runtime: str = "auto",
                  expansion: bool = True, progress: bool = True, command: str | None = None) -> str:
    """Every task's grid (see :func:`run_task`); returns the Markdown report."""
    if limit is not None and limit > n:
        raise ulisse.InputError(f"--limit {limit}: more than the {n} objects simulated (--n)")
    cache = Path(cache).expanduser()
    results = [run_task(task, cache, n=n, seed=seed, prototypes=prototypes, pools=pools, ttas=ttas, limit=limit,
                        model=model, weights=weights, device=device, runtime=runtime, expansion=expansion,
                        progress=progress) for task in tasks]
    return discovery_report(results, command)


# --------------------------------------------------------------------------- levers (issue 28)

def parse_lever(text: str) -> dict:
    """``SIZE[cCROP]/POOL/TTA/RUNTIME/PRECISION[/wN]`` (e.g. ``224c160/centre:3/rot4/openvino/bf16/w128``: resized
    to 224, the network sees the central 160 px, the index PCA-whitens to 128 dimensions; no ``/wN``: raw vectors)
    -> ``Encoder.load`` options and the index's ``whiten``."""
    size, pool, tta, runtime, precision, *rest = text.split("/")
    size, _, crop = size.partition("c")
    whiten = rest[0].removeprefix("w") if rest else "none"
    return {"input_size": int(size), "crop": int(crop or 0), "pool": parse_pool(pool), "tta": parse_tta(tta),
            "runtime": runtime, "precision": precision, "whiten": whiten}


def run_levers(tasks: Sequence[str], levers: Sequence[str], cache=None, n: int = 2000, seed: int = 0,
               prototypes: int = 20, weights=None, command: str | None = None, log: Callable = print) -> str:
    """Each lever setting (:func:`parse_lever`) of ``ulisse.Encoder.load(preset="ulisse", **options)`` on
    each task's full set: class@16 (no expansion) from the same prototypes, and the measured files -> vectors
    seconds per cutout (:func:`setting_vectors`, cached per spec and runtime). The first lever is the reference
    of the ``x first`` columns. Returns a Markdown table; ``log`` gets each row as it is measured."""
    import os

    cache = Path(cache).expanduser() if cache else default_cache()
    rows, encoders = [], {}
    for task_name in tasks:
        task = _tasks()[task_name]
        sim, _ = simulated_set(task, cache, n, seed, False)
        for text in levers:
            opts = parse_lever(text)
            key = (opts["input_size"], opts["crop"], opts["runtime"], opts["precision"])
            if key not in encoders:
                encoders[key] = ulisse.Encoder.load(weights=weights, device="cpu", input_size=opts["input_size"],
                                                    crop=opts["crop"], runtime=opts["runtime"],
                                                    precision=opts["precision"], preset="ulisse")
            enc = encoders[key].with_options(pool=opts["pool"], tta=opts["tta"])
            sv = setting_vectors(sim, enc, None, False)
            protos = choose_prototypes(sv.labels, task.classes, prototypes, seed)
            folder = sim / "indexes" / f"lever-{'-'.join(str(k) for k in key)}"
            per = evaluate_setting(setting_index(sv, folder, opts["whiten"]), protos, expansion=False)
            row = {"task": task_name, "lever": text, "runtime": enc.runtime.name, "at_16": float(per["at_16"].mean()),
                   "at_89": float(per["at_89"].mean()), "s_per_cutout": sv.seconds_per_cutout,
                   "load": os.getloadavg()[0],
                   **{f"{c}@16": float(per.loc[per["class"] == c, "at_16"].mean()) for c in task.classes}}
            rows.append(row)
            log(json.dumps(row))
    table = pd.DataFrame(rows)
    lines = ["| task | size/pool/tta/runtime/precision | class@16 | x first | class@89 | per class @16 | "
             "s / cutout (files -> vectors) | x first | load avg |", "|---|---|---|---|---|---|---|---|---|"]
    for task_name, part in table.groupby("task", sort=False):
        first = part.iloc[0]
        for _, r in part.iterrows():
            per_class = ", ".join(f"{c} {_pct(r[c])}" for c in r.index if c.endswith("@16") and pd.notna(r[c]))
            lines.append(f"| {task_name} | `{r['lever']}` ({r['runtime']}) | {_pct(r['at_16'])} | "
                         f"{r['at_16'] / first['at_16']:.2f}x | {_pct(r['at_89'])} | {per_class} | "
                         f"{r['s_per_cutout']:.4f} | {r['s_per_cutout'] / first['s_per_cutout']:.2f}x | "
                         f"{r['load']:.1f} |")
    lines += ["", machine_line()]
    if command:
        lines.append(f"Command: `{command}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if len(sys.argv) >= 4 and sys.argv[1] == "levers":
        # python -m ulisse_bench.discovery levers agn,morphology 224/mean/none/onnx/fp32 160/centre:3/rot4/...
        print(run_levers(sys.argv[2].split(","), sys.argv[3:],
                         command="python -m ulisse_bench.discovery " + " ".join(sys.argv[1:])))
