"""Anomaly discovery: per-object anomaly scores computed from the index itself.

No prototype is needed: an object is anomalous when little else in the survey
looks like it, i.e. when its feature vector lies far from the others. Three
scores, higher meaning more anomalous:

``kth``
    Euclidean distance from an object's vector to its ``k``-th nearest
    neighbour in the index (the object itself left out). A classic, robust
    outlier score (Ramaswamy et al. 2000).
``mean``
    Mean distance to the ``k`` nearest neighbours: smoother than ``kth``,
    less sensitive to a small clump of look-alikes.
``iforest``
    scikit-learn's Isolation Forest on the vectors (``-score_samples``): how
    few random cuts isolate the object. Needs ``pip install scikit-learn``;
    ``k`` plays no part.

For an inner-product index (``--metric IP``) the kNN scores are negated
similarities (low similarity to the neighbours = anomalous).

Scores are stored with the index, in ``DIR/derived/anomaly-{method}-k{k}.parquet``
(``anomaly-iforest.parquet``), with the vectors' sha256 and the parameters in
the parquet's key-value metadata. They load in milliseconds until the index
changes (``ulisse index add``); then they are computed again.

Example:
    >>> import ulisse
    >>> from ulisse.plugins.anomalies import rank_anomalies
    >>> index = ulisse.open_index("indexes/hdf-demo")                     # doctest: +SKIP
    >>> ranking = rank_anomalies(index, top=10, method="kth", k=10)        # doctest: +SKIP
    >>> ranking.table[["rank", "id", "score"]]                             # doctest: +SKIP

On the command line::

    ulisse anomalies indexes/hdf-demo --top 20 --png anomalies.png
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd

import ulisse
from ulisse.labels import class_fractions, labels_of
from ulisse.registry import ScoreProvider

LOG = logging.getLogger(__name__)

METHODS = ("kth", "mean", "iforest")
DEFAULT_K = 10
CHUNK = 2048  # objects per kNN batch
IFOREST = {"n_estimators": 200, "random_state": 0}
META_KEY = b"ulisse.anomaly"


@dataclass
class AnomalyRanking:
    """The most anomalous objects of an index.

    Attributes
    ----------
    table : pandas.DataFrame
        The top objects, most anomalous first: ``rank`` (1 = most anomalous),
        ``id``, ``score``, then the metadata columns.
    method : str
        ``kth``, ``mean`` or ``iforest``.
    k : int or None
        Neighbours used by the score (None for ``iforest``).
    label : str or None
        The metadata column compared, if any.
    precision : dict or None
        With ``label``: the fraction of each class among the top objects.
    base_rate : dict or None
        With ``label``: the fraction of each class in the whole index.
    """

    table: pd.DataFrame
    method: str
    k: int | None
    label: str | None = None
    precision: dict | None = None
    base_rate: dict | None = None

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        return list(self.table["id"])


# -- scores ------------------------------------------------------------------

def scores_path(index, method: str = "kth", k: int = DEFAULT_K) -> Path:
    """Where the scores of ``method`` (and ``k``) are stored for ``index``."""
    name = "anomaly-iforest" if method == "iforest" else f"anomaly-{method}-k{k}"
    return Path(index.path) / "derived" / f"{name}.parquet"


def _check(index, method: str, k) -> int | None:
    if method not in METHODS:
        raise ulisse.InputError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    if method == "iforest":
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ulisse.QueryError(f"k={k!r}: must be a whole number")
    if k < 1:
        raise ulisse.QueryError(f"k={k}: must be at least 1")
    if k >= len(index):
        raise ulisse.QueryError(f"k={k}: must be smaller than the number of objects in the index ({len(index)})")
    return int(k)


def _freshness(index, method: str, k: int | None) -> dict:
    params = IFOREST if method == "iforest" else {}
    return {"method": method, "k": k, "params": params, "count": len(index),
            "metric": index.manifest.get("metric", "L2"),
            "vectors_sha256": index.manifest["files"]["vectors"]["sha256"]}


def _load_stored(path: Path, want: dict) -> pd.DataFrame | None:
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        stored = json.loads(pq.read_schema(path).metadata[META_KEY])
        if any(stored.get(key) != value for key, value in want.items()):
            LOG.info("stored anomaly scores %s are stale (the index has changed): computing them again", path)
            return None
        table = pd.read_parquet(path)
    except Exception as exc:  # unreadable or foreign file: compute again
        LOG.warning("ignoring unreadable anomaly scores %s (%s)", path, exc)
        return None
    return table if len(table) == want["count"] else None


def _store(path: Path, table: pd.DataFrame, info: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ulisse.results import write_atomic

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), META_KEY: json.dumps(info).encode()})
    buf = io.BytesIO()
    pq.write_table(arrow, buf)
    try:
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, buf.getvalue())
    except OSError as exc:  # a read-only index still gets its scores, just not stored
        LOG.warning("could not store anomaly scores in %s (%s)", path, exc)


def _knn_scores(index, method: str, k: int, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    n = len(index)
    similarity = index.manifest.get("metric", "L2") == "IP"
    scores = np.empty(n, np.float64)
    with tqdm(total=n, desc=f"anomaly scores ({method}, k={k})", unit="object", disable=not progress) as bar:
        for start in range(0, n, CHUNK):
            rows = range(start, min(start + CHUNK, n))
            D, _ = index.search(index.vectors_of_rows(rows), k, exclude=[[r] for r in rows])
            D = D.astype(np.float64)
            if similarity:
                D = -D  # large inner product = near: negate so that higher = more anomalous
            # an approximate index may return fewer than k neighbours (NaN): use those there are
            scores[rows.start:rows.stop] = np.nanmax(D, axis=1) if method == "kth" else np.nanmean(D, axis=1)
            bar.update(len(rows))
    return scores


def _iforest_scores(index, progress: bool) -> np.ndarray:
    try:
        from sklearn.ensemble import IsolationForest
    except ImportError:
        raise ulisse.InputError("the iforest method needs scikit-learn: pip install scikit-learn") from None
    from tqdm.auto import tqdm

    n = len(index)
    vectors = np.empty((n, index.encoder_spec.dim), np.float32)
    with tqdm(total=n, desc="reading vectors (iforest)", unit="object", disable=not progress) as bar:
        for start in range(0, n, CHUNK):
            rows = range(start, min(start + CHUNK, n))
            vectors[rows.start:rows.stop] = index.vectors_of_rows(rows)
            bar.update(len(rows))
    forest = IsolationForest(**IFOREST).fit(vectors)
    return -forest.score_samples(vectors).astype(np.float64)


def anomaly_scores(index, method: str = "kth", k: int = DEFAULT_K, progress: bool = True,
                   recompute: bool = False) -> pd.DataFrame:
    """Anomaly score of every object of the index, stored with it for next time.

    Parameters
    ----------
    index : ulisse.Index
        An open index.
    method : {"kth", "mean", "iforest"}
        Distance to the k-th neighbour, mean distance to the k nearest, or Isolation Forest.
    k : int
        Neighbours (``1 <= k < len(index)``); not used by ``iforest``.
    progress : bool
        Show a progress bar while computing.
    recompute : bool
        Compute even when fresh scores are stored.

    Returns
    -------
    pandas.DataFrame
        One row per object in row order: ``row``, ``id``, ``score`` (higher = more anomalous).

    Raises
    ------
    QueryError
        ``k`` out of range.
    InputError
        Unknown method, or ``iforest`` without scikit-learn.
    """
    k = _check(index, method, k)
    path = scores_path(index, method, k)
    info = _freshness(index, method, k)
    if not recompute:
        stored = _load_stored(path, info)
        if stored is not None:
            LOG.debug("anomaly scores loaded from %s", path)
            return stored
    scores = _iforest_scores(index, progress) if method == "iforest" else _knn_scores(index, method, k, progress)
    table = pd.DataFrame({"row": index.metadata["row"].to_numpy(np.int64), "id": index.metadata["id"].to_numpy(),
                          "score": scores})
    _store(path, table, {**info, "generation": index.manifest.get("generation"), "ulisse": ulisse.__version__})
    LOG.info("anomaly scores (%s) of %d objects stored in %s", method, len(table), path)
    return table


# -- ranking -----------------------------------------------------------------

def rank_anomalies(index, top: int = 20, method: str = "kth", k: int = DEFAULT_K, label: str | None = None,
                   progress: bool = True, recompute: bool = False) -> AnomalyRanking:
    """The ``top`` most anomalous objects of the index.

    Parameters
    ----------
    index : ulisse.Index
        An open index.
    top : int
        How many objects to return (at most the whole index).
    method, k, progress, recompute
        As in :func:`anomaly_scores`.
    label : str, optional
        A metadata column of classes (``label``, ``is_agn``...). The ranking
        then tells the fraction of each class among the top objects
        (``precision``) beside its fraction in the whole index (``base_rate``):
        a class much richer at the top than overall is what the score finds.

    Returns
    -------
    AnomalyRanking

    Raises
    ------
    QueryError
        ``top`` < 1, ``k`` out of range, or ``label`` is not a metadata column.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ulisse.QueryError(f"top={top}: must be at least 1")
    names = labels_of(index, label) if label is not None else None
    scores = anomaly_scores(index, method=method, k=k, progress=progress, recompute=recompute)
    order = np.argsort(-scores["score"].to_numpy(), kind="stable")[:int(top)]
    meta = index.metadata.iloc[order].reset_index(drop=True)
    table = pd.concat([pd.DataFrame({"rank": np.arange(1, len(order) + 1), "id": meta["id"],
                                     "score": scores["score"].to_numpy()[order]}),
                       meta.drop(columns=["id"])], axis=1)
    ranking = AnomalyRanking(table, method, None if method == "iforest" else int(k), label)
    if names is not None:
        fractions, _ = class_fractions(names.iloc[order].tolist(), names, [len(order)])
        ranking.base_rate = {str(c): float(v) for c, v in fractions["base_rate"].items()}
        ranking.precision = {str(c): float(v) for c, v in fractions[len(order)].items()}
    return ranking


