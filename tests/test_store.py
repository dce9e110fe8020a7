"""The index store at scale: concurrent writers, killed writers, full disks, integrity, distances, search parameters.

Synthetic vectors through ``ulisse.create_index`` / ``Index.add_vectors`` (no encoder runs here).
"""

from __future__ import annotations

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import faiss
import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse import IndexError_, QueryError
from ulisse._io import WriteError
from ulisse.encoder import EncoderSpec
from ulisse.index import compact_index, upgrade_index, verify_index
from ulisse.indexes import store
from ulisse.indexes.lock import IndexBusy, writer_lock

DIM = 16
SPEC = EncoderSpec("synthetic", "random", None, dim=DIM)
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def batch(tag: str, n: int, dim: int = DIM, seed: int = 0):
    """Vectors and metadata rows for ``n`` objects named ``tag-i``; the same every time for a tag."""
    rng = np.random.default_rng([ord(c) for c in tag] + [seed])
    centres = np.random.default_rng(99).normal(size=(8, dim)) * 4
    v = (centres[rng.integers(0, 8, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    return v, pd.DataFrame({"id": [f"{tag}-{i}" for i in range(n)], "ra": np.arange(n, dtype=float)})


def new_index(path, n=20, **kw):
    v, m = batch("base", n)
    return ulisse.create_index(path, v, m, SPEC, device="cpu", **kw)


def check_vectors(index):
    """Every stored vector is exactly the one added under its id."""
    by_tag: dict = {}
    for i, oid in enumerate(index.metadata["id"]):
        tag, num = oid.rsplit("-", 1)
        by_tag.setdefault(tag, []).append((i, int(num)))
    for tag, rows in by_tag.items():
        n = max(num for _, num in rows) + 1
        v, _ = batch(tag, n)
        got = index.vectors_of_rows([r for r, _ in rows])
        np.testing.assert_array_equal(got, v[[num for _, num in rows]])


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ulisse", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=120, **kw)


HELPERS = "import numpy as np\nimport pandas as pd\nDIM = 16\n" + inspect.getsource(batch)  # no torch in writers
WRITER = HELPERS + textwrap.dedent("""
    import sys
    import ulisse
    path, name, adds, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for a in range(adds):
        index = ulisse.open_index(path, device="cpu")
        v, m = batch(f"{{name}}x{{a}}", size)
        index.add_vectors(v, m, wait=120)
""").replace("{{", "{").replace("}}", "}")


@pytest.mark.slow
def test_eight_processes_adding_at_once_lose_nothing(tmp_path):
    path = tmp_path / "idx"
    new_index(path)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, script, path, f"w{p}", "3", "5"], env=ENV, stderr=subprocess.PIPE,
                              text=True) for p in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    index = ulisse.open_index(path, device="cpu")
    assert len(index) == 20 + 8 * 3 * 5 and index.manifest.generation == 1 + 8 * 3
    assert index.metadata["id"].is_unique and list(index.metadata["row"]) == list(range(len(index)))
    check_vectors(index)
    assert verify_index(path) == []


KILLED = HELPERS + textwrap.dedent("""
    import sys
    import ulisse
    from ulisse.index import compact_index
    path, what = sys.argv[1], sys.argv[2]
    index = ulisse.open_index(path, device="cpu")
    print("ready", flush=True)
    for a in range(1000):
        if what == "add":
            v, m = batch(f"k{{a}}", 300)
            index.add_vectors(v, m)
        else:
            compact_index(path)
            v, m = batch(f"c{{a}}", 50)
            index.add_vectors(v, m)
""").replace("{{", "{").replace("}}", "}")


@pytest.mark.slow
@pytest.mark.parametrize("what", ["add", "compact"])
def test_sigkill_at_random_points_leaves_a_whole_generation(tmp_path, what):
    path = tmp_path / "idx"
    new_index(path, n=300, factory="IVF4,Flat")
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    rnd = random.Random(7)
    for trial in range(4):
        before = store.read_manifest(path)
        p = subprocess.Popen([sys.executable, script, path, what], env=ENV, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.0, 0.6))
        p.send_signal(signal.SIGKILL)
        p.wait()
        after = store.read_manifest(path)
        assert after.generation >= before.generation
        index = ulisse.open_index(path, device="cpu")  # a whole generation: opens, sizes and headers check out
        assert len(index) == after.count == sum(s.count for s in after.segments)
        assert verify_index(path) == []
        check_vectors(index)
        assert index.query(index.ids[-1], k=3).ids  # and answers
    # the next writer sweeps what the killed ones left
    with writer_lock(path):
        store.sweep(path, store.read_manifest(path))
    left = {n for n in os.listdir(path) if n.startswith(("seg-", "trained-", ".tmp-"))}
    assert left == set(store.read_manifest(path).file_names())


