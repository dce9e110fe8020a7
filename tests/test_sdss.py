"""The SDSS plugin: ``ulisse sdss index`` and ``ulisse fetch cutouts``, offline against a local fake of SDSS.

``tests/sdss_server.py`` serves a TAP endpoint (queried for real by pyvo), SAS
frames in their real layout and ImgCutout JPEGs on 127.0.0.1, and injects
faults (HTTP 500, delays past the time-out, truncated or corrupt bytes, empty
fields). The encoder is the tiny ``test_efficientnet`` with random weights.
Tests against SDSS's real services are marked ``remote_data``.
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

import ulisse

sys.path.insert(0, str(Path(__file__).parent))
from sdss_server import FieldSpec, SDSSServer, make_sky  # noqa: E402

import ulisse  # noqa: E402
from ulisse.plugins.sdss_errors import EmptyFieldError, FrameError, SDSSError, ServiceError  # noqa: E402
from ulisse.plugins.sdss_config import Field, SDSSConfig, read_field_list  # noqa: E402
from ulisse.plugins.sdss_http import with_retries  # noqa: E402
from ulisse.plugins.sdss_imgcutout import ImgCutoutService  # noqa: E402
from ulisse.plugins.sdss_sas import ScienceArchive  # noqa: E402
from ulisse.plugins.sdss_tap import SkyServerCatalog  # noqa: E402

A, B, C, D, E, F = (Field(756, 1, n) for n in (206, 207, 208, 209, 210, 211))
SPECS = [FieldSpec(f.run, f.camcol, f.field, 150.0 + 0.2 * k, 2.0) for k, f in enumerate((A, B, C, D, E, F))]
EDGE_IN_B = 2
ENCODER = ["--model", "test_efficientnet", "--weights", "random", "--device", "cpu"]


@pytest.fixture(scope="module")
def sky() -> pd.DataFrame:
    """The fake PhotoPrimary: 6 objects in each field but D (empty), 2 more at B's frame edge."""
    return make_sky([s for s in SPECS if s.key != (D.run, D.camcol, D.field)], per_field=6,
                    edge={(B.run, B.camcol, B.field): EDGE_IN_B})


@pytest.fixture()
def server(sky):
    with SDSSServer(sky, SPECS) as s:
        yield s


def service_opts(server, timeout=5.0, retries=2, backoff=0.01):
    return ["--tap-url", server.tap_url, "--sas-url", server.sas_url, "--skyserver-url", server.skyserver_url,
            "--timeout", timeout, "--retries", retries, "--backoff", backoff]


def field_args(*fields):
    out = []
    for f in fields:
        out += ["--field", f.run, f.camcol, f.field]
    return out


def ids_of(sky, *fields) -> list[str]:
    """The ids the index should hold: fields in (run, camcol, field) order, objects in objid order."""
    out = []
    for f in sorted(fields):
        rows = sky[(sky["run"] == f.run) & (sky["camcol"] == f.camcol) & (sky["field"] == f.field)]
        out += [str(i) for i in sorted(rows["objID"])]
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

