"""``ulisse benchmark anomalies``: discovery with the astronomer's marks on a rare-object set.

1. Simulates ~3000 SDSS-like cutouts (:mod:`ulisse_bench.sim.rare`): ordinary galaxies,
   60 interesting objects (lensing arcs, mergers with tidal tails, ring galaxies) and 40
   artefacts (satellite trails, saturated stars with bleed columns or diffraction spikes,
   chip edges, bad columns); kept in ``<cache>/benchmarks/rare-n3000-seed0``.
2. Indexes them through the product (:func:`ulisse.build_index`, the default encoder and
   preset, the labels as metadata).
3. The oracle-marks protocol: 3 rounds of 20 shown; after each round the shown objects are
   marked by their true class (interesting = relevant, anything else = not relevant), and
   the next 20 are chosen by
   (a) the plain anomaly list (the next 20 each round),
   (b) anomalies with feedback (:func:`ulisse.plugins.anomalies.feedback.discover`, only
       unmarked objects), for each way of combining anomaly and relevance,
   (c) ``ulisse rank`` (:func:`ulisse.plugins.feedback.rank`, positives = the interesting
       marked; the first round is the plain anomaly list, nothing being marked yet),
   each with the artefact filter off and on.
4. The interesting objects in the label-free top 50 with and without the artefact filter,
   and the artefact flags' precision and recall over the whole set.
5. How well marks teach each interesting kind (:func:`learnability`): 5 objects of the kind
   marked relevant and 15 ordinary galaxies marked not relevant, the product's relevance
   model (:func:`ulisse.plugins.anomalies.feedback.relevance_of`: from the vectors, with the
   morphology at its fixed weight, and with the weight chosen on the held-out marks as the
   default chooses it, the places counted by relevance alone like the rest of this table), and how
   many of the next 20 are of the kind. A kind that marks cannot
   teach bounds what any feedback can find.
6. What the held-out marks (:func:`ulisse.plugins.anomalies.feedback.marks_check`: the check and
   the choice of the morphology's weight) cost: :func:`~ulisse.plugins.anomalies.feedback.discover`
   with the plain list's first 20 marked by the oracle, timed as the default runs it and with
   the vectors' model alone, in the same process (:func:`check_cost`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import ulisse

ROUNDS, PER_ROUND = 3, 20
METHODS = ("kth", "kth+morphology")  # anomaly scores compared; the first is the plain list
# what the product does by default (ulisse.plugins.anomalies.default_method): without marks, and with them
DEFAULTS = ("plain anomaly list (kth), artefacts hide",
            "anomalies with feedback (kth; product; relevance from vectors + morphology), artefacts hide")
INTERESTING, ARTEFACT = "interesting", "artefact"
LEARN_MARKED, LEARN_NOT, LEARN_DRAWS = 5, 15, 5  # learnability: marked relevant, marked not relevant, draws


@dataclass
class Run:
    """One strategy's interesting objects per round (and the artefacts it showed)."""

    name: str
    interesting: list[int] = field(default_factory=list)
    artefacts: list[int] = field(default_factory=list)
    found: list[str] = field(default_factory=list)  # the kinds of the interesting objects shown

    @property
    def total(self) -> int:
        return int(sum(self.interesting))


def rare_set(cache: Path, n: int, seed: int, progress: bool, population: str = "structured") -> tuple[Path, bool]:
    """The simulated rare-object set under ``cache``, simulated once per (population, n, seed).

    ``rare-structured-n{n}-seed{seed}`` (ordinary galaxies with spiral arms and field stars) or
    ``rare-n{n}-seed{seed}`` (``population="smooth"``: the benchmark's first set).
    """
    from functools import partial

    from .discovery import Task, simulated_set
    from .sim.rare import POPULATIONS, simulate_rare_set

    if population not in POPULATIONS:
        raise ValueError(f"population {population!r}: not one of {', '.join(POPULATIONS)}")
    name = "rare" if population == "smooth" else f"rare-{population}"
    task = Task(name, partial(simulate_rare_set, population=population), (INTERESTING,),
                "ordinary galaxies, rare interesting objects, artefacts")
    return simulated_set(task, cache, n, seed, progress)