def _mount_tmpfs(where, size="2m"):
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or r.returncode})")


def test_disk_full_gives_one_line_no_orphan_and_the_previous_generation(tmp_path):
    disk = tmp_path / "small"
    _mount_tmpfs(disk)
    try:
        path = disk / "idx"
        v, m = batch("base", 2000, dim=64)
        index = ulisse.create_index(path, v, m, EncoderSpec("synthetic", "random", None, dim=64), device="cpu")
        before = store.read_manifest(path)
        names_before = set(os.listdir(path))
        with pytest.raises(WriteError) as err:
            for a in range(10):  # 0.5 MB each: the 2 MB disk fills
                index.add_vectors(*batch(f"more{a}", 2000, dim=64))
        assert str(err.value) == f"{path}: no space left on device"
        now = store.read_manifest(path)
        assert set(os.listdir(path)) == set(now.file_names()) | {"manifest.json", ".ulisse.lock"}  # no orphan
        assert set(os.listdir(path)) >= names_before and now.generation >= before.generation
        assert len(ulisse.open_index(path, device="cpu")) == now.count and verify_index(path) == []
        # the command line: one line, exit 1, no traceback, nothing left behind
        r = run_cli("index", "compact", path)
        assert r.returncode == 1 and r.stderr.strip() == f"ulisse: error: {path}: no space left on device", r.stderr
        assert set(os.listdir(path)) == set(now.file_names()) | {"manifest.json", ".ulisse.lock"}
        assert store.read_manifest(path) == now
    finally:
        del index
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_flipped_byte_is_found_by_verify(tmp_path):
    path = tmp_path / "idx"
    index = new_index(path)
    index.add_vectors(*batch("more", 10))
    assert verify_index(path) == []
    seg = store.read_manifest(path).segments[1].vectors.name
    f = path / seg
    data = bytearray(f.read_bytes())
    data[-7] ^= 0x01  # one bit of one float: same size, header intact
    f.write_bytes(bytes(data))
    assert len(ulisse.open_index(path, device="cpu")) == 30  # opening does not re-hash
    problems = verify_index(path)
    assert len(problems) == 1 and problems[0].startswith(seg) and "sha256" in problems[0]
    r = run_cli("index", "verify", path)
    assert r.returncode == 1 and seg in r.stderr and "Traceback" not in r.stderr


def test_truncated_segment_is_caught_on_open(tmp_path):
    path = tmp_path / "idx"
    new_index(path)
    f = next(path.glob("seg-*.metadata.parquet"))
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(IndexError_, match="damaged"):
        ulisse.open_index(path)


