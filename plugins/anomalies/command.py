"""``ulisse anomalies``: the command line of the anomalies plugin (registered by its ``register_commands``).

Without marks it is the plain anomaly list; with ``--positives`` / ``--negatives`` files
or the marks stored with the index (``--marks``, used by default when there are any) it
re-ranks by anomaly and relevance (:func:`ulisse.plugins.anomalies.feedback.discover`) and
shows only unmarked objects. Artefacts are hidden by default (``--artefacts show`` keeps
them); the output's record says which marks and filter were used.

Example::

    ulisse anomalies DIR --top 20
    ulisse anomalies DIR --positives liked.txt --negatives disliked.txt --artefacts show
"""

from __future__ import annotations

import logging

import click

import ulisse

LOG = logging.getLogger(__name__)


def _precision_lines(ranking) -> str:
    from ulisse.labels import fractions_text

    return fractions_text(ranking.fractions, ranking.label, ranking.used, heading="class fractions at the top",
                          excluded=None)  # no prototypes here: the base rate is over the whole index


def _feedback_line(ranking) -> str:
    from ulisse.plugins.anomalies.feedback import check_text

    f = ranking.feedback or {}
    marks = (f"{f['positives']} relevant and {f['negatives']} not relevant marks"
             + (" (with those stored with the index)" if f.get("marks") else "") + f", combined by {f['combine']}"
             + (", relevance from the vectors and the morphology" if f.get("morphology") else "")
             if f.get("combine") else "no marks")
    shown = {"hide": "artefacts hidden", "show": "artefacts shown", "only": "artefacts only"}[f.get("artefacts", "show")]
    checked = check_text(f.get("check"))
    if not checked and f.get("combine") and f.get("positives", 0) < 2:
        checked = "whether the marks teach is checked from two relevant marks on (one mark cannot be left out)"
    what = "clean objects" if f.get("artefacts") == "only" else "artefacts"
    left = (f"{f.get('marked_left_out', 0)} marked"
            + (f", {f.get('where_left_out', 0)} not matching --where" if f.get("where") else "")
            + f" and {f.get('left_out', 0)} {what} left out")
    return f"# {marks}; {shown} ({left})\n" + (f"# {checked}\n" if checked else "")


def add_anomalies_command(cli) -> None:
    """Add ``ulisse anomalies`` to the ``cli`` group."""
    from ulisse.options import RegisteredChoice, device_option, format_option, output_option, where_option
    from ulisse.plugins.anomalies import DEFAULT_K, anomaly_grid
    from ulisse.plugins.anomalies.feedback import ARTEFACT_MODES, COMBINE, DEFAULT_COMBINE
    from ulisse.registry import anomaly_methods

    @cli.command()
    @click.argument("index_dir", type=click.Path())
    @click.option("--top", type=int, default=20, show_default=True, help="how many of the most anomalous objects")
    @click.option("-k", "k", type=int, default=DEFAULT_K, show_default=True, help="neighbours for kth and mean")
    @click.option("--method", type=RegisteredChoice(lambda: list(anomaly_methods())), default=None,
                  help="kth: distance to the k-th neighbour (the default); mean: mean distance to k; iforest: "
                  "Isolation Forest; morphology: unusual statmorph statistics; kth+morphology: mean percentile "
                  "of kth and morphology; or a plugin's (ulisse plugins lists them)")
    @click.option("--positives", type=click.Path(dir_okay=False), default=None,
                  help="objects marked relevant: one id per line, or a CSV with an id column; objects like them rise")
    @click.option("--negatives", type=click.Path(dir_okay=False), default=None,
                  help="objects marked not relevant (same format); objects like them sink")
    @click.option("--marks/--no-marks", "use_marks", default=None,
                  help="use the marks stored with the index (the web UI's Relevant / Not relevant)  "
                       "[default: when there are any]")
    @click.option("--combine", type=click.Choice(COMBINE), default=DEFAULT_COMBINE, show_default=True,
                  help="how the anomaly percentile and the relevance learned from the marks combine")
    @click.option("--artefacts", type=click.Choice(ARTEFACT_MODES), default="hide", show_default=True,
                  help="objects whose cutouts show an artefact (satellite trail, bleed column, diffraction spikes, "
                       "chip edge, bad column, saturation): hide them, show them, or show only them")
    @click.option("--morphology/--no-morphology", "morphology", default=None,
                  help="learn from the marks with statmorph's statistics of the cutouts too (ulisse morphology)  "
                       "[default: when stored, or measured now for an index of at most 3000 objects]")
    @click.option("--label", default=None, help="metadata column of classes: show each class's fraction at the top vs overall")
    @where_option
    @format_option()
    @output_option()
    @click.option("--png", type=click.Path(dir_okay=False), help="write a thumbnail grid of the top objects")
    @device_option
    @click.option("--recompute", is_flag=True, help="compute the scores even if fresh ones are stored with the index")
    def anomalies(index_dir, top, k, method, positives, negatives, use_marks, combine, artefacts, morphology, label,
                  where, fmt, output, png, device, recompute):
        """Rank the objects of an index by anomaly score (no prototype needed), re-ranked by marks when given."""
        from ulisse.cli import progress_enabled
        from ulisse.inputs import read_id_list
        from ulisse.plugins.anomalies.feedback import discover
        from ulisse.record import query_record
        from ulisse.results import check_output, check_writable, emit

        out_fmt = check_output(output) if output else None  # before any work: a bad path fails at once
        if png:
            check_writable(png, "--png", (".png",))
        if where is not None:
            from ulisse.filters import parse_where

            parse_where(where)  # a malformed filter fails before any work
        pos = read_id_list(positives) if positives else []
        neg = read_id_list(negatives) if negatives else []
        index = ulisse.open_index(index_dir, device=device)
        ranking = discover(index, top=top, method=method, k=k, positives=pos, negatives=neg, use_marks=use_marks,
                           artefacts=artefacts, combine=combine, label=label, progress=progress_enabled(),
                           recompute=recompute, morphology=morphology, where=where)
        method = ranking.method  # the one used (the default resolved)
        f = ranking.feedback
        meta = {"method": method, "k": ranking.k, "index": str(index.path)}
        extra = {"method": method, "k": ranking.k, "index": str(index.path), "label": label,
                 "precision": ranking.precision, "base_rate": ranking.base_rate, "feedback": f}
        table = ranking.table.drop(columns=["row"], errors="ignore")  # the same columns as a query's output
        record = query_record(index, "anomalies", method=method, k=ranking.k, top=top, label=label,
                              marks=f["marks"], positives=f["positives"], negatives=f["negatives"],
                              combine=f["combine"], artefacts=artefacts, morphology=f["morphology"], where=where)
        emit(table, fmt, output=output, out_fmt=out_fmt, meta=meta, extra=extra, record=record,
             notes=_feedback_line(ranking) + (_precision_lines(ranking) if label is not None else ""))
        if png:
            k_text = "" if ranking.k is None else f", k={ranking.k}"
            marked = (f"; re-ranked by {f['positives']} relevant and {f['negatives']} not relevant marks ({f['combine']})"
                      if f.get("combine") else "")
            anomaly_grid(index, ranking, png,
                         title=f"{index.path.name}: top {len(ranking)} anomalies ({method}{k_text}){marked}")
