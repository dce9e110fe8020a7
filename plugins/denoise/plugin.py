"""The denoise plugin's hooks (imports nothing heavy: torch loads only when a denoiser is trained or used)."""

from __future__ import annotations

from pathlib import Path

import ulisse
from ulisse.registry import Preprocessor, UIPage


def _load_step(arg: str):
    from .applying import load_step

    return load_step(arg)


@ulisse.hookimpl
def register_commands(cli):
    """``ulisse denoise train|apply|report``."""
    from .cli import denoise_group

    cli.add_command(denoise_group)


@ulisse.hookimpl
def register_preprocessors(config):
    """The ``denoise`` step: a ulisse denoiser applied to every cutout before embedding."""
    return [Preprocessor("denoise", "a ulisse denoiser (MODEL_DIR, trained on 8-bit cutouts) applied to every cutout",
                         load=_load_step)]


@ulisse.hookimpl
def register_ui_pages(config):
    """The web UI's Denoise page."""

    return [UIPage("Denoise", Path(__file__).with_name("page.py"), order=70)]
