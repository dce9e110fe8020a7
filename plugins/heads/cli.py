"""``ulisse head train|predict|report|list|remove``."""

from __future__ import annotations

import logging

import click

import ulisse
from ulisse.errors import InputError
from ulisse.options import device_option, format_option, output_option

LOG = logging.getLogger(__name__)

PREDICT_FORMATS = ("table", "csv", "json", "votable")


def _open(index_dir):
    return ulisse.open_index(index_dir, device="cpu")


def train_summary(trained, name: str, method: str, target: str) -> str:
    """What ``head train`` says: the objects it trained on, those held out and what each part of them did, those
    left out (no finite target value), and whether the held-out metrics rest on too few objects to trust."""
    from .store import MIN_METRICS

    m = trained.metrics
    v = m["validation"]
    held, scored = m["n_validation"], m.get("n_metrics", m["n_validation"])
    split = (f"{held - scored} to stop the training early, {scored} to calibrate the error bars and give the "
             f"metrics below" if scored < held else
             "all of them stop the training early and give the metrics below" if m.get("early_stopping_scored")
             else "all of them give the metrics below")
    ft = trained.config.get("finetune")
    method = f"{method} fine-tuned ({ft['mode']}, {ft['input_size']} px, augment {ft['augment']})" if ft else method
    left = m.get("n_left_out") or 0
    left = f"{left} objects without a finite {target} left out; " if left else ""
    few = f", too few to trust: {MIN_METRICS} or more wanted" if scored < MIN_METRICS else ""
    return (f"head {name}: {method} on {target}, trained on {m['n_train']} objects; {held} held out ({split}); "
            f"{left}{m['seconds']:.1f} s, {trained.config['nan_events']} non-finite steps\n"
            f"held out ({scored} objects{few}): RMSE {v['rmse']:.4g}, NLL {v['nll']:.4g}, "
            f"coverage 68% {100 * v['coverage_68']:.1f} %, 95% {100 * v['coverage_95']:.1f} %\n"
            f"stored in {trained.path}; columns {name}, {name}_std, {name}_std_aleatoric, {name}_std_epistemic")


def _whole(setting: str) -> click.IntRange:
    """The option type of a whole-number setting: the range the training configs check (:data:`.settings.RULES`)."""
    from .settings import RULES

    rule = RULES[setting]
    return click.IntRange(rule.low, rule.high)


def _check_train_options(method: str, finetune: str, **values) -> None:
    """A one-line error for an option ``head train`` would ignore: ``--input-size``, ``--augment`` and
    ``--train-from`` without ``--finetune`` (``--train-from`` only with ``last``), ``--features`` with it,
    ``--members`` and ``--epochs`` with ridge (no networks), ``--members`` with mc-dropout (one network).
    ``values``: each option's value (given, or its default, as click saw it)."""
    ctx = click.get_current_context()

    def given(option: str) -> bool:
        source = ctx.get_parameter_source(option)
        return values[option] is not None and source is not None and source != click.core.ParameterSource.DEFAULT

    def refuse(option: str, reason: str) -> None:
        raise InputError(f"--{option.replace('_', '-')} {values[option]}: {reason}")

    for option in ("input_size", "augment"):
        if finetune == "none" and given(option):
            refuse(option, "only with --finetune last or all (training on the frozen vectors does not use it)")
    if finetune != "last" and given("train_from"):
        refuse("train_from", "only with --finetune last (the first stage of the encoder it trains; "
                             + ("all trains every stage)" if finetune == "all" else "none trains none)"))
    if finetune != "none" and given("features"):
        refuse("features", "only without --finetune (a fine-tuned head learns from the pixels, not the vectors)")
    for option in ("members", "epochs"):
        if method == "ridge" and given(option):
            refuse(option, "not with --method ridge (ridge regression trains no networks)")
    if method == "mc-dropout" and given("members"):
        refuse("members", "not with --method mc-dropout (one network, its dropout draws)")


