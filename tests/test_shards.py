"""Sharded search on Dask (``ulisse.indexes.shards``, ``ulisse.indexes.dask_search``) on a loopback LocalCluster.

Sharded answers equal one index's on the same vectors (ids and distances); shards must share the
encoder spec, dimension and metric; a killed worker's shards are named (an error, or a partial
answer with ``partial=True``), never a silently shorter list; writers of one shard or of different
shards lose nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse import IndexError_, InputError, QueryError
from ulisse.encoder import EncoderSpec
from ulisse.indexes import faiss_backend
from ulisse.indexes.dask_search import ShardsMissing, open_sharded, parse_dask
from ulisse.indexes.shards import add_to_shard, create_sharded, is_sharded, read_sharded, split_into_shards

distributed = pytest.importorskip("distributed")

DIM = 24
SPEC = EncoderSpec("synthetic", "random", None, dim=DIM)
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def batch(tag: str, n: int, dim: int = DIM):
    rng = np.random.default_rng([ord(c) for c in tag])
    centres = np.random.default_rng(7).normal(size=(6, dim)) * 3
    v = (centres[rng.integers(0, 6, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    return v, pd.DataFrame({"id": [f"{tag}-{i}" for i in range(n)], "ra": rng.uniform(0, 360, n),
                            "mag": rng.uniform(14, 20, n)})


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def flat_pair(tmp_path_factory):
    """One Flat index and a 4-shard Flat index of the same 1200 vectors."""
    base = tmp_path_factory.mktemp("shards")
    v, m = batch("obj", 1200)
    single = ulisse.create_index(base / "single", v, m, SPEC, factory="Flat", device="cpu")
    split_into_shards(base / "sharded", v, m, SPEC, 4, factory="Flat")
    return single, base / "sharded", v


def test_sharded_answers_equal_one_index(client, flat_pair):
    single, sharded_dir, v = flat_pair
    sharded = open_sharded(sharded_dir, client=client)
    assert len(sharded) == 1200 and sorted(set(sharded.placement.values())) == sorted(sharded._live_workers())
    for oid in ("obj-0", "obj-299", "obj-300", "obj-777", "obj-1199"):
        want = single.query(id=oid, k=20).table
        got = sharded.query(id=oid, k=20)
        assert got.complete and got.prototype == f"id {oid}"
        assert list(got.table["id"]) == list(want["id"])
        np.testing.assert_allclose(got.table["distance"], want["distance"], rtol=1e-5)
        # the neighbours' metadata travels with them
        np.testing.assert_allclose(got.table["mag"], want["mag"])
        assert oid not in set(got.table["id"])
    # batches of vectors: rows within shards map to the same objects as the single index's rows
    q = v[[5, 400, 900]] + 0.01
    d1, r1 = single.search(q, 12)
    ans = sharded.search(q, 12)
    np.testing.assert_allclose(ans.distances, d1, rtol=1e-5)
    offsets = {f"shard-{i:03d}": i * 300 for i in range(4)}
    global_rows = np.vectorize(lambda s, r: offsets[s] + r)(ans.shard_of, ans.rows)
    np.testing.assert_array_equal(global_rows, r1)


@pytest.mark.slow
def test_approximate_shards_return_exact_distances(client, tmp_path):
    """IVF-PQ shards re-rank from raw vectors: distances are exact, so they merge across shards."""
    v, m = batch("pq", 2400)
    split_into_shards(tmp_path / "pq", v, m, SPEC, 3, factory="IVF8,PQ8", dtype="float16")
    sharded = open_sharded(tmp_path / "pq", client=client)
    ans = sharded.query(id="pq-10", k=10)
    rows = [int(i[3:]) for i in ans.table["id"]]
    stored = v.astype(np.float16).astype(np.float32)
    exact = faiss_backend.exact_distances(stored[[10]], stored[rows][None], "L2")[0]
    np.testing.assert_allclose(ans.table["distance"], exact, rtol=1e-5)
    assert list(ans.table["distance"]) == sorted(ans.table["distance"])


def test_plain_index_is_one_shard_and_api_export(client, flat_pair):
    single, _, _ = flat_pair
    assert not is_sharded(single.path)
    ans = ulisse.open_sharded(single.path, client=client).query(id="obj-3", k=5)
    assert list(ans.table["id"]) == list(single.query(id="obj-3", k=5).table["id"])
    with pytest.raises(QueryError, match="unknown id"):
        open_sharded(single.path, client=client).query(id="nope", k=5)
    with pytest.raises(InputError, match="exactly one of client"):
        open_sharded(single.path)


def test_shards_must_share_encoder_metric_and_dimension(tmp_path):
    v, m = batch("a", 300)
    ulisse.create_index(tmp_path / "l2", v, m, SPEC, device="cpu")
    ulisse.create_index(tmp_path / "ip", v, m, SPEC, metric="IP", device="cpu")
    other = EncoderSpec("synthetic-2", "random", None, dim=DIM)
    ulisse.create_index(tmp_path / "enc", v, m, other, device="cpu")
    with pytest.raises(IndexError_, match="metric IP"):
        create_sharded(tmp_path / "s1", [tmp_path / "l2", tmp_path / "ip"])
    with pytest.raises(IndexError_, match="another encoder"):
        create_sharded(tmp_path / "s2", [tmp_path / "l2", tmp_path / "enc"])
    m2 = create_sharded(tmp_path / "s3", [tmp_path / "l2"])
    assert read_sharded(tmp_path / "s3").shards == m2.shards
    with pytest.raises(InputError, match="already a sharded index"):
        create_sharded(tmp_path / "s3", [tmp_path / "l2"])
    # an object in two shards would come back twice (at distance 0 to itself): refused, nothing written
    v2, m2b = batch("b", 50)
    ulisse.create_index(tmp_path / "b", v2, m2b, SPEC, device="cpu")
    overlap = pd.concat([m2b.iloc[:5], m.iloc[:1]], ignore_index=True)
    ulisse.create_index(tmp_path / "ov", np.concatenate([v2[:5], v[:1]]), overlap, SPEC, device="cpu")
    with pytest.raises(InputError, match="share 1 object id"):
        create_sharded(tmp_path / "s4", [tmp_path / "l2", tmp_path / "ov"])
    assert not is_sharded(tmp_path / "s4")
    assert create_sharded(tmp_path / "s5", [tmp_path / "l2", tmp_path / "b"]).shards


def test_parse_dask_is_shared_with_sdss():
    from ulisse.plugins.sdss import dask_runner

    assert dask_runner.parse_dask is parse_dask
    assert parse_dask("local:3") == ("local", 3)
    assert parse_dask("host:8786") == ("address", "tcp://host:8786")
    with pytest.raises(InputError):
        parse_dask("nonsense")


@pytest.mark.slow
def test_killed_worker_is_reported(tmp_path):
    """4 worker processes, 4 shards; one process killed: its shard is named, by an error or in a partial answer."""
    v, m = batch("k", 800)
    split_into_shards(tmp_path / "s", v, m, SPEC, 4, factory="Flat")
    single = ulisse.create_index(tmp_path / "one", v, m, SPEC, factory="Flat", device="cpu")
    cluster = distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        sharded = open_sharded(tmp_path / "s", client=client, timeout=60)  # roomy: a loaded CI machine
        assert len(set(sharded.placement.values())) == 4
        want = single.query(id="k-1", k=8).table
        assert list(sharded.query(id="k-1", k=8).table["id"]) == list(want["id"])
        victim = sharded.placement["shard-002"]
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)  # the worker process dies (its nanny starts a new one, at a new address)
        with pytest.raises(ShardsMissing, match="shard-002") as err:
            sharded.query(id="k-1", k=8)
        assert list(err.value.missing) == ["shard-002"] and "lost" in err.value.missing["shard-002"]
        part = sharded.query(id="k-1", k=8, partial=True)
        assert not part.complete and list(part.missing) == ["shard-002"]
        assert len(part.table) == 8 and "shard-002" not in set(part.table["shard"])
        # the partial answer is the full answer less the lost shard's neighbours, in order
        assert list(part.table["id"])[:3] == [i for i in want["id"] if not 400 <= int(i[2:]) < 600][:3]
        # an object of the lost shard cannot be looked up: the error names the shard
        with pytest.raises(ShardsMissing, match="shard-002"):
            sharded.query(id="k-500", k=8, partial=True)
        client.wait_for_workers(4, timeout=60)
        assert sharded.replace_lost() == ["shard-002"]
        full = sharded.query(id="k-500", k=8)
        assert full.complete and list(full.table["id"]) == list(single.query(id="k-500", k=8).table["id"])
    finally:
        client.close()
        cluster.close()


WRITER = textwrap.dedent("""
    import sys, numpy as np, pandas as pd
    from ulisse.indexes.shards import add_to_shard
    path, tag, shard, adds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for a in range(adds):
        rng = np.random.default_rng([ord(c) for c in tag] + [a])
        v = rng.normal(size=(20, 24)).astype(np.float32)
        add_to_shard(path, v, pd.DataFrame({"id": [f"{tag}-{a}-{i}" for i in range(20)]}), shard=shard, wait=120)
