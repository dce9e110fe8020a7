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


def _describe_columns(index) -> dict:
    """Each head's columns: the target's unit (from the catalogue) and what they are, for the exports."""
    import json

    from .common import CONFIG_FILE, HEADS_DIR

    notes, units = {}, index.column_notes
    for path in sorted((Path(index.path) / "derived" / HEADS_DIR).glob(f"*/{CONFIG_FILE}")):
        try:
            cfg = json.loads(path.read_text())
            name, target, method = str(cfg["name"]), str(cfg["target"]), str(cfg.get("method", "?"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        unit = units[target].unit if target in units else None
        how = f"head {name} ({method}{', fine-tuned' if cfg.get('finetune') else ''})"
        for suffix, text in (("", f"{target} predicted by {how}"),
                             ("_std", f"1-sigma uncertainty of {name} (aleatoric and epistemic)"),
                             ("_std_aleatoric", f"1-sigma noise of {target} as {how} predicts it"),
                             ("_std_epistemic", f"1-sigma model uncertainty of {name} (spread of the members)")):
            notes[name + suffix] = {"unit": unit, "ucd": "stat.error" if suffix else None, "description": text}
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
