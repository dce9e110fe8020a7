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

On the command line: ``ulisse marks DIR`` lists the marks (``--relevant FILE``, ``--not-relevant FILE``,
``--unmark FILE``, ``--clear`` change them; ``--output marks.vot`` exports them) and ``ulisse rank DIR
[--positives FILE] [--negatives FILE] [-k 16]`` ranks by them (the stored marks with the files given).
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
from ulisse.derived import join_objects
from ulisse.checks import id_list, mark_value, whole
from ulisse.errors import InputError, QueryError
from ulisse.indexes.transaction import SIDE_WAIT, transaction
from ulisse.inputs import read_id_list as read_ids  # the core's one id-list reader, under this plugin's old name
from ulisse.options import format_option, output_option
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
    ids, relevant = id_list(ids, "ids"), mark_value(relevant)
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


def _not_one_string(**lists) -> None:
    """Refuse an id list given as one string (it would be read as one id per character)."""
    for name, given in lists.items():
        id_list(given, name)


def gather_marks(index, positives: Iterable[str] = (), negatives: Iterable[str] = (),
                 use_marks: bool | None = None) -> tuple[list[str], list[str], bool]:
    """(positives, negatives, whether the stored marks were used): the given ids and, by default, the stored marks.

    ``use_marks`` None uses the marks stored with the index when there are any. A given id
    overrides its stored mark. ``ulisse rank``, ``ulisse anomalies`` and the web UI read marks through this.

    Raises:
        QueryError: an id given both relevant and not relevant, or not in the index; ``positives`` or
            ``negatives`` given as one string instead of a list of ids.
    """
    _not_one_string(positives=positives, negatives=negatives)
    pos = list(dict.fromkeys(str(i) for i in positives))
    neg = list(dict.fromkeys(str(i) for i in negatives))
    both = set(pos) & set(neg)
    if both:
        raise QueryError(f"marked both relevant and not: {', '.join(sorted(both)[:5])}")
    stored = marks(index) if use_marks is not False else None
    used = stored is not None and len(stored) > 0
    if used:
        given = set(pos) | set(neg)
        rest = stored[~stored["id"].astype(str).isin(given)]
        pos += [str(i) for i in rest.loc[rest["relevant"].astype(bool), "id"]]
        neg += [str(i) for i in rest.loc[~rest["relevant"].astype(bool), "id"]]
    for i in pos + neg:
        index.row_of(i)  # an unknown id is an error
    return pos, neg, used


def marks_text(index) -> str | None:
    """The marks in one line ("10 relevant, 13 not relevant (latest 2026-12-07T14:02:11Z)"); None without any."""
    table = marks(index)
    if not len(table):
        return None
    relevant = int(table["relevant"].astype(bool).sum())
    return (f"{relevant} relevant, {len(table) - relevant} not relevant (latest {table['time'].astype(str).max()}); "
            f"'ulisse marks {index.path.name}' lists them")


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
    _not_one_string(positives=positives, negatives=negatives)
    positives = list(dict.fromkeys(str(i) for i in positives))
    negatives = list(dict.fromkeys(str(i) for i in negatives))
    k = whole(k, "k")
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
    objects = index.object_rows(rows)  # metadata and derived columns, as every result table
    table = pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "id": objects["id"], "score": scores.astype(float)})
    return join_objects(table, objects.drop(columns=["row"], errors="ignore"))


def marks_table(index) -> pd.DataFrame:
    """The marks (:func:`marks`: ``id``, ``relevant``, ``time``) with each object's metadata after them (``ra``,
    ``dec``... : what a cross-match in TOPCAT or Aladin needs); marks of ids no longer in the index are left out."""
    table = marks(index)
    table = table[table["id"].astype(str).isin(set(index.ids))].reset_index(drop=True)
    if not len(table):
        return table
    objects = index.object_rows(np.array([index.row_of(str(i)) for i in table["id"]], np.int64))
    return join_objects(table, objects.drop(columns=["row"], errors="ignore"))


def export_marks(index, fmt: str) -> str | bytes:
    """The marks with the objects' metadata (:func:`marks_table`) in an export format (``csv``, ``votable``,
    ``fits``, ``ecsv``...), with the record every export carries (the index, its encoder, the counts)."""
    from ulisse.record import query_record
    from ulisse.results import export_table, render

    table = marks_table(index)
    relevant = int(table["relevant"].astype(bool).sum()) if len(table) else 0
    extra = {"relevant": relevant, "not_relevant": len(table) - relevant}
    record = query_record(index, "marks", **extra)
    return render(export_table(table, index), fmt, {"index": str(index.path), **extra}, extra=extra, record=record)


def _marks_line(pos: list, neg: list, used: bool) -> str:
    return (f"# {len(pos)} relevant and {len(neg)} not relevant marks"
            + (" (with those stored with the index)" if used else "") + "; marked objects are left out\n")


