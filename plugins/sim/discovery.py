"""The discovery benchmark: pooling x test-time symmetry settings, and confirmed expansion, on two labelled tasks.

For every cutout of a simulated set the encoder's final feature map (7 x 7 x 1280
for EfficientNet at 224 px) is computed once for each of the 8 rotations/flips of
the dihedral group D4 and pooled in every way asked for (``mean``: the spatial
mean, ULISSE's vector; ``centre:c``: the mean of the central c x c cells). A
setting's vector is the mean of its pooled vectors over its transforms (``none``:
the cutout as it is; ``rot4``: the four rotations; ``d4``: rotations and flips),
so the whole grid costs 8 forward passes per cutout instead of 8 per setting.
Pooled vectors are cached on disk (resumable, in chunks).

Each setting's vectors go into an ordinary ulisse index (:func:`ulisse.create_index`),
on which the product's own :func:`~ulisse.plugins.prototype.query` and
:func:`~ulisse.plugins.recursive.expand` run from the same random prototypes of
the rare classes: class fraction among the first 16 and 89 neighbours, its spread
over prototypes, and recursive expansion (plain, and through confirmed objects
only) against direct kNN with as many objects.

Example:
    >>> from ulisse.plugins.sim.discovery import run_discovery     # doctest: +SKIP
    >>> result = run_discovery("agn", cache)                       # doctest: +SKIP
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

TTA = {"none": (0,), "rot4": (0, 1, 2, 3), "d4": tuple(range(8))}
DEFAULT_POOLS = ("mean", "centre:3")
ULISSE_SETTING = ("mean", "none")
N_AT = (16, 89)
CHUNK = 50  # cutouts per cached feature file
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """A labelled simulated set and the classes whose objects serve as prototypes."""

    name: str
    simulate: Callable  # simulate(out_dir, n=, seed=, progress=) -> label table
    classes: tuple[str, ...]  # prototype classes (rare ones)
    title: str


def _tasks() -> dict[str, Task]:
    from .agn import simulate_agn_set
    from .morphology import simulate_morphology_set

    return {
        "agn": Task("agn", simulate_agn_set, ("AGN",), "AGN in SDSS-like hosts (nuclear point sources)"),
        "morphology": Task("morphology", simulate_morphology_set, ("spiral", "tidal"),
                           "disc galaxies: spiral arms and tidal streams against smooth discs (extended structure)"),
    }


TASKS = ("agn", "morphology")


def parse_pool(pool: str) -> int | None:
    """``mean`` -> None (all cells); ``centre:c`` -> c (odd, >= 1)."""
    if pool == "mean":
        return None
    name, _, size = pool.partition(":")
    if name in ("centre", "center") and size.isdigit() and int(size) % 2 == 1:
        return int(size)
    raise ulisse.InputError(f"pool {pool!r}: expected mean or centre:C with C odd (centre:3)")


def pool_map(maps, pool: str):
    """Pool ``N x C x h x w`` feature maps (torch or NumPy) into ``N x C`` vectors."""
    c = parse_pool(pool)
    if c is None:
        return maps.mean(axis=(2, 3)) if isinstance(maps, np.ndarray) else maps.mean(dim=(2, 3))
    h, w = maps.shape[2:]
    if c > min(h, w):
        raise ulisse.InputError(f"pool {pool!r}: the feature map is only {h} x {w}")
    y0, x0 = (h - c) // 2, (w - c) // 2
    cells = maps[:, :, y0:y0 + c, x0:x0 + c]
    return cells.mean(axis=(2, 3)) if isinstance(maps, np.ndarray) else cells.mean(dim=(2, 3))


def d4_transform(x, t: int):
    """The ``t``-th element of D4 (0-3: rotations by t x 90 deg; 4-7: a left-right flip, then rotations) on N x C x H x W."""
    import torch

    if t >= 4:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, t % 4, dims=(2, 3))


# --------------------------------------------------------------------------- features

def transform_features(encoder, images: Sequence[np.ndarray], pools: Sequence[str] = DEFAULT_POOLS,
                       batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pooled vectors of every cutout under each of the 8 D4 transforms.

    Returns ``(features, seconds)``: float32 ``8 x len(pools) x N x dim`` and the
    forward-pass time of each transform (float64 ``8``).
    """
    import torch

    model = encoder.model
    batch_size = batch_size or encoder.default_batch_size
    out = np.zeros((8, len(pools), len(images), encoder.spec.dim), np.float32)
    seconds = np.zeros(8)
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = encoder.preprocess(images[i:i + batch_size])
            for t in range(8):
                tick = time.perf_counter()
                maps = model.forward_features(d4_transform(x, t).contiguous(memory_format=torch.channels_last)).float()
                for p, pool in enumerate(pools):
                    out[t, p, i:i + len(x)] = pool_map(maps, pool).cpu().numpy()
                seconds[t] += time.perf_counter() - tick
    return out, seconds