def test_manifest_names_stay_inside_the_directory(tmp_path):
    path = tmp_path / "idx"
    new_index(path)
    m = json.loads((path / "manifest.json").read_text())
    m["segments"][0]["vectors"]["name"] = "../outside.npy"
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexError_, match="not a plain file name"):
        ulisse.open_index(path)
    r = run_cli("index", "info", path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "plain file name" in r.stderr


@pytest.mark.slow
def test_second_writer_waits_or_stops_and_readers_never_block(tmp_path):
    path = tmp_path / "idx"
    index = new_index(path)
    with writer_lock(path):
        assert ulisse.open_index(path).query("base-1", k=3).ids  # a reader while a writer holds the lock
        with pytest.raises(IndexBusy, match="another writer"):
            index.add_vectors(*batch("late", 3))
        r = run_cli("index", "compact", path)
        assert r.returncode == 1 and "another writer" in r.stderr and "--wait" in r.stderr
    assert len(ulisse.open_index(path)) == 20
    script = tmp_path / "w.py"
    script.write_text(WRITER)
    with writer_lock(path):  # a writer with --wait gets in once the lock is free
        p = subprocess.Popen([sys.executable, script, path, "waiter", "1", "4"], env=ENV)
        time.sleep(1.0)
        assert p.poll() is None
    assert p.wait(timeout=60) == 0 and len(ulisse.open_index(path)) == 24


def test_stale_index_object_adds_to_the_current_generation(tmp_path):
    path = tmp_path / "idx"
    a = new_index(path)
    b = ulisse.open_index(path)
    a.add_vectors(*batch("a", 5))
    b.add_vectors(*batch("b", 5))  # b opened before a's add: it adds after it, losing nothing
    with pytest.raises(ulisse.InputError, match="already in the index"):
        b.add_vectors(*batch("a", 5))
    index = ulisse.open_index(path)
    assert len(index) == 30 and index.manifest.generation == 3
    check_vectors(index)


def _brute(vectors, q, metric):
    if metric == "L2":
        return np.linalg.norm(vectors - q, axis=1)
    if metric == "IP":
        return -(vectors @ q)
    n = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return 1 - n @ (q / np.linalg.norm(q))


@pytest.mark.parametrize("metric", ["IP", "cosine"])
def test_similarity_metrics_give_distances_in_union_and_expansion(tmp_path, metric):
    from ulisse.plugins.prototype import query
    from ulisse.plugins.recursive import expand

    rng = np.random.default_rng(3)
    v = rng.normal(size=(200, DIM)).astype(np.float32) * rng.uniform(0.5, 2.0, size=(200, 1)).astype(np.float32)
    meta = pd.DataFrame({"id": [f"o{i}" for i in range(200)]})
    index = ulisse.create_index(tmp_path / metric, v, meta, SPEC, metric=metric, device="cpu")
    # union: each prototype's most similar objects, ranked by distance (smaller = more similar)
    r = query(index, ["o1", "o2"], k=5, combine="union")
    assert (np.diff(r.table["distance"]) >= 0).all()
    best = {}
    for p in (1, 2):
        d = _brute(v, v[p], metric)
        d[[1, 2]] = np.inf
        for i in np.argsort(d)[:5]:
            best[i] = min(best.get(i, np.inf), d[i])
    expected = sorted(best, key=best.get)
    assert list(r.table["row"]) == expected
    np.testing.assert_allclose(r.table["distance"], [best[i] for i in expected], rtol=1e-4, atol=1e-4)
    # expansion: the first round holds the prototype's k most similar objects
    e = expand(index, "o1", k=4, iterations=2)
    d = _brute(v, v[1], metric)
    d[1] = np.inf
    first = e.table[e.table["iteration"] == 1]
    assert set(first["row"]) == set(np.argsort(d)[:4])
    np.testing.assert_allclose(np.sort(first["distance"]), np.sort(d)[:4], rtol=1e-4, atol=1e-4)
    assert not set(e.table["row"]) & {1} and e.table["row"].is_unique


def test_nprobe_is_stored_and_honoured(tmp_path):
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(16, DIM)) * 6
    v = (centres[rng.integers(0, 16, 3000)] + rng.normal(size=(3000, DIM))).astype(np.float32)
    meta = pd.DataFrame({"id": [f"o{i}" for i in range(3000)]})
    index = ulisse.create_index(tmp_path / "ivf", v, meta, SPEC, factory="IVF16,Flat", nprobe=16, device="cpu")
    assert index.manifest.search["nprobe"] == 16
    q = v[:40] + 0.5 * rng.normal(size=(40, DIM)).astype(np.float32)
    D, I = index.search(q, 10)  # every list probed: the exact answer
    truth = np.argsort(((v[None] - q[:, None]) ** 2).sum(-1), axis=1)[:, :10]
    assert (I == truth).mean() > 0.99
    trained = faiss.read_index(str(tmp_path / "ivf" / index.manifest.trained.name))
    _, lists = trained.quantizer.search(v, 1)
    _, qlist = trained.quantizer.search(q, 1)
    D1, I1 = index.search(q, 10, nprobe=1)  # one list: every neighbour from the query's nearest list
    assert all((lists[I1[j], 0] == qlist[j, 0]).all() for j in range(40))
    again = ulisse.open_index(tmp_path / "ivf", nprobe=1)
    assert again.search_parameters()["nprobe"] == 1
    np.testing.assert_array_equal(again.search(q, 10)[1], I1)
    # --rerank: exact distances of the approximate candidates
    Dr, Ir = index.search(q, 10, nprobe=1, rerank=50)
    np.testing.assert_allclose(Dr, np.linalg.norm(v[Ir] - q[:, None], axis=2), rtol=1e-5, atol=1e-5)


def test_exclusions_and_filters_go_through_selectors(tmp_path):
    index = new_index(tmp_path / "idx", n=200, factory="IVF4,Flat", nprobe=4)
    v = index.all_vectors()
    seen = list(range(0, 200, 3))
    D, I = index.search(v[:5], 10, exclude=[seen] * 5)
    assert I.shape == (5, 10) and not set(I.ravel()) & set(seen)
    d = np.linalg.norm(v[None] - v[:5, None], axis=2)
    d[:, seen] = np.inf
    np.testing.assert_array_equal(I, np.argsort(d, axis=1, kind="stable")[:, :10])
    allowed = np.zeros(200, bool)
    allowed[100:150] = True
    D, I = index.search(v[:3], 60, allowed=allowed)
    assert ((I >= 100) & (I < 150) | (I == -1)).all() and (I >= 0).sum(axis=1).tolist() == [50, 50, 50]
    with pytest.raises(QueryError, match="boolean mask"):
        index.search(v[:1], 3, allowed=np.ones(5, bool))


