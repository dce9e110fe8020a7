"""Exports as astronomers expect them: units and UCDs on the columns, the query's record in every file
(VOTable PARAMs, FITS keywords, ECSV meta, CSV ``#`` lines), one path for the verbs and the UI; sky links
chosen by footprint."""

from __future__ import annotations

import io
import json
import warnings

import astropy.units as u
import pandas as pd
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.table import Table

from ulisse.record import QueryRecord, column_annotation, query_record
from ulisse.results import render

from test_cli import built  # noqa: F401 (the fixture: a tiny index built by the CLI)

TABLE = pd.DataFrame({"rank": [1, 2], "id": ["hdf-0073", "hdf-0012"], "distance": [1.25, 2.5],
                      "ra": [53.16, 53.17], "dec": [-27.78, -27.79], "r_mag": [21.5, 22.25], "label": ["E", "S"]})
RECORD = QueryRecord("query", {"prototype": "hdf-0050", "k": 2, "combine": "mean"},
                     {"index": "demo", "index_fingerprint": "f00", "index_count": 60},
                     {"encoder_model": "tf_efficientnet_lite0", "encoder_weights": "lite0", "encoder_preset": "ulisse",
                      "encoder_pool": "mean", "encoder_tta": "none"}, created="2026-12-06T05:00:00", software="ulisse 0")


def vot_params(data) -> dict:
    table = parse_single_table(io.BytesIO(data if isinstance(data, bytes) else data.encode()))
    return {p.name: p.value for p in table.params}


def test_columns_have_units_and_ucds():
    assert column_annotation("ra").ucd == "pos.eq.ra;meta.main" and column_annotation("dec").unit == "deg"
    assert column_annotation("id").ucd == "meta.id;meta.main" and column_annotation("distance").ucd == "arith.diff"
    assert column_annotation("sep_arcsec").unit == "arcsec" and column_annotation("r_mag").unit == "mag"
    assert column_annotation("whatever").ucd is None
    assert column_annotation("g").unit == "mag" and column_annotation("z").ucd == "src.redshift"
    # pixel positions (the HDF catalogue's x, y) are not band magnitudes
    assert column_annotation("y").unit is None and column_annotation("y").ucd is None
    assert column_annotation("x").unit is None


def test_votable_has_units_ucds_and_the_query_as_params():
    data = render(TABLE, "votable", {"index": "/somewhere/demo"}, record=RECORD)
    t = Table.read(io.BytesIO(data.encode()), format="votable")
    assert t["ra"].unit == u.deg and t["dec"].unit == u.deg and t["r_mag"].unit == u.mag
    assert t["ra"].meta["ucd"] == "pos.eq.ra;meta.main" and t["dec"].meta["ucd"] == "pos.eq.dec;meta.main"
    assert t["id"].meta["ucd"] == "meta.id;meta.main" and t["distance"].meta["ucd"] == "arith.diff"
    p = vot_params(data)
    assert p["prototype"] == "hdf-0050" and p["k"] == 2 and p["combine"] == "mean" and p["verb"] == "query"
    assert p["index"] == "demo" and p["encoder_model"] == "tf_efficientnet_lite0" and p["encoder_pool"] == "mean"
    assert p["created"] == "2026-12-06T05:00:00" and "/somewhere" not in data  # no absolute path of this machine
    assert '<INFO ID="created"' in data


