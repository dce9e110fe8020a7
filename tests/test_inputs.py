"""Reading cutouts and catalogues, and every bad-input case at that level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table
from PIL import Image

from conftest import write_fits_cutout
from ulisse import CutoutError, InputError, read_cutout
from ulisse.catalog import read_catalog
from ulisse.cutouts import cutout_id
from ulisse.inputs import gather


def test_png_jpeg_grey_and_rgba(tmp_path):
    rgb = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    smooth = np.dstack([np.tile(np.linspace(0, 250, 64, dtype=np.uint8), (64, 1))] * 3)
    Image.fromarray(smooth).save(tmp_path / "b.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "c.png")
    Image.fromarray(np.dstack([rgb, np.full((64, 64), 255, np.uint8)])).save(tmp_path / "d.png")
    np.testing.assert_array_equal(read_cutout(tmp_path / "a.png").image, rgb)
    assert np.abs(read_cutout(tmp_path / "b.jpg").image.astype(int) - smooth).mean() < 3
    grey = read_cutout(tmp_path / "c.png").image
    assert grey.shape == (64, 64, 3) and (grey[..., 0] == grey[..., 2]).all()
    np.testing.assert_array_equal(read_cutout(tmp_path / "d.png").image, rgb)


def test_fits_cube_is_lupton_i_r_g_and_wcs_centre(tmp_path):
    cube = np.zeros((3, 64, 64), np.float32)
    cube[0, 20:40, 20:40] = 5.0  # flux only in g -> blue
    write_fits_cutout(tmp_path / "blue.fits", cube, 180.0, -1.5)
    c = read_cutout(tmp_path / "blue.fits")
    assert c.image.dtype == np.uint8 and c.image.shape == (64, 64, 3)
    centre = c.image[30, 30].astype(int)
    assert centre[2] > 100 and centre[0] == 0 and centre[1] == 0  # g -> B only
    assert c.ra == pytest.approx(180.0, abs=1e-6) and c.dec == pytest.approx(-1.5, abs=1e-6)
    assert c.id == "blue"


def test_fits_first_row_is_the_bottom_so_north_is_up(tmp_path):
    """A cutout whose WCS puts north along +y (as every TAN cutout service writes it) comes out north up, as ds9
    and the sky viewers show it; an index built before fits_rows existed keeps reading FITS top-down."""
    from astropy.wcs import WCS

    from ulisse.cutouts import RGBConfig

    cube = np.full((3, 64, 64), 0.01, np.float32)
    cube[:, 48:56, 28:36] = 5.0  # a source 20 px north of the centre (FITS rows 48-55: y above the centre)
    write_fits_cutout(tmp_path / "north.fits", cube, 150.0, 2.0)
    north = WCS(fits.getheader(tmp_path / "north.fits"), naxis=2).pixel_to_world(31.5, 51.5).dec.deg
    assert north > 2.0  # the WCS does put the source north of the centre
    image = read_cutout(tmp_path / "north.fits").image.astype(int).sum(axis=(1, 2))
    assert image[:32].sum() > 2 * image[32:].sum()  # ... and it is in the top half of the image
    legacy = RGBConfig.from_dict({"q": 8.0, "stretch": 0.5, "minimum": 0.0, "scales": [1, 1, 1]})
    assert legacy.fits_rows == "top-down" and RGBConfig.from_dict(RGBConfig().to_dict()) == RGBConfig()
    old = read_cutout(tmp_path / "north.fits", legacy).image.astype(int).sum(axis=(1, 2))
    assert old[32:].sum() > 2 * old[:32].sum()
    with pytest.raises(InputError, match="fits_rows='sideways'"):
        RGBConfig(fits_rows="sideways")


def test_a_fits_cutout_reads_as_its_png_twin(tmp_path):
    """cube_to_png draws the cube as ulisse shows its FITS file: the two embed as one picture."""
    from ulisse.testing import blob, cube_to_png

    cube = blob(64, np.random.default_rng(3), "streak")
    write_fits_cutout(tmp_path / "s.fits", cube, 150.0, 2.0)
    cube_to_png(tmp_path / "s.png", cube)
    np.testing.assert_array_equal(read_cutout(tmp_path / "s.fits").image, read_cutout(tmp_path / "s.png").image)


def test_a_stretch_that_does_not_suit_the_fits_flux_scale_is_said(tmp_path, cli):
    """The Lupton stretch is made for SDSS nanomaggies (sky noise about 0.05): FITS cutouts in other units
    (here noise 0.5) get a warning naming the stretch to use, and --lupton records another one."""
    from ulisse import open_index
    from ulisse.cutouts import RGBConfig, stretch_advice

    rng = np.random.default_rng(3)
    y, x = np.mgrid[:32, :32]
    for folder, sigma in (("sdss", 0.05), ("counts", 0.5)):
        (tmp_path / folder).mkdir()
        for k in range(4):
            cube = rng.normal(0, sigma, (3, 32, 32)) + 200 * sigma * np.exp(-((x - 16) ** 2 + (y - 16) ** 2) / 10)
            write_fits_cutout(tmp_path / folder / f"o{k}.fits", cube.astype(np.float32), 150.0 + k / 1000, 2.2)
    assert stretch_advice(sorted((tmp_path / "sdss").glob("*.fits"))) is None
    advice = stretch_advice(sorted((tmp_path / "counts").glob("*.fits")))
    assert "sky noise" in advice and "the Lupton stretch (0.5, made for SDSS nanomaggies)" in advice
    suggested = advice.rsplit("--lupton ", 1)[1]
    q, stretch = map(float, suggested.split(","))
    assert q == 8 and 2 < stretch < 4  # about ten times the noise of the band mean (0.5 / sqrt(3))
    assert stretch_advice(sorted((tmp_path / "counts").glob("*.fits")), RGBConfig(stretch=stretch)) is None
    from test_cli import TINY as tiny
    code, out, err = cli("index", "build", tmp_path / "counts", "--index", tmp_path / "i1", *tiny)
    assert code == 0 and f"--lupton {suggested}" in err, err
    code, out, err = cli("index", "build", tmp_path / "counts", "--index", tmp_path / "i2", "--lupton", suggested, *tiny)
    assert code == 0 and "--lupton" not in err, err
    assert open_index(tmp_path / "i2").rgb.stretch == stretch
    code, out, err = cli("index", "build", tmp_path / "counts", "--index", tmp_path / "i3", "--lupton", "8", *tiny)
    assert code == 2 and "Q,STRETCH" in err and not (tmp_path / "i3").exists()


def test_fits_single_band_replicated_and_partial_nan(tmp_path):
    img = np.zeros((48, 48))
    img[20:28, 20:28] = 3.0
    img[0, 0] = np.nan
    fits.PrimaryHDU(img).writeto(tmp_path / "one.fits.gz")
    c = read_cutout(tmp_path / "one.fits.gz")
    assert c.id == "one" and (c.image[..., 0] == c.image[..., 1]).all() and c.image[24, 24, 0] > 0
    assert np.isnan(c.ra)


@pytest.mark.parametrize("name,make,reason", [
    ("empty.png", lambda p: p.write_bytes(b""), "empty file"),
    ("junk.png", lambda p: p.write_bytes(b"this is not a png"), "not a readable image"),
    ("junk.fits", lambda p: p.write_bytes(b"SIMPLE  = garbage" * 10), "not a readable FITS"),
    ("nan.fits", lambda p: fits.PrimaryHDU(np.full((32, 32), np.nan)).writeto(p), "all pixels are NaN"),
    ("cube4.fits", lambda p: fits.PrimaryHDU(np.ones((4, 32, 32))).writeto(p), "wrong shape"),
    ("nodata.fits", lambda p: fits.HDUList([fits.PrimaryHDU()]).writeto(p), "no image data"),
    ("tiny.png", lambda p: Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p), "smaller than"),
])
def test_bad_cutouts_name_file_and_reason(tmp_path, name, make, reason):
    p = tmp_path / name
    make(p)
    with pytest.raises(CutoutError, match=reason) as err:
        read_cutout(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_cutout_ids():
    assert cutout_id("a/b/obj-1.fits.bz2") == "obj-1"
    assert cutout_id("x.PNG") == "x"
    assert cutout_id("1237648720693755918.jpg") == "1237648720693755918"


@pytest.mark.parametrize("fmt,suffix", [("csv", ".csv"), ("fits", ".fits"), ("votable", ".xml")])
def test_catalogue_formats(tmp_path, fmt, suffix):
    t = Table({"objID": np.array([1237648720693755918, 2], dtype=np.int64), "RA": [10.0, 11.0],
               "DEC": [-1.0, 2.0], "z": [0.1, 0.2], "class": ["AGN", "galaxy"]})
    p = tmp_path / f"cat{suffix}"
    t.write(p, format=fmt)
    df = read_catalog(p)
    assert list(df["id"]) == ["1237648720693755918", "2"]
    assert df["ra"].tolist() == [10.0, 11.0] and df["dec"].tolist() == [-1.0, 2.0]
    assert df["class"].tolist() == ["AGN", "galaxy"] and "z" in df


@pytest.mark.parametrize("name,text,needle", [("none.csv", None, "catalogue not found"),
                                               ("e.csv", "", "empty file"),
                                               ("noid.csv", "ra,dec\n1,2\n", "no id column"),
                                               ("dup.csv", "id,ra,dec\na,1,2\na,3,4\n", "duplicate id 'a'"),
                                               ("cat.txt", "id\n", "unknown catalogue format"),
                                               ("res.csv", "id,ra,dec,distance\na,1,2,3\n",
                                                "column 'distance' is a name ulisse's own columns use"),
                                               ("src.csv", "id,source\na,SDSS\n", "column 'source' is a name")])
def test_bad_catalogues(tmp_path, name, text, needle):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=needle):
        read_catalog(tmp_path / name)


def test_gather_order_notes_and_catalogue_join(survey):
    g = gather([survey / "cutouts"], survey / "catalog.csv")
    assert [p.name for p in g.paths] == sorted(p.name for p in (survey / "cutouts").iterdir())
    assert list(g.metadata.columns[:4]) == ["id", "ra", "dec", "source"] and "label" in g.metadata
    assert g.metadata["label"].notna().all()


def test_gather_notes_other_files_and_missing_rows(tmp_path, survey):
    import shutil

    d = tmp_path / "c"
    shutil.copytree(survey / "cutouts", d)
    (d / "notes.csv").write_text("x\n")
    g = gather([d])
    assert any("notes.csv" in n for n in g.notes)
    cat = pd.read_csv(survey / "catalog.csv").iloc[1:]
    cat.to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(InputError, match="obj000.*is not in the catalogue"):
        gather([d], tmp_path / "short.csv")
    g2 = gather([d], tmp_path / "short.csv", skip_bad=True)
    assert len(g2) == len(g.paths) - 1 and g2.skipped[0][1].startswith("id not in the catalogue")


def test_gather_errors(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        gather([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no cutouts found"):
        gather([tmp_path / "empty"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a" / "x.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "b" / "x.png")
    with pytest.raises(InputError, match="id 'x' is also the id of"):
        gather([tmp_path / "a", tmp_path / "b"])


def test_sexagesimal_and_unit_aware_positions(tmp_path):
    csv = tmp_path / "sexa.csv"
    csv.write_text("id,ra,dec\na,10:00:24,2:12:00\nb,10h00m00s,-02d12m00s\nc,150.1,-2.5\nd,,\n")
    cat = read_catalog(csv)
    assert cat["ra"].tolist()[:3] == pytest.approx([150.1, 150.0, 150.1])
    assert cat["dec"].tolist()[:3] == pytest.approx([2.2, -2.2, -2.5])
    assert np.isnan(cat.loc[3, "ra"]) and np.isnan(cat.loc[3, "dec"])  # no position is not an error
    t = Table({"id": ["x", "y"], "ra": [10.0, 12.5], "dec": [0.5, -0.25]})
    t["ra"].unit, t["dec"].unit = "hourangle", "rad"
    t.write(tmp_path / "units.ecsv")
    cat = read_catalog(tmp_path / "units.ecsv")
    assert cat["ra"].tolist() == pytest.approx([150.0, 187.5])
    assert cat["dec"].tolist() == pytest.approx(np.degrees([0.5, -0.25]))


@pytest.mark.parametrize("ra,dec,needle", [("400", "0", "ra must be within 0..360"),
                                           ("10", "-95", "dec must be within -90..90"),
                                           ("ten", "0", "is not a sky coordinate"),
                                           ("10:00:00", "north", "is not a sky coordinate")])
def test_bad_positions_name_file_column_and_row(tmp_path, ra, dec, needle):
    csv = tmp_path / "bad.csv"
    csv.write_text(f"id,ra,dec\nfine,10,0\nbad,{ra},{dec}\n")
    with pytest.raises(InputError, match=needle) as info:
        read_catalog(csv)
    msg = str(info.value)
    assert str(csv) in msg and "row 2 (id bad)" in msg and len(msg.splitlines()) == 1
    skipped = []
    cat = read_catalog(csv, skip_bad=True, skipped=skipped)
    assert cat["id"].tolist() == ["fine"] and len(skipped) == 1 and needle.split()[0] in skipped[0][1] + needle


# -- id lists: the one reader behind every --ids/--positives/--follow file ----------------------


def test_id_list_rules(tmp_path):
    from ulisse.inputs import read_id_list

    def ids(text, name="ids.txt"):
        (tmp_path / name).write_text(text, encoding="utf-8")
        return read_id_list(tmp_path / name)

    # one id per line: blank lines and # comments skipped anywhere, spaces stripped, a first line "id" is a header
    assert ids("# my AGN\nobj001\n\n  obj002  \n# more\nobj003\n") == ["obj001", "obj002", "obj003"]
    assert ids("ID\nobj001\nobj002\n") == ["obj001", "obj002"]
    assert ids("1237648720693755918\r\n1237648720693755919\r\n") == ["1237648720693755918", "1237648720693755919"]
    # a CSV: the first line with a comma is its header, any column may be "id" (any case), quotes allowed
    assert ids("# exported\nnote,ID\nnice,obj003\n\"a, b\",obj004\n", "t.csv") == ["obj003", "obj004"]
    assert ids("\ufeffid,note\nobj005,\n", "bom.csv") == ["obj005"]  # a spreadsheet's byte-order mark
    # a tab-separated table (a spreadsheet's other export) the same way
    assert ids("note\tid\nnice\tobj006\nodd\tobj007\n", "t.tsv") == ["obj006", "obj007"]
    # an id given twice counts once, where it first appears
    assert ids("b\na\nb\n") == ["b", "a"]


@pytest.mark.parametrize("text, needle", [
    ("name,note\nobj003,nice\n", "line 1: a CSV of ids needs an 'id' column (columns: name, note)"),
    ("# header next\nid,note\nobj003,nice\nobj004\n", "line 4: 1 field(s), the header has 2"),
    ("id,note\nobj003,nice\n ,empty\n", "line 3: no id"),
    ("obj001\nobj002,obj003\n", "line 2: a comma in a file of one id per line"),
    ("obj001\nobj002\tobj003\n", "line 2: a tab in a file of one id per line"),
    ("name\tnote\nobj003\tnice\n", "line 1: a CSV of ids needs an 'id' column (columns: name, note)"),
    ("\n# nothing\n", "no ids in the file"),
    ("id\n", "no ids in the file"),
])
def test_id_list_bad_input_is_one_line_naming_file_and_line(tmp_path, text, needle):
    from ulisse.inputs import read_id_list

    path = tmp_path / "ids.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_id_list(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and needle in msg and len(msg.splitlines()) == 1


def test_id_list_missing_or_binary_file(tmp_path):
    from ulisse.inputs import read_id_list

    with pytest.raises(InputError, match="missing.txt: no such file"):
        read_id_list(tmp_path / "missing.txt")
    (tmp_path / "x.bin").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InputError, match="cannot be read as UTF-8 text"):
        read_id_list(tmp_path / "x.bin")


def test_every_id_option_uses_the_one_reader():
    """The plugins' id-list readers are the core's function, not copies with their own CSV rules."""
    from ulisse.inputs import read_id_list
    from ulisse.plugins import feedback, recursive
    from ulisse.plugins.heads import core

    assert feedback.read_ids is read_id_list and recursive.read_id_list is read_id_list
    assert core.read_ids is read_id_list


# -- sky distances: the one separation function ------------------------------------------------


def test_separation_matches_astropy_and_sky_match_skips_missing_positions():
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    from ulisse.catalog import separation_arcsec, sky_match

    rng = np.random.default_rng(1)
    ra, dec = rng.uniform(0, 360, 500), rng.uniform(-90, 90, 500)
    ours = separation_arcsec(ra[0], dec[0], ra, dec)
    theirs = SkyCoord(ra[0] * u.deg, dec[0] * u.deg).separation(SkyCoord(ra * u.deg, dec * u.deg)).arcsec
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert separation_arcsec(150.0, 2.0, [150.0], [2.0 + 1 / 3600])[0] == pytest.approx(1.0)  # tiny distances too
    assert sky_match(150.0, 2.0, [np.nan, 150.0, 151.0], [2.0, 2.001, 2.0]) == (1, pytest.approx(3.6))
    assert sky_match(150.0, 2.0, [np.nan], [np.nan]) == (-1, np.inf)