@dataclass
class FeatureSet:
    """The cached pooled vectors of a simulated set."""

    ids: list[str]
    labels: pd.DataFrame
    pools: tuple[str, ...]
    features: np.ndarray  # 8 x pools x N x dim
    seconds: np.ndarray  # forward time per transform, summed over all cutouts
    spec: object  # the EncoderSpec

    def vectors(self, pool: str, tta: str) -> np.ndarray:
        """One setting's vectors: the mean over the setting's transforms of the pooled vectors."""
        return self.features[list(TTA[tta]), self.pools.index(pool)].mean(axis=0)

    def cost(self, tta: str) -> tuple[int, float]:
        """Forward passes per cutout and measured seconds per cutout for a symmetry setting."""
        return len(TTA[tta]), float(self.seconds[list(TTA[tta])].sum() / len(self.ids))


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


def feature_set(sim: Path, encoder, pools: Sequence[str] = DEFAULT_POOLS, limit: int | None = None,
                progress: bool = True) -> FeatureSet:
    """Pooled D4 features of the first ``limit`` cutouts of a simulated set (all by default).

    Computed in chunks of :data:`CHUNK` cutouts cached under ``sim/features/KEY/`` (KEY: the
    encoder spec and the pools), so an interrupted run resumes and a larger ``limit`` reuses
    what a smaller one computed.
    """
    from ulisse.progress import progress_iter

    from ulisse.cutouts import read_cutout

    labels = pd.read_csv(sim / "labels.csv")
    if limit is not None:
        labels = labels.iloc[:limit]
    ids = labels["id"].astype(str).tolist()
    spec = encoder.spec  # only what decides the feature maps (not pooling, symmetry or bookkeeping fields)
    maps = {k: getattr(spec, k) for k in ("model_name", "weights_sha256", "input_size", "mean", "std", "interpolation")}
    key = json.dumps({"encoder": maps, "pools": list(pools), "chunk": CHUNK}, sort_keys=True, default=list)
    folder = sim / "features" / hashlib.sha256(key.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "key.json", key)
    parts, secs = [], np.zeros(8)
    for start in progress_iter(range(0, len(ids), CHUNK), desc="D4 features", enabled=progress):
        path = folder / f"chunk-{start:07d}.npz"
        if not path.is_file():
            tick = time.perf_counter()
            chunk_ids = [str(i) for i in pd.read_csv(sim / "labels.csv")["id"].iloc[start:start + CHUNK]]
            images = [read_cutout(sim / "cutouts" / f"{i}.png").image for i in chunk_ids]
            feats, seconds = transform_features(encoder, images, pools)
            atomic_write(path, lambda p: np.savez(p, features=feats, seconds=seconds), fsync=False)
            LOG.info("%s: cutouts %d-%d in %.1f s", sim.name, start, start + len(chunk_ids), time.perf_counter() - tick)
        with np.load(path) as z:
            parts.append(z["features"][:, :, : len(ids) - start])
            secs += z["seconds"] * parts[-1].shape[2] / z["features"].shape[2]
    return FeatureSet(ids, labels.reset_index(drop=True), tuple(pools), np.concatenate(parts, axis=2), secs, encoder.spec)


# --------------------------------------------------------------------------- evaluation

