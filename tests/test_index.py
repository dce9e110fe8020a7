"""The index: persistence round trip, atomic writes, factories, queries (Python API)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import faiss
import numpy as np
import pytest

import ulisse
from conftest import make_survey, tree_digest
from ulisse import IndexError_, IndexNotFound, InputError, QueryError, build_index, open_index
from ulisse.indexes import faiss_backend, store


def test_round_trip_keeps_vectors_metadata_and_manifest(tiny_index, survey, tiny_encoder):
    idx = open_index(tiny_index.path, device="cpu")
    assert len(idx) == 24 and idx.ids == tiny_index.ids
    m = json.loads((idx.path / "manifest.json").read_text())
    assert m["factory"] == "Flat" and m["metric"] == "L2" and m["count"] == 24 and m["dim"] == 256
    assert m["encoder"]["model_name"] == "test_efficientnet" and m["encoder"]["weights_sha256"]
    assert {"faiss", "torch", "timm", "astropy", "ulisse"} <= set(m["versions"])
    assert not list(idx.path.glob("*.pkl")) and not list(idx.path.glob("*.pickle"))
    assert list(idx.metadata.columns[:5]) == ["row", "id", "ra", "dec", "source"]
    assert {"label", "r_mag"} <= set(idx.metadata.columns)
    # stored vectors are the encoder's vectors of the same files
    from ulisse.cutouts import read_cutout

    row = idx.row_of("obj005")
    v = tiny_encoder.embed_images([read_cutout(idx.metadata["source"][row]).image])[0]
    np.testing.assert_allclose(idx.vector("obj005"), v, rtol=1e-5, atol=1e-5)


def test_query_by_id_excludes_itself_and_is_sorted(tiny_index):
    r = tiny_index.query("obj003", k=5)
    assert isinstance(r, ulisse.Neighbours) and len(r) == 5
    assert "obj003" not in r.ids and list(r.table["rank"]) == [1, 2, 3, 4, 5]
    assert (np.diff(r.table["distance"]) >= 0).all()
    # the same answer as brute force over the stored vectors
    allv = tiny_index.vectors_of_rows(range(len(tiny_index)))
    d = np.linalg.norm(allv - tiny_index.vector("obj003"), axis=1)
    d[tiny_index.row_of("obj003")] = np.inf
    assert r.ids == [tiny_index.ids[i] for i in np.argsort(d)[:5]]
    np.testing.assert_allclose(r.table["distance"], np.sort(d)[:5], rtol=1e-4)


def test_query_by_image_and_by_coordinates(tiny_index, survey):
    src = survey / "cutouts" / "obj001.png"
    r = tiny_index.query(image=src, k=3)
    assert r.ids[0] == "obj001" and r.table["distance"].iloc[0] < 1e-3  # itself, as an outside image
    r2 = tiny_index.query(ra=150.01, dec=2.005 + 1e-4, k=3)  # obj001 is at (150.01, 2.005)
    assert r2.prototype_id == "obj001" and "obj001" not in r2.ids
    with pytest.raises(QueryError, match="no object within 3 arcsec"):
        tiny_index.query(ra=10.0, dec=10.0, k=3)


def test_query_errors(tiny_index):
    with pytest.raises(QueryError, match="unknown id"):
        tiny_index.query("nope", k=3)
    with pytest.raises(QueryError, match="at least 1"):
        tiny_index.query("obj001", k=0)
    with pytest.raises(QueryError, match="exactly one prototype"):
        tiny_index.query("obj001", ra=1.0, dec=2.0)


def test_fits_wcs_positions_fill_in_without_catalogue(tmp_path, survey, tiny_encoder):
    idx, _ = build_index([survey / "cutouts"], tmp_path / "i", encoder=tiny_encoder, progress=False)
    row = idx.metadata.set_index("id").loc["obj000"]  # a FITS cutout with WCS at (150.0, 2.0)
    assert row["ra"] == pytest.approx(150.0) and row["dec"] == pytest.approx(2.0)
    assert np.isnan(idx.metadata.set_index("id").loc["obj001", "ra"])  # a PNG


def test_an_index_reads_fits_as_its_manifest_says(tiny_index, survey, tiny_encoder):
    """A new index records that FITS rows run bottom-up; one built before fits_rows existed keeps top-down, so the
    FITS cutouts it adds or is queried with embed as its own did."""
    import json

    from ulisse.cutouts import RGBConfig

    assert tiny_index.manifest.rgb["fits_rows"] == "bottom-up" and tiny_index.rgb == RGBConfig()
    fits_file = survey / "cutouts" / "obj008.fits"  # a tilted streak
    ours = tiny_index.query(image=fits_file, k=1).table
    assert ours["id"].iloc[0] == "obj008" and ours["distance"].iloc[0] < 1e-6
    manifest = tiny_index.path / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["rgb"].pop("fits_rows")  # as round two's indexes were written
    manifest.write_text(json.dumps(raw))
    old = open_index(tiny_index.path, device="cpu")
    assert old.rgb.fits_rows == "top-down"
    flipped = old.query(image=fits_file, k=1).table  # read top-down now: not the picture its vector was made of
    assert flipped["distance"].iloc[0] > 1e-3


def test_add_extends_with_stable_rows(tiny_index, tmp_path):
    before = tiny_index.metadata.copy()
    more = tmp_path / "more"
    make_survey(more, n_per_kind=2, seed=5, prefix="new")
    report = tiny_index.add([more], progress=False)
    assert report.added == 6 and len(tiny_index) == 30
    again = open_index(tiny_index.path, device="cpu")
    assert again.metadata.iloc[:24][["row", "id"]].equals(before[["row", "id"]])
    assert list(again.metadata["row"]) == list(range(30))
    assert again.manifest.generation == 2 and again.manifest.history[-1]["action"] == "add"
    first, second = again.manifest.segments  # append-only: the add wrote a segment of its own
    assert (first.start, first.count, second.start, second.count) == (0, 24, 24, 6)
    np.testing.assert_array_equal(again.vectors_of_rows([0, 25]), np.stack([again.all_vectors()[0], again.all_vectors()[25]]))
    with pytest.raises(InputError, match="already in the index"):
        again.add([more], progress=False)


def test_interrupted_commit_leaves_previous_index_intact(tiny_index, tmp_path, monkeypatch):
    digest = tree_digest(tiny_index.path)
    more = tmp_path / "more"
    make_survey(more, n_per_kind=1, seed=6, prefix="new")
    real = os.replace

    def crash_on_manifest(src, dst):
        if os.path.basename(dst) == "manifest.json":
            raise KeyboardInterrupt  # the user pressed ^C at the worst moment
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        tiny_index.add([more], progress=False)
    monkeypatch.setattr(os, "replace", real)
    assert {k: v for k, v in tree_digest(tiny_index.path).items() if k in digest} == digest
    idx = open_index(tiny_index.path, device="cpu")
    assert len(idx) == 24
    idx.add([more], progress=False)  # the next write cleans up and succeeds
    assert len(open_index(tiny_index.path, device="cpu")) == 27
    m = store.read_manifest(tiny_index.path)
    referenced = set(m.file_names()) | {"manifest.json", ".ulisse.lock"}
    # no orphans left (derived/ holds what plugins store with the index, e.g. embedding observers' results)
    assert set(os.listdir(tiny_index.path)) - {"derived"} == referenced


@pytest.mark.slow
def test_killed_process_leaves_previous_index_loadable(tmp_path, survey):
    """SIGKILL an 'ulisse index add' mid-run; the index must load and be unchanged."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    idx_dir = tmp_path / "idx"
    subprocess.run([sys.executable, "-m", "ulisse", "-q", "index", "build", survey / "cutouts", "--index", idx_dir,
                    "--model", "test_efficientnet", "--weights", "random", "--device", "cpu"], check=True, env=env)
    digest = tree_digest(idx_dir)
    more = tmp_path / "more"
    make_survey(more, n_per_kind=60, seed=7, prefix="big")
    p = subprocess.Popen([sys.executable, "-m", "ulisse", "index", "add", more, "--index", idx_dir, "--device", "cpu"],
                         env=env, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    line = ""
    while "embedding" not in line and time.time() - t0 < 120:  # wait until it is working
        line = p.stderr.readline()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert tree_digest(idx_dir) == digest
    assert len(open_index(idx_dir, device="cpu")) == 24


def test_damaged_and_missing_indexes(tiny_index, tmp_path):
    with pytest.raises(IndexNotFound, match="no index here"):
        open_index(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFound, match="no manifest.json"):
        open_index(tmp_path / "empty")
    f = next(tiny_index.path.glob("seg-*.vectors.npy"))
    f.write_bytes(f.read_bytes()[:-100])  # truncated: caught on open, without re-hashing
    with pytest.raises(IndexError_, match="damaged"):
        open_index(tiny_index.path)


def test_build_refuses_to_overwrite_without_flag(tiny_index, survey, tiny_encoder):
    digest = tree_digest(tiny_index.path)
    with pytest.raises(InputError, match="an index exists here already"):
        build_index([survey / "cutouts"], tiny_index.path, encoder=tiny_encoder, progress=False)
    assert tree_digest(tiny_index.path) == digest


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW16", "SQ8", "IVF4,PQ32x4"])
def test_factories_recall_on_known_answers(factory):
    """Synthetic clusters with known nearest neighbours; approximate indexes must keep recall high."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 64)).astype(np.float32) * 10
    data = (centres[rng.integers(0, 20, 2000)] + rng.normal(size=(2000, 64))).astype(np.float32)
    queries = data[:50] + 0.01 * rng.normal(size=(50, 64)).astype(np.float32)
    exact = faiss.IndexFlatL2(64)
    exact.add(data)
    _, truth = exact.search(queries, 10)
    index = faiss_backend.new_faiss_index(factory, 64)
    faiss_backend.add_vectors(index, data)
    D, I = faiss_backend.search(index, queries, 10, nprobe=4)
    recall = np.mean([len(set(I[i]) & set(truth[i])) / 10 for i in range(50)])
    # within a cluster all neighbours are nearly equidistant: a chance pick scores ~0.1
    assert recall >= {"Flat": 0.99, "IVF4,PQ32x4": 0.2}.get(factory, 0.9), recall
    assert (I[:, 0] == np.arange(50)).mean() >= 0.85


def test_factory_errors():
    with pytest.raises(InputError, match="not a FAISS index factory string"):
        faiss_backend.new_faiss_index("Bogus123", 64)
    idx = faiss_backend.new_faiss_index("IVF64,Flat", 8)
    with pytest.raises(InputError, match="at least 64 vectors"):
        faiss_backend.add_vectors(idx, np.zeros((10, 8), np.float32))


def test_ivf_index_on_disk_answers_queries_by_id(tmp_path, survey, tiny_encoder):
    idx, _ = build_index([survey / "cutouts"], tmp_path / "ivf", survey / "catalog.csv", factory="IVF2,Flat",
                         encoder=tiny_encoder, progress=False)
    again = open_index(tmp_path / "ivf", device="cpu")
    assert again.manifest.factory == "IVF2,Flat"
    assert len(again.query("obj002", k=4)) == 4


def test_vectors_from_elsewhere_create_and_extend(tmp_path, tiny_index):
    """create_index / Index.add_vectors: the path shards from workers take."""
    import pandas as pd

    v = tiny_index.vectors_of_rows(range(6))
    meta = pd.DataFrame({"id": [f"w{i}" for i in range(6)], "ra": np.arange(6.0), "mag": np.arange(6) + 15.0})
    idx = ulisse.create_index(tmp_path / "w", v[:4], meta.iloc[:4], tiny_index.encoder_spec, device="cpu")
    assert len(idx) == 4 and list(idx.metadata["row"]) == [0, 1, 2, 3] and "mag" in idx.metadata
    assert idx.add_vectors(v[4:], meta.iloc[4:], encoder_spec=tiny_index.encoder_spec, history={"shard": "x"}) == 2
    again = open_index(tmp_path / "w", device="cpu")
    assert again.ids == [f"w{i}" for i in range(6)] and again.manifest.history[-1]["shard"] == "x"
    with pytest.raises(InputError, match="already in the index"):
        again.add_vectors(v[:1], meta.iloc[:1])
    with pytest.raises(InputError, match="1 vectors but 2 metadata rows"):
        again.add_vectors(v[:1], pd.DataFrame({"id": ["a", "b"]}))
    other = ulisse.EncoderSpec.from_dict({**tiny_index.encoder_spec.to_dict(), "weights_sha256": "0" * 64})
    with pytest.raises(ulisse.EncoderMismatch):
        again.add_vectors(v[:1], pd.DataFrame({"id": ["z"]}), encoder_spec=other)
