"""The heads plugin's hooks (imports nothing heavy: torch loads only when a head is trained or used)."""

from __future__ import annotations

from pathlib import Path

import ulisse

from .common import DERIVED_SET, heads_state


def _compute_columns(index, **options):
    # the set's compute function loads .core (and torch) only when the columns are computed
    from .core import compute_columns

    return compute_columns(index, **options)


def _update_columns(index, kept, rows, **options):
    from .core import update_columns

    return update_columns(index, kept, rows, **options)


DESCRIPTION_MAX = 60  # astropy's VOTable writer wraps a FIELD's DESCRIPTION longer than 65 characters (a newline in it)


def _short(*texts: str) -> str:
    """The first of ``texts`` that fits :data:`DESCRIPTION_MAX` (the last, name-free one, if none does)."""
    return next((t for t in texts if len(t) <= DESCRIPTION_MAX), texts[-1])


def column_descriptions(name: str, target: str, method: str, finetune: str | None = None) -> dict:
    """Head ``name``'s four columns and what each is, each in :data:`DESCRIPTION_MAX` characters or fewer."""
    how = f"{method}, fine-tuned {finetune}" if finetune else method
    spread = {"ensemble": "spread of its members", "mc-dropout": "spread of dropout draws"}.get(method)
    epistemic = (_short(f"1-sigma model uncertainty of {name} ({spread})", f"1-sigma model uncertainty of {name}",
                        "1-sigma model uncertainty of a head's prediction") if spread else
                 _short(f"0: {method} head {name} has no model uncertainty", "0: this head has no model uncertainty"))
    return {name: _short(f"{target} predicted by head {name} ({how})", f"{target} predicted by head {name}",
                         f"{target} predicted by a head", "a regression head's prediction"),
            name + "_std": _short(f"1-sigma uncertainty of {name} (noise and model)", f"1-sigma uncertainty of {name}",
                                  "1-sigma uncertainty of a head's prediction"),
            name + "_std_aleatoric": _short(f"1-sigma noise of {target} as {name} predicts it",
                                            f"1-sigma noise part of {name}'s uncertainty",
                                            "1-sigma noise part of a head's uncertainty"),
            name + "_std_epistemic": epistemic}


def _describe_columns(index) -> dict:
    """Each head's columns: the target's unit (from the catalogue) and what they are, for the exports."""
    import json

    from .common import CONFIG_FILE, HEADS_DIR

    notes, units = {}, index.column_notes
    for path in sorted((Path(index.path) / "derived" / HEADS_DIR).glob(f"*/{CONFIG_FILE}")):
        try:
            cfg = json.loads(path.read_text())
            name, target, method = str(cfg["name"]), str(cfg["target"]), str(cfg.get("method", "?"))
            ft = cfg.get("finetune")
            mode = str(ft.get("mode")) if isinstance(ft, dict) else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        unit = units[target].unit if target in units else None
        for column, text in column_descriptions(name, target, method, mode).items():
            notes[column] = {"unit": unit, "ucd": "stat.error" if column != name else None, "description": text}
    return notes


@ulisse.hookimpl
def register_derived_columns(config):
    """The ``heads`` set: every trained head's prediction and error bars for every object."""
    from ulisse.registry import DerivedColumns

    return [DerivedColumns(DERIVED_SET, "predictions of the regression heads (NAME, NAME_std, "
                                        "NAME_std_aleatoric, NAME_std_epistemic)", compute=_compute_columns,
                           state=heads_state, update=_update_columns, describe=_describe_columns)]


@ulisse.hookimpl(trylast=True)
def register_commands(cli):
    """``ulisse head train|predict|report|list|remove``."""
    from .cli import add_head_commands

    add_head_commands(cli)


@ulisse.hookimpl
def register_ui_pages(config):
    """The web UI's Heads page, its own page.py."""
    from ulisse.registry import UIPage

    return [UIPage("Heads", Path(__file__).with_name("page.py"), order=60)]