""")


@pytest.mark.slow
def test_writers_lose_nothing(client, tmp_path):
    """Three writer processes: two on one shard, one on another; every add lands, and queries see them."""
    v, m = batch("w", 400)
    split_into_shards(tmp_path / "s", v, m, SPEC, 2, factory="Flat")
    sharded = open_sharded(tmp_path / "s", client=client)
    assert sharded.query(id="w-5", k=4).complete  # shards resident on their workers before the adds
    jobs = [("a", "shard-000"), ("b", "shard-000"), ("c", "shard-001")]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "s"), tag, shard, "6"], env=ENV,
                              stderr=subprocess.PIPE, text=True) for tag, shard in jobs]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    counts = {}
    for name in ("shard-000", "shard-001"):
        ids = set(ulisse.open_index(tmp_path / "s" / name, device="cpu").metadata["id"])
        counts[name] = len(ids)
        for tag, shard in jobs:
            if shard == name:
                assert all(f"{tag}-{a}-{i}" in ids for a in range(6) for i in range(20))
    assert counts == {"shard-000": 200 + 2 * 120, "shard-001": 200 + 120}
    # the resident shards reopen at their new generation: the new objects are found
    ans = sharded.query(id="c-5-7", k=3)
    assert ans.complete and set(ans.table["shard"]) <= {"shard-000", "shard-001"}
    # ids already in another shard are refused before anything is written
    vv, _ = batch("x", 1)
    with pytest.raises(InputError, match="shard-001"):
        add_to_shard(tmp_path / "s", vv, pd.DataFrame({"id": ["c-0-0"]}), shard="shard-000")
    assert sharded.add_vectors(vv, pd.DataFrame({"id": ["new-0"]})) == "shard-001"  # the smaller shard


@pytest.mark.slow
def test_cli_query_dask(flat_pair, cli):
    single, sharded_dir, _ = flat_pair
    code, out, err = cli("query", sharded_dir, "--id", "obj-42", "-k", "5", "--format", "csv", "--dask", "local:2")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("rank,id,distance,shard")
    assert [ln.split(",")[1] for ln in lines[1:]] == list(single.query(id="obj-42", k=5).table["id"])
    code, out, err = cli("query", sharded_dir, "--id", "obj-42")
    assert code != 0 and "--dask" in err


def test_cluster_search_page(tmp_path, monkeypatch):
    """The web UI's Cluster search page: the merged neighbours of one index, with thumbnails; a lost worker's
    shard named in an error, or, when asked, in a warning over the other shards' answer."""
    pytest.importorskip("streamlit")
    from PIL import Image
    from streamlit.testing.v1 import AppTest

    from ulisse.ui import DASK_ENV, INDEX_ENV

    v, m = batch("c", 60)
    (tmp_path / "png").mkdir()
    for i, oid in enumerate(m["id"]):  # a cutout per object, so that the page shows thumbnails
        Image.fromarray(np.full((16, 16, 3), 4 * i, np.uint8)).save(tmp_path / "png" / f"{oid}.png")
    m["source"] = [str(tmp_path / "png" / f"{oid}.png") for oid in m["id"]]
    split_into_shards(tmp_path / "s", v, m, SPEC, 2, factory="Flat")
    single = ulisse.create_index(tmp_path / "one", v, m, SPEC, factory="Flat", device="cpu")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    client = distributed.Client(cluster)
    monkeypatch.setenv(INDEX_ENV, str(tmp_path / "s"))
    monkeypatch.setenv(DASK_ENV, cluster.scheduler_address)
    from ulisse.testing import page_script

    script = str(page_script("Cluster search"))
    try:
        at = AppTest.from_file(script, default_timeout=90)
        at.session_state["cluster.id"] = "c-7"
        at.session_state["cluster.k"] = 6
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        want = list(single.query(id="c-7", k=6).table["id"])
        shown = at.dataframe[0].value
        assert list(shown["id"]) == want and set(shown["shard"]) <= {"shard-000", "shard-001"}
        assert len(at.image) >= 6 and not at.error
        victim = next(iter(client.scheduler_info()["workers"]))
        client.retire_workers([victim], close_workers=True)
        at.run()
        lost = "shard-000" if "shard-000 (" in at.error[0].value else "shard-001"
        assert at.error and f"{lost} (worker" in at.error[0].value and "lost" in at.error[0].value
        at.session_state["cluster.partial"] = True  # from an object of the other shard: its neighbours, named as partial
        at.session_state["cluster.id"] = "c-45" if lost == "shard-000" else "c-5"
        at.run()
        assert not at.exception and at.warning and "Partial answer" in at.warning[0].value and lost in at.warning[0].value
        assert len(at.dataframe[0].value) == 6 and lost not in set(at.dataframe[0].value["shard"])
    finally:
        client.close()
        cluster.close()


