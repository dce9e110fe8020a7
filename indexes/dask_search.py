"""Search of a sharded index on Dask: each shard resident on a worker, queries scattered, top-k merged exactly.

:class:`ShardedIndex` places every shard of a sharded index (:mod:`.shards`) on one worker
of a Dask cluster (round robin over the workers alive at open), which opens it once and keeps
it open (a per-worker cache keyed by the shard's path and manifest generation: an add to the
shard is seen by the next query, which reopens it). A query goes to every shard's worker as one
task pinned to that worker; each shard answers its own top-k with **exact** distances (IVF-PQ
and other approximate shards re-rank their candidates from the raw vectors, so distances from
different shards compare), and the client keeps the k smallest, so the answer over shards of
exact (Flat) indexes is the answer of one index holding every vector.

A shard that does not answer (it could not be opened, its worker is gone, the task failed, no
answer within ``timeout``) is never silently dropped: the query raises :class:`ShardsMissing`
naming the shards, or, with ``partial=True``, returns the other shards' answer with ``missing``
naming them; a shard's ulisse error travels back as a value (no worker log, no traceback).
:meth:`ShardedIndex.replace_lost` re-opens the shards of lost workers on live ones.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ulisse.errors import IndexError_, InputError, QueryError, UlisseError

from . import shards as sh
from .shards import ShardedAnswer  # noqa: F401  (public here too, as before)

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
            cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=processes, dashboard_address=None,
                                   silence_logs=logging.CRITICAL,  # the user gets ulisse's one line, not Dask's logs
                                   scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})  # no port 8787 (taken?)
            client = Client(cluster)
            client.register_plugin(_quiet_logs(), name="ulisse-quiet-logs")  # every worker, restarted ones too
        else:
            client = Client(value, timeout="20s")
    except Exception as exc:  # OSError, TimeoutError, "Nanny failed to start"...
        if cluster is not None:
            cluster.close()
        what = "the local Dask cluster did not start" if kind == "local" else "cannot reach the Dask scheduler"
        raise InputError(f"--dask {spec}: {what} ({reason(exc)})") from None
    LOG.info("dask: %s with %d worker(s)", spec, len(client.scheduler_info().get("workers", {})))
    return client, cluster


def reason(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: a ulisse error's own message whole, another's class and message (long ones cut
    at a word, marked with "...")."""
    text = " ".join(str(exc).split())
    if isinstance(exc, UlisseError):
        return text
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{exc.__class__.__name__}: {text}"


def _quiet_logs():
    """A Dask worker plugin turning the worker's ``distributed`` logs off (a local cluster's reach the user's terminal)."""
    from distributed import WorkerPlugin

    class QuietLogs(WorkerPlugin):
        def setup(self, worker):
            logging.getLogger("distributed").setLevel(logging.CRITICAL)

    return QuietLogs()


@dataclass
class _Failed:
    """A shard task's ulisse error, sent back as a value (a raised one is logged by the worker, traceback and all)."""

    bad_request: bool  # a QueryError or InputError: the query is wrong (every shard would say so), not the shard
    message: str


def _call(fn, *args):
    """``fn(*args)`` on a worker, a ulisse error returned as :class:`_Failed`."""
    try:
        return fn(*args)
    except UlisseError as exc:
        return _Failed(isinstance(exc, (QueryError, InputError)), " ".join(str(exc).split()))


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
    sharded = sh.ShardedManifest(Path(check[0]), (check[1],), check[2], check[3], check[4], check[5])
    sh.check_shard(sharded, check[1], index.manifest)
    _RESIDENT[key] = (index.manifest.generation, index)
    return index


def _load(shard_path: str, check: tuple) -> dict:
    index = _resident(shard_path, check)
    return {"count": len(index), "generation": index.manifest.generation, "factory": index.manifest.factory,
            "worker": _worker_address(), "rgb": dict(index.manifest.rgb)}