def test_two_fields_end_to_end(cli, server, sky, tmp_path):
    out = tmp_path / "idx"
    code, stdout, err = cli("sdss", "index", out, *field_args(A, B), *service_opts(server), *ENCODER)
    assert code == 0, err
    assert "2 of 2 field(s) done" in stdout and f"{len(ids_of(sky, A, B))} indexed" in stdout

    ids, vectors, meta = contents(out)
    assert ids == ids_of(sky, A, B)
    assert vectors.shape[0] == len(ids) and np.isfinite(vectors).all()
    for col in ("ra", "dec", "type", "run", "rerun", "camcol", "field", "modelMag_g", "modelMag_r", "modelMag_i",
                "edge", "source", "frame"):
        assert col in meta.columns, col
    row = meta.set_index("id").loc[ids[0]]
    truth = sky.set_index(sky["objID"].astype(str)).loc[ids[0]]
    assert row["ra"] == pytest.approx(truth["ra"]) and row["modelMag_r"] == pytest.approx(truth["modelMag_r"])
    assert (row["run"], row["camcol"], row["field"]) == (756, 1, 206)
    assert row["frame"] == "dr17/eboss/photoObj/frames/301/756/1/frame-r-000756-1-0206.fits.bz2"
    # each object's RGB cutout is kept beside the index, for thumbnails
    from PIL import Image

    from ulisse.plot import thumbnail

    assert row["source"] == str((out / "cutouts" / "756-1-206" / f"{ids[0]}.png").resolve())
    assert Image.open(row["source"]).size == (64, 64)
    assert thumbnail(ulisse.open_index(out, device="cpu"), ids[0]).shape == (64, 64, 3)
    # B's two objects 10 px from the frame's edge are padded and flagged; the others are not
    assert int(meta["edge"].sum()) == EDGE_IN_B and set(meta[meta["edge"]]["field"]) == {207}

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
    assert {"run", "camcol", "field", "type", "modelMag_r", "edge"} <= set(rows[0])

    # the same command again adds nothing and fetches nothing
    server.clear()
    code, stdout, err = cli("sdss", "index", out, *field_args(A, B), *service_opts(server), *ENCODER)
    assert code == 0, err
    assert "2 field(s) done (2 by an earlier run)" in stdout and "0 indexed" in stdout
    assert server.requests == []
    assert contents(out)[0] == ids


def test_cutouts_use_each_bands_wcs(server, sky):
    """g, r, i frames are offset by a few pixels: each band's cutout is centred on the object all the same."""
    from ulisse.plugins.sdss_frames import cut_field
    from ulisse.plugins.sdss_tap import normalise_objects

    archive = ScienceArchive(SDSSConfig(sas_url=server.sas_url))
    frames = {b: archive.frame(b, A) for b in "gri"}
    objects = normalise_objects(sky[sky["field"] == A.field].copy(), "sky")
    stars = objects[objects["type"] == 6].head(2)
    def peak_offset(data, wcs, ra, dec):
        x, y = (int(round(float(v))) for v in wcs.world_to_pixel_values(ra, dec))
        window = data[y - 10:y + 11, x - 10:x + 11]
        iy, ix = np.unravel_index(np.argmax(window), window.shape)
        return np.hypot(ix - 10, iy - 10)

    for star in stars.itertuples():
        for band, frame in frames.items():
            assert peak_offset(frame.data, frame.wcs, star.ra, star.dec) <= 1.5, band
        # with the r frame's WCS the i band's star would be several pixels off
        assert peak_offset(frames["i"].data, frames["r"].wcs, star.ra, star.dec) > 3
    result = cut_field(frames, stars)
    assert len(result.images) == len(stars) and not any(result.edge)
    for image in result.images:
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert image[28:36, 28:36].mean() > image[:8, :8].mean() + 20  # the object is in the middle


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
    # the same cutout files, each in its own index folder
    rel = [[str(Path(p).relative_to((tmp_path / d).resolve())) for p in m["source"]] for d, m in (("one", m1), ("dask", m2))]
    assert rel[0] == rel[1]
    pd.testing.assert_frame_equal(m1.drop(columns=["source"]), m2.drop(columns=["source"]))


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
    assert server.hits("field = 206") == 0 and server.hits("-0206.fits") == 0  # A was not done again
    ids, vectors, _ = contents(out)
    assert ids == ids_of(sky, A, B, C) and len(set(ids)) == len(ids)

    code, _, err = cli("-q", "sdss", "index", tmp_path / "ref", *field_args(A, B, C), *service_opts(server), *ENCODER)
    assert code == 0, err
    ref_ids, ref_vectors, _ = contents(tmp_path / "ref")
    assert ids == ref_ids
    np.testing.assert_allclose(vectors, ref_vectors, rtol=1e-4, atol=1e-5)


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