def rare_index(sim: Path, n: int, device: str, progress: bool) -> tuple[ulisse.Index, bool]:
    """The set's index (``sim/index``), built with the product's defaults unless a complete one is there."""
    path = sim / "index"
    try:
        index = ulisse.open_index(path, device=device)
        if len(index) == n and "class" in index.metadata_columns:
            return index, True
    except ulisse.UlisseError:
        pass
    index, _ = ulisse.build_index([sim / "cutouts"], path, sim / "labels.csv", device=device, overwrite=True,
                                  progress=progress)
    return index, False


def _count(classes: np.ndarray, rows, what: str) -> int:
    return int((classes[np.asarray(rows, np.int64)] == what).sum()) if len(rows) else 0


def oracle_loop(index, classes: np.ndarray, choose, name: str) -> Run:
    """Three rounds: ``choose(positives, negatives, round)`` gives 20 ids; the oracle marks them by class."""
    run, pos, neg = Run(name), [], []
    kinds = index.metadata["kind"].astype(str).to_numpy() if "kind" in index.metadata_columns else classes
    for r in range(ROUNDS):
        ids = choose(pos, neg, r)
        rows = [index.row_of(i) for i in ids]
        run.found += [str(kinds[row]) for row in rows if classes[row] == INTERESTING]
        run.interesting.append(_count(classes, rows, INTERESTING))
        run.artefacts.append(_count(classes, rows, ARTEFACT))
        pos += [i for i, row in zip(ids, rows) if classes[row] == INTERESTING]
        neg += [i for i, row in zip(ids, rows) if classes[row] != INTERESTING]
    return run


def run_strategies(index, classes: np.ndarray, scores: dict, vectors: np.ndarray, combines) -> list[Run]:
    """Every strategy of the protocol, artefact filter off (``show``) and on (``hide``).

    ``scores``: anomaly method -> its scores (the first is the issue's plain list, ``kth``). For each method:
    the plain list, and anomalies with feedback (``product``) with the relevance learned from the vectors alone
    and with the product's default (from the vectors and the morphology, where the index keeps cutouts);
    ``ulisse rank``; the other ``combines`` with the defaults; where the index keeps cutouts, the default with
    the morphology's weight fixed at ``RELEVANCE_WEIGHT`` (as it was before the marks chose it).
    """
    from ulisse.plugins.anomalies.feedback import ArtefactFlags, discover
    from ulisse.plugins.feedback import rank
    from ulisse.plugins.morphology import RELEVANCE_WEIGHT, has_cutouts

    flags = ArtefactFlags(index)
    first = next(iter(scores))

    def plain(artefacts, method):
        top = discover(index, top=ROUNDS * PER_ROUND, use_marks=False, artefacts=artefacts, scores=scores[method],
                       progress=False).ids
        return lambda pos, neg, r: top[r * PER_ROUND:(r + 1) * PER_ROUND]

    def feedback(artefacts, combine, method, morphology, weight=None):
        return lambda pos, neg, r: discover(index, top=PER_ROUND, positives=pos, negatives=neg, use_marks=False,
                                            artefacts=artefacts, combine=combine, scores=scores[method],
                                            vectors=vectors, progress=False, check=False,
                                            morphology=None if morphology else False, morphology_weight=weight).ids

    def ranked(artefacts):
        def choose(pos, neg, r):
            if not pos:  # rank needs a relevant object: until one is marked, the unmarked plain anomalies
                return discover(index, top=PER_ROUND, negatives=neg, use_marks=False, artefacts=artefacts,
                                combine="product", scores=scores[first], vectors=vectors, progress=False).ids \
                    if neg and r else plain(artefacts, first)(pos, neg, 0)
            table = rank(index, pos, neg, k=PER_ROUND * 4, vectors=vectors)
            ids = table["id"].astype(str).tolist()
            if artefacts == "hide":
                ids = [i for i in ids if not flags.kind(index.row_of(i))]
            return ids[:PER_ROUND]
        return choose

    runs = []
    for artefacts in ("show", "hide"):
        for method in scores:
            runs.append(oracle_loop(index, classes, plain(artefacts, method),
                                    f"plain anomaly list ({method}), artefacts {artefacts}"))
            for morphology in (False, True):
                relevance = "vectors + morphology" if morphology else "vectors"  # the first: the default's
                runs.append(oracle_loop(index, classes, feedback(artefacts, "product", method, morphology),
                                        f"anomalies with feedback ({method}; product; relevance from {relevance}), "
                                        f"artefacts {artefacts}"))
        runs.append(oracle_loop(index, classes, ranked(artefacts), f"ulisse rank, artefacts {artefacts}"))
    if has_cutouts(index):  # the morphology's weight fixed, as it was before the marks chose it
        runs.append(oracle_loop(index, classes, feedback("hide", "product", first, True, RELEVANCE_WEIGHT),
                                f"anomalies with feedback ({first}; product; relevance from vectors + morphology at "
                                f"a fixed {RELEVANCE_WEIGHT:g}), artefacts hide"))
    for combine in combines:
        if combine != "product":
            runs.append(oracle_loop(index, classes, feedback("hide", combine, first, True),
                                    f"anomalies with feedback ({first}; {combine}; relevance from vectors + "
                                    "morphology), artefacts hide"))
    return runs