def _find(shard_path: str, check: tuple, object_id: str):
    """(row, raw vector, source) of ``object_id`` in this shard, or None."""
    index = _resident(shard_path, check)
    try:
        row = index.row_of(object_id)
    except QueryError:
        return None
    meta = index.metadata_rows([row])
    return row, index.vectors_of_rows([row])[0], meta["source"].iloc[0] if "source" in meta else None


def _search(shard_path: str, check: tuple, queries: np.ndarray, k: int, exclude, opts: dict, with_meta: bool):
    """This shard's top-k of each query with exact distances: (D, rows, metadata of query 0's rows or None, labels).

    ``opts``: nprobe, ef, rerank; ``where`` (only the objects it keeps are searched); ``label`` (labels: query 0's
    neighbours' classes and the shard's class counts, its query-0 excluded rows left out)."""
    from ulisse.labels import labels_of

    index = _resident(shard_path, check)
    exact = index.manifest.faiss_kind == "flat"
    rr = opts.get("rerank") or index.search_parameters().get("rerank") or 0
    allowed = index.where_mask(opts["where"]) if opts.get("where") is not None else None
    D, I = index.search(queries, k, exclude=exclude, allowed=allowed, nprobe=opts.get("nprobe"), ef=opts.get("ef"),
                        rerank=0 if exact and not rr else max(k, rr))
    meta = labels = None
    if with_meta:
        ok = I[0] >= 0
        meta = index.metadata_rows(I[0][ok]).reset_index(drop=True)
    if opts.get("label") and with_meta:
        all_labels = labels_of(index, opts["label"])
        keep = np.ones(len(all_labels), bool)
        keep[[int(r) for r in (exclude or [[]])[0]]] = False  # the prototype: out of the base rate
        labels = {"found": all_labels.iloc[I[0][I[0] >= 0]].tolist(),
                  "counts": all_labels[keep].value_counts().to_dict()}
    return D, I, meta, labels


# -- on the client ------------------------------------------------------------------------


