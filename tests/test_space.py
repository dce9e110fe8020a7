"""The search space of an index (``ulisse.indexes.space``): PCA whitening fitted on the index, the discovery default.

Pins: the discovery preset whitens (and ``ulisse`` does not); the whitened search is the exact k-NN of the
whitened, L2-normalised vectors; adds, compaction, re-ranking and shards all search the same space; too few
objects fall back to raw vectors with ``auto`` and are an error when asked for; a bad ``--whiten`` is a
one-line error before any work.
"""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse import IndexError_, InputError
from ulisse.encoder import EncoderSpec
from ulisse.indexes import space
from ulisse.indexes.shards import create_sharded, split_into_shards

DIM = 48
DISCOVERY = EncoderSpec("synthetic", "random", None, dim=DIM, preset="discovery")
ULISSE = dataclasses.replace(DISCOVERY, preset="ulisse")


def batch(tag: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(5.0, 0.2, DIM)  # anisotropic: whitening changes the neighbours
    v = (rng.normal(size=(n, DIM)) * scales + rng.normal(size=(1, DIM))).astype(np.float32)
    return v, pd.DataFrame({"id": [f"{tag}-{i}" for i in range(n)]})


def whitened_knn(fit: np.ndarray, data: np.ndarray, queries: np.ndarray, w: int, k: int):
    """The oracle: numpy PCA whitening (eigenvectors of the covariance of ``fit``), L2 norm, exact L2 k-NN."""
    mu = fit.mean(0)
    cov = np.cov((fit - mu).T.astype(np.float64), bias=True)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:w]
    P = vecs[:, order] / np.sqrt(vals[order])

    def t(x):
        y = (x - mu) @ P
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    d = ((t(queries)[:, None, :] - t(data)[None]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k], np.sqrt(np.sort(d, axis=1)[:, :k])


def test_resolve_whiten_rules():
    assert space.resolve_whiten("auto", "discovery", 5000, 1280) == 64
    assert space.resolve_whiten("auto", "ulisse", 5000, 1280) == 0
    assert space.resolve_whiten("auto", None, 5000, 1280) == 0  # old specs read as ulisse
    assert space.resolve_whiten("auto", "discovery", 100, 1280) == 0  # too few objects: raw vectors
    assert space.resolve_whiten("none", "discovery", 5000, 1280) == 0
    assert space.resolve_whiten("64", "ulisse", 5000, 1280) == 64
    with pytest.raises(InputError, match="--whiten 64: needs at least 128 objects"):
        space.resolve_whiten(64, "ulisse", 100, 1280)
    for bad in ("lots", "-3", "0.5", "5000"):
        with pytest.raises(InputError, match=f"--whiten {bad}: expected auto, none or a number"):
            space.resolve_whiten(bad, "discovery", 5000, 1280)
    with pytest.raises(InputError, match="has a transform of its own"):
        space.factory_with_space("PCA64,Flat", 32)


def test_discovery_index_searches_the_whitened_space(tmp_path):
    v, m = batch("obj", 400)
    idx = ulisse.create_index(tmp_path / "d", v, m, DISCOVERY, device="cpu")
    w = min(space.PRESET_WHITEN["discovery"], DIM)
    assert idx.manifest["factory"] == f"PCAW{w},L2norm,Flat"
    assert idx.manifest["space"]["whiten"] == w and idx.manifest["space"]["fitted_on"] == 400
    want_I, want_D = whitened_knn(v, v, v[:5], w, 8)
    D, I = idx.search(v[:5], 8)
    assert (I == want_I).all()
    np.testing.assert_allclose(D, want_D, rtol=1e-3, atol=1e-4)
    # the paper's preset searches the raw vectors
    raw = ulisse.create_index(tmp_path / "u", v, m, ULISSE, device="cpu")
    assert raw.manifest["factory"] == "Flat" and "space" not in raw.manifest
    assert not (raw.search(v[:5], 8)[1] == I).all()


def test_adds_compaction_and_rerank_stay_in_one_space(tmp_path):
    v, m = batch("obj", 300)
    path = tmp_path / "d"
    ulisse.create_index(path, v, m, DISCOVERY, device="cpu")
    v2, m2 = batch("new", 60, seed=1)
    ulisse.open_index(path, device="cpu").add_vectors(v2, m2)
    idx = ulisse.open_index(path, device="cpu")
    every = np.concatenate([v, v2])
    w = min(space.PRESET_WHITEN["discovery"], DIM)
    want_I, want_D = whitened_knn(v, every, v2[:4], w, 6)  # fitted on the first 300 only, applied to the adds
    D, I = idx.search(v2[:4], 6)
    assert (I == want_I).all()
    np.testing.assert_allclose(D, want_D, rtol=1e-3, atol=1e-4)
    Dr, Ir = idx.search(v2[:4], 6, rerank=30)  # re-ranked from the raw vectors, in the same space
    assert (Ir == I).all()
    np.testing.assert_allclose(Dr, D, rtol=1e-4, atol=1e-4)
    from ulisse.index import compact_index

    compact_index(path)
    idx = ulisse.open_index(path, device="cpu")
    assert idx.manifest["space"]["fitted_on"] == 300  # the space is kept: not refitted by the compaction
    D2, I2 = idx.search(v2[:4], 6)
    assert (I2 == I).all()


@pytest.mark.parametrize("metric", ["L2", "IP", "cosine"])
def test_distances_are_the_searchs_in_its_space(tmp_path, metric):
    v, m = batch("obj", 300)
    idx = ulisse.create_index(tmp_path / "d", v, m, DISCOVERY, metric=metric, device="cpu")
    for where in ("index", "raw"):
        D, I = idx.search(v[:5], 7, space=where)
        every = idx.distances(range(5), v, space=where)  # 5 x 300: every pair, nothing searched
        assert every.shape == (5, 300)
        np.testing.assert_allclose(np.take_along_axis(every, I, axis=1), D, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.sort(every, axis=1)[:, :7], D, rtol=1e-4, atol=1e-4)
    Dr, Ir = idx.search(v[:5], 7, rerank=30)  # re-ranking measures in the same space (cosine: normalised first)
    assert (Ir == idx.search(v[:5], 7)[1]).all()
    np.testing.assert_allclose(Dr, idx.search(v[:5], 7)[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ulisse.QueryError, match="dimension 3, the index 48"):
        idx.distances([0], np.zeros((1, 3)))
    with pytest.raises(ulisse.QueryError, match="row out of range"):
        idx.distances([300], v[:1])


def test_few_objects_fall_back_to_raw_vectors(tmp_path):
    v, m = batch("obj", 40)
    idx = ulisse.create_index(tmp_path / "d", v, m, DISCOVERY, device="cpu")
    assert idx.manifest["factory"] == "Flat" and "space" not in idx.manifest
    with pytest.raises(InputError, match="needs at least"):
        ulisse.create_index(tmp_path / "e", v, m, DISCOVERY, device="cpu", whiten=32)
    assert not (tmp_path / "e").exists()


def test_shards_share_one_space_and_other_spaces_are_refused(tmp_path):
    v, m = batch("obj", 900)
    single = ulisse.create_index(tmp_path / "single", v, m, DISCOVERY, device="cpu")
    trained = faiss.read_index(str(single.path / single.manifest["trained"]["name"]))
    sharded = split_into_shards(tmp_path / "sharded", v, m, DISCOVERY, 3, factory=single.manifest["factory"],
                                trained=trained)
    assert sharded.space == single.manifest["space"]["sha256"]
    shard_idx = [ulisse.open_index(p, device="cpu") for p in sharded.shard_paths]
    D = [s.search(v[:3], 5) for s in shard_idx]  # each shard's distances are the single index's
    Dall, Iall = single.search(v[:3], 15)
    for s, (d, i) in zip(shard_idx, D):
        rows = s.metadata_rows(i[i >= 0].ravel())["id"]
        got = dict(zip(rows, d[i >= 0].ravel()))
        ids = single.metadata_rows(Iall.ravel())["id"]
        ref = dict(zip(ids, Dall.ravel()))
        for oid, dist in got.items():
            if oid in ref:
                assert dist == pytest.approx(ref[oid], rel=1e-4, abs=1e-5)
    # a shard whitened on its own data searches another space: refused by name
    other = ulisse.create_index(tmp_path / "other", *batch("oth", 300, seed=3), DISCOVERY, device="cpu")
    with pytest.raises(IndexError_, match="shard .*other searches another space"):
        create_sharded(tmp_path / "mixed", [sharded.shard_paths[0], other.path])
    # split without a trained index: the first shard's whitening is every shard's
    auto = split_into_shards(tmp_path / "auto", v, m, DISCOVERY, 3)
    assert auto.space and len({ulisse.open_index(p).manifest["space"]["sha256"] for p in auto.shard_paths}) == 1


def test_bad_whiten_on_the_command_line_is_one_line_and_writes_nothing(tmp_path, survey, cli):
    for bad, why in (("lots", "expected auto, none or a number"), ("200", "needs at least 400 objects")):
        code, out, err = cli("index", "build", survey / "cutouts", "--index", tmp_path / "i", "--whiten", bad)
        assert code != 0
        assert f"--whiten {bad}: {why}" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "i").exists()


def test_raw_space_search_and_anomaly_scores_ignore_the_whitening(tmp_path):
    from ulisse.plugins.anomalies import anomaly_scores

    v, m = batch("obj", 300)
    idx = ulisse.create_index(tmp_path / "d", v, m, DISCOVERY, device="cpu")
    assert "space" in idx.manifest
    d = np.sqrt(((v[:, None, :] - v[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    D, I = idx.search(v[:6], 5, exclude=[[r] for r in range(6)], space="raw")
    assert (I == np.argsort(d[:6], axis=1, kind="stable")[:, :5]).all()
    np.testing.assert_allclose(D, np.sort(d[:6], axis=1)[:, :5], rtol=1e-4)
    assert not (idx.search(v[:6], 5, exclude=[[r] for r in range(6)])[1] == I).all()  # the whitened space differs
    kth = anomaly_scores(idx, method="kth", k=10, progress=False)["score"].to_numpy()
    np.testing.assert_allclose(kth, np.sort(d, axis=1)[:, 9], rtol=1e-4)
    with pytest.raises(ValueError, match="space 'nope'"):
        idx.search(v[:1], 3, space="nope")
