"""The SDSS plugin: ``ulisse sdss index`` and ``ulisse fetch cutouts``, offline against a local imitation of SDSS.

``tests/sdss_server.py`` serves on 127.0.0.1 the SAS (frames turned as
drift-scan fields are, photoObj catalogues as the SDSS data model describes
them, with primary and secondary detections), SkyServer's SqlSearch (CSV
answers), a TAP endpoint (queried for real by pyvo) and ImgCutout JPEGs, and
injects faults (HTTP 500, delays past the time-out, truncated or corrupt bytes,
empty fields). The encoder is the tiny ``test_efficientnet`` with random
weights. Tests against SDSS's real services are marked ``remote_data``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sdss_server import FieldSpec, SDSSServer, make_sky, primary  # noqa: E402

import ulisse  # noqa: E402
from ulisse.plugins.sdss.catalog import SqlSearchCatalog, TapCatalog, read_photoobj  # noqa: E402
from ulisse.plugins.sdss.config import Field, ObjectFilter, SDSSConfig, read_field_list  # noqa: E402
from ulisse.plugins.sdss.errors import EmptyFieldError, FrameError, SDSSError, ServiceError  # noqa: E402
from ulisse.plugins.sdss.frames import ScienceArchive  # noqa: E402
from ulisse.plugins.sdss.imgcutout import ImgCutoutService  # noqa: E402
from ulisse.plugins.sdss.services import with_retries  # noqa: E402

A, B, C, D, E, F = (Field(756, 1, n) for n in (206, 207, 208, 209, 210, 211))
SPECS = [FieldSpec(f.run, f.camcol, f.field, 150.0 + 0.2 * k, 2.0) for k, f in enumerate((A, B, C, D, E, F))]
STRIPE = FieldSpec(1000, 2, 100, 200.0, 30.0, angle=22.6)  # an inclined stripe: two overlapping fields of a run
SPECS += [STRIPE, STRIPE.next_in_run(overlap_px=130)]
G, H = Field(1000, 2, 100), Field(1000, 2, 101)
EDGE_IN_B = 2
ENCODER = ["--model", "test_efficientnet", "--weights", "random", "--device", "cpu"]


@pytest.fixture(scope="module")
def sky() -> pd.DataFrame:
    """The fake PhotoObj: 6 primary and 2 secondary detections in each field but D (empty), 2 more primaries
    at B's frame edge, and 2 objects in the overlap of G and H (primary in G, secondary in H)."""
    key = lambda f: (f.run, f.camcol, f.field)  # noqa: E731
    return make_sky([s for s in SPECS if s.key != key(D)], per_field=6, edge={key(B): EDGE_IN_B},
                    overlap={(key(G), key(H)): 2})


@pytest.fixture()
def server(sky):
    with SDSSServer(sky, SPECS) as s:
        yield s


def service_opts(server, timeout=5.0, retries=2, backoff=0.01):
    return ["--sas-url", server.sas_url, "--skyserver-url", server.skyserver_url,
            "--timeout", timeout, "--retries", retries, "--backoff", backoff]


def field_args(*fields):
    out = []
    for f in fields:
        out += ["--field", f.run, f.camcol, f.field]
    return out


def ids_of(sky, *fields, edge=False) -> list[str]:
    """The primary ids the index should hold: fields in (run, camcol, field) order, objects in objid order;
    the frame-edge objects only with ``edge`` (--edge pad)."""
    out = []
    prim = primary(sky)
    for f in sorted(fields):
        rows = prim[(prim["run"] == f.run) & (prim["camcol"] == f.camcol) & (prim["field"] == f.field)]
        if not edge:
            rows = rows[~rows["near_edge"]]
        out += sorted(rows["objID"], key=int)
    return out


def contents(path):
    idx = ulisse.open_index(path, device="cpu")
    return list(idx.metadata["id"]), idx.vectors_of_rows(range(len(idx))), idx.metadata


