"""``ulisse sample DIR``: the labelled Hubble Deep Field sample the README's tutorial runs on."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ulisse.inputs import read_id_list


@pytest.mark.slow
def test_sample_writes_measured_labels_id_lists_and_noisy_pairs(tmp_path):
    out = tmp_path / "hdf"
    res = subprocess.run([sys.executable, "-m", "ulisse", "sample", str(out), "--max-sources", "60", "--more", "10"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "50 cutouts in cutouts/" in res.stdout and "10 in more/" in res.stdout
    cat, more = pd.read_csv(out / "catalog.csv"), pd.read_csv(out / "more.csv")
    assert len(cat) == 50 and len(more) == 10 and not set(cat["id"]) & set(more["id"])
    for column in ("id", "ra", "dec", "r_half", "colour_index", "log_flux", "morph", "colour"):
        assert column in cat.columns
    # the classes are the documented measurements: extended = the third with the largest r_half (of all 60)
    both = pd.concat([cat, more])
    assert set(both["morph"]) == {"compact", "extended"}
    assert both.loc[both["morph"] == "extended", "r_half"].min() > both.loc[both["morph"] == "compact", "r_half"].max()
    assert abs((both["morph"] == "extended").mean() - 1 / 3) < 0.05
    assert set(both["colour"]) == {"blue", "mid", "red"}
    assert np.allclose(both["log_flux"], np.log10(both["flux"]), atol=1e-3)
    # one cutout per row, the noisy copies under the same names, differing from the clean ones
    assert sorted(p.stem for p in (out / "cutouts").glob("*.png")) == sorted(cat["id"])
    assert sorted(p.stem for p in (out / "more").glob("*.png")) == sorted(more["id"])
    assert sorted(p.name for p in (out / "noisy").glob("*.png")) == sorted(p.name for p in (out / "cutouts").glob("*.png"))
    name = f"{cat['id'].iloc[0]}.png"
    clean, noisy = (np.asarray(Image.open(out / d / name), float) for d in ("cutouts", "noisy"))
    assert clean.shape == noisy.shape == (64, 64, 3) and 5 < np.std(noisy - clean) < 40
    # the id lists name objects of cutouts/ with that class
    labels = cat.set_index("id")["morph"]
    for label in ("extended", "compact"):
        ids = read_id_list(out / f"{label}.txt")
        assert ids and all(labels[i] == label for i in ids)
    assert read_id_list(out / "confirmed.txt") == list(cat.loc[cat["morph"] == "extended", "id"])  # every one
    assert "not astrophysical classes" in (out / "README.txt").read_text()
