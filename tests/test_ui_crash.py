"""The UI server's segfaults: astropy's C TABLEDATA writer wrote one byte past its buffer for rows of exactly
256, 512, ... bytes (heap corruption, found later by the garbage collector). ulisse writes VOTables as BINARY2.

The reproduction and the upstream report are in benchmarks/ui-soak.md.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import io, sys
import pandas as pd
from astropy.io.votable import from_table, parse_single_table
from astropy.table import Table
from ulisse.results import render

def tabledata_row_bytes(table):
    # the length of the first <TR>...</TR> block astropy's (pure Python) TABLEDATA writer makes
    buf = io.BytesIO()
    from_table(Table.from_pandas(table)).to_xml(buf, _debug_python_based_parser=True)
    text = buf.getvalue().decode()
    start = text.rindex("\n", 0, text.index("<TR>")) + 1
    return text.index("</TR>") + len("</TR>\n") - start

target = int(sys.argv[1])
for n in range(1, 2000):
    table = pd.DataFrame({"rank": [1, 2], "id": ["x" * n, "y" * n], "distance": [0.5, 1.5],
                          "source": ["/data/cutouts/a.png", "/data/cutouts/b.png"]})
    if tabledata_row_bytes(table) == target:
        break
else:
    raise SystemExit("no string length makes a row of %d bytes" % target)
text = render(table, "votable", {"k": 2})
back = parse_single_table(io.BytesIO(text.encode())).to_table()
assert list(back["id"]) == list(table["id"]) and list(back["distance"]) == [0.5, 1.5]
print("ok", n, target)
"""


@pytest.mark.slow
@pytest.mark.parametrize("row_bytes", [256, 512, 1024])
def test_votable_export_survives_rows_of_exactly_the_writer_buffer_size(row_bytes):
    env = {**os.environ, "PYTHONMALLOC": "debug", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(row_bytes)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # with TABLEDATA: "bad trailing pad byte", abort (134)
    assert proc.stdout.split()[0] == "ok" and proc.stdout.split()[2] == str(row_bytes)