def add_head_commands(cli: click.Group) -> None:
    """The ``head`` group."""
    # not from .core: torch loads only when a head is trained or used
    from .common import METHODS
    from .settings import AUGMENTS, FEATURES, FINETUNE_MODES

    @cli.group("head")
    def head():
        """Regression heads on the index's vectors: a catalogue column with honest error bars."""

    @head.command("train")
    @click.argument("index_dir", type=click.Path())
    @click.option("--target", required=True, help="numeric catalogue column to learn (rows where it is present; "
                                                   "not the index's own row, id or source)")
    @click.option("--name", required=True, help="head name: its predictions become the columns NAME, NAME_std, ...")
    @click.option("--method", type=click.Choice(METHODS), default="ensemble", show_default=True,
                  help="deep ensemble of Gaussian networks, one MC-dropout network, or ridge regression (baseline; "
                       "frozen vectors only)")
    @click.option("--members", type=_whole("members"), default=None,
                  help="networks in the ensemble [default: 5 on frozen vectors; fine-tuned: 2 with --finetune all, "
                       "3 with last]")
    @click.option("--train-ids", type=click.Path(dir_okay=False), default=None,
                  help="file of ids to train on: one per line, or a CSV with an id column (default: every object "
                       "with a target value)")
    @click.option("--epochs", type=_whole("epochs"), default=None,
                  help="most epochs per network, the best kept by a validation split [default: 300 on frozen "
                       "vectors; fine-tuned: 24 with --finetune all, 20 with last]")
    @click.option("--seed", type=_whole("seed"), default=0, show_default=True)
    @click.option("--features", type=click.Choice(FEATURES), default="raw", show_default=True,
                  help="the vectors as they are, or their signed square roots (power normalisation)")
    @click.option("--finetune", type=click.Choice(FINETUNE_MODES), default="none", show_default=True,
                  help="none: train on the index's frozen vectors; all: fine-tune the whole encoder on the cutouts "
                       "(the most accurate: about 12 min for 1,000 cutouts on 2 CPU cores); last: only its last "
                       "stages (faster per epoch, less accurate)")
    @click.option("--augment", type=click.Choice(AUGMENTS), default="rot-flip", show_default=True,
                  help="with --finetune: rotations and flips of the cutouts (a target that does not change when "
                       "the sky turns: radius, redshift, mass), or none (an angle, a direction)")
    @click.option("--input-size", type=_whole("input_size"), default=None,
                  help="with --finetune: side the cutouts are resized to [default: 128]")
    @click.option("--train-from", type=_whole("train_from"), default=None,
                  help="with --finetune last: first trained stage of the encoder's blocks [default: 4, of 0-6]")
    @click.option("--overwrite", is_flag=True, help="replace a head of that name (without it: an error, before "
                                                     "any training)")
    @device_option
    def train(index_dir, target, name, method, members, train_ids, epochs, seed, features, finetune, augment,
              input_size, train_from, overwrite, device):
        """Train a head against a catalogue column: on the index's frozen vectors, or fine-tuning its encoder."""
        from ulisse.cli import progress_enabled
        from ulisse.inputs import read_id_list

        from .core import train_head

        _check_train_options(method, finetune, members=members, epochs=epochs, features=features, augment=augment,
                             input_size=input_size, train_from=train_from)
        ids = read_id_list(train_ids) if train_ids else None
        index = _open(index_dir)
        if finetune == "none":
            from .models import TrainConfig

            given = {"max_epochs": epochs} if epochs else {}  # else TrainConfig's default
            config, ft = TrainConfig(seed=seed, features=features, **given), None
        else:
            from .finetune import FinetuneConfig

            given = {"epochs": epochs, "input_size": input_size, "train_from": train_from}
            ft = FinetuneConfig(mode=finetune, augment=augment, seed=seed,
                                **{k: v for k, v in given.items() if v is not None})
            config = None
        trained = train_head(index, target, name, method=method, members=members, train_ids=ids, config=config,
                             device=device, progress=progress_enabled(), finetune=ft, overwrite=overwrite)
        click.echo(train_summary(trained, name, method, target))

    @head.command("predict")
    @click.argument("index_dir", type=click.Path())
    @click.option("--name", required=True, help="the head")
    @click.option("--ids", "ids_file", type=click.Path(dir_okay=False), default=None,
                  help="file of ids to predict: one per line, or a CSV with an id column (default: every object)")
    @format_option(PREDICT_FORMATS)
    @output_option("the predictions")
    def predict(index_dir, name, ids_file, fmt, output):
        """Print a head's predictions: id, NAME, NAME_std, NAME_std_aleatoric, NAME_std_epistemic."""
        from ulisse.inputs import read_id_list
        from ulisse.record import query_record
        from ulisse.results import check_output, emit

        from .core import predict_head

        out_fmt = check_output(output) if output else None  # before any work: a bad path fails at once
        ids = read_id_list(ids_file) if ids_file else None
        index = _open(index_dir)
        table = predict_head(index, name, ids=ids)
        record = query_record(index, "head predict", head=name, objects=len(table))
        emit(table, fmt, output=output, out_fmt=out_fmt, meta={"head": name, "index": str(index.path)},
             record=record)

    @head.command("report")
    @click.argument("index_dir", type=click.Path())
    @click.option("--name", required=True, help="the head")
    @click.option("--truth", required=True, help="catalogue column with the true values")
    @click.option("--ids", "ids_file", type=click.Path(dir_okay=False), default=None,
                  help="file of ids to judge (default: objects with a truth value never used in training; if "
                       "there are none, the held-out ones; never those it trained on; the report says which)")
    @click.option("--out", required=True, type=click.Path(), help="folder for report.json, predictions.csv and PNGs")
    def report(index_dir, name, truth, ids_file, out):
        """RMSE, NLL, 68/95 % coverage, PIT histogram and predicted-vs-true plot of a head."""
        from ulisse.inputs import read_id_list

        from .report import head_report

        ids = read_id_list(ids_file) if ids_file else None
        index = _open(index_dir)
        rep = head_report(index, name, truth, ids=ids, out=out)
        click.echo(rep.text(), nl=False)
        click.echo("wrote " + ", ".join(str(p) for p in rep.files))

    @head.command("list")
    @click.argument("index_dir", type=click.Path())
    @format_option(PREDICT_FORMATS)
    def list_(index_dir, fmt):
        """The heads stored with an index, with their validation metrics."""
        from ulisse.results import render

        from .core import list_heads

        table = list_heads(_open(index_dir))
        if fmt == "table" and table.empty:
            click.echo("no heads (train one with 'ulisse head train')")
            return
        click.echo(render(table, fmt), nl=False)

    @head.command("remove")
    @click.argument("index_dir", type=click.Path())
    @click.option("--name", required=True, help="the head")
    def remove(index_dir, name):
        """Delete a stored head and its derived columns."""
        from .core import remove_head

        remove_head(_open(index_dir), name)
        click.echo(f"removed head {name}")