def learnability(index, kinds: np.ndarray, shown: np.ndarray, vectors: np.ndarray, morphology) -> list[dict]:
    """For each interesting kind: of the next 20 after marks, how many are the kind, the relevance learned from the
    vectors alone, from the vectors and the morphology at its fixed weight, and as the product learns it (the
    morphology's weight chosen on the held-out marks, :func:`~ulisse.plugins.anomalies.feedback.marks_check`).

    Each of :data:`LEARN_DRAWS` draws marks :data:`LEARN_MARKED` objects of the kind relevant and
    :data:`LEARN_NOT` ordinary galaxies not relevant (``numpy.random.default_rng([draw, kind number])``),
    scores every object by the product's relevance model (stand-in negatives included) and counts the
    kind among the 20 best unmarked objects; ``others`` is what else those 20 held, over all draws;
    ``weights`` the weights chosen.
    """
    from ulisse.plugins.anomalies.feedback import marks_check, relevance_of
    from ulisse.plugins.morphology import RELEVANCE_WEIGHT
    from ulisse.relevance import features

    Z = features(vectors)
    ordinary = np.flatnonzero(kinds == "galaxy")
    ways = ["vectors"] + ([f"vectors + morphology ({RELEVANCE_WEIGHT:g})", "the default (weight chosen)"]
                          if morphology is not None else [])
    rows = []
    for number, kind in enumerate(sorted(set(kinds[np.asarray(index.metadata["class"].astype(str)) == INTERESTING]))):
        members = np.flatnonzero(kinds == kind)
        for way in ways:
            counts, others, weights = [], [], []
            for draw in range(LEARN_DRAWS):
                rng = np.random.default_rng([draw, number])
                pos = rng.choice(members, size=min(LEARN_MARKED, len(members) - 1), replace=False)
                neg = rng.choice(ordinary, size=min(LEARN_NOT, len(ordinary)), replace=False)
                morph, weight = (None, None) if way == "vectors" else (morphology, None)
                if way.startswith("the default"):
                    weight = marks_check(None, Z, pos, neg, morphology=morphology, prepared=True)["weight"]
                    weights.append(weight)
                score = relevance_of(Z, pos, neg, morphology=morph, prepared=True, weight=weight).copy()
                score[np.concatenate([pos, neg])] = -np.inf
                top = np.argsort(-score, kind="stable")[:PER_ROUND]
                counts.append(int((kinds[top] == kind).sum()))
                others += [str(w) for w in shown[top] if w != kind]
            rows.append({"kind": kind, "from": way, "counts": counts, "others": _composition(others) if others else "-",
                         "weights": weights})
    return rows


def check_cost(index, classes: np.ndarray, scores: np.ndarray, vectors: np.ndarray, repeats: int = 3) -> dict:
    """Seconds of :func:`discover` (the plain list's first 20 marked by their class) as the default runs it (the
    held-out marks: the check and the choice of the morphology's weight) and with the vectors' model alone (no
    morphology, no check): the best of ``repeats`` each, alternated, in this process; and the check itself."""
    from ulisse.plugins.anomalies.feedback import discover

    shown = discover(index, top=PER_ROUND, use_marks=False, scores=scores, progress=False).ids
    pos = [i for i in shown if classes[index.row_of(i)] == INTERESTING]
    neg = [i for i in shown if classes[index.row_of(i)] != INTERESTING]
    best = {True: np.inf, False: np.inf}
    check = None
    for _ in range(repeats):
        for default in (False, True):
            t = time.perf_counter()
            found = discover(index, top=PER_ROUND, positives=pos, negatives=neg, use_marks=False, scores=scores,
                             vectors=vectors, progress=False, check=default, morphology=None if default else False)
            best[default] = min(best[default], time.perf_counter() - t)
            check = found.feedback["check"] if default else check
    return {"with": best[True], "without": best[False], "positives": len(pos), "negatives": len(neg),
            "check": check}