def choose_prototypes(labels: pd.DataFrame, classes: Sequence[str], count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` random objects of each class, as (id, class); the AGN task draws the ids ``benchmark agn`` draws."""
    rng = np.random.default_rng(seed)
    out = []
    for cls in classes:
        ids = labels["id"][labels["label"].astype(str) == cls].astype(str).to_numpy()
        out += [(str(i), cls) for i in rng.choice(ids, size=min(count, len(ids)), replace=False)]
    return out


def setting_index(fs: FeatureSet, pool: str, tta: str, folder: Path):
    """An ordinary ulisse index of one setting's vectors (labels as metadata), rebuilt each run."""
    import dataclasses

    spec = fs.spec
    fields = {f.name for f in dataclasses.fields(spec)}
    spec = dataclasses.replace(spec, **{k: v for k, v in (("pool", pool), ("tta", tta)) if k in fields})
    return ulisse.create_index(folder / f"{pool.replace(':', '')}-{tta}", fs.vectors(pool, tta), fs.labels, spec,
                               device="cpu", overwrite=True)


def evaluate_setting(index, prototypes: Sequence[tuple[str, str]], expansion: bool = True, k_expand: int = 8,
                     iterations: int = 5, budget: int = 89) -> pd.DataFrame:
    """Per prototype: class fraction at 16 and 89; with ``expansion``, recursive and confirmed expansion
    (``follow_label=label=<class>``) against direct kNN with as many objects."""
    from ..prototype import query
    from ..recursive import expand

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
    costs: dict  # tta -> (forward passes per cutout, seconds per cutout)
    timings: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """One row per setting: mean, spread and ratio against ULISSE's setting."""
        ref = self.per_setting[ULISSE_SETTING]["at_16"].mean()
        rows = []
        for (pool, tta), per in self.per_setting.items():
            row = {"pool": pool, "tta": tta, "passes": self.costs[tta][0], "s_per_cutout": self.costs[tta][1],
                   "time_vs_none": self.costs[tta][1] / self.costs["none"][1] if "none" in self.costs else float("nan")}
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
             pools: Sequence[str] = DEFAULT_POOLS, ttas: Sequence[str] = tuple(TTA), limit: int | None = None,
             model: str = "efficientnet_b0", weights=None, expansion: bool = True,
             progress: bool = True) -> TaskResult:
    """Simulate (once), compute the D4 features (once, cached) and evaluate every setting on one task.

    ``limit`` evaluates on the first ``limit`` cutouts of the ``n`` simulated (the set is
    the same as one simulated with ``n = limit``).
    """
    for pool in pools:
        parse_pool(pool)
    for tta in ttas:
        if tta not in TTA:
            raise ulisse.InputError(f"tta {tta!r}: expected one of {', '.join(TTA)}")
    task = _tasks()[task_name]
    timings = {}
    tick = time.perf_counter()
    sim, fresh = simulated_set(task, cache, n, seed, progress)
    timings["simulate" if fresh else "simulate (reused)"] = time.perf_counter() - tick
    tick = time.perf_counter()
    encoder = ulisse.Encoder.load(model, weights=weights, device="cpu")
    fs = feature_set(sim, encoder, pools, limit=limit, progress=progress)
    timings["D4 features"] = time.perf_counter() - tick
    labels = fs.labels["label"].astype(str)
    base = {c: float((labels == c).mean()) for c in task.classes}
    protos = choose_prototypes(fs.labels, task.classes, prototypes, seed)
    per_setting = {}
    tick = time.perf_counter()
    for pool in pools:
        for tta in ttas:
            index = setting_index(fs, pool, tta, sim / "indexes")
            per_setting[(pool, tta)] = evaluate_setting(index, protos, expansion=expansion)
    timings["queries and expansions"] = time.perf_counter() - tick
    return TaskResult(task, len(fs.ids), base, per_setting, {t: fs.cost(t) for t in ttas}, timings)


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
             f"({', '.join(r.task.classes)}, drawn at random; the same for every setting).", "",
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


def verify_against_encoder(fs: FeatureSet, sim: Path, pool: str, tta: str, count: int = 8,
                           model: str = "efficientnet_b0", weights=None) -> float | None:
    """Minimum cosine between the grid's vectors and ``Encoder.load(pool=, tta=)``'s on ``count`` cutouts.

    None when the encoder has no ``pool``/``tta`` options.
    """
    import inspect

    from ulisse.cutouts import read_cutout

    if not {"pool", "tta"} <= set(inspect.signature(ulisse.Encoder.load).parameters):
        return None
    encoder = ulisse.Encoder.load(model, weights=weights, device="cpu", pool=pool, tta=tta)
    images = [read_cutout(sim / "cutouts" / f"{i}.png").image for i in fs.ids[:count]]
    got = encoder.embed_images(images)
    want = fs.vectors(pool, tta)[:count]
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return float(cos.min())


# --------------------------------------------------------------------------- command

DEFAULT_CACHE = "~/.cache/ulisse/benchmarks"


def discovery_report(results: Sequence[TaskResult], command: str | None, verified: dict) -> str:
    """The whole Markdown report: one section per task, the encoder check, the machine and the command."""
    lines = []
    for r in results:
        lines += [task_report(r), "Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()) + ".", ""]
    for (task, pool, tta), cos in verified.items():
        lines.append(f"Check against the encoder ({task}): " + (
            f"`Encoder.load(pool={pool!r}, tta={tta!r})` reproduces the grid's vectors, cosine >= {cos:.6f}."
            if cos is not None else "not done: this encoder has no pool/tta options yet."))
    lines += ["", machine_line()]
    if command:
        lines.append(f"Command: `{command}`")
    return "\n".join(lines) + "\n"


def add_commands(benchmark) -> None:
    """``ulisse benchmark discovery`` and ``ulisse benchmark morphology`` on the ``benchmark`` group."""
    import shlex
    import sys

    import click

    def options(fn):
        for opt in reversed([
            click.option("--cache", type=click.Path(file_okay=False), default=DEFAULT_CACHE, show_default=True,
                         help="simulated sets, D4 features and per-setting indexes (reused when present)"),
            click.option("--n", "n", type=click.IntRange(20, 1_000_000), default=2000, show_default=True,
                         help="objects to simulate per task"),
            click.option("--limit", type=click.IntRange(20, 1_000_000), default=None,
                         help="evaluate on the first LIMIT cutouts only (the same set as --n LIMIT)"),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option("--prototypes", type=click.IntRange(1, 1000), default=20, show_default=True,
                         help="random prototypes per class"),
            click.option("--pool", "pools", multiple=True, default=DEFAULT_POOLS, show_default=True,
                         help="poolings to compare (mean, centre:C); repeat the option"),
            click.option("--model", default="efficientnet_b0", show_default=True),
            click.option("--weights", default=None, help="encoder weights (see 'ulisse index build --help')"),
            click.option("--no-expansion", is_flag=True, help="skip recursive and confirmed expansion"),
            click.option("--verify", type=click.IntRange(0, 1000), default=8, show_default=True,
                         help="check the best setting against the encoder's own pool/tta options on this many cutouts"),
            click.option("--report", type=click.Path(dir_okay=False), help="write the Markdown report to this file"),
        ]):
            fn = opt(fn)
        return fn

    def run(tasks, cache, n, limit, seed, prototypes, pools, model, weights, no_expansion, verify, report):
        from ulisse.cli import progress_enabled

        if limit is not None and limit > n:
            raise ulisse.InputError(f"--limit {limit}: more than the {n} objects simulated (--n)")
        pools = tuple(dict.fromkeys(("mean", *pools)))
        command = "ulisse " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
        cache = Path(cache).expanduser()
        results, verified = [], {}
        for task in tasks:
            r = run_task(task, cache, n=n, seed=seed, prototypes=prototypes, pools=pools, limit=limit, model=model,
                         weights=weights, expansion=not no_expansion, progress=progress_enabled())
            results.append(r)
            if verify:
                pool, tta = r.best()
                sim = cache / f"{task}-n{n}-seed{seed}"
                fs = feature_set(sim, ulisse.Encoder.load(model, weights=weights, device="cpu"), pools, limit=verify,
                                 progress=False)
                verified[(task, pool, tta)] = verify_against_encoder(fs, sim, pool, tta, verify, model, weights)
        text = discovery_report(results, command, verified)
        click.echo(text, nl=False)
        if report:
            atomic_write(report, "# Discovery quality: pooling, symmetry and confirmed expansion\n\n" + text)

    @benchmark.command("discovery")
    @click.option("--task", "tasks", type=click.Choice(TASKS), multiple=True, default=TASKS, show_default=True)
    @options
    def discovery(tasks, **kw):
        """Every pooling x symmetry setting against ULISSE's, and confirmed expansion, on labelled simulated tasks."""
        run(tasks, **kw)

    @benchmark.command("morphology")
    @options
    def morphology(**kw):
        """The extended-morphology task alone (spiral arms and tidal streams against smooth discs)."""
        run(("morphology",), **kw)