def test_bulk_vectors_fingerprint_and_float16(tmp_path):
    index = new_index(tmp_path / "idx", n=50, dtype="float16")
    fp = index.fingerprint
    v, _ = batch("base", 50)
    assert index.all_vectors().dtype == np.float32 and np.allclose(index.all_vectors(), v, atol=1e-2)
    index.add_vectors(*batch("x", 7))
    assert index.fingerprint != fp and len(index.all_vectors()) == 57
    rows = np.array([56, 3, 50, 3])
    np.testing.assert_array_equal(index.vectors_of_rows(rows), index.all_vectors()[rows])
    compact_index(tmp_path / "idx")
    again = ulisse.open_index(tmp_path / "idx")
    assert len(again.manifest.segments) == 1 and again.fingerprint != fp
    np.testing.assert_array_equal(again.all_vectors(), index.all_vectors())
    assert isinstance(new_index(tmp_path / "f32").all_vectors(), np.memmap)  # float32, one segment: the map itself


def test_auto_factory_follows_the_rules_and_says_why(tmp_path, monkeypatch):
    from ulisse.indexes import auto
    from ulisse.indexes.auto import choose_factory

    assert choose_factory(5_000, 1280).factory == "Flat"
    assert choose_factory(20_000, 1280, "8GB").factory == "IVF512,Flat"
    pq = choose_factory(1_000_000, 1280, "2GB")
    assert pq.factory.startswith("IVF1024,PQ") and pq.nprobe == 16 and pq.rerank == 64 and "re-ranked" in pq.reason
    assert choose_factory(10**7, 1280, "8GB").nprobe == 8  # long lists: fewer of them (benchmarks/store.md)
    # an index auto made IVF-PQ re-ranks by default (the manifest says so), and a query can change it
    monkeypatch.setattr(auto, "FLAT_BELOW", 1000)  # a small IVF-PQ (FAISS's PQ training is slow on 10^4 rows)
    v, m = batch("pq", 1500, dim=64)
    spec64 = EncoderSpec("synthetic", "random", None, dim=64)
    big = ulisse.create_index(tmp_path / "pq", v, m, spec64, factory="auto", memory="40KB", device="cpu")
    assert ",PQ" in big.manifest.factory and big.search_parameters() == {"nprobe": 16, "nlist": 128, "rerank": 64}
    exact = faiss.IndexFlatL2(64)
    exact.add(v)
    _, truth = exact.search(v[:20], 17)
    _, got = big.search(v[:20], 17)
    recall = np.mean([len(set(a) & set(b)) / 17 for a, b in zip(got, truth)])
    _, plain = big.search(v[:20], 17, rerank=0)
    off = ulisse.open_index(tmp_path / "pq", device="cpu", rerank=0)  # --rerank 0: the manifest's re-ranking off
    assert "rerank" not in off.search_parameters() or off.search_parameters()["rerank"] == 0
    np.testing.assert_array_equal(off.search(v[:20], 17)[1], plain)
    r = run_cli("query", tmp_path / "pq", "--id", "pq-3", "-k", "4", "--rerank", "0", "--format", "csv")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 5, r.stderr
    assert recall > np.mean([len(set(a) & set(b)) / 17 for a, b in zip(plain, truth)])
    index = new_index(tmp_path / "idx", n=20)
    r = run_cli("index", "info", tmp_path / "idx")
    assert r.returncode == 0 and "exact search (Flat)" in r.stdout and index.manifest.auto["factory"] == "Flat"


def make_v1(path):
    """A format 1 index of 40 objects (``old-0`` ..) at ``path``, as ulisse wrote them before segments."""
    path.mkdir()
    v, meta = batch("old", 40)
    flat = faiss.IndexFlatL2(DIM)
    flat.add(v)
    faiss.write_index(flat, str(path / "vectors.g0001.faiss"))
    meta.insert(0, "row", np.arange(40))
    meta["dec"], meta["source"] = np.nan, None
    meta.to_parquet(path / "metadata.g0001.parquet", index=False)
    files = {role: {"name": n, "bytes": (path / n).stat().st_size, "sha256": ulisse._io.sha256_file(path / n)}
             for role, n in (("vectors", "vectors.g0001.faiss"), ("metadata", "metadata.g0001.parquet"))}
    (path / "manifest.json").write_text(json.dumps({
        "format": "ulisse-index", "format_version": 1, "generation": 1, "count": 40, "factory": "Flat",
        "metric": "L2", "dim": DIM, "encoder": SPEC.to_dict(), "rgb": {}, "files": files, "history": []}))
    return path


