"""Pointing an index at its denoiser's new folder, when the model has moved.

An index built with ``--denoise MODEL_DIR`` records the model's absolute folder and
fingerprint in its encoder spec; adds, queries by image and ``features rebuild``
load the model from there. :func:`relink` records another folder for it, under the
index's writer lock, as a new manifest generation with a history entry, and only
for a model with the recorded fingerprint: the vectors stay the ones that model
makes.

Example:
    >>> relink("surveys/hdf-clean", "/data/models/denoiser")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ulisse.errors import InputError

STEP = "denoise"


@dataclass(frozen=True)
class Relinked:
    """What :func:`relink` did.

    Attributes:
        index: the index directory.
        before: the folder(s) the index recorded.
        after: the folder it records now (absolute).
        changed: False when it recorded that folder already (nothing written).
    """

    index: Path
    before: tuple[str, ...]
    after: str
    changed: bool


def relink(index_dir: str | os.PathLike, model_dir: str | os.PathLike, *, wait: float = 0.0) -> Relinked:
    """Record ``model_dir`` as the folder of the denoiser the index at ``index_dir`` was built with.

    Raises:
        InputError: no model in ``model_dir``, an index without a denoise step, a model with another
            fingerprint than the recorded one, or a sharded index.
        IndexNotFound, IndexBusy: no index there; another writer holds it after ``wait`` seconds.
    """
    from ulisse.indexes.shards import is_sharded
    from ulisse.indexes.transaction import transaction
    from ulisse.indexes.writes import now

    from .applying import load_step

    index = Path(index_dir)
    if is_sharded(index):
        raise InputError(f"{index}: a sharded index; relinking the denoiser of sharded indexes is not supported")
    step = load_step(str(model_dir))
    with transaction(index, wait) as txn:
        base = txn.base
        encoder = dict(base.encoder)
        steps = [dict(p) for p in encoder.get("preprocessors") or ()]
        ours = [p for p in steps if p.get("name") == STEP]
        if not ours:
            raise InputError(f"{index}: the index has no denoise step (it was built without --denoise)")
        same = [p for p in ours if p.get("fingerprint") == step.fingerprint]
        if not same:
            recorded = ", ".join(str(p.get("fingerprint"))[:12] for p in ours)
            raise InputError(f"{model_dir}: not the denoiser the index was built with (fingerprint "
                             f"{step.fingerprint[:12]}; the index recorded {recorded}): its vectors would not compare")
        before = tuple(str(p.get("arg")) for p in same)
        if all(b == step.arg for b in before):
            return Relinked(index, before, step.arg, False)
        for p in same:
            p["arg"] = step.arg
        encoder["preprocessors"] = steps
        note = {"action": "denoise relink", "from": list(before), "to": step.arg, "time": now()}
        txn.commit(base.replace(encoder=encoder, updated=now(), history=base.history + (note,)))
    return Relinked(index, before, step.arg, True)