def flag_quality(labels: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """Per artefact kind and overall: simulated count, flagged, recall; flagged ordinary/interesting objects."""
    is_art = (labels["class"] == ARTEFACT).to_numpy()
    flagged = flags["artefact"].to_numpy(bool)
    rows = []
    for kind in sorted(labels.loc[is_art, "kind"].unique()):
        m = (labels["kind"] == kind).to_numpy()
        rows.append({"kind": kind, "objects": int(m.sum()), "flagged": int(flagged[m].sum()),
                     "flagged as": ", ".join(f"{k} {c}" for k, c in flags.loc[m, "artefact_kind"].replace("", "-")
                                             .value_counts().items())})
    for cls in ("interesting", "ordinary"):
        m = (labels["class"] == cls).to_numpy()
        rows.append({"kind": f"({cls})", "objects": int(m.sum()), "flagged": int(flagged[m].sum()),
                     "flagged as": ", ".join(f"{k} {c}" for k, c in flags.loc[m & flagged, "artefact_kind"]
                                             .value_counts().items())})
    return pd.DataFrame(rows)


def run_anomaly_benchmark(cache: Path, n: int = 3000, seed: int = 0, combines=("product", "rank_product", "sum",
                          "relevance"), device: str = "auto", progress: bool = True, command: str | None = None,
                          population: str = "structured") -> str:
    """Run the benchmark and return its Markdown report."""
    from ulisse.plugins.anomalies import anomaly_scores
    from ulisse.plugins.anomalies.feedback import discover

    timings = {}
    t = time.perf_counter()
    sim, fresh = rare_set(Path(cache), n, seed, progress, population)
    timings["simulate" if fresh else "simulate (reused)"] = time.perf_counter() - t
    t = time.perf_counter()
    index, reused = rare_index(sim, n, device, progress)
    timings["index (reused)" if reused else "embed + index"] = time.perf_counter() - t
    t = time.perf_counter()
    flags = index.derived("artefacts")
    timings["artefact flags"] = time.perf_counter() - t
    labels = index.metadata[["id", "class", "kind"]].astype(str).reset_index(drop=True)
    classes = labels["class"].to_numpy()
    t = time.perf_counter()
    index.derived("morphology")
    timings["morphology"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = {m: anomaly_scores(index, m, k=10, progress=False)["score"].to_numpy() for m in METHODS}
    vectors = np.asarray(index.all_vectors(), np.float32)
    runs = run_strategies(index, classes, scores, vectors, combines)
    top50 = {(m, a): discover(index, top=50, use_marks=False, artefacts=a, scores=scores[m], progress=False).ids
             for m in METHODS for a in ("show", "hide")}
    timings["protocol"] = time.perf_counter() - t
    what = _what_is_shown(index.metadata)
    t = time.perf_counter()
    from ulisse.plugins.morphology import morphology_features

    learned = learnability(index, index.metadata["kind"].astype(str).to_numpy(), what, vectors,
                           morphology_features(index))
    timings["learnability"] = time.perf_counter() - t
    cost = check_cost(index, classes, scores[METHODS[0]], vectors)
    top50_counts = {key: {**{c: _count(classes, [index.row_of(i) for i in ids], c) for c in (INTERESTING, ARTEFACT)},
                          "held": _composition(what[[index.row_of(i) for i in ids]])} for key, ids in top50.items()}
    return report(index, labels, runs, top50_counts, flag_quality(labels, flags), timings, command,
                  population=population, learned=learned, cost=cost)


def _what_is_shown(metadata: pd.DataFrame) -> np.ndarray:
    """Per object: its kind, or for an ordinary galaxy what it has (``galaxy``, ``galaxy+star``, ...)."""
    kind = metadata["kind"].astype(str).to_numpy()
    if "structure" not in metadata.columns:
        return kind
    structure = metadata["structure"].fillna("").astype(str).to_numpy()
    return np.array([f"galaxy+{st}" if k == "galaxy" and st else k for k, st in zip(kind, structure)], dtype=object)


def _composition(shown) -> str:
    values, counts = np.unique(np.asarray(shown, dtype=str), return_counts=True)
    return ", ".join(f"{v} {c}" for c, v in sorted(zip(counts, values), key=lambda cv: (-cv[0], cv[1])))


def report(index, labels, runs, top50, quality, timings, command, population: str = "structured",
           learned: list[dict] | None = None, cost: dict | None = None) -> str:
    from .discovery import machine_line

    counts = labels.groupby("class").size().to_dict()
    enc = index.encoder_spec
    plain = next(r for r in runs if r.name == f"plain anomaly list ({METHODS[0]}), artefacts show")
    ordinary = ("ordinary galaxies with spiral arms and field stars" if population == "structured"
                else "smooth ordinary galaxies")
    lines = [f"Simulated rare-object set ({population}: {ordinary}): {len(labels)} cutouts, "
             f"{counts.get(INTERESTING, 0)} interesting, "
             f"{counts.get(ARTEFACT, 0)} artefacts, {counts.get('ordinary', 0)} ordinary; encoder {enc.model_name} "
             f"({enc.weights_source}), preset {getattr(enc, 'preset', '?')}; anomaly scores "
             f"{' and '.join(METHODS)}, k = 10; 'vs plain list': against the plain {METHODS[0]} list, artefacts "
             "shown (the issue's baseline).", "",
             f"Oracle marks, {ROUNDS} rounds of {PER_ROUND} shown (interesting objects found; artefacts shown in "
             "brackets):", "",
             "| strategy | round 1 | round 2 | round 3 | first 60 | vs plain list | kinds found |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        cells = " | ".join(f"{i} ({a})" for i, a in zip(r.interesting, r.artefacts))
        ratio = f"{r.total / plain.total:.2f}x" if plain.total else "-"
        found = ", ".join(f"{k} {r.found.count(k)}" for k in sorted(set(r.found)))
        name = f"**{r.name} (the default)**" if r.name in DEFAULTS else r.name
        lines.append(f"| {name} | {cells} | {r.total} | {ratio} | {found} |")
    lines += ["", "Label-free top 50 (no marks):", "",
              "| anomaly score | artefact filter | interesting | artefacts | what it holds |", "|---|---|---|---|---|"]
    for (m, a), c in top50.items():
        lines.append(f"| {m} | {'off (--artefacts show)' if a == 'show' else 'on (--artefacts hide, the default)'} | "
                     f"{c[INTERESTING]} | {c[ARTEFACT]} | {c.get('held', '')} |")
    is_art = (labels["class"] == ARTEFACT).sum()
    flagged = quality.loc[~quality["kind"].str.startswith("("), "flagged"].sum()
    false = quality.loc[quality["kind"].str.startswith("("), "flagged"].sum()
    lines += ["", f"Artefact flags over the whole set: recall {flagged}/{is_art} = {flagged / max(is_art, 1):.2f}, "
              f"precision {flagged}/{flagged + false} = {flagged / max(flagged + false, 1):.2f}.", "",
              "| simulated kind | objects | flagged | flagged as |", "|---|---|---|---|"]
    for q in quality.itertuples(index=False):
        lines.append(f"| {q.kind} | {q.objects} | {q.flagged} | {q[3] or '-'} |")
    if learned:
        lines += ["", f"What marks teach ({LEARN_MARKED} of a kind marked relevant, {LEARN_NOT} ordinary galaxies not "
                  f"relevant; the kind among the next {PER_ROUND} by relevance alone, {LEARN_DRAWS} draws):", "",
                  "| kind | relevance from | next 20: the kind, per draw | mean | what else was there (all draws) |",
                  "|---|---|---|---:|---|"]
        for row in learned:
            chosen = f" (weights {', '.join(f'{w:g}' for w in row['weights'])})" if row.get("weights") else ""
            lines.append(f"| {row['kind']} | {row['from']}{chosen} | {', '.join(map(str, row['counts']))} | "
                         f"{np.mean(row['counts']):.1f} | {row['others']} |")
    if cost:
        from ulisse.plugins.anomalies.feedback import check_text

        lines += ["", f"The check of the marks ({cost['positives']} relevant and {cost['negatives']} not relevant: the "
                  f"plain list's first {PER_ROUND}, marked): {check_text(cost['check']) or 'none'}. The next "
                  f"{PER_ROUND} took {cost['with']:.2f} s as the default runs it (the held-out marks: the check and "
                  f"the morphology's weight) and {cost['without']:.2f} s with the vectors' model alone "
                  f"({cost['with'] / cost['without']:.2f}x; best of 3 each, alternated, this process)."]
    lines += ["", "Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ".", machine_line()]
    if command:
        lines.append(f"Command: `{command}`")
    return "\n".join(lines) + "\n"
