"""Shared fixtures: small synthetic cutouts (PNG and FITS with WCS), catalogues, a tiny encoder.

Everything runs on the CPU and offline. The tiny encoder is timm's
``test_efficientnet`` with seeded random weights (asked for explicitly); tests
that need real ImageNet features use the embedded Lite0 weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait for the hub in tests

# the public helpers and fixtures (survey, tiny_encoder, tiny_index) come from the ulisse.testing pytest plugin
from ulisse.testing import KINDS, blob, cube_to_png, make_survey, tree_digest, write_fits_cutout  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _restore_main_module():
    """streamlit's AppTest leaves its page script as ``__main__``; multiprocessing's spawn (Dask's nannies)
    would then run that page in every new worker. Put the real ``__main__`` back after each test."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


def pytest_collection_modifyitems(config, items):
    import torch

    has_gpu = torch.cuda.is_available()
    remote = os.environ.get("ULISSE_REMOTE_TESTS") == "1"
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "remote_data" in item.keywords and not remote:
            item.add_marker(pytest.mark.skip(reason="needs the internet (set ULISSE_REMOTE_TESTS=1)"))


@pytest.fixture(scope="session")
def lite0_encoder():
    from ulisse import Encoder

    return Encoder.load(weights="lite0", device="cpu", preset="ulisse")  # ULISSE's vectors


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory):
    """The HDF demo index with 60 sources (Lite0 weights), built once per test session."""
    from ulisse.plugins.demo import run_demo

    out = tmp_path_factory.getbasetemp() / "demo-index"
    if not (out / "manifest.json").is_file():
        run_demo(out, max_sources=60, weights="lite0", device="cpu", progress=False)
    return out


@pytest.fixture()
def cli(capsys):
    """Run the ``ulisse`` CLI in-process: returns (exit code, stdout, stderr)."""
    from ulisse.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
