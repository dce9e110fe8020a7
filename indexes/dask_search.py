"""Search of a sharded index on Dask: each shard resident on a worker, queries scattered, top-k merged exactly.

:class:`ShardedIndex` places every shard of a sharded index (:mod:`.shards`) on one worker
of a Dask cluster (round robin over the workers alive at open), which opens it once and keeps
it open (a per-worker cache keyed by the shard's path and manifest generation: an add to the
shard is seen by the next query, which reopens it). A query goes to every shard's worker as one
task pinned to that worker; each shard answers its own top-k with **exact** distances (IVF-PQ
and other approximate shards re-rank their candidates from the raw vectors, so distances from
different shards compare), and the client keeps the k smallest, so the answer over shards of
exact (Flat) indexes is the answer of one index holding every vector.

A shard that does not answer (its worker is gone, the task failed, no answer within
``timeout``) is never silently dropped: the query raises :class:`ShardsMissing` naming the
shards, or, with ``partial=True``, returns the other shards' answer with ``missing`` naming
them. :meth:`ShardedIndex.replace_lost` re-opens the shards of lost workers on live ones.

``--dask`` takes ``local:N`` (a :class:`distributed.LocalCluster` of N one-thread worker
processes) or a scheduler address (:func:`parse_dask`, shared with ``ulisse sdss index``);
remote workers must see the shard directories (a shared file system).

Example:
    >>> import ulisse
    >>> with ulisse.open_sharded("survey", dask="local:4") as sharded:   # doctest: +SKIP
    ...     answer = sharded.query(id="s42", k=16)
    >>> answer.table[["rank", "id", "distance", "shard"]]               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ulisse.errors import IndexError_, InputError, QueryError

from . import shards as sh

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
POLL = 1.0  # seconds between checks that the workers a query still waits for are alive
_RESIDENT: dict[tuple[str, str], tuple[int, object]] = {}  # (worker, shard path) -> (generation, Index): per worker


class ShardsMissing(IndexError_):
    """Shards did not answer a query (their worker is lost, or the task failed); ``missing`` names them."""

    def __init__(self, message: str, missing: dict[str, str]):
        super().__init__(message)
        self.missing = missing


# -- connecting ---------------------------------------------------------------------------


def parse_dask(spec: str) -> tuple[str, int | str]:
    """``local:N`` -> ("local", N); ``tcp://host:8786`` (or ``host:8786``) -> ("address", "tcp://host:8786")."""
    m = re.fullmatch(r"local(?::(\d+))?", spec.strip())
    if m:
        n = int(m.group(1) or os.cpu_count() or 1)
        if n < 1:
            raise InputError(f"--dask {spec}: at least one worker")
        return "local", n
    if re.fullmatch(r"(tcp|tls|ucx|inproc)://\S+", spec.strip()):
        return "address", spec.strip()
    if re.fullmatch(r"[\w.-]+:\d+", spec.strip()):
        return "address", f"tcp://{spec.strip()}"
    raise InputError(f"--dask {spec}: expected local:N or a scheduler address such as tcp://HOST:8786")