@ulisse.hookimpl
def register_commands(cli):
    @cli.command("rank")
    @click.argument("index_dir", type=click.Path())
    @click.option("--positives", type=click.Path(dir_okay=False), default=None,
                  help="relevant objects: one id per line, or a CSV with an id column (with the stored marks: "
                       "at least one relevant object in all)")
    @click.option("--negatives", type=click.Path(dir_okay=False), default=None,
                  help="objects not relevant (default: random other objects stand in)")
    @click.option("--marks/--no-marks", "use_marks", default=None,
                  help="use the marks stored with the index (the web UI's Relevant / Not relevant; ulisse marks)  "
                       "[default: when there are any]")
    @click.option("-k", "k", type=int, default=16, show_default=True, help="number of objects to return")
    @format_option()
    @output_option()
    def rank_command(index_dir, positives, negatives, use_marks, k, fmt, output):
        """More like my marks: rank the unmarked objects with a classifier trained on marked ones.

        The marks are the files given and, unless --no-marks, those stored with the index (a file's mark
        wins over a stored one); every marked object is left out of the list.
        """
        from ulisse.record import query_record
        from ulisse.results import check_output, emit

        if k < 1:
            raise QueryError(f"-k {k}: must be at least 1")
        out_fmt = check_output(output) if output else None  # before any work
        pos = read_ids(positives) if positives else []
        neg = read_ids(negatives) if negatives else []
        index = ulisse.open_index(index_dir, device="cpu")
        pos, neg, used = gather_marks(index, pos, neg, use_marks)
        if not pos:
            stored = "" if use_marks is False else " (none is stored with the index)"
            raise QueryError("no relevant object: give --positives FILE, or mark objects Relevant in the web UI "
                             f"or with 'ulisse marks {index_dir} --relevant FILE'{stored}")
        table = rank(index, pos, neg, k)
        extra = {"positives": len(pos), "negatives": len(neg), "marks": used}
        record = query_record(index, "rank", k=k, positives=len(pos), negatives=len(neg), marks=used)
        emit(table, fmt, output=output, out_fmt=out_fmt, meta={"index": str(index.path), **extra}, extra=extra,
             record=record, notes=_marks_line(pos, neg, used))

    @cli.command("marks")
    @click.argument("index_dir", type=click.Path())
    @click.option("--relevant", "relevant", type=click.Path(dir_okay=False), default=None,
                  help="mark these objects relevant (one id per line, or a CSV with an id column)")
    @click.option("--not-relevant", "not_relevant", type=click.Path(dir_okay=False), default=None,
                  help="mark these objects not relevant (same format)")
    @click.option("--unmark", type=click.Path(dir_okay=False), default=None, help="remove the marks of these objects")
    @click.option("--clear", is_flag=True, help="remove every mark")
    @format_option()
    @output_option("the marks")
    def marks_command(index_dir, relevant, not_relevant, unmark, clear, fmt, output):
        """The marks kept with an index (the web UI's Relevant / Not relevant): list, export, add, remove.

        Without options it lists them (id, relevant, time, then the objects' metadata). Changes are written
        under the index's lock (one id file at a time, each all or nothing); the list shown is the one after
        them. `ulisse anomalies`, `ulisse rank` and `ulisse expand --follow-marks` read these marks.
        """
        from ulisse.record import query_record
        from ulisse.results import check_output, emit

        changes = [(f"{o} {f}", f, v) for o, f, v in (("--relevant", relevant, True),
                                                       ("--not-relevant", not_relevant, False),
                                                       ("--unmark", unmark, None)) if f]
        if clear and changes:
            raise InputError("--clear: give it alone (it removes every mark), not with --relevant, --not-relevant "
                             "or --unmark")
        out_fmt = check_output(output) if output else None
        given = [(read_ids(f), v) for _, f, v in changes]  # every file read (and checked) before anything changes
        index = ulisse.open_index(index_dir, device="cpu")
        seen: dict[str, str] = {}
        for (option, _, _), (ids, _) in zip(changes, given):
            for i in ids:
                index.row_of(i)  # an unknown id: an error before anything changes
                if i in seen and seen[i] != option:
                    raise InputError(f"{i}: in both {seen[i]} and {option}")
                seen[i] = option
        if clear:
            clear_marks(index)
        for ids, value in given:
            mark(index, ids, value)
        table = marks_table(index)
        relevant_n = int(table["relevant"].astype(bool).sum()) if len(table) else 0
        extra = {"relevant": relevant_n, "not_relevant": len(table) - relevant_n}
        record = query_record(index, "marks", relevant=relevant_n, not_relevant=len(table) - relevant_n)
        note = f"# {relevant_n} relevant and {len(table) - relevant_n} not relevant marks stored with {index.path.name}\n"
        emit(table, fmt, output=output, out_fmt=out_fmt, meta={"index": str(index.path), **extra}, extra=extra,
             record=record, notes=note)


@ulisse.hookimpl
def describe_index(index):
    """``ulisse index info``'s line on the marks kept with the index."""
    text = marks_text(index)
    return {"marks": text} if text else None


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