def assert_one_line_error(code, err, *words):
    assert code == 1
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("ulisse: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


# --------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_two_fields_end_to_end(cli, server, sky, tmp_path):
    out = tmp_path / "idx"
    code, stdout, err = cli("sdss", "index", out, *field_args(A, B), *service_opts(server), *ENCODER)
    assert code == 0, err
    want = ids_of(sky, A, B)
    assert "2 of 2 field(s) done" in stdout and f"{len(want)} indexed" in stdout
    assert f"skipped {EDGE_IN_B} object(s), at the frame edge" in stdout  # --edge skip is the default

    ids, vectors, meta = contents(out)
    assert ids == want and len(set(ids)) == len(ids)
    assert vectors.shape[0] == len(ids) and np.isfinite(vectors).all()
    for col in ("ra", "dec", "type", "run", "rerun", "camcol", "field", "modelMag_g", "modelMag_r", "modelMag_i",
                "flags", "clean", "padded", "source", "frame"):
        assert col in meta.columns, col
    row = meta.set_index("id").loc[ids[0]]
    truth = sky.set_index("objID").loc[ids[0]]
    assert row["ra"] == pytest.approx(truth["ra"]) and row["modelMag_r"] == pytest.approx(truth["modelMag_r"], abs=1e-4)
    assert (row["run"], row["camcol"], row["field"], row["type"]) == (756, 1, 206, truth["type"])
    assert row["frame"] == "dr17/eboss/photoObj/frames/301/756/1/frame-r-000756-1-0206.fits.bz2"
    assert (meta["padded"] == 0).all()
    # the catalogue came from the SAS photoObj files: no SqlSearch, no TAP
    assert server.hits("photoObj/301/756/1/photoObj-000756-1-0206.fits") == 1
    assert server.hits("SqlSearch") == 0 and server.hits("/tap") == 0
    # cutouts are kept beside the index, named by id, with paths relative to it: a moved index keeps them
    from PIL import Image

    from ulisse.plot import thumbnail

    assert row["source"] == f"cutouts/756-1-206/{ids[0]}.png"
    moved = tmp_path / "moved"
    out.rename(moved)
    assert Image.open(moved / row["source"]).size == (64, 64)
    assert thumbnail(ulisse.open_index(moved, device="cpu"), ids[0]).shape == (64, 64, 3)
    moved.rename(out)
    # the cutouts' geometry is in the manifest
    geometry = json.loads((out / "manifest.json").read_text())["cutout_geometry"]
    assert geometry["orientation"] == "north-up-east-left" and geometry["scale"] == 0.4 and geometry["size"] == 64

    # the frames are cached in the SAS layout, decompressed
    cached = out / ".sdss-cache/dr17/eboss/photoObj/frames/301/756/1/frame-i-000756-1-0207.fits"
    from astropy.io import fits

    with fits.open(cached) as h:
        assert h[0].header["BUNIT"] == "nanomaggy" and h[0].header["FILTER"] == "i"

    # the index answers queries, with the catalogue columns
    code, stdout, err = cli("query", out, "--id", ids[0], "-k", 3, "--format", "json", "--device", "cpu")
    assert code == 0, err
    rows = json.loads(stdout)["rows"]
    assert len(rows) == 3 and ids[0] not in [r["id"] for r in rows]
    assert {"run", "camcol", "field", "type", "modelMag_r", "padded"} <= set(rows[0])

    # the same command again downloads nothing and adds nothing
    server.clear()
    code, stdout, err = cli("sdss", "index", out, *field_args(A, B), *service_opts(server), *ENCODER)
    assert code == 0, err
    assert "2 field(s) done (2 by an earlier run)" in stdout and "0 indexed" in stdout
    assert server.requests == []
    assert contents(out)[0] == ids


@pytest.mark.slow
def test_every_primary_object_once_on_an_inclined_stripe(cli, server, sky, tmp_path):
    """G and H overlap: the objects there are in both photoObj files, primary in one only; all primaries once."""
    out = tmp_path / "idx"
    code, stdout, err = cli("sdss", "index", out, *field_args(G, H, B), "--edge", "pad", *service_opts(server),
                            *ENCODER)
    assert code == 0, err
    ids, _, meta = contents(out)
    want = ids_of(sky, B, G, H, edge=True)
    assert ids == want and len(set(ids)) == len(ids)
    secondaries = set(sky["objID"]) - set(primary(sky)["objID"])
    assert len(secondaries) == 2 * 7 + 2 and not secondaries & set(ids)
    # the overlap's objects were seen in both fields' catalogues and frames, and indexed once, from G
    overlap = sky[(sky["field"] == H.field) & (sky["run"] == H.run) & (sky["resolve_status"] == 0x400)]
    assert len(overlap) == 2
    for o in overlap.itertuples():
        twin = primary(sky)[np.isclose(primary(sky)["ra"], o.ra) & np.isclose(primary(sky)["dec"], o.dec)]
        assert list(twin["field"]) == [G.field] and twin["objID"].iloc[0] in ids
    # --edge pad: B's edge objects are kept, with the padded fraction of their cutout
    padded = meta.set_index("id")["padded"]
    edge_ids = set(ids_of(sky, B, edge=True)) - set(ids_of(sky, B))
    assert len(edge_ids) == EDGE_IN_B and all(0.05 < padded[i] < 0.6 for i in edge_ids)
    assert (padded.drop(index=list(edge_ids)) < 0.01).all()


def _centroid(plane, radius=5.0):
    """Flux-weighted centroid (x, y) of a plane, within ``radius`` px of its centre, background removed."""
    n = plane.shape[0]
    c = (n - 1) / 2
    yy, xx = np.mgrid[0:n, 0:n]
    w = np.clip(np.nan_to_num(plane - np.nanmedian(plane)), 0, None) * (np.hypot(xx - c, yy - c) <= radius)
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


def _isolated_stars(sky, field, arcsec=15.0):
    rows = sky[(sky["run"] == field.run) & (sky["camcol"] == field.camcol) & (sky["field"] == field.field)]
    out = []
    for star in primary(rows)[primary(rows)["type"] == 6].itertuples():
        d = np.hypot((sky["ra"] - star.ra) * np.cos(np.deg2rad(star.dec)), sky["dec"] - star.dec) * 3600
        if (d < arcsec).sum() == 1 and not star.near_edge:
            out.append(star)
    return out


@pytest.mark.parametrize("field", [A, G], ids=["equatorial-stripe", "inclined-stripe"])
def test_cutouts_north_up_east_left_bands_aligned(server, sky, field):
    """Frames are turned ~90 deg (and by the stripe's angle); cutouts are north up, east left, bands aligned."""
    from ulisse.plugins.sdss.cutting import CutoutGeometry, cut_object

    archive = ScienceArchive(SDSSConfig(sas_url=server.sas_url))
    frames = {b: archive.frame(b, field) for b in "gri"}
    cd = frames["r"].wcs.pixel_scale_matrix
    turned = np.degrees(np.arctan2(cd[0, 1], -cd[0, 0]))  # angle of the frame's x axis from east
    assert abs(abs(turned) - 90) < 1 if field == A else abs(abs(turned) - 90) > 20
    stars = _isolated_stars(sky, field)
    assert len(stars) >= 1
    geometry = CutoutGeometry()
    centre = (geometry.size - 1) / 2
    for star in stars:
        planes, padded = cut_object(frames, star.ra, star.dec, geometry)
        assert planes.shape == (3, 64, 64) and padded == 0
        cents = np.array([_centroid(p) for p in planes])  # g, r, i
        assert np.abs(cents - centre).max() < 0.3, cents - centre  # each band on the centre
        assert np.ptp(cents, axis=0).max() < 0.3, cents  # and on one another
        # 8" east and 5" north of the cutout's centre, the star shows left of and above the centre
        east, north = 8.0, 4.8  # 20 and 12 px
        planes, _ = cut_object(frames, star.ra - east / 3600 / np.cos(np.deg2rad(star.dec)), star.dec - north / 3600)
        x, y = _centroid(np.roll(planes[1], (round(north / 0.4), round(east / 0.4)), axis=(0, 1)))
        assert abs(x - centre) < 0.5 and abs(y - centre) < 0.5  # rolled back right and down: it was left and up


def test_ids_never_write_outside_the_index(cli, tmp_path):
    """Ids holding ../ or an absolute path, from a photoObj file, a SqlSearch answer or a catalogue, are refused."""
    evil_dir = tmp_path / "outside"
    spec = FieldSpec(94, 1, 12, 120.0, 10.0)
    evil = make_sky([spec], per_field=3, secondaries=0)
    evil.loc[0, "objID"] = "../../../../../outside/evil"
    evil.loc[1, "objID"] = str(evil_dir / "abs-evil")
    field = Field(94, 1, 12)
    with SDSSServer(evil, [spec]) as server:
        code, stdout, err = cli("sdss", "index", tmp_path / "idx", *field_args(field), *service_opts(server, retries=0),
                                *ENCODER)
        assert_one_line_error(code, err, "1 field(s) failed", "cannot be used as a file name")
        assert "../../../../../outside/evil" in stdout
        code, _, err = cli("sdss", "index", tmp_path / "idx2", "--region", 120.0, 10.0, 0.05,
                           *service_opts(server, retries=0), *ENCODER)
        assert_one_line_error(code, err, "cannot be used as a file name")
        assert server.hits("frame-") == 0  # refused before any frame was fetched
        cat = evil.rename(columns={"objID": "objid"})
        cat.to_csv(tmp_path / "evil.csv", index=False)
        code, _, err = cli("sdss", "index", tmp_path / "idx3", "--catalog", tmp_path / "evil.csv",
                           *service_opts(server), *ENCODER)
        assert_one_line_error(code, err, "evil.csv", "cannot be used as a file name")
        cat.rename(columns={"objid": "id"})[["id", "ra", "dec"]].to_csv(tmp_path / "evil-targets.csv", index=False)
        code, _, err = cli("fetch", "cutouts", tmp_path / "evil-targets.csv", "--out", tmp_path / "jpegs",
                           "--skyserver-url", server.skyserver_url)
        assert_one_line_error(code, err, "cannot be used as a file name")
        assert server.hits("getjpeg") == 0
    assert not evil_dir.exists()
    assert not [p for p in tmp_path.rglob("*evil*") if p.suffix in (".png", ".jpg")]
    assert not list(Path("/").glob("outside/evil*"))


def test_geometry_recorded_and_checked(cli, server, tmp_path):
    from ulisse.plugins.sdss.cutting import CutoutGeometry, check_prototype, geometry_warning, prototype_geometry
    from ulisse.plugins.sdss.imgcutout import imgcutout_geometry

    out = tmp_path / "idx"
    code, _, err = cli("-q", "sdss", "index", out, *field_args(A), "--size", 48, "--scale", 0.5,
                       *service_opts(server), *ENCODER)
    assert code == 0, err
    recorded = json.loads((out / "manifest.json").read_text())["cutout_geometry"]
    assert recorded == CutoutGeometry(size=48, scale=0.5).to_dict()
    # adding cutouts of another geometry to it is refused, before anything is fetched
    server.clear()
    code, _, err = cli("sdss", "index", out, *field_args(C), *service_opts(server), *ENCODER)
    assert_one_line_error(code, err, "another geometry", "size 64 vs 48")
    assert server.requests == []
    # each cutout says how it was cut: a prototype from this index matches it
    manifest = json.loads((out / "manifest.json").read_text())
    png = out / contents(out)[2]["source"].iloc[0]
    assert prototype_geometry(png) == recorded and check_prototype(manifest, png) is None
    # a prototype fetched from ImgCutout differs from SAS cutouts in colour mapping (and here in size and scale)
    pd.DataFrame({"id": ["p1"], "ra": [150.0], "dec": [2.0]}).to_csv(tmp_path / "one.csv", index=False)
    code, _, err = cli("-q", "fetch", "cutouts", tmp_path / "one.csv", "--out", tmp_path / "jpegs",
                       "--skyserver-url", server.skyserver_url)
    assert code == 0, err
    warning = check_prototype(manifest, tmp_path / "jpegs" / "p1.jpg")
    assert warning == geometry_warning(recorded, imgcutout_geometry())
    assert "colour" in warning and "scale 0.4 vs 0.5" in warning and "size 64 vs 48" in warning
    assert geometry_warning(recorded, dict(recorded)) is None and geometry_warning(recorded, None) is None
    assert check_prototype(manifest, tmp_path / "one.csv") is None  # a file that does not say: no warning


# --------------------------------------------------------------------------- Dask

@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_index(cli, server, sky, tmp_path):
    pytest.importorskip("distributed")
    code, _, err = cli("-q", "sdss", "index", tmp_path / "one", *field_args(A, B, C), *service_opts(server), *ENCODER)
    assert code == 0, err
    code, stdout, err = cli("-q", "sdss", "index", tmp_path / "dask", *field_args(A, B, C), *service_opts(server),
                            *ENCODER, "--dask", "local:2")
    assert code == 0, err
    ids1, v1, m1 = contents(tmp_path / "one")
    ids2, v2, m2 = contents(tmp_path / "dask")
    assert ids1 == ids2 == ids_of(sky, A, B, C)
    np.testing.assert_allclose(v1, v2, rtol=1e-4, atol=1e-5)
    pd.testing.assert_frame_equal(m1, m2)  # sources are relative to each index: the same


# --------------------------------------------------------------------------- one embedding pipeline

DISCOVERY = ["--pool", "centre:3", "--tta", "rot4", "--metric", "cosine"]


def folder_build(cli, sdss_index: Path, out: Path, *options, first=()):
    """``ulisse index build`` on the cutouts an SDSS batch kept (DIR/cutouts/<field>/<id>.png)."""
    folders = sorted(p for p in (sdss_index / "cutouts").iterdir() if p.is_dir())
    code, _, err = cli(*first, "-q", "index", "build", *folders, "--index", out, "--factory", "Flat", *options)
    assert code == 0, err
    return out


def assert_same_as_folder_build(sdss_index: Path, reference: Path):
    """The same encoder spec in both manifests, and the same vector for every object (cosine >= 0.9999)."""
    a, b = ulisse.open_index(sdss_index, device="cpu"), ulisse.open_index(reference, device="cpu")
    assert a.manifest["encoder"] == b.manifest["encoder"]
    assert a.manifest["metric"] == b.manifest["metric"]
    assert sorted(a.ids) == sorted(b.ids) and len(a) > 0
    va = a.vectors_of_rows([a.row_of(i) for i in b.ids])
    vb = b.vectors_of_rows(range(len(b)))
    cos = (va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
    assert cos.min() >= 0.9999, cos.min()
    for index, path in ((a, sdss_index), (b, reference)):  # both paths write the id tables lookups use
        fresh = ulisse.open_index(path, device="cpu")
        assert all(seg.ids is not None for seg in fresh.manifest.segments)
        assert [fresh.row_of(i) for i in b.ids] == [index.row_of(i) for i in b.ids] and fresh._meta._ids is None


def assert_feature_lists(cli, index_dir: Path, reference: Path | None = None):
    """The index has feature lists (stored by the observers during the batch) and ``ulisse features top`` answers."""
    from ulisse.plugins.features import stored_lists

    index = ulisse.open_index(index_dir, device="cpu")
    lists = stored_lists(index)
    assert lists.count == len(index) and lists.rows.max() < len(index)
    code, out, err = cli("features", "top", index_dir, "--feature", "3", "--n", "4", "--format", "json",
                         "--device", "cpu")
    assert code == 0, err
    assert len(json.loads(out)["rows"]) == 4
    if reference is not None:  # the same observers' results as a folder build of the same cutouts
        ref = stored_lists(ulisse.open_index(reference, device="cpu"))
        assert ref.count == lists.count
        np.testing.assert_allclose(lists.mean, ref.mean, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_sdss_batch_equals_a_folder_build_of_its_cutouts(cli, server, sky, tmp_path):
    """``--pool centre:3 --tta rot4 --metric cosine``: the spec, the vectors and the feature lists are those of
    ``ulisse index build`` on the same cutouts with the same options (one embedding pipeline)."""
    out = tmp_path / "sdss"
    code, stdout, err = cli("sdss", "index", out, *field_args(A, B), *service_opts(server), *ENCODER, *DISCOVERY)
    assert code == 0, err
    spec = json.loads((out / "manifest.json").read_text())["encoder"]
    assert spec["pool"] == "centre:3" and spec["tta"] == "rot4"
    assert not list((out / ".sdss-work").rglob("*.maps.npy"))  # the maps went once shown to the observers
    ref = folder_build(cli, out, tmp_path / "folder", *ENCODER, *DISCOVERY)
    assert_same_as_folder_build(out, ref)
    assert_feature_lists(cli, out, ref)


@pytest.mark.slow
def test_sdss_preprocessors_reach_the_encoder(cli, server, sky, tmp_path):
    """``--preprocess`` (a registered step, here a throwaway plugin's) runs on SDSS cutouts as on files."""
    plugin = tmp_path / "plugins" / "invert.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "import numpy as np\nimport ulisse\nfrom ulisse.registry import Preprocessor\n\n"
        "class Invert:\n    fingerprint = 'invert-1'\n    def __call__(self, images):\n"
        "        return [255 - np.asarray(im) for im in images]\n\n"
        "@ulisse.hookimpl\ndef register_preprocessors(config):\n"
        "    return [Preprocessor('invert', 'inverts the cutouts', load=lambda arg: Invert())]\n")
    opts = ["--plugins-dir", plugin.parent]
    code, _, err = cli(*opts, "-q", "sdss", "index", tmp_path / "inv", *field_args(A), *service_opts(server),
                       *ENCODER, "--preprocess", "invert")
    assert code == 0, err
    code, _, err = cli("-q", "sdss", "index", tmp_path / "plain", *field_args(A), *service_opts(server), *ENCODER)
    assert code == 0, err
    inv, plain = contents(tmp_path / "inv")[1], contents(tmp_path / "plain")[1]
    assert not np.allclose(inv, plain)
    spec = json.loads((tmp_path / "inv" / "manifest.json").read_text())["encoder"]
    assert [p["name"] for p in spec["preprocessors"]] == ["invert"]
    ref = folder_build(cli, tmp_path / "inv", tmp_path / "ref", *ENCODER, "--preprocess", "invert", first=opts)
    assert_same_as_folder_build(tmp_path / "inv", ref)


@pytest.mark.slow
def test_dask_batch_equals_a_folder_build_and_keeps_feature_lists(cli, server, sky, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "dask"
    code, _, err = cli("-q", "sdss", "index", out, *field_args(A, B, C), *service_opts(server), *ENCODER, *DISCOVERY,
                       "--dask", "local:2")
    assert code == 0, err
    ref = folder_build(cli, out, tmp_path / "folder", *ENCODER, *DISCOVERY)
    assert_same_as_folder_build(out, ref)
    assert_feature_lists(cli, out, ref)
    assert contents(out)[0] == ids_of(sky, A, B, C)


@pytest.mark.slow
def test_existing_index_ignores_encoder_options_with_a_note(cli, server, sky, tmp_path):
    out = tmp_path / "idx"
    code, _, err = cli("-q", "sdss", "index", out, *field_args(A), *service_opts(server), *ENCODER, *DISCOVERY)
    assert code == 0, err
    code, _, err = cli("sdss", "index", out, *field_args(B), *service_opts(server), "--device", "cpu",
                       "--tta", "d4", "--weights", "random")
    assert code == 0, err
    assert "--tta d4 ignored" in err and "--weights" not in err
    assert json.loads((out / "manifest.json").read_text())["encoder"]["tta"] == "rot4"
    assert_feature_lists(cli, out)  # an add to the index merges into its feature lists


# --------------------------------------------------------------------------- resume

@pytest.mark.slow
def test_killed_run_resumes_without_loss_or_duplicates(cli, server, sky, tmp_path):
    out = tmp_path / "idx"
    server.fault("frame-g-000756-1-0207", delay=30, times=1)  # B hangs: the run is killed while it waits
    cmd = [sys.executable, "-m", "ulisse", "-q", "sdss", "index", str(out), *map(str, field_args(A, B, C)),
           *map(str, service_opts(server, timeout=60)), *ENCODER]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shards = out / ".sdss-work" / "shards"
    deadline = time.monotonic() + 90
    try:
        while not list(shards.glob("756-1-206-*.npz")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "manifest.json").exists()  # killed before the index was assembled
    assert len(list(shards.glob("*.npz"))) == 1

    server.clear()
    code, stdout, err = cli("sdss", "index", out, *field_args(A, B, C), *service_opts(server), *ENCODER)
    assert code == 0, err
    assert "3 of 3 field(s) done (1 by an earlier run)" in stdout
    assert server.hits("-0206.fits") == 0  # A was not done again: neither its catalogue nor its frames
    ids, vectors, _ = contents(out)
    assert ids == ids_of(sky, A, B, C) and len(set(ids)) == len(ids)

    code, _, err = cli("-q", "sdss", "index", tmp_path / "ref", *field_args(A, B, C), *service_opts(server), *ENCODER)
    assert code == 0, err
    ref_ids, ref_vectors, _ = contents(tmp_path / "ref")
    assert ids == ref_ids
    np.testing.assert_allclose(vectors, ref_vectors, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_failed_field_is_reported_then_done_on_rerun(cli, server, sky, tmp_path):
    out = tmp_path / "idx"
    server.fault("frame-r-000756-1-0207", status=500)  # always
    code, stdout, err = cli("sdss", "index", out, *field_args(A, B), *service_opts(server, retries=2), *ENCODER)
    assert_one_line_error(code, err, "1 field(s) failed", "756-1-207", "HTTP 500")
    assert "failed field 756-1-207 (ServiceError, 3 attempt(s))" in stdout
    assert server.hits("frame-r-000756-1-0207") == 3  # tried, then retried twice
    assert contents(out)[0] == ids_of(sky, A)  # the good field is indexed

    server.clear()  # the service is back; another --model is ignored: the index keeps its own encoder
    code, stdout, err = cli("sdss", "index", out, *field_args(A, B), *service_opts(server), "--model", "resnet18")
    assert code == 0, err
    assert "--model resnet18 ignored" in err
    ids = contents(out)[0]
    assert sorted(ids) == sorted(ids_of(sky, A, B)) and len(set(ids)) == len(ids)
    assert f"{len(ids_of(sky, B))} indexed, {len(ids_of(sky, A))} already in the index" in stdout
    assert server.hits("frame-r-000756-1-0206") == 0


# --------------------------------------------------------------------------- faults

@pytest.mark.slow
def test_http_500_is_retried_then_succeeds(cli, server, sky, tmp_path):
    server.fault("frame-r-000756-1-0206", status=500, times=2)
    server.fault("photoObj-000756-1-0207", status=503, times=1)  # the catalogue too
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", *field_args(A, B), *service_opts(server, retries=3),
                            *ENCODER)
    assert code == 0, err
    assert server.hits("frame-r-000756-1-0206") == 3
    assert server.hits("photoObj-000756-1-0207") == 2
    assert contents(tmp_path / "idx")[0] == ids_of(sky, A, B)


@pytest.mark.slow
def test_faults_give_per_field_errors_and_the_good_fields_are_indexed(cli, server, sky, tmp_path):
    server.prepare()  # frames drawn beforehand: only the injected delay is slower than the time-out
    server.fault("frame-g-000756-1-0207", delay=2.0)           # B: slower than the time-out, every time
    server.fault("frame-i-000756-1-0208", truncate_fits=True)   # C: a whole bzip2 stream of half a FITS file
    server.fault("frame-g-000756-1-0210", corrupt=True)         # E: corrupt bzip2 data
    server.fault("frame-r-000756-1-0211", truncate=True)        # F: the download stops early
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", *field_args(A, B, C, D, E, F),
                            *service_opts(server, timeout=1.0, retries=1), *ENCODER)
    assert_one_line_error(code, err, "4 field(s) failed")
    failed = {ln.split()[2]: ln for ln in stdout.splitlines() if ln.startswith("failed field")}
    assert set(failed) == {str(B), str(C), str(E), str(F)}
    assert "ServiceError, 2 attempt(s)" in failed[str(B)] and "no answer within 1 s" in failed[str(B)]
    assert "FrameError, 2 attempt(s)" in failed[str(C)] and "truncated FITS" in failed[str(C)]
    assert f"empty field {D}: no primary objects" in stdout  # an empty field is done, not failed
    assert "FrameError" in failed[str(E)] and "corrupt bzip2" in failed[str(E)]
    assert "FrameError" in failed[str(F)] and "truncated download" in failed[str(F)]
    assert "2 of 6 field(s) done (1 empty)" in stdout
    assert contents(tmp_path / "idx")[0] == ids_of(sky, A)
    # nothing broken was cached
    cache = tmp_path / "idx" / ".sdss-cache"
    assert not list(cache.rglob("frame-i-000756-1-0208.fits")) and not list(cache.rglob(".tmp-*"))


def test_edge_objects_skipped_with_a_reason(cli, server, sky, tmp_path):
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", *field_args(B), "--prune-cache",
                            *service_opts(server), *ENCODER)
    assert code == 0, err
    assert not list((tmp_path / "idx" / ".sdss-cache").rglob("*.fits"))  # --prune-cache: files gone once done
    ids, _, meta = contents(tmp_path / "idx")
    assert ids == ids_of(sky, B) and (meta["padded"] == 0).all()
    skipped_line = next(ln for ln in stdout.splitlines() if ln.startswith("skipped"))
    edge_ids = set(ids_of(sky, B, edge=True)) - set(ids)
    assert len(edge_ids) == EDGE_IN_B and all(i in skipped_line for i in edge_ids)


# --------------------------------------------------------------------------- other ways to choose objects

def test_region_through_sqlsearch_with_filters(cli, server, sky, tmp_path):
    ra, dec, radius = 150.1, 2.0, 0.115
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", "--region", ra, dec, radius, "--type", "galaxy",
                            "--mag-r-max", 18.5, "--edge", "pad", *service_opts(server), *ENCODER)
    assert code == 0, err
    prim = primary(sky)
    sep = np.degrees(np.arccos(np.clip(
        np.sin(np.radians(prim["dec"])) * np.sin(np.radians(dec))
        + np.cos(np.radians(prim["dec"])) * np.cos(np.radians(dec)) * np.cos(np.radians(prim["ra"] - ra)), -1, 1)))
    inside = prim[(sep <= radius) & (prim["type"] == 3) & (prim["modelMag_r"] <= 18.5)]
    assert set(inside["field"]) <= {A.field, B.field} and len(inside) >= 2
    want = list(inside.sort_values(["field"]).groupby("field", sort=True)["objID"]
                .apply(lambda s: sorted(s, key=int)).sum())
    assert contents(tmp_path / "idx")[0] == want
    assert server.hits("fGetNearbyObjEq(150.1, 2.0, 6.9") == 1 and server.hits("p.type = 3 AND p.modelMag_r <= 18.5") == 1
    assert server.hits("/tap") == 0 and server.hits("photoObj-") == 0


