"""The labelling loop: mark objects relevant or not, and rank the index by what the marks teach.

Marks are kept with the index (``DIR/derived/marks.parquet``: id, relevant, time;
never in the vectors). :func:`rank` trains the relevance model of :mod:`ulisse.relevance`
(a logistic regression on the vectors' signed square roots, standardised over the index),
positives against negatives; while no negative is given, random
unmarked objects stand in as negatives. It returns only objects that are neither
positive nor negative, best first: "more like my marks".

Example:
    >>> from ulisse.plugins.feedback import mark, marks, rank
    >>> mark(index, ["obj001", "obj007"], relevant=True)               # doctest: +SKIP
    >>> mark(index, ["obj003"], relevant=False)                        # doctest: +SKIP
    >>> m = marks(index)                                               # doctest: +SKIP
    >>> r = rank(index, m.id[m.relevant], m.id[~m.relevant], k=16)    # doctest: +SKIP
    >>> r[["rank", "id", "score"]]                                     # doctest: +SKIP

On the command line: ``ulisse rank DIR --positives FILE [--negatives FILE] [-k 16]``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

import click
import numpy as np
import pandas as pd

import ulisse
from ulisse._io import read_parquet
from ulisse.errors import InputError, QueryError
from ulisse.indexes.transaction import SIDE_WAIT, transaction
from ulisse.inputs import read_id_list as read_ids  # the core's one id-list reader, under this plugin's old name
from ulisse.options import format_option
from ulisse.relevance import C, RANDOM_NEGATIVES, relevance_scores  # noqa: F401  (re-exported: the model's settings)

MARKS_FILE = "marks.parquet"


def marks_path(index) -> Path:
    return index.derived_dir / MARKS_FILE


def marks(index) -> pd.DataFrame:
    """The marks kept with ``index``: columns ``id``, ``relevant`` (bool), ``time`` (UTC, ISO 8601); latest per id."""
    path = marks_path(index)
    if not path.is_file():
        return pd.DataFrame({"id": pd.Series(dtype=object), "relevant": pd.Series(dtype=bool),
                             "time": pd.Series(dtype=object)})
    table = read_parquet(path)  # one open file: a mark committed meanwhile does not tear the read
    return table.drop_duplicates("id", keep="last").reset_index(drop=True)


def mark(index, ids: Iterable[str], relevant: bool | None) -> pd.DataFrame:
    """Mark objects relevant (True) or not (False), or remove their marks (None); returns all marks.

    Raises:
        QueryError: an id that is not in the index (nothing is written then).
    """
    ids = [str(i) for i in ids]
    for i in ids:
        index.row_of(i)  # unknown id: an error before anything changes
    with transaction(index.path, SIDE_WAIT) as txn:  # read and written under the index's lock: no mark is lost
        table = marks(index)
        table = table[~table["id"].isin(ids)]
        if relevant is not None:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            new = pd.DataFrame({"id": ids, "relevant": [bool(relevant)] * len(ids), "time": [now] * len(ids)})
            table = pd.concat([table, new], ignore_index=True) if len(table) else new
        table = table.reset_index(drop=True)
        txn.stage(marks_path(index), lambda p: table.to_parquet(p, index=False))
        txn.commit()
    return table


def unmark(index, object_id: str) -> pd.DataFrame:
    """Remove the mark of one object (under the index's transaction, as :func:`mark`); returns all marks."""
    return mark(index, [object_id], None)


def mark_badges(index, relevant: bool) -> dict[str, str]:
    """Object id -> "Relevant" (or "Not relevant") for the objects marked so: the badges of their tiles."""
    table = marks(index)
    text = "Relevant" if relevant else "Not relevant"
    return {str(i): text for i in table.loc[table["relevant"] == relevant, "id"]}


def clear_marks(index) -> None:
    """Remove every mark of ``index``."""
    with transaction(index.path, SIDE_WAIT) as txn:
        txn.remove(marks_path(index))
        txn.commit()


def _all_vectors(index) -> np.ndarray:
    if hasattr(index, "all_vectors"):
        return np.asarray(index.all_vectors(), dtype=np.float32)
    return index.vectors_of_rows(range(len(index)))


def rank(index, positives: Iterable[str], negatives: Iterable[str] = (), k: int = 16, *, seed: int = 0,
         vectors: np.ndarray | None = None) -> pd.DataFrame:
    """The ``k`` objects most like the positives, among objects neither positive nor negative.

    :func:`ulisse.relevance.relevance_scores`: a logistic regression on the vectors' signed square
    roots standardised over the index, positives (marked relevant,
    and the prototypes) against negatives (marked not relevant); with no negative,
    ``RANDOM_NEGATIVES`` random other objects stand in as negatives.

    Args:
        index: an open index.
        positives: ids of relevant objects (at least one).
        negatives: ids of objects marked not relevant.
        k: how many objects to return.
        seed: the seed of the random stand-in negatives.
        vectors: the index's vectors (row order), if already in memory.

    Returns:
        A table: ``rank``, ``id``, ``score`` (the classifier's probability of relevant), then the metadata.

    Raises:
        QueryError: no positive, an unknown id, an id both positive and negative, k < 1.
    """
    positives = list(dict.fromkeys(str(i) for i in positives))
    negatives = list(dict.fromkeys(str(i) for i in negatives))
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise QueryError(f"k={k}: must be at least 1")
    if not positives:
        raise QueryError("give at least one relevant object (a positive)")
    both = set(positives) & set(negatives)
    if both:
        raise QueryError(f"marked both relevant and not: {', '.join(sorted(both)[:5])}")
    pos_rows = np.array([index.row_of(i) for i in positives], dtype=np.int64)
    neg_rows = np.array([index.row_of(i) for i in negatives], dtype=np.int64)
    n = len(index)
    X = _all_vectors(index) if vectors is None else vectors
    marked = np.zeros(n, bool)
    marked[pos_rows] = True
    marked[neg_rows] = True
    free = np.flatnonzero(~marked)
    if free.size == 0:
        return _table(index, np.array([], np.int64), np.array([]))
    scores = relevance_scores(X, pos_rows, neg_rows, seed=seed)[free]
    order = np.argsort(-scores, kind="stable")[: int(k)]
    return _table(index, free[order], scores[order])


def _table(index, rows: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    meta = index.metadata_rows(rows)
    table = pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "id": meta["id"], "score": scores.astype(float)})
    return pd.concat([table, meta.drop(columns=["id", "row"], errors="ignore")], axis=1)


