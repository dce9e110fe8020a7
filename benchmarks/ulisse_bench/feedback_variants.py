"""Relevance models and expansion settings compared on held-out prototypes (benchmarks/feedback.md, "Variants").

The labelling loop and the expansions of :mod:`ulisse_bench.feedback`, re-implemented on
a precomputed neighbour order (the index's own search, so whitened where the index is) so
that many variants run in seconds. Variants are selected on prototypes other than the
reported 20 AGN prototypes: 40 AGN prototypes drawn with seeds 1, 2, 3 (the seed-0 ones
left out) and 20 spiral + 20 tidal prototypes of the morphology set; the reported set is
shown beside them.

Run::

    python -m ulisse_bench.feedback_variants loop        # relevance models, round 2 / round 3
    python -m ulisse_bench.feedback_variants expansion   # expansion settings against direct kNN
    python -m ulisse_bench.feedback_variants loop --index lever-224-0-onnx-fp32/mean-none   # ULISSE's vectors

(indexes under ``<cache>/benchmarks/{agn,morphology}-n2000-seed0/indexes/``; ``default`` is what
``ulisse benchmark feedback`` builds).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

import ulisse
from ulisse.relevance import features, relevance_scores


@dataclass
class Case:
    """One index: vectors, labels, the full neighbour order and distance matrix of its own search."""

    X: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    order: np.ndarray
    D: np.ndarray
    cache: dict


def load_case(path: Path) -> Case:
    index = ulisse.open_index(path, device="cpu")
    X = np.asarray(index.all_vectors(), dtype=np.float32)
    n = len(X)
    dist, rows = index.search(X, n)
    D = np.full((n, n), np.inf)
    D[np.arange(n)[:, None], rows] = dist
    np.fill_diagonal(D, np.inf)
    order = np.argsort(D, axis=1, kind="stable")[:, :-1]
    return Case(X, index.metadata["label"].astype(str).to_numpy(), index.metadata["id"].astype(str).to_numpy(),
                order, D, {})


def draw(case: Case, cls: str, count: int, seed: int, exclude=()) -> list[int]:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(case.ids[case.labels == cls], size=min(count, int((case.labels == cls).sum())), replace=False)
    where = {i: r for r, i in enumerate(case.ids)}
    return [where[i] for i in chosen if i not in set(exclude)]


def prototype_sets(cache: Path, index_name: str) -> dict[str, tuple[Case, str, list[int]]]:
    """Selection sets (agn-sel, spiral, tidal) and the reported one (agn-final)."""
    agn = load_case(cache / "agn-n2000-seed0" / "indexes" / index_name)
    final = draw(agn, "AGN", 20, 0)
    sel: list[int] = []
    for seed in (1, 2, 3):
        sel += draw(agn, "AGN", 20, seed, exclude=[agn.ids[r] for r in final + sel])
    morph = load_case(cache / "morphology-n2000-seed0" / "indexes" / index_name)
    return {"agn-sel": (agn, "AGN", sel[:40]), "spiral": (morph, "spiral", draw(morph, "spiral", 20, 0)),
            "tidal": (morph, "tidal", draw(morph, "tidal", 20, 0)), "agn-final": (agn, "AGN", final)}


# --------------------------------------------------------------------------- relevance models

def _with_negatives(n: int, pos, neg, count: int = 300):
    if len(neg):
        return neg
    free = np.setdiff1d(np.arange(n), pos)
    return np.random.default_rng(0).choice(free, size=min(count, free.size), replace=False)


def _feature(case: Case, name: str) -> np.ndarray:
    if name not in case.cache:
        X = case.X
        if name == "Z":
            case.cache[name] = features(X, root=False)
        elif name == "sqrtZ":
            case.cache[name] = features(X)
        elif name == "l2Z":
            case.cache[name] = features(X / np.linalg.norm(X, axis=1, keepdims=True), root=False)
        elif name.startswith("pca"):
            Z = _feature(case, "Z")
            U, S, _ = np.linalg.svd(Z - Z.mean(0), full_matrices=False)
            k = int(name[3:].rstrip("w"))
            case.cache[name] = U[:, :k] * (1 if name.endswith("w") else S[:k])
    return case.cache[name]


def lr(C=0.01, feat="Z", random_negatives=0, unlabelled_weight=0.0, proto_weight=1.0, pseudo=0):
    def score(case, pos, neg):
        F = _feature(case, feat)
        neg = _with_negatives(len(F), pos, neg)
        if random_negatives:
            free = np.setdiff1d(np.arange(len(F)), np.r_[pos, neg])
            neg = np.r_[neg, np.random.default_rng(0).choice(free, random_negatives, replace=False)]
        rows = np.r_[pos, neg]
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        w = np.r_[np.full(len(pos), len(rows) / (2 * len(pos))), np.full(len(neg), len(rows) / (2 * len(neg)))]
        w[0] *= proto_weight
        if unlabelled_weight:
            free = np.setdiff1d(np.arange(len(F)), rows)
            rows, y, w = np.r_[rows, free], np.r_[y, np.zeros(len(free))], np.r_[w, np.full(len(free), unlabelled_weight)]
        s = LogisticRegression(C=C, max_iter=3000).fit(F[rows], y, sample_weight=w).decision_function(F)
        if pseudo:
            free = np.setdiff1d(np.arange(len(F)), rows)
            top = free[np.argsort(-s[free])[:pseudo]]
            s = LogisticRegression(C=C, max_iter=3000).fit(
                F[np.r_[rows, top]], np.r_[y, np.ones(pseudo)], sample_weight=np.r_[w, np.full(pseudo, 0.5)]
            ).decision_function(F)
        return s
    return score


def product():
    return lambda case, pos, neg: relevance_scores(case.X, pos, neg)


def svm(C):
    def score(case, pos, neg):
        F = _feature(case, "Z")
        neg = _with_negatives(len(F), pos, neg)
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        return LinearSVC(C=C, class_weight="balanced", max_iter=20000).fit(F[np.r_[pos, neg]], y).decision_function(F)
    return score


def nearest_positive():
    return lambda case, pos, neg: -case.D[:, pos].min(1)


def nearest_ratio():
    """Distance to the nearest negative over the sum of the distances to the nearest positive and negative."""
    def score(case, pos, neg):
        dp = case.D[:, pos].min(1)
        dn = case.D[:, neg].min(1) if len(neg) else np.full(len(dp), np.median(dp[np.isfinite(dp)]))
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(dn / (dp + dn), nan=0.5)
    return score


def rocchio(beta=0.5, feat="Z"):
    def score(case, pos, neg):
        F = _feature(case, feat) if feat != "raw" else case.X / np.linalg.norm(case.X, axis=1, keepdims=True)
        q = F[pos].mean(0) - (beta * F[neg].mean(0) if len(neg) else 0)
        return -((F - q) ** 2).sum(1)
    return score


def propagation(k=10, alpha=0.9, iterations=30):
    def score(case, pos, neg):
        key = f"graph{k}"
        if key not in case.cache:
            n, nb = len(case.X), case.order[:, :k]
            d = np.take_along_axis(case.D, nb, 1)
            W = np.zeros((n, n))
            W[np.repeat(np.arange(n), k), nb.ravel()] = np.exp(-d.ravel() / np.median(d))
            W = np.maximum(W, W.T)
            s = 1 / np.sqrt(W.sum(1))
            case.cache[key] = W * s[:, None] * s[None]
        y = np.zeros(len(case.X))
        y[pos], y[neg] = 1, -1
        f = y.copy()
        for _ in range(iterations):
            f = alpha * case.cache[key] @ f + (1 - alpha) * y
        return f
    return score


def smooth(base, a=0.5, k=10):
    def score(case, pos, neg):
        p = 1 / (1 + np.exp(-base(case, pos, neg)))
        return (1 - a) * p + a * p[case.order[:, :k]].mean(1)
    return score


def rank_blend(parts, weights):
    def score(case, pos, neg):
        return sum(w * rankdata(f(case, pos, neg)) / len(case.X) for f, w in zip(parts, weights))
    return score


def value_blend(base, w):
    def score(case, pos, neg):
        return w * (1 / (1 + np.exp(-base(case, pos, neg)))) + (1 - w) * nearest_ratio()(case, pos, neg)
    return score


MODELS = {
    "LR C 0.01 (before)": lambda: lr(0.01), "LR C 0.003": lambda: lr(0.003), "LR C 0.03": lambda: lr(0.03),
    "LR C 0.1": lambda: lr(0.1), "LR, L2-normalised first": lambda: lr(0.01, "l2Z"),
    "LR + 100 random negatives always": lambda: lr(0.01, random_negatives=100),
    "LR, unmarked as negatives (weight 0.01)": lambda: lr(0.01, unlabelled_weight=0.01),
    "LR, prototype weight 3": lambda: lr(0.01, proto_weight=3),
    "LR + 16 pseudo-positives (self-training)": lambda: lr(0.01, pseudo=16),
    "LR on PCA-64": lambda: lr(0.01, "pca64"), "LR on PCA-64 whitened (C 1)": lambda: lr(1, "pca64w"),
    "linear SVM C 0.001": lambda: svm(0.001), "linear SVM C 0.0003": lambda: svm(0.0003),
    "LR ensemble C 0.003-0.1": lambda: rank_blend([lr(c) for c in (0.003, 0.01, 0.03, 0.1)], [1] * 4),
    "signed sqrt + LR C 0.003": lambda: lr(0.003, "sqrtZ"), "signed sqrt + LR C 0.03": lambda: lr(0.03, "sqrtZ"),
    "signed sqrt + LR C 0.01 (ships)": product,
    "nearest positive": nearest_positive, "nearest-mark ratio": nearest_ratio,
    "Rocchio (standardised, beta 0.5)": lambda: rocchio(0.5), "Rocchio (L2-normalised, beta 0.5)": lambda: rocchio(0.5, "raw"),
    "label propagation, kNN-10 graph": lambda: propagation(10), "label propagation, kNN-20 graph": lambda: propagation(20),
    "LR smoothed over 10 neighbours (a 0.5)": lambda: smooth(lr(0.01)),
    "signed sqrt LR smoothed over 10 neighbours": lambda: smooth(product_logit()),
    "LR + propagation (rank mean)": lambda: rank_blend([lr(0.01), propagation(10)], [1, 1]),
    "LR + nearest positive (rank mean)": lambda: rank_blend([lr(0.01), nearest_positive()], [1, 1]),
    "LR 0.8 + nearest-mark ratio 0.2 (ranks)": lambda: rank_blend([lr(0.01), nearest_ratio()], [0.8, 0.2]),
    "signed sqrt LR 0.8 + nearest-mark ratio 0.2 (ranks)": lambda: rank_blend([product_logit(), nearest_ratio()], [0.8, 0.2]),
    "signed sqrt LR 0.9 + nearest-mark ratio 0.1 (values)": lambda: value_blend(product_logit(), 0.9),
}


def product_logit():
    def score(case, pos, neg):
        p = np.clip(relevance_scores(case.X, pos, neg), 1e-9, 1 - 1e-9)
        return np.log(p / (1 - p))
    return score


def loop(case: Case, cls: str, prototypes: list[int], model, rounds: int = 3, per_round: int = 16) -> np.ndarray:
    """The oracle labelling loop: per prototype, the fraction of ``cls`` in each round."""
    truth = case.labels == cls
    out = []
    for p in prototypes:
        shown, pos, neg, fractions = case.order[p, :per_round], [p], [], []
        for r in range(rounds):
            fractions.append(truth[shown].mean())
            pos += [int(i) for i in shown if truth[i]]
            neg += [int(i) for i in shown if not truth[i]]
            if r + 1 < rounds:
                s = np.asarray(model(case, np.array(pos, np.int64), np.array(neg, np.int64)), float)
                s[pos] = s[neg] = -np.inf
                shown = np.argsort(-s, kind="stable")[:per_round]
        out.append(fractions)
    return np.array(out)


# --------------------------------------------------------------------------- expansions

def _unseen(case: Case, q: int, k: int, seen) -> list[int]:
    out = []
    for j in case.order[q]:
        if int(j) not in seen:
            out.append(int(j))
            if len(out) == k:
                break
    return out


def breadth_first(case, truth, p, k=8, iterations=5, budget=89, follow=True, min_confirmed=0.0):
    seen, found, frontier = {p}, [], [p]
    for _ in range(iterations):
        new, alive = {}, {}
        for q in frontier:
            nb = _unseen(case, q, k, seen)
            alive[q] = not nb or np.mean(truth[nb]) >= min_confirmed
            for j in nb:
                if j not in new or case.D[q, j] < new[j][0]:
                    new[j] = (case.D[q, j], q)
        take = sorted(new, key=lambda j: new[j][0])[: budget - len(found)]
        if not take:
            break
        found += take
        seen |= set(take)
        if len(found) >= budget:
            break
        frontier = [j for j in take if (not follow or truth[j]) and alive[new[j][1]]]
        if not frontier:
            break
    return found


def guided(case, truth, p, k=16, show=8, budget=89):
    seen, found, pool = {p}, [], set(_unseen(case, p, k, {p}))
    while pool and len(found) < budget:
        pos = [p] + [j for j in found if truth[j]]
        s = relevance_scores(case.X, pos, [j for j in found if not truth[j]])
        take = sorted(pool, key=lambda j: -s[j])[: min(show, budget - len(found))]
        pool -= set(take)
        found += take
        seen |= set(take)
        for j in take:
            if truth[j]:
                pool |= set(_unseen(case, j, k, seen | pool))
    return found


EXPANSION_SETTINGS = {
    "recursive (k 8)": lambda c, t, p: breadth_first(c, t, p, follow=False),
    "confirmed (k 8)": lambda c, t, p: breadth_first(c, t, p),
    "confirmed (k 16)": lambda c, t, p: breadth_first(c, t, p, k=16),
    "confirmed, branch stop 25 %": lambda c, t, p: breadth_first(c, t, p, min_confirmed=0.25),
    "confirmed, branch stop 50 %": lambda c, t, p: breadth_first(c, t, p, min_confirmed=0.5),
    "confirmed + relevance, k 8, 8 per iteration": lambda c, t, p: guided(c, t, p, k=8, show=8),
    "confirmed + relevance, k 16, 8 per iteration (ships in the benchmark)": lambda c, t, p: guided(c, t, p),
    "confirmed + relevance, k 16, 16 per iteration": lambda c, t, p: guided(c, t, p, show=16),
    "confirmed + relevance, k 32, 8 per iteration": lambda c, t, p: guided(c, t, p, k=32),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("loop", "expansion"))
    parser.add_argument("--cache", default=str(Path("~/.cache/ulisse/benchmarks").expanduser()))
    parser.add_argument("--index", default="default", help="index folder under <set>/indexes/")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    args = parser.parse_args(argv)
    sets = prototype_sets(Path(args.cache), args.index)
    names = list(sets)
    if args.what == "loop":
        print("| model | selection, round 3 | " + " | ".join(f"{s} r2 / r3" for s in names) + " |")
        print("|---|---:|" + "---:|" * len(names))
        for name, make in MODELS.items():
            if args.only and name not in args.only:
                continue
            t, cells, sel = time.perf_counter(), [], []
            for s, (case, cls, protos) in sets.items():
                r = loop(case, cls, protos, make()).mean(0)
                cells.append(f"{100 * r[1]:.1f} / {100 * r[2]:.1f}")
                sel += [r[2]] if s != "agn-final" else []
            print(f"| {name} | {100 * np.mean(sel):.1f} | " + " | ".join(cells) + f" |  <!-- {time.perf_counter() - t:.0f} s -->")
    else:
        print("| expansion | selection ratio | " + " | ".join(f"{s}: found / direct (n)" for s in names) + " |")
        print("|---|---:|" + "---:|" * len(names))
        for name, run in EXPANSION_SETTINGS.items():
            if args.only and name not in args.only:
                continue
            cells, ratios = [], []
            for s, (case, cls, protos) in sets.items():
                truth = case.labels == cls
                found, direct, n = [], [], []
                for p in protos:
                    f = run(case, truth, p)
                    found.append(truth[f].mean() if f else 0.0)
                    direct.append(truth[case.order[p, :max(len(f), 1)]].mean())
                    n.append(len(f))
                ratio = np.mean(found) / np.mean(direct)
                cells.append(f"{100 * np.mean(found):.1f}% / {100 * np.mean(direct):.1f}% ({np.mean(n):.0f}) = {ratio:.2f}x")
                ratios += [ratio] if s != "agn-final" else []
            print(f"| {name} | {np.mean(ratios):.2f}x | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
