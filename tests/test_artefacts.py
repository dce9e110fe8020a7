"""Artefact flags: each check on a drawn cutout, clean objects left alone, the derived columns in --where."""

from __future__ import annotations

import numpy as np
import pytest

from ulisse.plugins.anomalies.artefacts import artefact_kind, artefact_stats

SIZE = 64


def sky(seed=0, level=12.0):
    """Dark sky noise, about half the pixels black (as Lupton RGB makes sky-subtracted noise), and a galaxy."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    galaxy = 150 * np.exp(-(x**2 / 50 + y**2 / 20))
    grey = np.clip(rng.normal(0, level, (SIZE, SIZE)) + galaxy, 0, 255)
    return np.repeat(grey[..., None], 3, axis=2)


def rgb(a):
    return np.clip(a, 0, 255).astype(np.uint8)


def with_line(img, angle_deg, width=1.6, level=120.0, offset=8.0, channels=(0, 1, 2)):
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    t = np.radians(angle_deg)
    d = -x * np.sin(t) + y * np.cos(t) - offset
    out = img.copy()
    for c in channels:
        out[..., c] += level * np.exp(-d**2 / (2 * width**2))
    return out


def with_star(img, cy=40, cx=24, radius=4.0, bleed=0, spikes=0.0):
    y, x = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(y - cy, x - cx)
    out = img + (3000 * np.exp(-r**2 / (2 * radius**2)))[..., None]
    if bleed:
        out[max(0, cy - bleed):cy + bleed, cx - 1:cx + 2] = 255
    if spikes:
        arm = spikes * np.maximum(r, 1) ** -0.5
        out += (arm * ((np.abs(y - cy) < 1) | (np.abs(x - cx) < 1)))[..., None]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_clean_galaxies_and_an_edge_on_disc_are_not_flagged(seed):
    assert artefact_kind(rgb(sky(seed))) == ""
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    disc = sky(seed) + (120 * np.exp(-(x**2 / (2 * 9**2) + y**2 / (2 * 1.5**2))))[..., None]
    assert artefact_kind(rgb(disc)) == ""


def test_a_large_galaxy_at_the_edge_and_a_chain_of_aligned_galaxies_are_not_trails():
    """The false trails that real Hubble Deep Field cutouts gave the first checks: a chord through a large
    bright galaxy (its parallel chords are bright too), and aligned galaxies with sky between them."""
    y, x = np.mgrid[:SIZE, :SIZE]
    big = sky(4) + (230 * np.exp(-(((x - 6) ** 2 + (y - 8) ** 2) / (2 * 16.0**2))))[..., None]
    assert artefact_kind(rgb(big)) == ""
    chain = sky(5)
    for cy in (8, 20, 44, 56):  # four thin galaxies along a vertical line, gaps of sky between them
        chain = chain + (200 * np.exp(-((x - 40) ** 2 / (2 * 1.5**2) + (y - cy) ** 2 / (2 * 3.0**2))))[..., None]
    assert artefact_kind(rgb(chain)) == ""
    assert artefact_kind(rgb(with_line(sky(5), 90, offset=-8.5))) == "trail"  # the same line, unbroken


@pytest.mark.parametrize("angle", [0, 17, 45, 90, 133])
def test_a_trail_across_the_cutout_at_any_angle(angle):
    assert artefact_kind(rgb(with_line(sky(1), angle))) == "trail"


def test_a_trail_in_one_band_only():
    assert artefact_kind(rgb(with_line(sky(2), 30, channels=(2,)))) == "trail"


def test_a_trail_bright_enough_to_saturate_its_band_is_named_a_trail():
    """A bright trail clips its band all along the line: saturated pixels, but the kind is the trail (checked before
    saturation; a saturated star is still "saturated")."""
    img = with_line(sky(4), 35, width=2.0, level=600.0, channels=(0,))
    assert int((rgb(img)[..., 0] == 255).sum()) >= 40 and artefact_kind(rgb(img)) == "trail"


def test_a_faint_trail_below_the_threshold_is_left_alone():
    stats = artefact_stats(rgb(with_line(sky(3), 60, level=20)))
    assert stats["trail_sigma"] < 5 and artefact_kind(rgb(with_line(sky(3), 60, level=20))) == ""


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_a_chip_edge_with_no_data(side):
    img = sky(4)
    region = {"left": np.s_[:, :9], "right": np.s_[:, -9:], "top": np.s_[:9, :], "bottom": np.s_[-9:, :]}[side]
    img[region] = 0
    assert artefact_kind(rgb(img)) == "edge"


def test_dead_and_hot_columns_and_a_dead_block():
    img = sky(5)
    img[:, 30] = 0
    assert artefact_kind(rgb(img)) == "bad_column"
    img = sky(5)
    img[:, 20:22] = 255
    assert artefact_kind(rgb(img)) in ("bad_column", "bleed")
    img = sky(5)
    img[40:50, 5:15] = 0
    assert artefact_kind(rgb(img)) == "bad_column"


def test_a_saturated_star_with_a_bleed_column_and_one_with_spikes():
    assert artefact_kind(rgb(with_star(sky(6), bleed=14))) == "bleed"
    assert artefact_kind(rgb(with_star(sky(6), radius=2.0, spikes=200.0))) == "spikes"
    big = with_star(sky(6), radius=6.0)
    assert artefact_kind(rgb(big)) == "saturated"


def test_flags_are_derived_columns_usable_in_where(tiny_index):
    flags = tiny_index.derived("artefacts")
    assert list(flags.columns) == ["artefact", "artefact_kind"] and len(flags) == len(tiny_index)
    assert flags["artefact"].dtype == bool and (flags["artefact"] == (flags["artefact_kind"] != "")).all()
    clean = tiny_index.where_mask("artefact == false")
    assert clean.sum() == (~flags["artefact"]).sum()
    result = tiny_index.query(tiny_index.ids[0], k=5, where="artefact_kind == ''")
    assert (result.table["artefact_kind"] == "").all()


def halo_star(angle_deg=45.0, spikes=True, knots=False):
    """An unsaturated star whose diffraction spikes fade inside its halo (as the Hubble Deep Field's), or without
    them; or, with ``knots``, a ring of four bright knots 90 deg apart around a compact core (no rays)."""
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    r = np.hypot(y, x)
    noise = np.clip(np.random.default_rng(7).normal(0, 12.0, (SIZE, SIZE)), 0, None)
    out = (noise + 170 * np.exp(-r**2 / (2 * 2.5**2)) + 60 * np.exp(-r / 5.0))[..., None].repeat(3, axis=2)
    for k in range(4):
        t = np.radians(angle_deg + 90 * k)
        along = x * np.cos(t) + y * np.sin(t)
        across = -x * np.sin(t) + y * np.cos(t)
        if spikes and not knots:
            out += (70 * np.exp(-across**2 / 2.0) * (along > 0) * np.exp(-along / 8.0))[..., None]
        if knots:
            out += (70 * np.exp(-((along - 12) ** 2 + across**2) / (2 * 1.5**2)))[..., None]
    return rgb(out)


@pytest.mark.parametrize("angle", [0.0, 20.0, 45.0])
def test_the_short_spikes_of_an_unsaturated_star_at_any_angle(angle):
    star = halo_star(angle)
    assert (star == 255).sum() < 40  # neither saturated nor long-spiked: the halo check finds it
    assert artefact_stats(star)["spike_sigma"] < 6 and artefact_stats(star)["halo_spike_sigma"] >= 0.5
    assert artefact_kind(star) == "spikes"
    assert artefact_kind(halo_star(angle, spikes=False)) == ""  # the same star without spikes
    assert artefact_kind(halo_star(angle, knots=True)) == ""  # knots at one radius are not rays
