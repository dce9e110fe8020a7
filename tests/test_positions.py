"""Sky positions: one parser (ulisse.positions) behind the command line, the API, the UI and catalogues."""

from __future__ import annotations

import pytest

import ulisse
from ulisse.errors import InputError
from ulisse.positions import (angle_degrees, format_separation, parse_dec, parse_position, parse_ra,
                              resolve_name)
from ulisse.prototypes import Prototype, query

# obj001 of the test survey is at (150.01, 2.005) degrees = 10h00m02.4s +2d00m18s
OBJ001 = (150.01, 2.005)


@pytest.mark.parametrize("text,deg", [
    ("189.2", 189.2), (189.2, 189.2), ("189.2deg", 189.2), ("189.2 deg", 189.2),
    ("12h36m49.4s", 189.205833), ("12:36:49.4", 189.205833), ("12 36 49.4", 189.205833),
    ("12h 36m 49.4s", 189.205833), ("03:32:40.5", 53.16875), ("12.5h", 187.5), ("189d12m21s", 189.205833),
])
def test_ra_in_every_usual_notation(text, deg):
    assert parse_ra(text) == pytest.approx(deg, abs=1e-6)


@pytest.mark.parametrize("text,deg", [
    ("62.216", 62.216), ("+62d12m58s", 62.216111), ("62°12′58″", 62.216111), ("62°12'58\"", 62.216111),
    ("-27:46:13.7", -27.770472), ("-27 46 13.7", -27.770472), ("-0:30:00", -0.5), ("-27.77deg", -27.77),
])
def test_dec_in_every_usual_notation(text, deg):
    assert parse_dec(text) == pytest.approx(deg, abs=1e-6)


@pytest.mark.parametrize("call,needle", [
    (lambda: parse_ra("12h36x"), "--ra 12h36x: not an RA"),
    (lambda: parse_ra("400"), "--ra 400: out of range (ra must be within 0..360 degrees)"),
    (lambda: parse_ra("25h00m00s"), "--ra 25h00m00s: not an RA"),  # astropy refuses hours past 24
    (lambda: parse_dec("north"), "--dec north: not a Dec"),
    (lambda: parse_dec("-95"), "--dec -95: out of range (dec must be within -90..90 degrees)"),
    (lambda: parse_dec("12:36:49.4h"), "--dec 12:36:49.4h"),
])
def test_bad_coordinates_are_one_line_errors(call, needle):
    with pytest.raises(InputError) as info:
        call()
    assert needle in str(info.value) and len(str(info.value).splitlines()) == 1


def test_positions_as_one_text():
    for text in ("150.1 2.2", "150.1, 2.2", "10:00:24 +02:12:00", "10h00m24s +2d12m00s", "10 00 24 +02 12 00",
                 "150.1deg 2.2deg"):
        c = parse_position(text)
        assert (round(float(c.ra.deg), 4), round(float(c.dec.deg), 4)) == (150.1, 2.2), text
    with pytest.raises(InputError, match="RA must be in"):
        parse_position("400 2")
    with pytest.raises(InputError, match="not a sky position"):
        parse_position("10h00x +2d12m", resolve_names=False)
    for one in ("53.16098", "-27.5", "10:00:24"):  # Dec forgotten: said so, not sent to the name resolver
        with pytest.raises(InputError, match="one coordinate; type RA and Dec"):
            parse_position(one)


def test_the_ui_kit_uses_the_core_parser():
    from ulisse.ui.kit import _sky

    assert _sky.parse_position is parse_position and _sky.resolve_name is resolve_name


def test_catalogues_read_positions_with_the_same_rule(tmp_path):
    from ulisse.catalog import read_catalog

    csv = tmp_path / "c.csv"
    csv.write_text('id,ra,dec\na,12 36 49.4,+62 12 58\nb,189.2deg,62d12m58s\nc,12h36m49.4s,62.216111\n')
    cat = read_catalog(csv)
    assert cat["ra"].tolist() == pytest.approx([parse_ra("12h36m49.4s"), 189.2, parse_ra("12h36m49.4s")])
    assert cat["dec"].tolist() == pytest.approx([parse_dec("+62d12m58s")] * 3, abs=1e-6)
    assert angle_degrees(10.0, "ra", "hourangle") == pytest.approx(150.0)