def test_ui_command_takes_a_sharded_index_with_dask(cli, tmp_path):
    v, m = batch("u", 40)
    for i in (0, 1):
        ulisse.create_index(tmp_path / f"part{i}", v[20 * i:20 * i + 20], m[20 * i:20 * i + 20], SPEC, device="cpu")
    code, out, err = cli("index", "shards", tmp_path / "s", tmp_path / "part0", tmp_path / "part1")
    assert code == 0 and "2 shards" in out and is_sharded(tmp_path / "s")
    code, out, err = cli("index", "shards", tmp_path / "s", tmp_path / "part0")
    assert code != 0 and "already a sharded index" in err
    code, out, err = cli("ui", "--index", tmp_path / "s", "--print-command")
    assert code != 0 and "a sharded index is searched on Dask" in err
    code, out, err = cli("ui", "--index", tmp_path / "s", "--dask", "nowhere", "--print-command")
    assert code != 0 and "--dask nowhere" in err
    code, out, err = cli("ui", "--index", tmp_path / "s", "--dask", "local:2", "--print-command")
    assert code == 0 and "streamlit" in out


def test_whitened_index_is_its_own_shard_and_whitened_shards_open(client, tmp_path):
    """An index in a PCA-whitened space (the discovery preset's) searched as one shard is in its own space; shards
    sharing one trained whitening open on the workers too, and both answer as the one index does."""
    faiss = pytest.importorskip("faiss")
    v, m = batch("wh", 400)
    single = ulisse.create_index(tmp_path / "one", v, m, SPEC, device="cpu", whiten=8)
    assert single.manifest["space"]["whiten"] == 8
    trained = faiss.read_index(str(single.path / single.manifest["trained"]["name"]))
    split_into_shards(tmp_path / "s", v, m, SPEC, 3, factory=single.manifest["factory"], trained=trained)
    want = single.query(id="wh-5", k=8).table
    for path in (single.path, tmp_path / "s"):
        got = open_sharded(path, client=client).query(id="wh-5", k=8)
        assert got.complete and list(got.table["id"]) == list(want["id"])
        np.testing.assert_allclose(got.table["distance"], want["distance"], rtol=1e-4)