def export_marks(index, fmt: str) -> str:
    """The marks as CSV or VOTable text."""
    from ulisse.results import render

    return render(marks(index), fmt, {"index": str(index.path)})


@ulisse.hookimpl
def register_commands(cli):
    @cli.command("rank")
    @click.argument("index_dir", type=click.Path())
    @click.option("--positives", required=True, type=click.Path(dir_okay=False),
                  help="relevant objects: one id per line, or a CSV with an id column")
    @click.option("--negatives", type=click.Path(dir_okay=False), default=None,
                  help="objects not relevant (default: random other objects stand in)")
    @click.option("-k", "k", type=int, default=16, show_default=True, help="number of objects to return")
    @format_option(("table", "csv", "json", "votable"))
    def rank_command(index_dir, positives, negatives, k, fmt):
        """More like my marks: rank the unmarked objects with a classifier trained on marked ones."""
        from ulisse.results import render

        if k < 1:
            raise QueryError(f"-k {k}: must be at least 1")
        pos = read_ids(positives)
        neg = read_ids(negatives) if negatives else []
        index = ulisse.open_index(index_dir, device="cpu")
        table = rank(index, pos, neg, k)
        extra = {"positives": len(pos), "negatives": len(neg)}
        from ulisse.record import query_record

        record = query_record(index, "rank", k=k, positives=len(pos), negatives=len(neg))
        click.echo(render(table, fmt, {"index": str(index.path), **extra}, extra=extra, record=record, stream=True),
                   nl=False)


@ulisse.hookimpl
def register_ui_pages(config):
    """The web UI's Marks page: the marks kept with the index, "more like my marks", exports."""
    from ulisse.registry import UIPage

    return [UIPage("Marks", Path(__file__).with_name("page.py"), order=25)]


@ulisse.hookimpl
def register_tile_actions(config):
    """"Relevant" / "Not relevant" under the web UI's result tiles: mark the object (kept with the index).

    A marked tile shows its mark as a badge and an "Unmark" button that removes that one mark.
    """
    from ulisse.registry import TileAction

    return [TileAction("yes", "Relevant", run=lambda index, object_id: mark(index, [object_id], True),
                       help="Mark {id} relevant", badge=lambda index: mark_badges(index, True), undo=unmark,
                       undo_label="Unmark"),
            TileAction("no", "Not relevant", run=lambda index, object_id: mark(index, [object_id], False),
                       help="Mark {id} not relevant", badge=lambda index: mark_badges(index, False), undo=unmark,
                       undo_label="Unmark")]