def test_separations_in_sensible_units():
    assert format_separation(0.36) == "0.36 arcsec"
    assert format_separation(150.0) == "2.5 arcmin"
    assert format_separation(7300.0) == "2.03 deg"
    assert format_separation(0.1004, beside=0.1) == "0.1004 arcsec"  # never "0.10" beside a radius of 0.1


def test_the_api_takes_positions_as_text(tiny_index):
    by_number = query(tiny_index, OBJ001, k=3)
    by_text = query(tiny_index, ("10h00m02.4s", "+2d00m18s"), k=3)
    assert by_text.prototype_id == by_number.prototype_id == "obj001" and by_text.ids == by_number.ids
    assert by_text.info["matched"][0]["asked"] == "10h00m02.4s +2d00m18s"
    r = tiny_index.query(ra="10:00:02.4", dec="+02:00:18", k=3)
    assert r.prototype_id == "obj001" and r.ids == by_number.ids
    assert Prototype.sky("10:00:02.4", "+02:00:18").value == pytest.approx(OBJ001)
    with pytest.raises(InputError, match="--ra 10h00x: not an RA"):
        tiny_index.query(ra="10h00x", dec="2", k=3)


def test_no_match_names_the_position_as_typed_and_the_nearest_in_sensible_units(tiny_index):
    with pytest.raises(ulisse.QueryError) as info:
        tiny_index.query(ra="10h00m02.5s", dec="+2d00m18s", radius_arcsec=0.1, k=3)
    msg = str(info.value)
    assert msg.startswith("no object within 0.1 arcsec of 10h00m02.5s +2d00m18s (the nearest, obj001, is ")
    assert "1.50 arcsec away" in msg
    with pytest.raises(ulisse.QueryError, match=r"the nearest, obj\d+, is \d+\.\d+ deg away"):
        tiny_index.query(ra=10.0, dec=10.0, k=3)


def test_cli_takes_sexagesimal_positions(tiny_index, cli):
    for ra, dec in (("10h00m02.4s", "+2d00m18s"), ("10:00:02.4", "+02:00:18"), ("150.01deg", "2.005")):
        code, out, err = cli("query", tiny_index.path, "--ra", ra, "--dec", dec, "-k", "3")
        assert code == 0, err
        assert "sky position matched obj001 at ra=150.010000 dec=2.005000" in out
    code, out, err = cli("query", tiny_index.path, "--position", "10:00:02.4 +02:00:18", "-k", "3")
    assert code == 0 and "matched obj001" in out and "from 10:00:02.4 +02:00:18" in out, err


def test_cli_the_issues_positions_on_the_demo_index(demo_index, cli):
    for args in (("--ra", "03:32:40.5", "--dec", "-27:46:13.7"), ("--ra", "3h32m40.5s", "--dec", "-27d46m13.7s")):
        code, out, err = cli("query", demo_index, *args, "-k", "3")
        assert code == 0, err
        assert "sky position matched hdf-" in out and "arcsec away" in out


@pytest.mark.parametrize("args,needle", [
    (("--ra", "12h36x", "--dec", "+62d12m58s"), "--ra 12h36x: not an RA"),
    (("--ra", "10h00m02.4s", "--dec", "north"), "--dec north: not a Dec"),
    (("--ra", "10", "--dec", "10", "--radius", "-1"), "--radius"),
    (("--ra", "10h00m02.5s", "--dec", "+2d00m18s", "--radius", "0.1"), "1.50 arcsec away"),
    (("--position", "10h00x +2"), "not a sky position"),
])
def test_cli_position_errors_are_one_line(tiny_index, cli, args, needle):
    code, out, err = cli("query", tiny_index.path, *args)
    assert code != 0 and out == "" and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Usage" not in err and err.startswith("ulisse: error: ")


@pytest.mark.remote_data
def test_names_resolve_through_sesame():
    c = parse_position("M 51")
    assert abs(float(c.ra.deg) - 202.47) < 0.05 and abs(float(c.dec.deg) - 47.195) < 0.05