def test_region_indexes_whitened_apart_are_refused_with_a_command_line_hint(tmp_path, cli):
    v, m = batch("rg", 300)
    for i in (0, 1):
        ulisse.create_index(tmp_path / f"w{i}", v[150 * i:150 * i + 150], m[150 * i:150 * i + 150], SPEC, device="cpu",
                            whiten=8)
        ulisse.create_index(tmp_path / f"n{i}", v[150 * i:150 * i + 150], m[150 * i:150 * i + 150], SPEC, device="cpu")
    code, out, err = cli("index", "shards", tmp_path / "sw", tmp_path / "w0", tmp_path / "w1")
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "searches another space" in err and "--whiten none" in err and "split_into_shards" not in err
    assert not is_sharded(tmp_path / "sw")
    code, out, err = cli("index", "shards", tmp_path / "sn", tmp_path / "n0", tmp_path / "n1")  # as the README says
    assert code == 0 and is_sharded(tmp_path / "sn")


def test_a_sharded_index_is_named_as_such_by_the_verbs_of_one_index(tmp_path, cli):
    v, m = batch("nv", 40)
    split_into_shards(tmp_path / "s", v, m, SPEC, 2, factory="Flat")
    for args in (("index", "info", tmp_path / "s"), ("index", "verify", tmp_path / "s"),
                 ("anomalies", tmp_path / "s", "--top", "3")):
        code, out, err = cli(*args)
        assert code != 0 and len(err.strip().splitlines()) == 1, (args, err)
        assert "a sharded index (2 shard(s): shard-000, shard-001)" in err and "--dask" in err
        assert "no manifest" not in err
    with pytest.raises(ulisse.IndexNotFound, match="a sharded index"):
        ulisse.open_index(tmp_path / "s")