def test_fits_has_tunit_and_the_query_as_keywords():
    data = render(TABLE, "fits", {"index": "/somewhere/demo"}, record=RECORD)
    t = Table.read(io.BytesIO(data), format="fits")
    assert t["ra"].unit == u.deg and t["dec"].unit == u.deg
    header = fits.open(io.BytesIO(data))[1].header
    assert header["TUNIT4"] == "deg" and header["TUCD4"] == "pos.eq.ra;meta.main"
    assert header["QPROTO"] == "hdf-0050" and header["QK"] == 2 and header["QCOMBINE"] == "mean"
    assert header["ENCMODEL"] == "tf_efficientnet_lite0" and header["DATE"] == "2026-12-06T05:00:00"
    assert header.comments["QK"] == "neighbours asked for" and header["INDEX"] == "demo"
    long = QueryRecord("query", {"prototype": "x" * 120, "where": "label == 'E'"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "card too long" warning: comments are cut to fit
        data = render(TABLE, "fits", None, record=long)
    assert fits.open(io.BytesIO(data))[1].header["QPROTO"] == "x" * 120  # a long value: CONTINUE cards


def test_csv_is_a_bare_table_every_reader_takes_and_ecsv_carries_the_record():
    text = render(TABLE, "csv", None, record=RECORD)
    assert text.splitlines()[0] == "rank,id,distance,ra,dec,r_mag,label"  # TOPCAT's CSV reader takes no # lines
    df = pd.read_csv(io.StringIO(text))
    assert list(df["id"]) == ["hdf-0073", "hdf-0012"] and df["ra"].tolist() == [53.16, 53.17]
    assert list(Table.read(text, format="csv")["id"]) == ["hdf-0073", "hdf-0012"]
    t = Table.read(render(TABLE, "ecsv", None, record=RECORD), format="ascii.ecsv")
    assert t.meta["prototype"] == "hdf-0050" and t["ra"].unit == u.deg


def test_ecsv_has_units_and_meta_and_json_the_query():
    t = Table.read(render(TABLE, "ecsv", None, record=RECORD), format="ascii.ecsv")
    assert t["ra"].unit == u.deg and t.meta["prototype"] == "hdf-0050" and t.meta["k"] == 2
    assert t.meta["encoder_preset"] == "ulisse" and t["ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    doc = json.loads(render(TABLE, "json", None, extra={"prototype": "hdf-0050"}, record=RECORD))
    assert doc["query"]["k"] == 2 and doc["query"]["encoder_model"] == "tf_efficientnet_lite0" and len(doc["rows"]) == 2


def test_the_query_verb_writes_its_record_in_every_format(built, cli, tmp_path):
    for ext in ("xml", "fits", "csv", "ecsv"):
        code, out, err = cli("query", built, "--id", "obj004", "-k", "3", "--combine", "mean",
                             "--output", tmp_path / f"r.{ext}")
        assert code == 0, err
    p = vot_params((tmp_path / "r.xml").read_bytes())
    assert p["verb"] == "query" and p["prototype"] == "obj004" and p["k"] == 3 and p["combine"] == "mean"
    assert p["index"] == "idx" and p["encoder_model"] == "test_efficientnet" and p["encoder_weights"].startswith("random")
    assert p["index_count"] == 24 and {"encoder_preset", "encoder_pool", "encoder_tta", "created"} <= set(p)
    assert Table.read(tmp_path / "r.xml", format="votable")["ra"].unit == u.deg
    t = Table.read(tmp_path / "r.fits")
    assert t["ra"].unit == u.deg and t.meta["QPROTO"] == "obj004" and t.meta["ENCMODEL"] == "test_efficientnet"
    df = pd.read_csv(tmp_path / "r.csv")
    assert len(df) == 3 and (tmp_path / "r.csv").read_text().startswith("rank,id,distance")
    t = Table.read(tmp_path / "r.ecsv", format="ascii.ecsv")
    assert t["dec"].unit == u.deg and t.meta["k"] == 3 and t.meta["index"] == "idx"


def test_expand_anomalies_and_rank_carry_their_record(built, cli, tmp_path):
    code, _, err = cli("expand", built, "--id", "obj004", "-k", "2", "--iterations", "2", "--output", tmp_path / "e.xml")
    assert code == 0, err
    p = vot_params((tmp_path / "e.xml").read_bytes())
    assert p["verb"] == "expand" and p["prototype"] == "obj004" and p["iterations"] == 2 and p["k"] == 2
    code, _, err = cli("anomalies", built, "--top", "3", "--method", "kth", "--output", tmp_path / "a.fits")
    assert code == 0, err
    header = fits.open(tmp_path / "a.fits")[1].header
    assert header["QVERB"] == "anomalies" and header["QMETHOD"] == "kth" and header["QTOP"] == 3
    (tmp_path / "pos.txt").write_text("obj001\nobj002\n")
    code, out, err = cli("rank", built, "--positives", tmp_path / "pos.txt", "-k", "3", "--format", "votable")
    assert code == 0, err
    p = vot_params(out)
    assert p["verb"] == "rank" and p["k"] == 3 and p["positives"] == 2
    code, out, err = cli("rank", built, "--positives", tmp_path / "pos.txt", "-k", "3", "--output", tmp_path / "r.fits")
    assert code == 0, err
    header = fits.open(tmp_path / "r.fits")[1].header
    assert header["QVERB"] == "rank" and header["QK"] == 3 and len(fits.open(tmp_path / "r.fits")[1].data) == 3
    assert "# 2 relevant and 0 not relevant marks" in out  # the terminal's table, and what the marks were


def test_query_record_reads_the_index_encoder(built):
    import ulisse

    r = query_record(ulisse.open_index(built), "query", prototype="obj004", k=5, where=None)
    assert r.params == {"prototype": "obj004", "k": 5} and r.index["index"] == "idx" and r.index["index_count"] == 24
    assert r.encoder["encoder_model"] == "test_efficientnet" and r.created.startswith("20")


# -- sky links by footprint ----------------------------------------------------------------

def test_sky_links_follow_the_surveys_footprints():
    from ulisse.ui.kit._sky import in_des, in_sdss, viewer_links

    hdfs = viewer_links(53.16, -27.78)  # the HDF demo field: south, never imaged by SDSS
    assert not any("sdss" in link.url.lower() or "SDSS" in link.label for link in hdfs)
    assert [link.name for link in hdfs] == ["Legacy Surveys", "Aladin Lite"] and in_des(53.16, -27.78)
    assert all(link.survey for link in hdfs) and "DES" in hdfs[-1].label
    hdfn = viewer_links(189.2, 62.2)  # the Hubble Deep Field North: SDSS, Legacy Surveys' northern DR9
    assert hdfn[0].label == "SkyServer Navigate (SDSS DR18)" and "layer=ls-dr9" in hdfn[2].url
    assert in_sdss(189.2, 62.2) and in_sdss(10.0, 0.5) and not in_sdss(53.16, -27.78)  # stripe 82 is SDSS
    plane = viewer_links(266.4, -29.0)  # the Galactic centre: only Aladin's HiPS
    assert [link.name for link in plane] == ["Aladin Lite"] and plane[0].survey
    assert [link.name for link in viewer_links(0.0, 89.5)] == ["Aladin Lite"]  # the pole: north of +84


def test_a_ui_download_carries_the_pages_record(built, tmp_path):
    """The UI's download buttons write through the same render, the page's query and the index's encoder in it."""
    from streamlit.testing.v1 import AppTest

    script = tmp_path / "download_page.py"
    script.write_text(f"""import streamlit as st
import ulisse
from ulisse.ui.kit._tables import download_data
st.session_state["page"] = "Search"
index = ulisse.open_index({str(built)!r})
result = index.query("obj004", k=3)
st.code(download_data(result.table, "votable", index=index, meta={{"prototype": "obj004", "k": 3, "combine": "mean"}}))
""")
    at = AppTest.from_file(str(script), default_timeout=60).run()
    assert not at.exception, at.exception
    data = at.code[0].value
    p = vot_params(data)
    assert p["verb"] == "ui:Search" and p["prototype"] == "obj004" and p["k"] == 3 and p["combine"] == "mean"
    assert p["encoder_model"] == "test_efficientnet" and p["index"] == "idx" and "created" in p
    t = Table.read(io.BytesIO(data.encode()), format="votable")
    assert t["ra"].unit == u.deg and "row" not in t.colnames and not any(s.startswith("/") for s in t["source"])


def test_the_catalogues_units_and_descriptions_reach_every_export(survey, cli, tmp_path):
    from conftest import make_survey
    from test_cli import TINY

    cat = Table.read(survey / "catalog.csv")
    cat["r_half"] = [1.5 + i for i in range(len(cat))]
    cat["r_half"].unit, cat["r_half"].description = u.pix, "half-light radius"
    cat["flux"] = [10.0] * len(cat)
    cat["flux"].unit = u.Unit("nanomaggy")
    cat.write(tmp_path / "cat.ecsv")
    idx = tmp_path / "idx"
    code, _, err = cli("-q", "index", "build", survey / "cutouts", "--index", idx, "--catalog", tmp_path / "cat.ecsv", *TINY)
    assert code == 0, err
    more = Table.from_pandas(make_survey(tmp_path / "more", n_per_kind=1, seed=3, prefix="add"))
    more["r_half"], more["flux"], more["snr"] = [2.0] * len(more), [3.0] * len(more), [9.0] * len(more)
    more["r_half"].unit, more["snr"].description = u.arcsec, "signal to noise"  # r_half's first unit stays
    more.write(tmp_path / "more.ecsv")
    code, _, err = cli("-q", "index", "add", tmp_path / "more", "--index", idx, "--catalog", tmp_path / "more.ecsv")
    assert code == 0, err
    code, _, err = cli("-q", "head", "train", idx, "--target", "r_half", "--name", "rh", "--method", "ridge")
    assert code == 0, err
    for ext in ("fits", "xml", "ecsv"):
        code, _, err = cli("query", idx, "--id", "obj004", "-k", "3", "--output", tmp_path / f"r.{ext}")
        assert code == 0, err
    for ext, fmt in (("fits", "fits"), ("xml", "votable"), ("ecsv", "ascii.ecsv")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nmgy is no FITS or VOUnit unit: read back as the catalogue wrote it
            t = Table.read(tmp_path / f"r.{ext}", format=fmt)
        assert t["r_half"].unit == u.pix and t["flux"].unit.to_string() == "nmgy" and t["ra"].unit == u.deg, ext
        assert t["label"].unit is None
        assert t["rh"].unit == u.pix and t["rh_std"].unit == u.pix, ext
        if ext != "fits":
            assert t["r_half"].description == "half-light radius" and t["snr"].description == "signal to noise"
            assert t["rh"].description == "r_half predicted by head rh (ridge)"
            assert t["rh_std"].description.startswith("1-sigma uncertainty of rh")
    header = fits.getheader(tmp_path / "r.fits", 1)
    names = {header[k]: k[5:] for k in header if k.startswith("TTYPE")}
    assert header["TCOMM" + names["r_half"]] == "half-light radius"
    assert ulisse_index(idx).column_notes["snr"].description == "signal to noise"


def test_derived_columns_carry_their_descriptions(survey, cli, tmp_path):
    from test_cli import TINY

    idx = tmp_path / "idx"
    code, _, err = cli("-q", "index", "build", survey / "cutouts", "--index", idx, "--catalog", survey / "catalog.csv",
                       *TINY)
    assert code == 0, err
    code, _, err = cli("-q", "query", idx, "--id", "obj004", "-k", "3", "--where", "anomaly_kth > 0",
                       "--output", tmp_path / "r.xml")
    assert code == 0, err
    t = Table.read(tmp_path / "r.xml", format="votable")
    assert t["anomaly_kth"].description.startswith("Feature distance to the k-th neighbour"), t["anomaly_kth"].meta
    assert t["anomaly_mean"].description.startswith("Mean feature distance")


def ulisse_index(path):
    import ulisse

    return ulisse.open_index(path)


def test_every_python_result_exports_as_the_command_line_does(built, tmp_path):
    import ulisse
    from ulisse.plugins.anomalies import rank_anomalies
    from ulisse.plugins.prototype import query
    from ulisse.plugins.recursive import expand

    index = ulisse.open_index(built, device="cpu")
    results = {"query": index.query("obj004", k=3), "query ": query(index, ["obj004", "obj005"], k=3),
               "expand": expand(index, "obj004", k=2, iterations=2), "anomalies": rank_anomalies(index, top=4)}
    for verb, result in results.items():
        t = result.to_astropy(index)
        assert t.meta["verb"] == verb.strip() and t.meta["index_count"] == 24 and t["ra"].unit == u.deg
        assert "row" not in t.colnames and t["id"].meta["ucd"] == "meta.id;meta.main"
        for ext in ("fits", "xml", "ecsv", "csv"):
            assert result.write(tmp_path / f"r.{ext}", index) == tmp_path / f"r.{ext}"
        header = fits.getheader(tmp_path / "r.fits", 1)
        assert header["QVERB"] == verb.strip() and header["ENCMODEL"] == "test_efficientnet"
        assert list(Table.read(tmp_path / "r.xml", format="votable")["id"]) == list(result.ids)
        assert len(pd.read_csv(tmp_path / "r.csv")) == len(result)
    assert results["query "].to_astropy().meta["prototypes"].count("obj00") == 2
    assert results["query"].to_astropy().meta["k"] == 3 and results["query "].to_astropy().meta["combine"] == "mean"
    results["query"].write(tmp_path / "q.fits", index)
    assert fits.getheader(tmp_path / "q.fits", 1)["QK"] == 3  # as --output records it
    import pytest

    with pytest.raises(ulisse.InputError, match="unknown output format"):
        results["query"].write(tmp_path / "r.parquet-nope")
    with pytest.raises(ulisse.InputError):
        results["query"].write(built / "manifest.json")  # never into an index


def test_every_result_table_has_the_derived_columns(tiny_index):
    """The derived columns (here the kNN scores; head predictions the same way) are in every verb's table, not
    only in a query's: expand, anomalies (plain and with marks), rank and marks."""
    from ulisse.plugins.anomalies import rank_anomalies
    from ulisse.plugins.anomalies.feedback import discover
    from ulisse.plugins.feedback import mark, marks_table, rank
    from ulisse.plugins.recursive import expand

    tiny_index.derived("anomaly", k=3)
    ids = tiny_index.ids
    mark(tiny_index, ids[:2], True)
    mark(tiny_index, ids[2:4], False)
    tables = {"query": tiny_index.query(ids[5], k=3).table,
              "expand": expand(tiny_index, ids[5], k=2, iterations=2, budget=6).table,
              "anomalies": rank_anomalies(tiny_index, top=3, progress=False).table,
              "discover": discover(tiny_index, top=3, k=3, artefacts="show", progress=False).table,
              "rank": rank(tiny_index, ids[:2], ids[2:4], k=3),
              "marks": marks_table(tiny_index)}
    for verb, table in tables.items():
        assert {"anomaly_kth", "anomaly_mean"} <= set(table.columns), verb
        assert table.columns.is_unique and list(table.columns[:2]) != ["anomaly_kth", "anomaly_mean"], verb
        row = tiny_index.row_of(str(table["id"].iloc[0]))
        assert table["anomaly_kth"].iloc[0] == tiny_index.derived_rows([row])["anomaly_kth"].iloc[0], verb