def test_format_1_opens_read_only_and_upgrades(tmp_path):
    path = make_v1(tmp_path / "v1")
    old = ulisse.open_index(path)
    assert old.read_only and len(old) == 40
    answer = old.query("old-3", k=5).ids
    with pytest.raises(IndexError_, match="upgrade"):
        old.add_vectors(*batch("new", 2))
    r = run_cli("index", "upgrade", path)
    assert r.returncode == 0, r.stderr
    new = ulisse.open_index(path)
    assert not new.read_only and new.manifest.format_version == 2 and new.query("old-3", k=5).ids == answer
    assert not list(path.glob("*.g0001.*")) and verify_index(path) == []
    new.add_vectors(*batch("new", 2))
    check_vectors(ulisse.open_index(path))


# -- one transaction behind every write -----------------------------------------------------------


class Injected(Exception):
    """An error injected into a transaction's commit."""


def files_of(path) -> dict:
    """Every file under an index directory (derived/ included) with its sha256; the lock file aside."""
    if not path.exists():
        return {}
    return {str(f.relative_to(path)): ulisse._io.sha256_file(f) for f in sorted(path.rglob("*"))
            if f.is_file() and f.name != ".ulisse.lock"}


def _store_write(what: str, path):
    """Ready the index at ``path`` for the write ``what``; the write, as a function of no argument."""
    from ulisse.plugins.feedback import clear_marks, mark

    if what == "create":
        return lambda: new_index(path)
    if what == "upgrade":
        make_v1(path)
        return lambda: upgrade_index(path)
    index = new_index(path, factory="IVF4,Flat" if what == "compact" else "Flat")
    index.add_vectors(*batch("more", 6))
    mark(index, ["base-1"], True)
    index.save_derived("t", pd.DataFrame({"t_score": np.arange(len(index), dtype=float)}))
    return {"overwrite": lambda: new_index(path, overwrite=True),
            "add": lambda: index.add_vectors(*batch("new", 4)),
            "compact": lambda: compact_index(path),
            "derived": lambda: index.save_derived("t", pd.DataFrame({"t_score": -np.arange(len(index), dtype=float)})),
            "mark": lambda: mark(index, ["base-2", "base-1"], False),
            "clear_marks": lambda: clear_marks(index)}[what]


WRITES = ["create", "overwrite", "add", "compact", "upgrade", "derived", "mark", "clear_marks"]


@pytest.mark.parametrize("what", WRITES)
def test_every_write_commits_through_one_transaction_and_an_error_rolls_it_back(tmp_path, monkeypatch, what):
    """An error injected at the commit of ``Transaction`` stops each write, and leaves the files as they were."""
    from ulisse.indexes.transaction import Transaction

    path = tmp_path / "idx"
    write = _store_write(what, path)
    before = files_of(path)
    generation = store.read_manifest(path).generation if before else 0
    real, commits = Transaction.commit, []

    def failing(self, manifest=None):
        commits.append(manifest)
        raise Injected

    monkeypatch.setattr(Transaction, "commit", failing)
    with pytest.raises(Injected):  # a write that bypassed the transaction would not raise
        write()
    assert len(commits) == 1
    assert files_of(path) == before  # the previous generation (and side files) whole, nothing staged left
    if before:
        assert verify_index(path) == []
    monkeypatch.setattr(Transaction, "commit", lambda self, manifest=None: commits.append(manifest) or real(self, manifest))
    write()
    assert len(commits) == 2 and files_of(path) != before  # the same write, committed once
    side = what in ("derived", "mark", "clear_marks")  # side files commit without a new generation
    assert (commits[-1] is None) == side
    assert store.read_manifest(path).generation == generation + (0 if side else 1)


def test_side_files_staged_by_killed_writers_are_swept_and_plugins_files_kept(tmp_path):
    from ulisse.plugins.feedback import mark, marks

    index = new_index(tmp_path / "idx")
    derived = index.derived_dir
    (derived / "heads" / "yhat").mkdir(parents=True)
    left = [derived / ".txn-0123456789abcdef-marks.parquet", derived / ".tmp-99-.txn-0123456789abcdef-x.json",
            derived / "heads" / "yhat" / ".txn-0123456789abcdef-config.json"]
    plugin_own = derived / ".tmp-abc-heads.json"  # a plugin's own write in progress: not the store's to remove
    for f in left + [plugin_own]:
        f.write_text("partial")
    mark(index, ["base-3"], True)
    assert not any(f.exists() for f in left) and plugin_own.exists()
    assert list(marks(index)["id"]) == ["base-3"]


MARKER = HELPERS + textwrap.dedent("""
    import sys
    import ulisse
    from ulisse.plugins.feedback import mark
    path, who = sys.argv[1], int(sys.argv[2])
    index = ulisse.open_index(path, device="cpu")
    for i in range(who, 40, 4):
        mark(index, [f"base-{{i}}"], i % 2 == 0)
""").replace("{{", "{").replace("}}", "}")