def test_error_reasons_are_never_cut_mid_word():
    from ulisse.indexes.dask_search import reason

    long = "word " * 200
    assert reason(IndexError_(long)) == long.strip()  # a ulisse error: whole
    cut = reason(RuntimeError(long + "end"))
    assert cut.startswith("RuntimeError: word") and cut.endswith(" word ...") and len(cut) < 330


def test_a_shard_that_cannot_be_opened_is_named_and_partial_answers_without_it(client, tmp_path):
    v, m = batch("mo", 600)
    split_into_shards(tmp_path / "s", v, m, SPEC, 3, factory="Flat")
    single = ulisse.create_index(tmp_path / "one", v, m, SPEC, factory="Flat", device="cpu")
    (tmp_path / "s" / "shard-001").rename(tmp_path / "away")
    with pytest.raises(ShardsMissing, match="1 of 3 shard.s. could not be opened: shard-001 .*no index here"):
        open_sharded(tmp_path / "s", client=client)
    sharded = open_sharded(tmp_path / "s", client=client, partial=True)
    with pytest.raises(ShardsMissing, match="shard-001"):  # asked for a whole answer: none
        sharded.query(id="mo-3", k=6)
    part = sharded.query(id="mo-3", k=6, partial=True)
    assert list(part.missing) == ["shard-001"] and "not opened" in part.missing["shard-001"]
    want = [i for i in single.query(id="mo-3", k=60).table["id"] if not 200 <= int(i[3:]) < 400][:6]
    assert list(part.table["id"]) == want