# -- thumbnail grid ----------------------------------------------------------

def anomaly_grid(index, ranking: AnomalyRanking, path: str | os.PathLike, columns: int = 5,
                 title: str | None = None) -> Path:
    """Write a PNG of the ranked objects' cutouts, with rank, id and score under each (atomically)."""
    from ulisse.plot import thumbnail, thumbnail_grid

    panels = [(thumbnail(index, row.id), f"#{row.rank} {row.id}\nscore = {row.score:.3g}", False)
              for row in ranking.table.itertuples(index=False)]
    return thumbnail_grid(panels, path, columns, title)


# -- plugin hooks ------------------------------------------------------------

def _provider_compute(index, method: str, **options) -> np.ndarray:
    return anomaly_scores(index, method=method, **options)["score"].to_numpy(np.float64)


@ulisse.hookimpl
def register_scores():
    """The anomaly scores, as score providers ``anomaly-kth``, ``anomaly-mean`` and ``anomaly-iforest``."""
    return [
        ScoreProvider("anomaly-kth", "distance to the k-th nearest neighbour (higher = more anomalous)",
                      functools.partial(_provider_compute, method="kth"), {"k": DEFAULT_K}),
        ScoreProvider("anomaly-mean", "mean distance to the k nearest neighbours (higher = more anomalous)",
                      functools.partial(_provider_compute, method="mean"), {"k": DEFAULT_K}),
        ScoreProvider("anomaly-iforest", "Isolation Forest on the vectors, -score_samples (needs scikit-learn)",
                      functools.partial(_provider_compute, method="iforest"), {}),
    ]


