"""Where heads live and what every training method shares: names, storage, ids, targets, splits.

Used by :mod:`.core` (heads on frozen vectors) and :mod:`.finetune` (heads fine-tuned on the pixels);
imports neither, and no torch.

Example:
    >>> columns_of("z")
    ['z', 'z_std', 'z_std_aleatoric', 'z_std_epistemic']
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

import ulisse
from ulisse.errors import InputError
from ulisse.indexes.transaction import SIDE_WAIT, transaction

from .common import CONFIG_FILE, DERIVED_SET, HEADS_DIR, WEIGHTS_FILE

LOG = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a column name that --where can use
SUFFIXES = ("", "_std", "_std_aleatoric", "_std_epistemic")
MIN_ROWS = 8
MIN_METRICS = 10  # held-out objects under which the training's metrics are said to be rough
OWN_COLUMNS = ("row", "id", "source")  # the index's own columns (a catalogue cannot have row or source): no targets

def columns_of(name: str) -> list[str]:
    """The derived columns of head ``name``: ``NAME``, ``NAME_std``, ``NAME_std_aleatoric``, ``NAME_std_epistemic``."""
    return [name + s for s in SUFFIXES]


# -- vectors and ids -----------------------------------------------------------------------

def vectors_of(index, rows: Sequence[int] | None = None) -> np.ndarray:
    """float32 vectors of ``rows`` (all objects when None), through the index's bulk readers."""
    if hasattr(index, "all_vectors"):
        allv = index.all_vectors()
        return np.asarray(allv if rows is None else allv[np.asarray(rows, dtype=np.int64)], np.float32)
    rows = range(len(index)) if rows is None else rows
    return np.asarray(index.vectors_of_rows(list(rows)), np.float32)


def rows_of_ids(index, ids: Iterable[str] | str, what: str) -> np.ndarray:
    """Row numbers of ``ids`` (an unknown id is an error naming ``what``); one string is one id, not its letters."""
    if isinstance(ids, (str, bytes)):
        ids = [ids.decode() if isinstance(ids, bytes) else ids]
    rows, unknown = [], []
    for oid in ids:
        try:
            rows.append(index.row_of(str(oid)))
        except ulisse.QueryError:
            unknown.append(str(oid))
    if unknown:
        raise InputError(f"{what}: id {unknown[0]!r} is not in the index"
                         + (f" ({len(unknown)} unknown ids in all)" if len(unknown) > 1 else ""))
    return np.asarray(rows, dtype=np.int64)


def target_values(index, column: str) -> np.ndarray:
    """The catalogue column ``column`` as float64 (NaN where missing or not finite)."""
    columns = [c for c in index.metadata_columns if c not in OWN_COLUMNS]
    if column in OWN_COLUMNS:
        raise InputError(f"column {column!r}: the index's own {column} column, not a catalogue measurement "
                         f"(columns: {', '.join(columns)})")
    if column not in columns:
        raise InputError(f"column {column!r}: not in the index's catalogue (columns: {', '.join(columns)})")
    raw = index.metadata_column(column)
    values = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64, copy=True)
    if raw.notna().any() and not np.isfinite(values).any():
        raise InputError(f"column {column!r}: not numeric")
    values[~np.isfinite(values)] = np.nan
    return values


# -- storage -------------------------------------------------------------------------------

def heads_dir(index) -> Path:
    """``DIR/derived/heads/``: one folder per head (not created here)."""
    return Path(index.path) / "derived" / HEADS_DIR


def check_name(index, name: str, overwrite: bool = False) -> str:
    """``name`` if a head may be trained under it: a column name, no catalogue column's, no stored head's unless
    ``overwrite`` (checked before any training: a fine-tuned head costs minutes).

    Raises:
        InputError: a name ``--where`` cannot use, one of the catalogue's columns, or a stored head's.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(f"head name {name!r}: use letters, digits and _ (not starting with a digit)")
    clash = [c for c in columns_of(name) if c in index.metadata.columns]
    if clash:
        raise InputError(f"head name {name!r}: column {clash[0]!r} is in the index's catalogue already "
                         f"(choose another name, e.g. {name}_pred)")
    if not overwrite and (heads_dir(index) / name / CONFIG_FILE).is_file():
        raise InputError(f"head {name!r} exists (use --overwrite to replace it)")
    return name


def head_names(index) -> list[str]:
    """Names of the heads stored with ``index``."""
    d = heads_dir(index)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / CONFIG_FILE).is_file())


def save_head(index, head_cfg: dict, tensors: dict, wait: float = SIDE_WAIT, overwrite: bool = True) -> Path:
    """Store a head's weights and config in one transaction of the index (an error leaves the old ones).

    ``overwrite=False``: a head of that name stored meanwhile (by another process, under the index's writer
    lock) is an error, not replaced.
    """
    from safetensors.numpy import save

    weights = save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    head_cfg["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    config = json.dumps(head_cfg, indent=1, default=_json_default) + "\n"
    folder = heads_dir(index) / head_cfg["name"]
    with transaction(index.path, wait) as txn:
        if not overwrite and (folder / CONFIG_FILE).is_file():
            raise InputError(f"head {head_cfg['name']!r} was stored by another process while this one trained "
                             f"(use --overwrite to replace it)")
        txn.stage(folder / WEIGHTS_FILE, weights)
        txn.stage(folder / CONFIG_FILE, config)  # published last: a config names the sha256 of its weights
        txn.commit()
    return folder


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


# -- training rows ----------------------------------------------------------------------

def standardise_target(y: np.ndarray) -> tuple[float, float, str | None]:
    """Centre and scale of the target: median and 1.4826 MAD (robust to outliers), else std, else 1."""
    centre = float(np.median(y))
    scale = 1.4826 * float(np.median(np.abs(y - centre)))
    note = None
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.std(y))
    if not np.isfinite(scale) or scale <= 0:
        scale, note = 1.0, (f"one value ({centre:g}) for all {len(y)} training objects: the head can only learn "
                            "to predict that value")
    return centre, scale, note


def split_rows(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n_val = int(round(n * fraction))
    n_val = min(max(n_val, 2), n - 2)
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class TrainedHead:
    """What :func:`train_head` made: the head's name, folder and stored config (metrics included)."""

    name: str
    path: Path
    config: dict

    @property
    def metrics(self) -> dict:
        return self.config["metrics"]


