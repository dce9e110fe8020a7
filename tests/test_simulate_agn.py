"""Tests for the simulated SDSS-like AGN benchmark (``ulisse_bench.sim.agn``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from PIL import Image

from ulisse_bench.sim import agn as sim

N = 60
SEED = 7


@pytest.fixture(scope="module")
def sim_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim_a")
    return out, sim.simulate_agn_set(out, n=N, seed=SEED, progress=False)


def test_files_and_labels(sim_set):
    out, table = sim_set
    labels = pd.read_csv(out / "labels.csv")
    assert list(labels.columns) == sim.LABEL_COLUMNS
    assert len(labels) == N and labels["id"].is_unique
    assert labels["id"].iloc[0] == "sim-000001" and labels["id"].iloc[-1] == f"sim-{N:06d}"
    assert set(labels["label"]) <= {"AGN", "galaxy"}
    assert ((labels["label"] == "AGN") == (labels["is_agn"] == 1)).all()
    assert (labels.loc[labels["is_agn"] == 0, "agn_contrast"] == 0).all()
    assert (labels.loc[labels["is_agn"] == 1, "agn_contrast"].between(0.05, 1.0)).all()
    assert labels["r_mag"].between(15.5, 18.5).all()
    assert labels["psf_fwhm"].between(1.1, 1.7).all()
    assert labels["bulge_fraction"].between(0, 1).all()
    # 12% of 60 is 7.2 (binomial sd ~2.5): anything in 1..18 is sensible, 0 or most is not
    assert 1 <= labels["is_agn"].sum() <= 18
    for oid in labels["id"]:
        with Image.open(out / "cutouts" / f"{oid}.png") as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (64, 64)
    assert not list((out / "cutouts").glob("*.tmp")) and not (out / "cutouts_fits").exists()
    pd.testing.assert_frame_equal(labels, table.reset_index(drop=True), check_dtype=False)


def test_images_are_sensible(sim_set):
    out, table = sim_set
    for oid in table["id"][:20]:
        rgb = np.asarray(Image.open(out / "cutouts" / f"{oid}.png"))
        centre, corner = rgb[28:36, 28:36].mean(), rgb[:8, :8].mean()
        assert centre > corner + 40, oid  # the galaxy stands out from the sky
        assert corner < 60, oid  # sky is dark, not washed out
        assert (rgb == 255).all(axis=2).mean() < 0.02, oid  # no saturated white blob


def test_deterministic(sim_set, tmp_path):
    out, table = sim_set
    again = sim.simulate_agn_set(tmp_path / "b", n=N, seed=SEED, progress=False)
    pd.testing.assert_frame_equal(table, again)
    for oid in (table["id"].iloc[0], table.loc[table["is_agn"] == 1, "id"].iloc[0]):
        assert (out / "cutouts" / f"{oid}.png").read_bytes() == (tmp_path / "b" / "cutouts" / f"{oid}.png").read_bytes()
    other = sim.simulate_agn_set(tmp_path / "c", n=5, seed=SEED + 1, progress=False)
    assert not np.allclose(other["r_mag"], table["r_mag"][:5])


def test_fits_cube_units(tmp_path):
    table = sim.simulate_agn_set(tmp_path, n=3, seed=3, write_fits=True, progress=False)
    for row in table.itertuples():
        cube = fits.getdata(tmp_path / "cutouts_fits" / f"{row.id}.fits")
        assert cube.shape == (3, 64, 64)
        mag = 22.5 - 2.5 * np.log10(cube[1].sum())
        # flux in the cutout: host (minus wings outside 25") plus AGN (up to 0.75 mag brighter)
        assert row.r_mag - 0.8 < mag < row.r_mag + 0.6


def test_the_product_reads_a_simulated_fits_cube_as_its_png(tmp_path):
    """Under the simulator's colour settings, ulisse reads each FITS cube (first row at the bottom) as the very
    picture of its north-up PNG."""
    from ulisse.cutouts import RGBConfig, read_cutout

    table = sim.simulate_agn_set(tmp_path, n=3, seed=4, write_fits=True, progress=False)
    rgb = RGBConfig(q=sim.LUPTON_Q, stretch=sim.LUPTON_STRETCH, scales=tuple(sim.RGB_SCALES[b] for b in "irg"))
    for oid in table["id"]:
        png = read_cutout(tmp_path / "cutouts" / f"{oid}.png").image
        np.testing.assert_array_equal(read_cutout(tmp_path / "cutouts_fits" / f"{oid}.fits", rgb).image, png)


def test_noise_and_colours():
    cube, p = sim.simulate_cutout(np.random.default_rng(11), is_agn=False)
    assert cube.dtype == np.float32 and cube.shape == (3, 64, 64)
    assert p["is_agn"] is False and p["agn_contrast"] == 0
    edge_std = [np.std(np.concatenate([c[:4].ravel(), c[-4:].ravel()])) for c in cube]
    assert np.allclose(edge_std, sim.SKY_SIGMA, rtol=0.35)
    # bulges are redder than disks, AGN bluer than hosts
    assert sim.BULGE_COLOURS[0][0] > sim.DISK_COLOURS[0][1]
    agn = (sim.EFF_WAVELENGTH[1] / sim.EFF_WAVELENGTH) ** np.mean(sim.AGN_ALPHA_RANGE)
    assert -2.5 * np.log10(agn[0]) < sim.DISK_COLOURS[0][0]


def test_agn_rate_rises_with_bulge_fraction():
    rng = np.random.default_rng(0)
    objs = [sim.draw_object(rng) for _ in range(6000)]
    bt = np.array([o.bulge_fraction for o in objs])
    agn = np.array([o.is_agn for o in objs])
    assert 0.10 < agn.mean() < 0.14
    assert agn[bt > 0.5].mean() > 2 * agn[bt < 0.5].mean()


def test_agn_light_is_more_concentrated():
    def central_fraction(is_agn: bool, seed: int) -> tuple[float, float]:
        cube, p = sim.simulate_cutout(np.random.default_rng(seed), is_agn=is_agn)
        r = cube[1].astype(np.float64)
        # GalSim centres the object on the true centre of the even-sized image (between
        # pixels 31 and 32), so the central box symmetric about it is [30:34].
        return r[30:34, 30:34].sum() / r.sum(), p["bulge_fraction"]

    seeds = range(100, 130)
    with_agn = [central_fraction(True, s) for s in seeds]
    without = [central_fraction(False, s) for s in seeds]
    # same seeds: same host, so same bulge fraction
    assert [b for _, b in with_agn] == [b for _, b in without]
    c_agn, c_gal = np.array([c for c, _ in with_agn]), np.array([c for c, _ in without])
    assert c_agn.mean() > c_gal.mean() + 0.02
    assert (c_agn > c_gal).mean() >= 0.9


# --------------------------------------------------------------------------- morphology set

def test_morphology_classes_share_the_host():
    from ulisse_bench.sim import morphology as morph

    gals = {c: morph.draw_galaxy(np.random.default_rng([3, 9]), label=c) for c in morph.CLASSES}
    hosts = [{k: v for k, v in vars(g).items() if k in ("r_mag", "disk_hlr", "inclination_deg", "psf_fwhm")}
             for g in gals.values()]
    assert hosts[0] == hosts[1] == hosts[2]
    assert gals["smooth"].arm_count == 0 and gals["smooth"].stream_flux == 0
    assert gals["spiral"].arm_count in (2, 3) and gals["tidal"].stream_flux > 0
    with pytest.raises(ValueError, match="label"):
        morph.draw_galaxy(np.random.default_rng(0), label="elliptical")


def test_morphology_images_show_their_structure():
    from ulisse_bench.sim import morphology as morph

    from dataclasses import replace

    g = {c: replace(morph.draw_galaxy(np.random.default_rng([4, 2]), label=c), inclination_deg=0.0, dx=0.0, dy=0.0)
         for c in morph.CLASSES}  # face-on and centred: the smooth disc is round
    size, scale = 96, 0.132
    smooth, spiral = morph.disc_image(g["smooth"], size, scale), morph.disc_image(g["spiral"], size, scale)
    assert smooth.sum() == pytest.approx(1) and spiral.sum() == pytest.approx(1)
    # arms: far more azimuthal structure than the smooth disc at the same radii
    c = (np.arange(size) - (size - 1) / 2) * scale
    r = np.hypot(*np.meshgrid(c, c))
    ring = (r > g["spiral"].disk_hlr * 0.6) & (r < g["spiral"].disk_hlr * 1.2)
    arms = spiral[ring] / smooth[ring]  # the arms' modulation of the same disc
    assert arms.std() / arms.mean() > 0.2 and arms.min() < 0.7 * arms.max()
    stream = morph.stream_image(g["tidal"], size, scale)
    assert stream.sum() == pytest.approx(1)
    radius = (r * stream).sum()  # flux-weighted radius close to the arc's
    assert abs(radius - g["tidal"].stream_radius) < 1.0
    cube = morph.render_galaxy(g["tidal"])
    assert cube.shape == (3, 64, 64) and cube.dtype == np.float32
    flux_r = cube[1].sum()
    assert flux_r == pytest.approx(10 ** ((22.5 - g["tidal"].r_mag) / 2.5), rel=0.1)


def test_morphology_set(tmp_path):
    from ulisse_bench.sim.morphology import simulate_morphology_set

    table = simulate_morphology_set(tmp_path, n=12, seed=5, spiral_fraction=0.4, tidal_fraction=0.4, progress=False)
    assert list(table["id"]) == [f"morph-{k:06d}" for k in range(1, 13)]
    assert set(table["label"]) <= {"smooth", "spiral", "tidal"} and {"spiral", "tidal"} <= set(table["label"])
    assert (table.loc[table["label"] == "spiral", "arm_count"] > 0).all()
    assert (table.loc[table["label"] != "tidal", "stream_flux"] == 0).all()
    assert pd.read_csv(tmp_path / "labels.csv").shape == table.shape
    png = np.asarray(Image.open(tmp_path / "cutouts" / "morph-000001.png"))
    assert png.shape == (64, 64, 3) and png.dtype == np.uint8
    again = simulate_morphology_set(tmp_path / "b", n=3, seed=5, spiral_fraction=0.4, tidal_fraction=0.4,
                                    progress=False)
    pd.testing.assert_frame_equal(again, table.head(3))  # the same seed: the same first objects, whatever n
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "cutouts" / "morph-000003.png")),
                          np.asarray(Image.open(tmp_path / "cutouts" / "morph-000003.png")))