def _precision_lines(ranking: AnomalyRanking) -> str:
    width = max(len(c) for c in ranking.base_rate)
    lines = [f"{ranking.label}: fraction in the top {len(ranking)} vs the whole index"]
    for c, base in ranking.base_rate.items():
        top = ranking.precision[c]
        lift = f"x{top / base:.2f}" if base else "-"
        lines.append(f"  {c:<{width}}  {top:6.3f}  vs  {base:6.3f}  ({lift})")
    return "\n".join(lines) + "\n"


@ulisse.hookimpl
def register_commands(cli):
    """``ulisse anomalies``: rank the objects of an index by anomaly score."""

    @cli.command()
    @click.argument("index_dir", type=click.Path())
    @click.option("--top", type=int, default=20, show_default=True, help="how many of the most anomalous objects")
    @click.option("-k", "k", type=int, default=DEFAULT_K, show_default=True, help="neighbours for kth and mean")
    @click.option("--method", type=click.Choice(METHODS), default="kth", show_default=True,
                  help="kth: distance to the k-th neighbour; mean: mean distance to k; iforest: Isolation Forest")
    @click.option("--label", default=None, help="metadata column of classes: show each class's fraction at the top vs overall")
    @click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "votable"]), default="table",
                  show_default=True)
    @click.option("--output", type=click.Path(dir_okay=False), help="write the results to a file (.csv, .json, .xml/.vot, .fits, .txt)")
    @click.option("--png", type=click.Path(dir_okay=False), help="write a thumbnail grid of the top objects")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
    @click.option("--recompute", is_flag=True, help="compute the scores even if fresh ones are stored with the index")
    def anomalies(index_dir, top, k, method, label, fmt, output, png, device, recompute):
        """Rank the objects of an index by anomaly score (no prototype needed)."""
        from ulisse.cli import progress_enabled
        from ulisse.results import format_for_path, render, write_atomic

        out_fmt = format_for_path(output) if output else None
        index = ulisse.open_index(index_dir, device=device)
        ranking = rank_anomalies(index, top=top, method=method, k=k, label=label, progress=progress_enabled(),
                                 recompute=recompute)
        meta = {"method": method, "k": ranking.k, "index": str(index.path)}
        extra = {"method": method, "k": ranking.k, "index": str(index.path), "label": label,
                 "precision": ranking.precision, "base_rate": ranking.base_rate}
        text = render(ranking.table, fmt, meta, extra=extra)
        if fmt == "table" and label is not None:
            text += _precision_lines(ranking)
        click.echo(text, nl=False)
        if output:
            data = render(ranking.table, out_fmt, meta, extra=extra)
            if out_fmt == "table" and label is not None:
                data += _precision_lines(ranking)
            write_atomic(output, data)
            LOG.info("wrote %s", output)
        if png:
            k_text = "" if ranking.k is None else f", k={ranking.k}"
            anomaly_grid(index, ranking, png, title=f"{index.path.name}: top {len(ranking)} anomalies ({method}{k_text})")
            LOG.info("wrote %s", png)


@ulisse.hookimpl
def register_ui_pages():
    """The web UI's Anomalies page (``ulisse ui``)."""
    from ulisse.registry import UIPage
    from ulisse.ui import view

    return [UIPage("Anomalies", view("anomalies"), order=30)]