class ShardedIndex:
    """A sharded index opened on a Dask cluster (see the module's doc)."""

    def __init__(self, path: str | os.PathLike, client, *, cluster=None, nprobe: int | None = None,
                 rerank: int | None = None, timeout: float = DEFAULT_TIMEOUT, ef: int | None = None,
                 partial: bool = False):
        self.path = Path(path)
        self.client, self._cluster = client, cluster
        self.nprobe, self.rerank, self.ef, self.timeout = nprobe, rerank, ef, float(timeout)
        self.manifest = _manifest_of(self.path)
        self.placement: dict[str, str] = {}
        self.info: dict[str, dict] = {}
        self.unopened: dict[str, str] = {}  # with partial: shards that could not be opened (named in every answer)
        self._place(self.manifest.shards, self._live_workers(), partial)

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
        return (str(m.path), name, m.dim, m.metric, m.encoder, m.space)

    def _live_workers(self) -> list[str]:
        return sorted(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def _place(self, names: Sequence[str], workers: list[str], partial: bool = False) -> None:
        if not workers:
            raise IndexError_(f"{self.path}: the Dask cluster has no workers")
        start = len(self.placement)
        for j, name in enumerate(names):
            self.placement[name] = workers[(start + j) % len(workers)]
        results, missing = self._run(names, lambda n: (_load, str(self.manifest.shard_path(n)), self._check(n)))
        self.info.update(results)
        if missing and (not partial or not self.info):
            text = "; ".join(f"{self.manifest.label(s)} ({why})" for s, why in missing.items())
            more = " (--partial / partial=True: the other shards' answer)" if len(missing) < len(names) else ""
            raise ShardsMissing(f"{self.path}: {len(missing)} of {len(names)} shard(s) could not be opened: "
                                f"{text}{more}", missing)
        self.unopened.update({s: f"not opened: {why}" for s, why in missing.items()})

    def replace_lost(self) -> list[str]:
        """Re-open on live workers the shards whose worker is gone; the shards moved."""
        live = self._live_workers()
        lost = [n for n, w in self.placement.items() if w not in live and n not in self.unopened]
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
            if name in self.unopened:
                missing[name] = self.unopened[name]
                continue
            if worker not in live:
                missing[name] = f"worker {worker} lost"
                continue
            fn, *args = task(name)
            futures[name] = self.client.submit(_call, fn, *args, workers=[worker], allow_other_workers=False, pure=False,
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
                if isinstance(results[name], _Failed):  # a ulisse error on the worker
                    failed = results.pop(name)
                    if failed.bad_request:  # the query is wrong (a --where or --label the shards lack): not partial
                        raise QueryError(f"shard {self.manifest.label(name)}: {failed.message}")
                    missing[name] = failed.message
            elif fut.status == "error":
                missing[name] = f"on {self.placement[name]}: {reason(fut.exception())}"
            else:
                fut.cancel()
                gone = self.placement[name] not in set(self._live_workers())
                missing[name] = (f"worker {self.placement[name]} lost" if gone
                                 else f"no answer from {self.placement[name]} within {self.timeout:g} s")
        return results, missing

    # -- queries ---------------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int, *, exclude: dict[str, Sequence[Sequence[int]]] | None = None,
               partial: bool = False, where: str | None = None, label: str | None = None) -> ShardedAnswer:
        """The k nearest of each query over every shard, exact distances merged: a :class:`ShardedAnswer`.

        ``exclude[shard][i]``: rows of that shard left out of query i's results. ``where``: each shard searches
        only its objects that the filter keeps (``ulisse query --where``). ``label`` (one query): the classes of
        the neighbours and of every object, for class fractions (``answer.labels``, ``answer.label_counts``).

        Raises:
            ShardsMissing: a shard did not answer and ``partial`` is False.
            QueryError: ``where`` or ``label`` names a column a shard lacks (or is not a filter).
        """
        q = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if q.shape[1] != self.manifest.dim:
            raise QueryError(f"query vectors have dimension {q.shape[1]}, the index {self.manifest.dim}")
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        exclude = exclude or {}
        names = self.manifest.shards
        opts = {"nprobe": self.nprobe, "ef": self.ef, "rerank": self.rerank, "where": where, "label": label}
        results, missing = self._run(names, lambda n: (_search, str(self.manifest.shard_path(n)), self._check(n), q,
                                                       int(k), exclude.get(n), opts, len(q) == 1))
        self._raise_missing(missing, partial)
        answer = sh.merge_answers(names, results, len(q), int(k), missing)
        answer.manifest, answer.rgb = self.manifest, {n: i.get("rgb") for n, i in self.info.items()}
        return answer

    def vector_of(self, object_id: str, *, partial: bool = False) -> tuple[str, int, np.ndarray]:
        """(shard, row, raw vector) of an object of the index."""
        return self._find(object_id)[:3]

    def _find(self, object_id: str) -> tuple[str, int, np.ndarray, object]:
        """(shard, row, raw vector, source) of an object of the index."""
        results, missing = self._run(self.manifest.shards,
                                     lambda n: (_find, str(self.manifest.shard_path(n)), self._check(n), str(object_id)))
        found = [(n, r) for n, r in results.items() if r is not None]
        if found:
            name, (row, vec, source) = min(found, key=lambda f: self.manifest.shards.index(f[0]))
            return name, int(row), vec, source
        if missing:
            raise ShardsMissing(f"id {object_id!r}: not in the shards that answered; shards that did not: "
                                + "; ".join(f"{self.manifest.label(s)} ({why})" for s, why in missing.items()), missing)
        raise QueryError(f"id {object_id!r}: unknown id (not in the sharded index {self.path})")

    def query(self, id: str | None = None, *, vector: np.ndarray | None = None, k: int = 16,
              partial: bool = False, where: str | None = None, label: str | None = None) -> ShardedAnswer:
        """The k nearest neighbours of one object of the index (left out of its own answer) or of a vector.

        ``answer.table``: rank, id, distance, shard, row and the neighbours' metadata.
        ``answer.missing``: shards that did not answer (only with ``partial=True``; else :class:`ShardsMissing`).
        ``where``, ``label``: as for :meth:`search`.
        """
        if (id is None) == (vector is None):
            raise QueryError("give exactly one of id or vector")
        exclude, proto, cut = None, "vector", None
        if id is not None:
            shard, row, vector, source = self._find(id)
            exclude, proto, cut = {shard: [[row]]}, f"id {id}", (shard, source)
        answer = self.search(vector, k, exclude=exclude, partial=partial, where=where, label=label)
        answer.prototype, answer.prototype_cutout = proto, cut
        return answer

    def _raise_missing(self, missing: dict, partial: bool) -> None:
        if missing and not partial:
            text = "; ".join(f"{self.manifest.label(s)} ({why})" for s, why in missing.items())
            raise ShardsMissing(f"{self.path}: {len(missing)} of {len(self.manifest.shards)} shard(s) did not answer: "
                                f"{text}; no answer returned (partial=True / --partial: the other shards' answer)",
                                missing)

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

    m = Manifest.read(path)  # in its own space, whitened or not
    return sh.ShardedManifest(path, (str(path.absolute()),), m.dim, m.metric, dict(m.encoder), sh._space_of(m))


def open_sharded(path: str | os.PathLike, *, client=None, dask: str | None = None, nprobe: int | None = None,
                 rerank: int | None = None, timeout: float = DEFAULT_TIMEOUT, ef: int | None = None,
                 partial: bool = False) -> ShardedIndex:
    """Open a sharded index (or a plain index, as one shard) on a Dask cluster: ``client`` or a ``dask`` spec.

    With ``dask`` (``local:N`` or a scheduler address) the client is made here and closed by
    :meth:`ShardedIndex.close` (or the ``with`` block).

    Raises:
        InputError: neither or both of ``client`` and ``dask``; a bad spec; no cluster.
        IndexNotFound, IndexError_: no index; shards that differ in encoder, metric or dimension.
        ShardsMissing: a shard could not be opened on its worker (with ``partial``: only when none could; the
            others are named in every answer's ``missing``).
    """
    if (client is None) == (dask is None):
        raise InputError("open_sharded: give exactly one of client (a dask.distributed.Client) or dask (local:N or an address)")
    cluster = None
    if client is None:
        client, cluster = connect(dask)
    try:
        return ShardedIndex(path, client, cluster=cluster, nprobe=nprobe, rerank=rerank, timeout=timeout, ef=ef,
                            partial=partial)
    except BaseException:
        if cluster is not None:
            client.close()
            cluster.close()
        raise


def cli_query(index_dir: str, ids: Sequence[str], k: int, dask: str | None, partial: bool, *, nprobe=None,
              rerank=None, ef=None, where: str | None = None, label: str | None = None) -> ShardedAnswer:
    """``ulisse query DIR --id X --dask SCHEDULER``: the answer (the verb renders it).

    ``partial``: the answer of the shards that answered, those that could not be opened or did not answer named.

    Raises:
        InputError: no ``--dask`` for a sharded index, or not exactly one ``--id``.
    """
    if not dask:
        raise InputError(f"{index_dir}: a sharded index is searched on Dask: give --dask local:N or --dask tcp://HOST:8786")
    if len(ids) != 1:
        raise InputError("--dask: give exactly one --id (other prototypes are searched on one index)")
    with open_sharded(index_dir, dask=dask, nprobe=nprobe, rerank=rerank, ef=ef, partial=partial) as sharded:
        return sharded.query(id=ids[0], k=k, partial=partial, where=where, label=label)