def test_http_500_is_retried_then_succeeds(cli, server, sky, tmp_path):
    server.fault("frame-r-000756-1-0206", status=500, times=2)
    server.fault("field = 207", status=503, times=1)  # the TAP service too
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", *field_args(A, B), *service_opts(server, retries=3),
                            *ENCODER)
    assert code == 0, err
    assert server.hits("frame-r-000756-1-0206") == 3
    assert server.hits("field = 207") == 2
    assert contents(tmp_path / "idx")[0] == ids_of(sky, A, B)


def test_faults_give_per_field_errors_and_the_good_fields_are_indexed(cli, server, sky, tmp_path):
    server.fault("frame-g-000756-1-0207", delay=1.0)           # B: slower than the time-out, every time
    server.fault("frame-i-000756-1-0208", truncate_fits=True)   # C: a whole bzip2 stream of half a FITS file
    server.fault("frame-g-000756-1-0210", corrupt=True)         # E: corrupt bzip2 data
    server.fault("frame-r-000756-1-0211", truncate=True)        # F: the download stops early
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", *field_args(A, B, C, D, E, F),
                            *service_opts(server, timeout=0.4, retries=1), *ENCODER)
    assert_one_line_error(code, err, "5 field(s) failed")
    failed = {ln.split()[2]: ln for ln in stdout.splitlines() if ln.startswith("failed field")}
    assert set(failed) == {str(B), str(C), str(D), str(E), str(F)}
    assert "ServiceError, 2 attempt(s)" in failed[str(B)] and "no answer within 0.4 s" in failed[str(B)]
    assert "FrameError, 2 attempt(s)" in failed[str(C)] and "truncated FITS" in failed[str(C)]
    assert "EmptyFieldError, 1 attempt(s)" in failed[str(D)] and "no objects" in failed[str(D)]
    assert "FrameError" in failed[str(E)] and "corrupt bzip2" in failed[str(E)]
    assert "FrameError" in failed[str(F)] and "truncated download" in failed[str(F)]
    assert "1 of 6 field(s) done" in stdout
    assert contents(tmp_path / "idx")[0] == ids_of(sky, A)
    # nothing broken was cached
    cache = tmp_path / "idx" / ".sdss-cache"
    assert not list(cache.rglob("frame-i-000756-1-0208.fits")) and not list(cache.rglob("*.tmp-*"))


def test_edge_objects_skipped_with_a_reason(cli, server, sky, tmp_path):
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", *field_args(B), "--edge", "skip", "--prune-cache",
                            *service_opts(server), *ENCODER)
    assert code == 0, err
    assert not list((tmp_path / "idx" / ".sdss-cache").rglob("*.fits"))  # --prune-cache: frames gone once done
    ids, _, meta = contents(tmp_path / "idx")
    assert len(ids) == len(ids_of(sky, B)) - EDGE_IN_B and not meta["edge"].any()
    skipped_line = next(ln for ln in stdout.splitlines() if ln.startswith("skipped"))
    assert skipped_line.startswith(f"skipped {EDGE_IN_B} object(s), at the frame edge")
    edge_ids = set(ids_of(sky, B)) - set(ids)
    assert all(i in skipped_line for i in edge_ids)


# --------------------------------------------------------------------------- other ways to choose objects

def test_region_groups_objects_by_field(cli, server, sky, tmp_path):
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    ra, dec, radius = 150.1, 2.0, 0.115
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", "--region", ra, dec, radius, *service_opts(server),
                            *ENCODER)
    assert code == 0, err
    sep = SkyCoord(sky["ra"].to_numpy() * u.deg, sky["dec"].to_numpy() * u.deg).separation(SkyCoord(ra * u.deg, dec * u.deg))
    inside = sky[sep.deg <= radius]
    assert set(inside["field"]) == {A.field, B.field}  # the cone takes part of two fields
    want = [str(i) for i in inside.sort_values(["field", "objID"])["objID"]]
    assert contents(tmp_path / "idx")[0] == want
    assert server.hits("CIRCLE('ICRS', 150.1, 2.0, 0.115)") == 1 and server.hits("field = ") == 0