def connect(spec: str, *, processes: bool = True):
    """(client, local cluster or None) for a ``--dask`` spec.

    Raises:
        InputError: dask.distributed is not installed, the local cluster did not start, or the scheduler
            cannot be reached.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--dask needs dask.distributed: pip install 'dask[distributed]'") from None
    kind, value = parse_dask(spec)
    cluster = None
    try:
        if kind == "local":
            cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=processes, dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(value, timeout="20s")
    except Exception as exc:  # OSError, TimeoutError, "Nanny failed to start"...
        if cluster is not None:
            cluster.close()
        what = "the local Dask cluster did not start" if kind == "local" else "cannot reach the Dask scheduler"
        raise InputError(f"--dask {spec}: {what} ({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]})") from None
    LOG.info("dask: %s with %d worker(s)", spec, len(client.scheduler_info().get("workers", {})))
    return client, cluster


# -- on the workers -----------------------------------------------------------------------


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def _resident(shard_path: str, check: tuple):
    """The shard's open index on this worker, reopened when its manifest's generation changed."""
    from ulisse.index import open_index

    key = (_worker_address(), shard_path)
    generation = sh.shard_generation(Path(shard_path))
    held = _RESIDENT.get(key)
    if held is not None and held[0] == generation:
        return held[1]
    index = open_index(shard_path, device="cpu")
    sharded = sh.ShardedManifest(Path(check[0]), (check[1],), check[2], check[3], check[4])
    sh.check_shard(sharded, check[1], index.manifest)
    _RESIDENT[key] = (index.manifest.generation, index)
    return index


def _load(shard_path: str, check: tuple) -> dict:
    index = _resident(shard_path, check)
    return {"count": len(index), "generation": index.manifest.generation, "factory": index.manifest.factory,
            "worker": _worker_address()}


def _find(shard_path: str, check: tuple, object_id: str):
    """(row, raw vector) of ``object_id`` in this shard, or None."""
    index = _resident(shard_path, check)
    try:
        row = index.row_of(object_id)
    except QueryError:
        return None
    return row, index.vectors_of_rows([row])[0]


def _search(shard_path: str, check: tuple, queries: np.ndarray, k: int, exclude, nprobe, rerank, with_meta: bool):
    """This shard's top-k of each query with exact distances: (D, rows, metadata of query 0's rows or None)."""
    index = _resident(shard_path, check)
    exact = index.manifest.faiss_kind == "flat"
    rr = rerank or index.search_parameters().get("rerank") or 0
    D, I = index.search(queries, k, exclude=exclude, nprobe=nprobe, rerank=0 if exact and not rr else max(k, rr))
    meta = None
    if with_meta:
        ok = I[0] >= 0
        meta = index.metadata_rows(I[0][ok]).reset_index(drop=True)
    return D, I, meta


# -- on the client ------------------------------------------------------------------------


@dataclass
class ShardedAnswer:
    """A sharded query's answer: the merged table (or arrays) and the shards that did not answer."""

    table: pd.DataFrame | None = None
    distances: np.ndarray | None = None
    ids: np.ndarray | None = None          # 1 x k object ids of a one-query answer ("" where fewer were found)
    shard_of: np.ndarray | None = None     # Q x k shard names
    rows: np.ndarray | None = None         # Q x k rows within their shard
    missing: dict[str, str] = field(default_factory=dict)
    prototype: str | None = None

    @property
    def complete(self) -> bool:
        return not self.missing

    def missing_text(self) -> str:
        return "; ".join(f"{s} ({why})" for s, why in self.missing.items())


