"""Plugin API v2 end to end: an outside distribution, pip-installed, adds an encoder, a preprocessor,
an embedding observer, derived columns, a UI page and a tile action through the entry-point group, touching no
core file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PLUGIN = '''
import json
from pathlib import Path

import numpy as np
import pandas as pd

import ulisse
from ulisse._io import atomic_write
from ulisse.registry import DerivedColumns, EmbeddingObserver, EncoderEntry, Preprocessor, TileAction, UIPage


def load_tiny(device="auto", weights=None, input_size=224, **options):
    return ulisse.Encoder.load("test_efficientnet", weights="random", device=device, input_size=64)


class Invert:
    def __init__(self, arg):
        self.fingerprint = "invert-v1-" + arg

    def __call__(self, images):
        return [255 - np.asarray(im, dtype=np.uint8) for im in images]


class Counter:
    def __init__(self, index):
        self.before = [] if index is None else json.loads((index.derived_dir / "counter.json").read_text())["ids"]
        self.ids, self.maps = [], set()

    def observe(self, batch):
        assert len(batch.ids) == len(batch.maps) == len(batch.vectors)
        self.ids += list(batch.ids)
        self.maps.add(tuple(int(x) for x in batch.maps.shape[1:]))

    def finish(self, index):
        atomic_write(index.derived_dir / "counter.json",
                     json.dumps({"ids": self.before + self.ids, "maps": sorted(self.maps)}))


def norms(index, **options):
    return pd.DataFrame({"vector_norm": np.linalg.norm(np.asarray(index.all_vectors()), axis=1)})


register_encoders = ulisse.hookimpl(lambda config: [EncoderEntry("tinyenc", "test_efficientnet, 64 px", load=load_tiny)])
register_preprocessors = ulisse.hookimpl(lambda config: [Preprocessor("invert", "255 - pixel", load=Invert)])
register_embedding_observers = ulisse.hookimpl(lambda config: [EmbeddingObserver("counter", "ids", create=Counter)])
register_derived_columns = ulisse.hookimpl(lambda config: [DerivedColumns("norms", "vector norms", compute=norms)])
register_ui_pages = ulisse.hookimpl(lambda config: [UIPage("Norms", Path(__file__).with_name("page.py"), order=90,
                                                            url_state={"rows": ("norms.rows", int)},
                                                            persistent_keys=("norms.rows",))])
register_tile_actions = ulisse.hookimpl(lambda config: [TileAction("flag", "F", run=lambda index, object_id: None,
                                                                   help="Flag {id}")])
'''

PAGE = '''
import streamlit as st
import ulisse.ui.kit as kit

kit.page_setup("Norms")
index = kit.current_index()
rows = kit.slider("Rows", 1, len(index), len(index), key="norms.rows")
kit.sync_url()
st.dataframe(index.derived("norms").head(rows))
'''


@pytest.fixture(scope="module")
def extras(tmp_path_factory):
    """The distribution ``ulisse-extras`` installed with pip into its own folder (added to PYTHONPATH)."""
    from ulisse.testing import install_plugin_distribution

    return install_plugin_distribution(tmp_path_factory.mktemp("extras"), "ulisse-extras", "2.0.0", "ulisse_extras",
                                       {"__init__.py": PLUGIN, "page.py": PAGE})


def run(extras, *args, code=None):
    env = dict(os.environ, PYTHONPATH=str(extras), HF_HUB_OFFLINE="1")
    if code is not None:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return subprocess.run([sys.executable, "-m", "ulisse", *map(str, args)], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_an_outside_plugin_adds_encoder_preprocessor_observer_derived_columns_and_a_page(extras, survey, tmp_path):
    listed = run(extras, "plugins", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    mine = next(p for p in json.loads(listed.stdout) if p["name"] == "extras")
    assert mine["distribution"] == "ulisse-extras" and mine["status"] == "loaded"
    assert {"register_encoders", "register_preprocessors", "register_embedding_observers",
            "register_derived_columns", "register_ui_pages", "register_tile_actions"} <= set(mine["hooks"])

    idx = tmp_path / "idx"
    built = run(extras, "-q", "index", "build", survey / "cutouts", "--index", idx, "--catalog", survey / "catalog.csv",
                "--encoder", "tinyenc", "--preprocess", "invert=1", "--device", "cpu")
    assert built.returncode == 0, built.stderr
    encoder = json.loads((idx / "manifest.json").read_text())["encoder"]
    assert encoder["encoder"] == "tinyenc" and encoder["input_size"] == 64
    assert [(p["name"], p["fingerprint"]) for p in encoder["preprocessors"]] == [("invert", "invert-v1-1")]

    # the observer saw every object's feature maps during the one embedding pass, and stored its result
    counted = json.loads((idx / "derived" / "counter.json").read_text())
    assert sorted(counted["ids"]) == sorted(f"obj{i:03d}" for i in range(24)) and len(counted["maps"]) == 1

    # a query by image applies the index's preprocessor: the cutout finds itself at distance ~0
    by_image = run(extras, "query", idx, "--image", survey / "cutouts" / "obj001.png", "-k", "1", "--format", "json")
    assert by_image.returncode == 0, by_image.stderr
    row = json.loads(by_image.stdout)["rows"][0]
    assert row["id"] == "obj001" and row["distance"] < 1e-3

    # derived columns: computed once, then in every result table and usable in --where
    made = run(extras, code=f"import ulisse; print(len(ulisse.open_index({str(idx)!r}, device='cpu').derived('norms')))")
    assert made.returncode == 0 and made.stdout.strip() == "24", made.stderr
    table = run(extras, "query", idx, "--id", "obj003", "-k", "5", "--format", "csv", "--where", "vector_norm > 0")
    assert table.returncode == 0, table.stderr
    assert "vector_norm" in table.stdout.splitlines()[0] and len(table.stdout.splitlines()) == 6

    pages = run(extras, code="from ulisse.registry import tile_actions, ui_pages; "
                             "print([(p.title, p.url_state) for p in ui_pages()], list(tile_actions()))")
    assert pages.returncode == 0 and "('Norms', {'rows': ('norms.rows', <class 'int'>)})" in pages.stdout, pages.stderr
    assert "'flag'" in pages.stdout

    # without the distribution, the index names what it needs
    bare = subprocess.run([sys.executable, "-m", "ulisse", "query", str(idx), "--image",
                           str(survey / "cutouts" / "obj001.png")], capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert bare.returncode == 1 and "tinyenc" in bare.stderr and len(bare.stderr.strip().splitlines()) == 1
