"""The heads' names and storage layout, without torch: the plugin's hooks, its CLI and :mod:`.core` share them.

Example:
    >>> DERIVED_SET, METHODS[0]
    ('heads', 'ensemble')
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DERIVED_SET = "heads"
METHODS = ("ensemble", "mc-dropout", "ridge")
HEADS_DIR = "heads"  # under the index's derived/ folder, one sub-folder per head
CONFIG_FILE, WEIGHTS_FILE = "head.json", "head.safetensors"


def heads_state(index) -> str:
    """Which heads are stored, and which training of each (a head retrained under its name changes it)."""
    folder = Path(index.path) / "derived" / HEADS_DIR
    h = hashlib.sha256()
    for cfg in sorted(folder.glob(f"*/{CONFIG_FILE}")) if folder.is_dir() else []:
        try:
            h.update(cfg.parent.name.encode() + b"\0" + cfg.read_bytes() + b"\0")
        except OSError:
            h.update(cfg.parent.name.encode() + b"\0unreadable\0")
    return h.hexdigest()[:16]