def test_user_catalogue_needs_no_tap(cli, server, sky, tmp_path):
    cat = sky[sky["field"].isin([A.field, C.field])].rename(columns={"objID": "objid"})
    cat = cat[["objid", "ra", "dec", "run", "camcol", "field"]].assign(label=["agn", "star", "galaxy"] * 4)
    cat.to_csv(tmp_path / "mine.csv", index=False)
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", "--catalog", tmp_path / "mine.csv",
                            *service_opts(server), *ENCODER)
    assert code == 0, err
    ids, _, meta = contents(tmp_path / "idx")
    assert ids == ids_of(sky, A, C) and "label" in meta.columns
    assert server.hits("/tap") == 0


def test_fields_file(cli, server, sky, tmp_path):
    (tmp_path / "fields.txt").write_text(f"# my fields\nrun camcol field\n{B.run} {B.camcol} {B.field}\n\n"
                                         f"{A.run},{A.camcol},{A.field}  # comment\n")
    assert read_field_list(tmp_path / "fields.txt") == [A, B]
    code, _, err = cli("-q", "sdss", "index", tmp_path / "idx", "--fields", tmp_path / "fields.txt",
                       "--cache", tmp_path / "frames", *service_opts(server), *ENCODER)
    assert code == 0, err
    assert len(list((tmp_path / "frames").rglob("frame-*.fits"))) == 6 and not (tmp_path / "idx/.sdss-cache").exists()
    assert contents(tmp_path / "idx")[0] == ids_of(sky, A, B)


@pytest.mark.parametrize("args, words", [
    (["--fields", "no-such-fields.txt"], ["no-such-fields.txt", "no such file"]),
    (["--fields", "BAD"], ["bad-fields.txt:2", "RUN CAMCOL FIELD"]),
    (["--field", "756", "x", "206"], ["--field", "three whole numbers"]),
    (["--field", "756", "9", "206"], ["CAMCOL 1-6"]),
    (["--region", "150", "2", "0"], ["RADIUS_DEG", "greater than 0"]),
    (["--region", "150", "2", "-1"], ["RADIUS_DEG", "greater than 0"]),
    (["--region", "150", "95", "0.1"], ["not a sky position"]),
    ([], ["choose the fields"]),
    (["--field", "756", "1", "206", "--region", "150", "2", "0.1"], ["not both"]),
    (["--field", "756", "1", "206", "--dask", "bogus"], ["--dask bogus"]),
    (["--field", "756", "1", "206", "--release", "dr5"], ["--release dr5"]),
    (["--catalog", "missing.csv"], ["missing.csv", "not found"]),
])
def test_bad_input_is_a_one_line_error(cli, tmp_path, args, words):
    bad = tmp_path / "bad-fields.txt"
    bad.write_text("756 1 206\n756 1\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    args = [str(tmp_path / a) if a.endswith((".txt", ".csv")) and not os.path.isabs(a) else a for a in args]
    code, _, err = cli("sdss", "index", tmp_path / "idx", *args, "--tap-url", "http://127.0.0.1:9/tap", *ENCODER)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "idx" / "manifest.json").exists()


# --------------------------------------------------------------------------- fetch cutouts

def test_fetch_cutouts_rate_retries_resume(cli, server, sky, tmp_path):
    from PIL import Image

    cat = sky.head(8).rename(columns={"objID": "id"})[["id", "ra", "dec"]]
    cat.to_csv(tmp_path / "targets.csv", index=False)
    server.fault(f"ra={float(cat['ra'].iloc[3])!r}", status=500, times=1)
    out = tmp_path / "cutouts"
    rate = 20.0
    code, stdout, err = cli("fetch", "cutouts", tmp_path / "targets.csv", "--out", out, "--rate", rate,
                            *service_opts(server, retries=2)[4:])
    assert code == 0, err
    assert "8 fetched, 0 already there, 0 failed" in stdout
    for oid in cat["id"]:
        with Image.open(out / f"{oid}.jpg") as im:
            assert im.format == "JPEG" and im.size == (64, 64)
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
                            *service_opts(server, retries=1)[4:])
    assert_one_line_error(code, err, "1 cutout(s) failed", str(cat["id"].iloc[1]), "HTTP 500")
    assert "1 fetched, 6 already there, 1 failed" in stdout
    assert server.hits("getjpeg") == 1 + 2
    assert (out / f"{cat['id'].iloc[0]}.jpg").is_file() and not (out / f"{cat['id'].iloc[1]}.jpg").exists()
    assert not list(out.glob(".*tmp*"))