def test_tap_service_with_its_own_table_and_columns(cli, server, sky, tmp_path):
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", *field_args(A), "--tap-url", server.tap_url,
                            "--table", "dr17.PhotoPrimary", "--tap-columns", "objid=objID", "--type", "star", "--clean",
                            *service_opts(server), *ENCODER)
    assert code == 0, err
    prim = primary(sky)
    rows = prim[(prim["field"] == A.field) & (prim["type"] == 6) & (prim["clean"] == 1)]
    assert contents(tmp_path / "idx")[0] == sorted(rows["objID"], key=int)
    assert server.hits("FROM dr17.PhotoPrimary AS p WHERE p.run = 756 AND p.camcol = 1 AND p.field = 206 "
                       "AND p.type = 6 AND p.clean = 1") == 1
    assert server.hits("photoObj-") == 0


@pytest.mark.slow
def test_user_catalogue(cli, server, sky, tmp_path):
    cat = primary(sky)[primary(sky)["field"].isin([A.field, C.field])].rename(columns={"objID": "objid"})
    cat = cat[["objid", "ra", "dec", "run", "camcol", "field"]].assign(label=["agn", "star", "galaxy"] * 4)
    cat.to_csv(tmp_path / "mine.csv", index=False)
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", "--catalog", tmp_path / "mine.csv",
                            *service_opts(server), *ENCODER)
    assert code == 0, err
    ids, _, meta = contents(tmp_path / "idx")
    assert ids == ids_of(sky, A, C) and "label" in meta.columns
    assert server.hits("photoObj-") == 0 and server.hits("SqlSearch") == 0