class ShardedIndex:
    """A sharded index opened on a Dask cluster (see the module's doc)."""

    def __init__(self, path: str | os.PathLike, client, *, cluster=None, nprobe: int | None = None,
                 rerank: int | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.path = Path(path)
        self.client, self._cluster = client, cluster
        self.nprobe, self.rerank, self.timeout = nprobe, rerank, float(timeout)
        self.manifest = _manifest_of(self.path)
        self.placement: dict[str, str] = {}
        self.info: dict[str, dict] = {}
        self._place(self.manifest.shards, self._live_workers())

    def __len__(self) -> int:
        return sum(i["count"] for i in self.info.values())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Close the client, and the local cluster if this object started it."""
        if self._cluster is not None:
            self.client.close()
            self._cluster.close()
            self._cluster = None

    def _check(self, name: str) -> tuple:
        m = self.manifest
        return (str(m.path), name, m.dim, m.metric, m.encoder)

    def _live_workers(self) -> list[str]:
        return sorted(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def _place(self, names: Sequence[str], workers: list[str]) -> None:
        if not workers:
            raise IndexError_(f"{self.path}: the Dask cluster has no workers")
        start = len(self.placement)
        for j, name in enumerate(names):
            self.placement[name] = workers[(start + j) % len(workers)]
        results, missing = self._run(names, lambda n: (_load, str(self.manifest.shard_path(n)), self._check(n)))
        if missing:
            raise ShardsMissing(f"{self.path}: shards could not be opened: "
                                + "; ".join(f"{s} ({why})" for s, why in missing.items()), missing)
        self.info.update(results)

    def replace_lost(self) -> list[str]:
        """Re-open on live workers the shards whose worker is gone; the shards moved."""
        live = self._live_workers()
        lost = [n for n, w in self.placement.items() if w not in live]
        if lost:
            for n in lost:
                del self.placement[n]
            self._place(lost, live)
        return lost

    def _run(self, names: Sequence[str], task) -> tuple[dict, dict]:
        """Run ``task(name) -> (fn, *args)`` on each shard's worker; (results, missing shards with why)."""
        from distributed import wait

        live = set(self._live_workers())
        run = uuid.uuid4().hex[:8]
        futures, missing = {}, {}
        for name in names:
            worker = self.placement[name]
            if worker not in live:
                missing[name] = f"worker {worker} lost"
                continue
            fn, *args = task(name)
            futures[name] = self.client.submit(fn, *args, workers=[worker], allow_other_workers=False, pure=False,
                                               key=f"ulisse-shard-{fn.__name__.strip('_')}-{name}-{run}")
        deadline = time.monotonic() + self.timeout
        while futures:  # until every shard answered, the time is up, or those still out are on lost workers
            pending = [n for n, f in futures.items() if f.status == "pending"]
            if not pending:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                wait([futures[n] for n in pending], timeout=min(POLL, left))
                break
            except TimeoutError:
                alive = set(self._live_workers())
                if all(self.placement[n] not in alive for n in pending if futures[n].status == "pending"):
                    break  # their workers are gone: no answer will come (reported below, without the wait)
        results = {}
        for name, fut in futures.items():
            if fut.status == "finished":
                results[name] = fut.result()
            elif fut.status == "error":
                exc = fut.exception()
                missing[name] = f"on {self.placement[name]}: {exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"
            else:
                fut.cancel()
                gone = self.placement[name] not in set(self._live_workers())
                missing[name] = (f"worker {self.placement[name]} lost" if gone
                                 else f"no answer from {self.placement[name]} within {self.timeout:g} s")
        return results, missing

    # -- queries ---------------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int, *, exclude: dict[str, Sequence[Sequence[int]]] | None = None,
               partial: bool = False) -> ShardedAnswer:
        """The k nearest of each query over every shard, exact distances merged: a :class:`ShardedAnswer`.

        ``exclude[shard][i]``: rows of that shard left out of query i's results.

        Raises:
            ShardsMissing: a shard did not answer and ``partial`` is False.
        """
        q = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if q.shape[1] != self.manifest.dim:
            raise QueryError(f"query vectors have dimension {q.shape[1]}, the index {self.manifest.dim}")
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        exclude = exclude or {}
        names = self.manifest.shards
        results, missing = self._run(names, lambda n: (_search, str(self.manifest.shard_path(n)), self._check(n), q,
                                                       int(k), exclude.get(n), self.nprobe, self.rerank, len(q) == 1))
        self._raise_missing(missing, partial)
        return _merge(names, results, len(q), int(k), missing)

    def vector_of(self, object_id: str, *, partial: bool = False) -> tuple[str, int, np.ndarray]:
        """(shard, row, raw vector) of an object of the index."""
        results, missing = self._run(self.manifest.shards,
                                     lambda n: (_find, str(self.manifest.shard_path(n)), self._check(n), str(object_id)))
        found = [(n, r) for n, r in results.items() if r is not None]
        if found:
            name, (row, vec) = min(found, key=lambda f: self.manifest.shards.index(f[0]))
            return name, int(row), vec
        if missing:
            raise ShardsMissing(f"id {object_id!r}: not in the shards that answered; shards that did not: "
                                + "; ".join(f"{s} ({why})" for s, why in missing.items()), missing)
        raise QueryError(f"id {object_id!r}: unknown id (not in the sharded index {self.path})")

    def query(self, id: str | None = None, *, vector: np.ndarray | None = None, k: int = 16,
              partial: bool = False) -> ShardedAnswer:
        """The k nearest neighbours of one object of the index (left out of its own answer) or of a vector.

        ``answer.table``: rank, id, distance, shard, row and the neighbours' metadata.
        ``answer.missing``: shards that did not answer (only with ``partial=True``; else :class:`ShardsMissing`).
        """
        if (id is None) == (vector is None):
            raise QueryError("give exactly one of id or vector")
        exclude, proto = None, "vector"
        if id is not None:
            shard, row, vector = self.vector_of(id, partial=partial)
            exclude, proto = {shard: [[row]]}, f"id {id}"
        answer = self.search(vector, k, exclude=exclude, partial=partial)
        answer.prototype = proto
        return answer

    def _raise_missing(self, missing: dict, partial: bool) -> None:
        if missing and not partial:
            text = "; ".join(f"{s} ({why})" for s, why in missing.items())
            raise ShardsMissing(f"{self.path}: {len(missing)} of {len(self.manifest.shards)} shard(s) did not answer: "
                                f"{text}; no answer returned (partial=True / --partial: the other shards' answer)",
                                missing)
        for s, why in missing.items():
            LOG.warning("%s: shard %s did not answer (%s): the answer is partial", self.path, s, why)

    # -- writing ---------------------------------------------------------------------------

    def add_vectors(self, vectors: np.ndarray, metadata: pd.DataFrame, *, shard: str | None = None,
                    wait: float = 0.0) -> str:
        """Add to one shard under its own transaction (:func:`.shards.add_to_shard`, in this process); its name."""
        return sh.add_to_shard(self.path, vectors, metadata, shard=shard, wait=wait)