# --------------------------------------------------------------------------- the parts

def test_config_from_environment_and_options(monkeypatch):
    monkeypatch.setenv("ULISSE_SDSS_TAP_URL", "http://tap.example/{release}/TAP")
    monkeypatch.setenv("ULISSE_SDSS_TIMEOUT", "7.5")
    c = SDSSConfig.from_env(release="dr16", sas_url="http://sas.example/sas/")
    assert c.tap == "http://tap.example/dr16/TAP" and c.timeout == 7.5 and c.sas == "http://sas.example/sas"
    assert SDSSConfig.from_env(tap_url="http://other/TAP").tap == "http://other/TAP"  # options beat the environment
    d = SDSSConfig()
    assert d.tap == "https://skyserver.sdss.org/dr17/SkyServerWS/TAP"
    assert ScienceArchive(d).frame_url("r", A) == \
        "https://data.sdss.org/sas/dr17/eboss/photoObj/frames/301/756/1/frame-r-000756-1-0206.fits.bz2"
    assert ScienceArchive(SDSSConfig(release="dr12")).frame_path("g", Field(94, 6, 12)) == \
        "dr12/boss/photoObj/frames/301/94/6/frame-g-000094-6-0012.fits.bz2"
    assert ImgCutoutService(d).url == "https://skyserver.sdss.org/dr17/SkyServerWS/ImgCutout/getjpeg"


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
    from ulisse.plugins.sdss_imgcutout import RateLimiter

    now = [0.0]
    starts = []

    def sleep(s):
        now[0] += s

    lim = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        lim.wait()
        starts.append(now[0])
    assert starts == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_catalogue_and_frames_raise_typed_errors(server):
    cfg = SDSSConfig(tap_url=server.tap_url, sas_url=server.sas_url, timeout=5)
    cat = SkyServerCatalog(cfg)
    objects = cat.objects_in_field(A)
    assert list(objects.columns[:3]) == ["id", "ra", "dec"] and objects["id"].is_monotonic_increasing
    with pytest.raises(EmptyFieldError):
        cat.objects_in_field(D)
    server.fault("field = 206", status=500, times=1)
    with pytest.raises(ServiceError) as info:
        cat.objects_in_field(A)
    assert info.value.retryable and info.value.status == 500
    server.fault("field = 206", status=400, times=1)
    with pytest.raises(ServiceError) as info:
        cat.objects_in_field(A)
    assert not info.value.retryable
    server.fault("field = 206", delay=1.0, times=1)
    with pytest.raises(ServiceError, match="no answer within 0.3 s") as info:
        SkyServerCatalog(SDSSConfig(tap_url=server.tap_url, timeout=0.3)).objects_in_field(A)
    assert info.value.retryable and info.value.status is None
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
def test_real_skyserver_tap_field():
    objects = SkyServerCatalog(SDSSConfig(timeout=120)).objects_in_field(Field(756, 1, 206))
    assert len(objects) > 10 and set(objects["field"]) == {206}


@pytest.mark.remote_data
def test_real_sas_frame(tmp_path):
    frame = ScienceArchive(SDSSConfig(timeout=120), cache_dir=tmp_path).frame("r", Field(756, 1, 206))
    assert frame.data.shape == (1489, 2048) and frame.wcs.has_celestial


@pytest.mark.remote_data
def test_real_imgcutout():
    data = ImgCutoutService(SDSSConfig(timeout=60)).jpeg(185.0, 15.8)
    assert data[:2] == b"\xff\xd8"