@pytest.mark.slow
def test_four_processes_marking_at_once_lose_no_mark(tmp_path):
    from ulisse.plugins.feedback import marks

    path = tmp_path / "idx"
    index = new_index(path, n=40)
    script = tmp_path / "marker.py"
    script.write_text(MARKER)
    procs = [subprocess.Popen([sys.executable, script, path, str(w)], env=ENV, stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    got = marks(index).set_index("id")["relevant"]
    assert len(got) == 40 and all(got[f"base-{i}"] == (i % 2 == 0) for i in range(40))
    assert not list(index.derived_dir.glob(".txn-*"))


def test_manifests_written_before_the_typed_manifest_read_and_write_back_unchanged(tmp_path):
    """A format 2 manifest as the previous writer wrote it: same JSON back, same fingerprint (derived columns stay
    fresh), and the JSON mapping view answers as the dict did."""
    import hashlib

    from ulisse.indexes.manifest import Manifest

    file = {"bytes": 10, "name": "seg-a.vectors.npy", "sha256": "ab" * 32}
    old = {"auto": None, "count": 300, "created": "2026-01-01T00:00:00Z", "cutout_geometry": {"size": 64},
           "dim": 8, "dtype": "float32", "encoder": SPEC.to_dict(), "factory": "IVF4,Flat", "faiss_kind": "ivf",
           "format": "ulisse-index", "format_version": 2, "generation": 2, "metric": "L2", "rgb": {"q": 8.0},
           "history": [{"action": "build", "count": 200, "time": "t"}, {"action": "add", "count": 100, "time": "t"}],
           "search": {"nlist": 4, "nprobe": 4}, "updated": "2026-01-02T00:00:00Z", "versions": {"ulisse": "0.1.0"},
           "trained": {"bytes": 5, "name": "trained-a.faiss", "sha256": "cd" * 32},
           "segments": [{"count": 200, "dtype": "float32", "id": "a", "start": 0, "vectors": file,
                         "metadata": dict(file, name="seg-a.metadata.parquet"),
                         "faiss": dict(file, name="seg-a.faiss", kind="ivf")},
                        {"count": 100, "dtype": "float32", "id": "b", "start": 200, "faiss": None,
                         "vectors": dict(file, name="seg-b.vectors.npy", sha256="ef" * 32),
                         "metadata": dict(file, name="seg-b.metadata.parquet")}]}
    m = Manifest.from_dict(old)
    assert m.to_dict() == old and json.loads(m.to_json()) == old
    assert (m.generation, m.factory, m.segments[1].start, m.trained.name, m.extra) == (2, "IVF4,Flat", 200,
                                                                                       "trained-a.faiss",
                                                                                       {"cutout_geometry": {"size": 64}})
    assert dict(m) == old and m["segments"][0]["faiss"]["kind"] == "ivf" and m.get("positions") is None
    h = hashlib.sha256(b"300|L2|")  # the fingerprint ulisse.Index computed from the dict manifest
    for seg in old["segments"]:
        h.update(seg["vectors"]["sha256"].encode())
    assert m.fingerprint == h.hexdigest()
    assert m.file_names() == ["trained-a.faiss", "seg-a.vectors.npy", "seg-a.metadata.parquet", "seg-a.faiss",
                              "seg-b.vectors.npy", "seg-b.metadata.parquet"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps({k: v for k, v in old.items() if k != "dim"}))
    with pytest.raises(IndexError_, match="unreadable manifest \\(no 'dim'\\)"):
        Manifest.read(tmp_path / "bad")


def test_store_and_cli_core_import_no_torch(tmp_path):
    """Opening an index, a search by a stored vector and the CLI module import no torch.

    (Plugins imported at CLI start must also keep torch inside their functions; that is each plugin's part.)
    """
    new_index(tmp_path / "idx")
    code = ("import sys, ulisse\n"
            f"index = ulisse.open_index({str(tmp_path / 'idx')!r})\n"
            "row = index.row_of('base-2')\n"
            "D, I = index.search(index.vectors_of_rows([row]), 3, exclude=[[row]])\n"
            "assert row not in I[0] and (I[0] >= 0).all()\n"
            "import ulisse.cli, ulisse.index, ulisse.indexes.store\n"
            "print('torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_query_by_id_reads_the_id_column_and_the_neighbours_row_groups_only(tmp_path, monkeypatch):
    from ulisse.indexes import metadata as meta_mod

    monkeypatch.setattr(meta_mod, "ROW_GROUP", 7)  # many row groups per segment in a small index
    index = new_index(tmp_path / "i", n=40)
    for tag in ("a", "b", "c"):
        v, m = batch(tag, 25)
        m["mag"] = np.linspace(15, 20, 25)
        index.add_vectors(v, m)
    fresh = ulisse.open_index(tmp_path / "i", device="cpu")
    res = fresh.query("b-3", k=12)
    assert fresh._meta._table is None  # the whole table was never read
    full = ulisse.open_index(tmp_path / "i", device="cpu")
    rows = [full.row_of(i) for i in res.table["id"]]
    expected = full.metadata.iloc[rows].reset_index(drop=True)
    pd.testing.assert_frame_equal(res.table[expected.columns].reset_index(drop=True), expected, check_dtype=False)
    # rows in any order, with repeats, across segments and row groups
    pick = np.random.default_rng(3).integers(0, len(full), 60)
    lazy = ulisse.open_index(tmp_path / "i", device="cpu")
    pd.testing.assert_frame_equal(lazy.metadata_rows(pick), full.metadata.iloc[pick].reset_index(drop=True))
    assert [lazy.id_of(r) for r in pick[:5]] == list(full.metadata["id"].iloc[pick[:5]])
    assert lazy.row_of("c-24") == len(full) - 1 and lazy._meta._table is None
    with pytest.raises(QueryError, match="unknown id"):
        lazy.row_of("nope")
    # a filter reads only the columns it names
    assert lazy.where_mask("mag > 19").sum() == (full.metadata["mag"] > 19).sum() and lazy._meta._table is None
    with pytest.raises(ulisse.InputError, match="no column 'magg'.*columns: row, id"):
        lazy.where_mask("magg > 19")
    # an add extends the id column already read, and clashes are still found
    v, m = batch("d", 5)
    lazy.add_vectors(v, m)
    assert lazy.row_of("d-4") == len(lazy) - 1
    with pytest.raises(ulisse.InputError, match="'d-0' is already in the index"):
        lazy.add_vectors(*batch("d", 2))


def test_a_reader_keeps_its_generation_when_a_compaction_deletes_the_files(tmp_path):
    index = new_index(tmp_path / "i", n=30)
    for tag in ("a", "b"):
        index.add_vectors(*batch(tag, 10))
    reader = ulisse.open_index(tmp_path / "i", device="cpu")  # nothing of the metadata read yet
    before = {p.name for p in (tmp_path / "i").glob("seg-*.metadata.parquet")}
    compact_index(tmp_path / "i")
    after = {p.name for p in (tmp_path / "i").glob("seg-*.metadata.parquet")}
    assert before and not before & after  # the reader's files are gone from the directory
    res = reader.query("a-3", k=5)
    assert len(res.table) == 5 and res.table["id"].notna().all()
    assert reader.row_of("b-9") == 49 and len(reader.metadata) == 50
    check_vectors(reader)


MIXED = HELPERS + textwrap.dedent("""
    import json, random, sys, time
    import ulisse
    from ulisse.index import compact_index
    path, role, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    end, done, errors = time.time() + seconds, 0, []
    while time.time() < end:
        try:
            if role == "reader":  # lazy metadata: ids, a filter, neighbour rows, the newest rows
                index = ulisse.open_index(path, device="cpu")
                res = index.query(f"base-{{random.randrange(40)}}", k=8, where="ra >= 0")
                assert len(res.table) == 8 and res.table["id"].notna().all()
                last = index.metadata_rows([len(index) - 1])["id"].iloc[0]
                assert index.row_of(last) == len(index) - 1
            elif role == "compactor":
                compact_index(path, wait=60)
                time.sleep(0.5)
            else:
                v, m = batch(f"{{role}}x{{done}}", 10)
                ulisse.open_index(path, device="cpu").add_vectors(v, m, wait=60)
            done += 1
        except Exception as exc:
            errors.append(f"{{type(exc).__name__}}: {{exc}}")
    print(json.dumps({{"role": role, "done": done, "errors": errors[:3], "n_errors": len(errors)}}))
""").replace("{{", "{").replace("}}", "}")


@pytest.mark.slow
def test_readers_writers_and_compactions_at_once(tmp_path):
    """Readers query (ids, filters, neighbour rows) while two writers add and a compactor merges, for 15 s."""
    path = tmp_path / "idx"
    new_index(path, n=40)
    script = tmp_path / "mixed.py"
    script.write_text(MIXED)
    roles = ["reader", "reader", "wa", "wb", "compactor"]
    procs = [subprocess.Popen([sys.executable, script, path, r, "15"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in roles]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["n_errors"] == 0 for r in reports), reports
    assert all(r["done"] > 0 for r in reports), reports
    index = ulisse.open_index(path, device="cpu")
    adds = {r["role"]: r["done"] for r in reports if r["role"] in ("wa", "wb")}
    assert len(index) == 40 + 10 * sum(adds.values())  # nothing lost to the compactions
    check_vectors(index)
    assert verify_index(path) == []


def test_a_compaction_keeps_the_fingerprint_and_derived_data_fresh(tmp_path):
    """A compaction keeps every vector in its row: derived columns (and plugins' artefacts) stay fresh; an add does not."""
    index = new_index(tmp_path / "idx", n=30)
    index.add_vectors(*batch("x", 9))
    index = ulisse.open_index(tmp_path / "idx")
    scores = pd.DataFrame({"norm": np.linalg.norm(index.all_vectors(), axis=1)})
    index.save_derived("norm", scores)
    fp = index.fingerprint
    compact_index(tmp_path / "idx")
    again = ulisse.open_index(tmp_path / "idx")
    assert len(again.manifest.segments) == 1 and again.fingerprint == fp
    assert again.derived_is_fresh("norm")
    np.testing.assert_array_equal(again.all_vectors(), index.all_vectors())
    again.add_vectors(*batch("y", 3))
    grown = ulisse.open_index(tmp_path / "idx")
    assert grown.fingerprint != fp and not grown.derived_is_fresh("norm")
    compact_index(tmp_path / "idx")  # a second compaction keeps the sums of the first one's segments
    assert ulisse.open_index(tmp_path / "idx").fingerprint == grown.fingerprint


# -- lookups by id through the segments' id-hash tables ------------------------------------------


def test_lookups_by_id_use_the_id_tables_and_never_read_the_id_column(tmp_path, monkeypatch):
    from ulisse.indexes import idtable
    from ulisse.indexes import metadata as meta_mod

    monkeypatch.setattr(meta_mod, "ROW_GROUP", 7)
    index = new_index(tmp_path / "i", n=40)
    for tag in ("a", "b"):
        index.add_vectors(*batch(tag, 25))
    man = store.read_manifest(tmp_path / "i")
    assert all(s.ids is not None and (tmp_path / "i" / s.ids.name).exists() for s in man.segments)
    full = ulisse.open_index(tmp_path / "i", device="cpu").metadata
    lazy = ulisse.open_index(tmp_path / "i", device="cpu")
    for oid in ("base-0", "a-24", "b-7", "b-24"):
        assert lazy.row_of(oid) == int(np.flatnonzero(full["id"] == oid)[0])
    assert lazy.id_of(60) == full["id"].iloc[60]
    with pytest.raises(QueryError, match="unknown id"):
        lazy.row_of("b-25")
    assert lazy._meta._ids is None and lazy._meta._table is None  # the id column was never read whole
    # every id hashing alike: the candidates are checked against the id column, never trusted
    monkeypatch.setattr(idtable, "hash_ids", lambda ids: np.zeros(len(ids), np.uint64))
    index.add_vectors(*batch("c", 5))  # tables of equal hashes; an add's check of clashes still exact
    same = ulisse.open_index(tmp_path / "i", device="cpu")
    assert same.row_of("c-3") == 93 and same.row_of("c-0") == 90  # five candidates each, one right
    with pytest.raises(ulisse.InputError, match="'c-0' is already in the index"):
        same.add_vectors(*batch("c", 1))
    assert same._meta._ids is None


def test_upgrade_gives_old_segments_their_id_tables_and_a_damaged_table_falls_back(tmp_path, caplog):
    path = tmp_path / "i"
    index = new_index(path, n=30)
    index.add_vectors(*batch("a", 10))
    man = json.loads((path / "manifest.json").read_text())  # as written before id tables existed
    for seg in man["segments"]:
        (path / seg.pop("ids")["name"]).unlink()
    (path / "manifest.json").write_text(json.dumps(man))
    old = ulisse.open_index(path, device="cpu")
    assert old.row_of("a-9") == 39 and old._meta._ids is not None  # the id column scanned
    r = run_cli("index", "upgrade", path)
    assert r.returncode == 0, r.stderr
    man = store.read_manifest(path)
    assert all(s.ids is not None for s in man.segments) and verify_index(path) == []
    assert man.history[-1]["id_tables"] == 2
    new = ulisse.open_index(path, device="cpu")
    assert new.row_of("a-9") == 39 and new.row_of("base-29") == 29 and new._meta._ids is None
    assert run_cli("index", "upgrade", path).returncode == 0 and store.read_manifest(path).generation == man.generation
    # a truncated table: a warning, lookups scan the id column, verify names the file
    table = path / man.segments[1].ids.name
    table.write_bytes(table.read_bytes()[:-8])
    damaged = ulisse.open_index(path, device="cpu")
    assert damaged.row_of("a-9") == 39 and damaged._meta._ids is not None
    assert any(man.segments[1].ids.name in p for p in verify_index(path))