def _manifest_of(path: Path) -> sh.ShardedManifest:
    """The sharded manifest; a plain index directory is a sharded index of one shard (itself)."""
    if sh.is_sharded(path):
        return sh.read_sharded(path)
    from .manifest import Manifest

    m = Manifest.read(path)
    return sh.ShardedManifest(path, (str(path.absolute()),), m.dim, m.metric, dict(m.encoder))


def _merge(names: Sequence[str], results: dict, nq: int, k: int, missing: dict) -> ShardedAnswer:
    """The k smallest exact distances over the shards that answered (ties: shard order, then rank)."""
    parts = [(n, results[n]) for n in names if n in results]
    if not parts:
        return ShardedAnswer(table=pd.DataFrame(columns=["rank", "id", "distance", "shard", "row"]),
                             distances=np.zeros((nq, 0), np.float32), missing=missing)
    D = np.concatenate([np.where(r[1] >= 0, r[0], np.inf) for _, r in parts], axis=1)
    I = np.concatenate([r[1] for _, r in parts], axis=1)
    S = np.concatenate([np.full(r[1].shape, j) for j, (_, r) in enumerate(parts)], axis=1)
    order = np.argsort(D, axis=1, kind="stable")[:, :k]
    D, I, S = (np.take_along_axis(a, order, axis=1) for a in (D, I, S))
    shard_names = np.array([n for n, _ in parts], dtype=object)[S]
    shard_names[I < 0] = ""
    answer = ShardedAnswer(distances=D, shard_of=shard_names, rows=I, missing=missing)
    if nq == 1:  # one query: the table with the neighbours' metadata, as the shards sent it
        metas = {n: r[2] for n, r in parts}
        pos = {n: {int(row): j for j, row in enumerate(r[1][0][r[1][0] >= 0])} for n, r in parts}
        rows_meta = [metas[s].iloc[pos[s][int(i)]] for s, i in zip(shard_names[0], I[0]) if i >= 0]
        meta = pd.DataFrame(rows_meta).reset_index(drop=True) if rows_meta else pd.DataFrame(columns=["id"])
        ok = I[0] >= 0
        table = pd.DataFrame({"rank": np.arange(1, ok.sum() + 1), "id": meta["id"].astype(str).to_numpy(),
                              "distance": D[0][ok], "shard": shard_names[0][ok], "row": I[0][ok]})
        others = meta.drop(columns=[c for c in ("id", "row") if c in meta], errors="ignore").reset_index(drop=True)
        answer.table = pd.concat([table, others], axis=1)
        answer.ids = np.array([list(table["id"]) + [""] * (k - len(table))], dtype=object)
    return answer


def open_sharded(path: str | os.PathLike, *, client=None, dask: str | None = None, nprobe: int | None = None,
                 rerank: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> ShardedIndex:
    """Open a sharded index (or a plain index, as one shard) on a Dask cluster: ``client`` or a ``dask`` spec.

    With ``dask`` (``local:N`` or a scheduler address) the client is made here and closed by
    :meth:`ShardedIndex.close` (or the ``with`` block).

    Raises:
        InputError: neither or both of ``client`` and ``dask``; a bad spec; no cluster.
        IndexNotFound, IndexError_: no index; shards that differ in encoder, metric or dimension.
        ShardsMissing: a shard could not be opened on its worker.
    """
    if (client is None) == (dask is None):
        raise InputError("open_sharded: give exactly one of client (a dask.distributed.Client) or dask (local:N or an address)")
    cluster = None
    if client is None:
        client, cluster = connect(dask)
    try:
        return ShardedIndex(path, client, cluster=cluster, nprobe=nprobe, rerank=rerank, timeout=timeout)
    except BaseException:
        if cluster is not None:
            client.close()
            cluster.close()
        raise


def cli_query(index_dir: str, ids: Sequence[str], k: int, dask: str | None, partial: bool, *, nprobe=None,
              rerank=None) -> ShardedAnswer:
    """``ulisse query DIR --id X --dask SCHEDULER``: the answer (the verb renders it).

    Raises:
        InputError: no ``--dask`` for a sharded index, or not exactly one ``--id``.
    """
    if not dask:
        raise InputError(f"{index_dir}: a sharded index is searched on Dask: give --dask local:N or --dask tcp://HOST:8786")
    if len(ids) != 1:
        raise InputError("--dask: give exactly one --id (other prototypes are searched on one index)")
    with open_sharded(index_dir, dask=dask, nprobe=nprobe, rerank=rerank) as sharded:
        return sharded.query(id=ids[0], k=k, partial=partial)