def training_rows(index, target: str, train_ids: Iterable[str] | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(rows to train on, the target for every row, how many objects were left out): the ``train_ids`` (default:
    every object; one string: that one id) that have a finite value; those that have none are left out, and said.

    Raises:
        InputError: unknown or non-numeric column, unknown id, fewer than ``MIN_ROWS`` rows.
    """
    y_all = target_values(index, target)
    rows = np.arange(len(y_all)) if train_ids is None else np.unique(rows_of_ids(index, train_ids, "training ids"))
    missing = int((~np.isfinite(y_all[rows])).sum())
    if missing:
        LOG.warning("%d of the %d %s have no finite value of %s: left out", missing, len(rows),
                    "objects" if train_ids is None else "training ids", target)
    rows = rows[np.isfinite(y_all[rows])]
    if len(rows) < MIN_ROWS:
        raise InputError(f"column {target!r}: {len(rows)} objects with a value to train on; at least {MIN_ROWS} needed")
    return rows, y_all, missing


def warn_few_metrics(name: str, n_metrics: int, chose_epochs: bool) -> None:
    """A warning when the held-out metrics of head ``name`` rest on fewer than :data:`MIN_METRICS` objects
    (``chose_epochs``: the same objects chose the networks' best epochs, which flatters them)."""
    if n_metrics < MIN_METRICS:
        LOG.warning("head %s: its held-out metrics rest on %d objects only%s: rough numbers (train on more objects "
                    "for %d or more held out)", name, n_metrics,
                    ", which also chose the best epochs" if chose_epochs else "", MIN_METRICS)


# -- the derived columns ------------------------------------------------------------------

def kept_columns(index, name: str) -> pd.DataFrame | None:
    """The stored ``heads`` columns of every head but ``name`` when the stored set is up to date, else None:
    read before head ``name`` is stored or removed, so that the others are kept, not predicted again (a
    fine-tuned head predicts from every cutout)."""
    try:
        if not index.derived_is_fresh(DERIVED_SET):
            return None
        kept = index.derived_kept(DERIVED_SET)
    except (ulisse.UlisseError, OSError, ValueError):
        return None
    if len(kept) != len(index):
        return None
    return kept.drop(columns=[c for c in columns_of(name) if c in kept.columns]).reset_index(drop=True)


def store_columns(index, name: str, kept: pd.DataFrame | None, own=None) -> None:
    """Store the ``heads`` set after head ``name`` was stored or removed: ``kept`` (:func:`kept_columns`, the other
    heads' columns) beside ``own()`` (its columns for every object; None: removed). Every head is predicted again
    when ``kept`` is None or no longer fits the index (objects added meanwhile); a head it lacks (one that could not
    be loaded then) is tried again alone."""
    from ulisse.indexes.lock import IndexBusy
    from ulisse.registry import derived_columns

    if kept is None or len(kept) != len(index):
        index.derived(DERIVED_SET, recompute=True)
        return
    names = head_names(index)
    lacking = [n for n in names if n != name and columns_of(n)[0] not in kept.columns]
    parts = [kept] + ([own().reset_index(drop=True)] if own is not None and name in names else [])
    if lacking:  # the set's own compute (this module imports neither core nor finetune)
        parts.append(derived_columns()[DERIVED_SET].compute(index, names=lacking).reset_index(drop=True))
    table = pd.concat(parts, axis=1)
    table = table[[c for n in names for c in columns_of(n) if c in table.columns]]  # compute_columns' order
    try:
        index.save_derived(DERIVED_SET, table, (index.derived_info(DERIVED_SET) or {}).get("options"))
    except IndexBusy as exc:
        LOG.warning("the heads' columns were not stored (%s): computed again on the next read", exc)