def test_fields_file(cli, server, sky, tmp_path):
    (tmp_path / "fields.txt").write_text(f"# my fields\nrun camcol field\n{B.run} {B.camcol} {B.field}\n\n"
                                         f"{A.run},{A.camcol},{A.field}  # comment\n")
    assert read_field_list(tmp_path / "fields.txt") == [A, B]
    code, _, err = cli("-q", "sdss", "index", tmp_path / "idx", "--fields", tmp_path / "fields.txt",
                       "--cache", tmp_path / "frames", *service_opts(server), *ENCODER)
    assert code == 0, err
    assert len(list((tmp_path / "frames").rglob("frame-*.fits"))) == 6 and not (tmp_path / "idx/.sdss-cache").exists()
    assert len(list((tmp_path / "frames").rglob("photoObj-*.fits"))) == 2
    assert contents(tmp_path / "idx")[0] == ids_of(sky, A, B)


@pytest.mark.parametrize("args, words", [
    (["--fields", "no-such-fields.txt"], ["no-such-fields.txt", "no such file"]),
    (["--fields", "BAD"], ["bad-fields.txt:2", "RUN CAMCOL FIELD"]),
    (["--field", "756", "x", "206"], ["--field", "three whole numbers"]),
    (["--field", "756", "9", "206"], ["CAMCOL 1-6"]),
    (["--field", "9999999", "1", "1"], ["--field", "RUN 1-999999"]),  # SDSS's file names hold 6 digits of run
    (["--field", "756", "1", "10000"], ["--field", "FIELD 0-9999"]),
    (["--field", "756", "1"], ["--field takes RUN CAMCOL FIELD", "'756 1' then --sas-url"]),  # not click's extra arg
    (["--region", "150", "2", "0"], ["RADIUS_DEG", "greater than 0"]),
    (["--region", "150", "2", "-1"], ["RADIUS_DEG", "greater than 0"]),
    (["--region", "150", "95", "0.1"], ["not a sky position"]),
    ([], ["choose the fields"]),
    (["--field", "756", "1", "206", "--region", "150", "2", "0.1"], ["not both"]),
    (["--field", "756", "1", "206", "--dask", "bogus"], ["--dask bogus"]),
    (["--field", "756", "1", "206", "--release", "dr5"], ["--release dr5"]),
    (["--catalog", "missing.csv"], ["missing.csv", "not found"]),
    (["--field", "756", "1", "206", "--table", "PhotoPrimary p; DROP TABLE x"], ["--table", "not an identifier"]),
    (["--field", "756", "1", "206", "--tap-columns", "objid=objID) OR (1=1"], ["--tap-columns", "identifier"]),
    (["--field", "756", "1", "206", "--mag-r-max", "nan"], ["--mag-r-max", "finite"]),
])
def test_bad_input_is_a_one_line_error(cli, tmp_path, args, words):
    bad = tmp_path / "bad-fields.txt"
    bad.write_text("756 1 206\n756 1\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    args = [str(tmp_path / a) if a.endswith((".txt", ".csv")) and not os.path.isabs(a) else a for a in args]
    code, _, err = cli("sdss", "index", tmp_path / "idx", *args, "--sas-url", "http://127.0.0.1:9/sas", *ENCODER)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "idx").exists()  # not even an empty folder