def test_local_cluster_workers_log_nothing():
    from ulisse.indexes.dask_search import connect

    client, cluster = connect("local:1")
    try:
        import logging

        assert set(client.run(lambda: logging.getLogger("distributed").level).values()) == {logging.CRITICAL}
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A 2-shard index and one index of the same 120 objects, with classes and a PNG cutout each."""
    from PIL import Image

    base = tmp_path_factory.mktemp("labelled")
    v, m = batch("l", 120)
    m["cls"] = np.where(m["mag"] < 16, "bright", np.where(m["mag"] < 18, "mid", "faint"))
    (base / "png").mkdir()
    for i, oid in enumerate(m["id"]):
        Image.fromarray(np.full((16, 16, 3), 2 * i, np.uint8)).save(base / "png" / f"{oid}.png")
    m["source"] = [str(base / "png" / f"{oid}.png") for oid in m["id"]]
    split_into_shards(base / "s", v, m, SPEC, 2, factory="Flat")
    return ulisse.create_index(base / "one", v, m, SPEC, factory="Flat", device="cpu"), base / "s"


@pytest.mark.slow
def test_cli_sharded_query_applies_where_label_and_png(labelled, cli, tmp_path):
    single, sharded_dir = labelled
    ask = ("--id", "l-7", "-k", "8", "--where", "mag > 15.5", "--label", "cls", "--n", "4,8")
    code, out, err = cli("query", sharded_dir, *ask, "--dask", "local:2", "--png", tmp_path / "g.png",
                         "--output", tmp_path / "o.ecsv")
    assert code == 0, err
    code1, want, err1 = cli("query", single.path, *ask)
    assert code1 == 0, err1
    rows = [ln.split() for ln in out.splitlines() if ln.strip() and ln.split()[0].isdigit() and len(ln.split()) > 5]
    want_rows = [ln.split() for ln in want.splitlines() if ln.strip() and ln.split()[0].isdigit() and len(ln.split()) > 5]
    assert [r[1] for r in rows] == [r[1] for r in want_rows] == list(single.query(id="l-7", k=8, where="mag > 15.5").table["id"])
    # the class fractions (and their base rate over every shard) are the one index's, line for line
    assert "class fractions (cls" in out and out[out.index("class fractions"):] == want[want.index("class fractions"):]
    assert out.startswith(f"# {sharded_dir}: 8 nearest neighbour(s) of id l-7 over 2 of 2 shard(s)")
    assert (tmp_path / "g.png").stat().st_size > 1000 and "show no image" not in err
    from astropy.table import Table

    t = Table.read(tmp_path / "o.ecsv")
    assert "row" not in t.colnames and set(t["shard"]) <= {"shard-000", "shard-001"}
    assert list(t["id"]) == [r[1] for r in want_rows]
    # options a sharded query does not use are refused by name, never ignored
    for extra, name in ((("--image", tmp_path / "g.png"), "--image"), (("--device", "cpu"), "--device"),
                        (("--weights", "w.pt"), "--weights"), (("--combine", "union"), "--combine"),
                        (("--ra", "1", "--dec", "2"), "--ra")):
        code, out, err = cli("query", sharded_dir, "--id", "l-7", *extra, "--dask", "local:2")
        assert code != 0 and err.strip().splitlines()[-1].startswith(f"ulisse: error: {name}: not with --dask"), err
    code, out, err = cli("query", sharded_dir, "--id", "l-7", "--where", "nope > 1", "--dask", "local:2")
    assert code != 0 and "no column 'nope'" in err.strip().splitlines()[-1]
    code, out, err = cli("query", sharded_dir, "--id", "l-7", "--label", "nope", "--dask", "local:2")
    assert code != 0 and "--label nope" in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_cli_missing_shard_one_line_and_partial(labelled, tmp_path):
    """A shard directory gone: one error line (no Dask worker log, no traceback); --partial answers from the
    others and names it."""
    single, sharded_dir = labelled
    v, m = batch("l", 120)
    split_into_shards(tmp_path / "s", v, m, SPEC, 2, factory="Flat")
    (tmp_path / "s" / "shard-000").rename(tmp_path / "away")
    run = [sys.executable, "-m", "ulisse", "query", str(tmp_path / "s"), "--id", "l-100", "-k", "4", "--format",
           "csv", "--dask", "local:2"]
    import socket

    busy = socket.socket()  # Dask's default dashboard port taken (another cluster): no warning about it either
    try:
        busy.bind(("", 8787))
        busy.listen()
    except OSError:
        pass  # taken already
    with busy:
        p = subprocess.run(run, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "distributed" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("ulisse: error: ") and "shard-000" in p.stderr
    p = subprocess.run(run + ["--partial"], env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "Traceback" not in p.stderr and "distributed" not in p.stderr, p.stderr
    assert "partial answer: shards missing: shard-000" in p.stderr
    ids = [ln.split(",")[1] for ln in p.stdout.strip().splitlines()[1:]]
    assert ids == [i for i in single.query(id="l-100", k=60).table["id"] if int(i[2:]) >= 60][:4]
