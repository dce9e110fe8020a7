"""``ulisse sdss index`` across runs: damaged catalogues are not cached, empty fields are done, one run per folder.

Against the local stand-in of SDSS (``tests/sdss_server.py``) and the tiny random encoder, as ``test_sdss.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_sdss import (A, B, D, ENCODER, assert_one_line_error, contents, field_args, ids_of,  # noqa: E402,F401
                       server, service_opts, sky)

import ulisse  # noqa: E402
from ulisse.plugins.sdss.catalog import read_photoobj  # noqa: E402
from ulisse.plugins.sdss.config import SDSSConfig  # noqa: E402
from ulisse.plugins.sdss.frames import ScienceArchive  # noqa: E402

CATALOGUE_A = "photoObj-000756-1-0206"


# --------------------------------------------------------------------------- damaged catalogues

def test_corrupt_catalogue_is_not_cached_and_is_fetched_again(cli, server, sky, tmp_path):
    out = tmp_path / "idx"
    server.fault(CATALOGUE_A, corrupt=True)
    code, stdout, err = cli("sdss", "index", out, *field_args(A), *service_opts(server, retries=1), *ENCODER)
    assert_one_line_error(code, err, "1 field(s) failed", "unreadable photoObj file")
    assert server.hits(CATALOGUE_A) == 2  # the retry downloaded it again: the damaged file was not kept
    assert "WARNING" not in err and "null bytes" not in err  # astropy's own complaints stay out of stderr
    assert not list((out / ".sdss-cache").rglob("photoObj-*"))

    server.clear()  # the archive serves a good file again: the next run uses it
    code, stdout, err = cli("sdss", "index", out, *field_args(A), *service_opts(server), *ENCODER)
    assert code == 0, err
    assert contents(out)[0] == ids_of(sky, A)


def test_corrupt_catalogue_once_is_retried_within_the_run(cli, server, sky, tmp_path):
    server.fault(CATALOGUE_A, corrupt=True, times=1)
    code, _, err = cli("sdss", "index", tmp_path / "idx", *field_args(A), *service_opts(server, retries=1), *ENCODER)
    assert code == 0, err
    assert server.hits(CATALOGUE_A) == 2 and contents(tmp_path / "idx")[0] == ids_of(sky, A)


def test_damaged_cached_catalogue_is_fetched_again(server, tmp_path):
    archive = ScienceArchive(SDSSConfig(sas_url=server.sas_url), cache_dir=tmp_path)
    good = archive.photoobj(A)
    cached = tmp_path / archive.photoobj_path(A)
    cached.write_bytes(good[:2880] + b"\0" * 2880)  # a FITS start, then nothing readable
    raw = archive.photoobj(A)
    assert raw == good and server.hits(CATALOGUE_A) == 2 and cached.read_bytes() == good
    assert len(read_photoobj(raw, "photoObj", A)) > 0


# --------------------------------------------------------------------------- empty fields

def test_empty_field_is_done_not_failed_and_not_asked_again(cli, server, sky, tmp_path):
    out = tmp_path / "idx"
    code, stdout, err = cli("sdss", "index", out, *field_args(A, D), *service_opts(server), *ENCODER)
    assert code == 0, err
    assert "2 of 2 field(s) done (1 empty), 0 failed" in stdout
    assert f"empty field {D}: no primary objects in field {D}" in stdout
    assert contents(out)[0] == ids_of(sky, A)
    assert server.hits("frame-r-000756-1-0209") == 0  # no frame of an empty field

    code, stdout, err = cli("sdss", "index", out, *field_args(A, D), *service_opts(server), *ENCODER)
    assert code == 0, err
    assert "2 of 2 field(s) done (2 by an earlier run, 1 empty), 0 failed" in stdout
    assert server.hits("photoObj-000756-1-0209") == 1  # recorded as done: not asked for again


def test_a_run_whose_every_field_is_empty_says_no_index_was_written(cli, server, sky, tmp_path):
    out = tmp_path / "idx"
    for _ in range(2):  # the second run does nothing again and says the same
        code, stdout, err = cli("sdss", "index", out, *field_args(A, D), "--mag-r-max", 5, *service_opts(server),
                                *ENCODER)
        assert_one_line_error(code, err, "no index was written", "none of the 2 fields has an object to index")
        assert "2 of 2 field(s) done" in stdout and "no index was written" in stdout and "holds 0" not in stdout
        assert not (out / "manifest.json").exists()
    assert server.hits(CATALOGUE_A) == 1


def test_failed_first_run_says_no_index_was_written(cli, server, tmp_path):
    server.fault(CATALOGUE_A, status=404)
    code, stdout, err = cli("sdss", "index", tmp_path / "idx", *field_args(A), *service_opts(server), *ENCODER)
    assert_one_line_error(code, err, "1 field(s) failed")
    assert "no index was written" in stdout and "holds 0" not in stdout


# --------------------------------------------------------------------------- one run per folder

def test_second_run_on_the_same_folder_stops_before_any_download(cli, server, sky, tmp_path):
    out = tmp_path / "idx"
    server.fault("frame-g-000756-1-0206", delay=30, times=1)  # the first run waits here while the second starts
    cmd = [sys.executable, "-m", "ulisse", "-q", "sdss", "index", str(out), *map(str, field_args(A)),
           *map(str, service_opts(server, timeout=60)), *ENCODER]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while not server.hits("frame-g-000756-1-0206"):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never asked for a frame"
            time.sleep(0.05)
        code, _, err = cli("sdss", "index", out, *field_args(A), *service_opts(server), *ENCODER)
    finally:
        first.kill()
        first.wait()
    assert_one_line_error(code, err, str(out), "another 'ulisse sdss index' run", f"(pid {first.pid})")
    assert "--overwrite" not in err
    assert server.hits(CATALOGUE_A) == 1  # the first run's only: the second downloaded nothing


def test_index_created_meanwhile_is_extended(cli, server, sky, tmp_path):
    from ulisse.plugins.sdss.batch import FieldTask, index_fields
    from ulisse.plugins.sdss.worker import LocalRunner

    other = tmp_path / "other"
    code, _, err = cli("-q", "sdss", "index", other, *field_args(A), *service_opts(server), *ENCODER)
    assert code == 0, err
    out = tmp_path / "idx"

    class IndexAppears(LocalRunner):
        """Another writer creates the index in the folder once this run has begun."""

        def run(self, tasks, settings, done):
            shutil.copytree(other, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".sdss-*", "cutouts"))
            super().run(tasks, settings, done)

    encoder = ulisse.open_index(other, device="cpu").encoder
    config = SDSSConfig(sas_url=server.sas_url, skyserver_url=server.skyserver_url, retries=0)
    report = index_fields(out, [FieldTask(A), FieldTask(B)], config, encoder=encoder, device="cpu",
                          runner=IndexAppears(), progress=False)
    assert not report.failed and report.written
    assert report.added == len(ids_of(sky, B)) and report.already == len(ids_of(sky, A))
    ids = contents(out)[0]
    assert ids == ids_of(sky, A, B) and report.total == len(ids)


# --------------------------------------------------------------------------- options

def test_factory_auto_is_accepted(cli, server, sky, tmp_path):
    code, _, err = cli("-q", "sdss", "index", tmp_path / "idx", *field_args(A), "--factory", "auto",
                       *service_opts(server), *ENCODER)
    assert code == 0, err
    assert contents(tmp_path / "idx")[0] == ids_of(sky, A)