def test_no_raw_sql_option(cli, tmp_path):
    code, _, err = cli("sdss", "index", tmp_path / "idx", "--field", 756, 1, 206, "--where", "1=1) OR (1=1")
    assert code == 2 and "No such option" in err and "--where" in err


def test_environment_table_must_be_an_identifier(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("ULISSE_SDSS_TABLE", "PhotoPrimary WHERE 1=1 --")
    code, _, err = cli("sdss", "index", tmp_path / "idx", "--field", 756, 1, 206, *ENCODER)
    assert_one_line_error(code, err, "ULISSE_SDSS_TABLE", "not an identifier")


# --------------------------------------------------------------------------- fetch cutouts

def test_fetch_cutouts_rate_retries_resume(cli, server, sky, tmp_path):
    from PIL import Image

    cat = sky.head(8).rename(columns={"objID": "id"})[["id", "ra", "dec"]]
    cat.to_csv(tmp_path / "targets.csv", index=False)
    server.fault(f"ra={float(cat['ra'].iloc[3])!r}", status=500, times=1)
    out = tmp_path / "cutouts"
    rate = 20.0
    code, stdout, err = cli("fetch", "cutouts", tmp_path / "targets.csv", "--out", out, "--rate", rate,
                            *service_opts(server, retries=2)[2:])
    assert code == 0, err
    assert "8 fetched, 0 already there, 0 failed" in stdout
    for oid in cat["id"]:
        with Image.open(out / f"{oid}.jpg") as im:
            assert im.format == "JPEG" and im.size == (64, 64)
    assert json.loads((out / "cutout_geometry.json").read_text())["orientation"] == "north-up-east-left"
    times = sorted(t for t, _, line in server.requests if "getjpeg" in line)
    assert len(times) == 9  # 8 + one retry
    assert (len(times) - 1) / (times[-1] - times[0]) <= rate * 1.15
    assert all("scale=0.4" in line and "width=64" in line for _, _, line in server.requests)

    # resumable: only the missing files are fetched; a persistent failure is reported, the rest written
    (out / f"{cat['id'].iloc[0]}.jpg").unlink()
    (out / f"{cat['id'].iloc[1]}.jpg").unlink()
    server.clear()
    server.fault(f"ra={float(cat['ra'].iloc[1])!r}", status=500)
    code, stdout, err = cli("fetch", "cutouts", tmp_path / "targets.csv", "--out", out, "--rate", 50,
                            *service_opts(server, retries=1)[2:])
    assert_one_line_error(code, err, "1 cutout(s) failed", str(cat["id"].iloc[1]), "HTTP 500")
    assert "1 fetched, 6 already there, 1 failed" in stdout
    assert server.hits("getjpeg") == 1 + 2
    assert (out / f"{cat['id'].iloc[0]}.jpg").is_file() and not (out / f"{cat['id'].iloc[1]}.jpg").exists()
    assert not list(out.glob(".*tmp*"))


# --------------------------------------------------------------------------- the parts

def test_config_from_environment_and_options(monkeypatch):
    monkeypatch.setenv("ULISSE_SDSS_SKYSERVER_URL", "http://sky.example/{release}")
    monkeypatch.setenv("ULISSE_SDSS_TIMEOUT", "7.5")
    c = SDSSConfig.from_env(release="dr16", sas_url="http://sas.example/sas/")
    assert c.sql_search == "http://sky.example/dr16/SkyServerWS/SearchTools/SqlSearch" and c.timeout == 7.5
    assert c.sas == "http://sas.example/sas" and c.tap == ""
    assert SDSSConfig.from_env(skyserver_url="http://other").skyserver == "http://other"  # options beat the env
    d = SDSSConfig()
    assert ScienceArchive(d).frame_url("r", A) == \
        "https://data.sdss.org/sas/dr17/eboss/photoObj/frames/301/756/1/frame-r-000756-1-0206.fits.bz2"
    assert ScienceArchive(d).photoobj_path(A) == "dr17/eboss/photoObj/301/756/1/photoObj-000756-1-0206.fits"
    assert ScienceArchive(SDSSConfig(release="dr12")).frame_path("g", Field(94, 6, 12)) == \
        "dr12/boss/photoObj/frames/301/94/6/frame-g-000094-6-0012.fits.bz2"
    assert ImgCutoutService(d).url == "https://skyserver.sdss.org/dr17/SkyServerWS/ImgCutout/getjpeg"
    sql = SqlSearchCatalog(d).region_sql(185.0, 15.8, 0.05, ObjectFilter(kind="star", mag_r_max=19, clean=True))
    assert sql.endswith("FROM dbo.fGetNearbyObjEq(185.0, 15.8, 3.0) AS n JOIN PhotoPrimary AS p ON p.objID = n.objID "
                        "WHERE p.type = 6 AND p.modelMag_r <= 19.0 AND p.clean = 1")


def test_photoobj_reader_keeps_primaries_with_asinh_magnitudes(server, sky):
    from ulisse.plugins.sdss.catalog import asinh_mag

    raw = ScienceArchive(SDSSConfig(sas_url=server.sas_url)).photoobj(H)
    objects = read_photoobj(raw, "photoObj H", H)
    rows = sky[(sky["run"] == H.run) & (sky["field"] == H.field)]
    assert len(rows) > len(objects) and list(objects["id"]) == sorted(primary(rows)["objID"], key=int)
    truth = primary(rows).set_index("objID").loc[objects["id"]]
    np.testing.assert_allclose(objects["modelMag_r"], truth["modelMag_r"], atol=1e-4)
    assert (objects["flags"].to_numpy() == truth["flags"].to_numpy()).all()
    assert asinh_mag(1e9 * 10 ** (-0.4 * 20.0), "r") == pytest.approx(20.0, abs=1e-3)  # Pogson when bright
    with pytest.raises(FrameError, match="another field"):
        read_photoobj(raw, "photoObj H", G)


def test_with_retries_backs_off_exponentially():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise ServiceError("HTTP 503", status=503, retryable=True)
        return "ok"

    cfg = SDSSConfig(retries=3, backoff=0.5)
    assert with_retries(flaky, cfg, sleep=waits.append) == "ok" and waits == [0.5, 1.0, 2.0]
    calls.clear()
    with pytest.raises(ServiceError) as info:
        with_retries(flaky, SDSSConfig(retries=1, backoff=0.5), sleep=waits.append)
    assert info.value.attempts == 2
    with pytest.raises(EmptyFieldError):  # not retryable: raised at once
        with_retries(lambda: (_ for _ in ()).throw(EmptyFieldError("none")), cfg, sleep=pytest.fail)


def test_rate_limiter_spaces_requests():
    from ulisse.plugins.sdss.imgcutout import RateLimiter

    now = [0.0]
    starts = []

    def sleep(s):
        now[0] += s

    lim = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        lim.wait()
        starts.append(now[0])
    assert starts == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_catalogues_and_frames_raise_typed_errors(server):
    cfg = SDSSConfig(tap_url=server.tap_url, sas_url=server.sas_url, skyserver_url=server.skyserver_url, timeout=5)
    tap = TapCatalog(cfg)
    objects = tap.objects_in_field(A)
    assert list(objects.columns[:3]) == ["id", "ra", "dec"] and objects["id"].astype(int).is_monotonic_increasing
    with pytest.raises(EmptyFieldError):
        tap.objects_in_field(D)
    server.fault("field = 206", status=500, times=1)
    with pytest.raises(ServiceError) as info:
        tap.objects_in_field(A)
    assert info.value.retryable and info.value.status == 500
    server.fault("field = 206", delay=1.0, times=1)
    with pytest.raises(ServiceError, match="no answer within 0.3 s") as info:
        TapCatalog(SDSSConfig(tap_url=server.tap_url, timeout=0.3)).objects_in_field(A)
    assert info.value.retryable and info.value.status is None
    sql = SqlSearchCatalog(cfg)
    with pytest.raises(EmptyFieldError):
        sql.objects_in_region(10.0, -40.0, 0.1)
    server.fault("SqlSearch", status=500, times=1)
    with pytest.raises(ServiceError) as info:
        sql.objects_in_region(150.0, 2.0, 0.05)
    assert info.value.retryable and info.value.status == 500
    archive = ScienceArchive(cfg)
    with pytest.raises(ServiceError) as info:
        archive.frame("r", Field(1, 1, 1))
    assert info.value.status == 404 and not info.value.retryable
    server.fault("frame-r-000756-1-0206", truncate=True, times=1)
    with pytest.raises(FrameError, match="truncated download"):
        archive.frame("r", A)
    assert issubclass(FrameError, SDSSError) and issubclass(SDSSError, ulisse.UlisseError)


def test_damaged_cache_file_is_fetched_again(server, tmp_path):
    archive = ScienceArchive(SDSSConfig(sas_url=server.sas_url), cache_dir=tmp_path)
    archive.frame("g", A)
    path = archive.cached_path("g", A)
    path.write_bytes(path.read_bytes()[:5000])
    frame = archive.frame("g", A)
    assert frame.data.shape == (300, 400) and server.hits("frame-g-000756-1-0206") == 2


# --------------------------------------------------------------------------- the real services

@pytest.mark.remote_data
def test_real_photoobj_field(tmp_path):
    archive = ScienceArchive(SDSSConfig(timeout=120), cache_dir=tmp_path)
    objects = read_photoobj(archive.photoobj(Field(756, 1, 206)), "photoObj", Field(756, 1, 206))
    assert len(objects) > 10 and set(objects["field"]) == {206}


@pytest.mark.remote_data
def test_real_sqlsearch_region():
    objects = SqlSearchCatalog(SDSSConfig(timeout=120)).objects_in_region(185.0, 15.8, 0.02)
    assert len(objects) > 3 and {"run", "camcol", "field", "modelMag_r"} <= set(objects.columns)


@pytest.mark.remote_data
def test_real_sas_frame(tmp_path):
    frame = ScienceArchive(SDSSConfig(timeout=120), cache_dir=tmp_path).frame("r", Field(756, 1, 206))
    assert frame.data.shape == (1489, 2048) and frame.wcs.has_celestial


@pytest.mark.remote_data
def test_real_imgcutout():
    data = ImgCutoutService(SDSSConfig(timeout=60)).jpeg(185.0, 15.8)
    assert data[:2] == b"\xff\xd8"
