"""The labelling loop (ulisse.plugins.feedback): marks kept with the index, rank, and ``ulisse rank``."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from ulisse.plugins.feedback import clear_marks, export_marks, mark, marks, marks_path, rank, read_ids


@pytest.fixture(scope="module")
def index(tmp_path_factory, survey, tiny_encoder):
    """One index of the 24-cutout survey for the module; marks are cleared before each test."""
    from ulisse import build_index

    idx, _ = build_index([survey / "cutouts"], tmp_path_factory.mktemp("feedback") / "idx", survey / "catalog.csv",
                         encoder=tiny_encoder, device="cpu", progress=False)
    return idx


@pytest.fixture()
def tiny_index(index):
    clear_marks(index)
    return index


def kinds(index) -> pd.Series:
    return index.metadata.set_index("id")["label"]


def test_marks_are_kept_with_the_index_with_their_time(tiny_index):
    assert marks(tiny_index).empty
    mark(tiny_index, ["obj001", "obj002"], True)
    mark(tiny_index, ["obj010"], False)
    mark(tiny_index, ["obj002"], False)  # changed its mind: the latest mark counts
    table = marks(tiny_index)
    assert marks_path(tiny_index) == tiny_index.path / "derived" / "marks.parquet"
    assert dict(zip(table["id"], table["relevant"])) == {"obj001": True, "obj010": False, "obj002": False}
    assert all(t.endswith("Z") and "T" in t for t in table["time"])
    mark(tiny_index, ["obj010"], None)  # unmark
    assert set(marks(tiny_index)["id"]) == {"obj001", "obj002"}
    # the vectors are untouched: the same neighbours as before
    assert tiny_index.query("obj001", k=3).ids == tiny_index.query("obj001", k=3).ids


def test_marking_an_unknown_id_changes_nothing(tiny_index):
    mark(tiny_index, ["obj001"], True)
    before = marks_path(tiny_index).read_bytes()
    with pytest.raises(Exception, match="unknown id"):
        mark(tiny_index, ["obj002", "nope"], True)
    assert marks_path(tiny_index).read_bytes() == before


def test_marks_export_as_csv_and_votable(tiny_index):
    from astropy.io.votable import parse_single_table

    mark(tiny_index, ["obj003"], True)
    csv = export_marks(tiny_index, "csv")
    assert csv.splitlines()[0].startswith("id,relevant,time,") and "obj003,True," in csv
    vot = parse_single_table(io.BytesIO(export_marks(tiny_index, "votable").encode()))
    table = vot.to_table()
    assert list(table["id"]) == ["obj003"]
    # the objects' metadata too: positions with their units, for a cross-match in TOPCAT or Aladin
    assert str(table["ra"].unit) == "deg" and "label" in table.colnames
    assert {p.name: p.value for p in vot.params}["verb"] == "marks"
    clear_marks(tiny_index)
    assert marks(tiny_index).empty


def test_rank_learns_the_marked_kind_and_never_returns_a_marked_object(tiny_index):
    labels = kinds(tiny_index)
    streaks = list(labels[labels == "streak"].index)
    others = list(labels[labels != "streak"].index)
    positives, negatives = streaks[:3], others[:4]
    ranked = rank(tiny_index, positives, negatives, k=5)
    assert list(ranked.columns[:3]) == ["rank", "id", "score"] and "label" in ranked.columns
    assert list(ranked["rank"]) == [1, 2, 3, 4, 5]
    assert not set(ranked["id"]) & set(positives + negatives)
    assert (ranked["score"].diff().dropna() <= 0).all()
    assert (labels[ranked["id"]] == "streak").mean() >= 0.8  # 5 streaks are left among 17 unmarked objects


def test_rank_with_no_negative_uses_random_stand_ins(tiny_index):
    labels = kinds(tiny_index)
    rounds = list(labels[labels == "round"].index)
    ranked = rank(tiny_index, rounds[:2], k=30)  # more than there are: every unmarked object once
    assert len(ranked) == len(tiny_index) - 2 and ranked["id"].is_unique
    assert (labels[ranked["id"].head(4)] == "round").mean() >= 0.75
    assert rank(tiny_index, rounds[:2], k=4, seed=0)["id"].tolist() == rank(tiny_index, rounds[:2], k=4, seed=0)["id"].tolist()


@pytest.mark.parametrize("positives, negatives, message", [
    ([], [], "at least one relevant"),
    (["obj001"], ["obj001"], "both relevant and not"),
    (["nope"], [], "unknown id"),
])
def test_rank_bad_marks_are_errors(tiny_index, positives, negatives, message):
    with pytest.raises(Exception, match=message):
        rank(tiny_index, positives, negatives)


def test_read_ids_takes_lines_or_a_csv_with_an_id_column(tmp_path):
    (tmp_path / "a.txt").write_text("# my AGN\nobj001\n\nobj002\n")
    (tmp_path / "b.csv").write_text("id,note\nobj003,nice\nobj004,\n")
    (tmp_path / "c.csv").write_text("name,note\nobj003,nice\n")
    assert read_ids(tmp_path / "a.txt") == ["obj001", "obj002"]
    assert read_ids(tmp_path / "b.csv") == ["obj003", "obj004"]
    with pytest.raises(Exception, match="needs an 'id' column"):
        read_ids(tmp_path / "c.csv")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(Exception, match="no ids"):
        read_ids(tmp_path / "empty.txt")


def test_rank_command(cli, tiny_index, tmp_path):
    from astropy.io.votable import parse_single_table

    labels = kinds(tiny_index)
    doubles = list(labels[labels == "double"].index)
    (tmp_path / "pos.txt").write_text("\n".join(doubles[:3]) + "\n")
    pd.DataFrame({"id": ["obj000", "obj001"]}).to_csv(tmp_path / "neg.csv", index=False)
    args = ["rank", tiny_index.path, "--positives", tmp_path / "pos.txt", "--negatives", tmp_path / "neg.csv", "-k", "6"]
    code, out, err = cli(*args, "--format", "csv")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns[:3]) == ["rank", "id", "score"] and len(table) == 6
    assert not set(table["id"]) & set(doubles[:3] + ["obj000", "obj001"])
    code, out, err = cli(*args, "--format", "json")
    data = json.loads(out)
    assert data["positives"] == 3 and data["negatives"] == 2 and len(data["rows"]) == 6
    code, out, err = cli(*args, "--format", "votable")
    assert len(parse_single_table(io.BytesIO(out.encode())).to_table()) == 6
    code, out, err = cli(*args)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["rank", "id", "score"]


def test_rank_command_bad_input_is_one_line(cli, tiny_index, tmp_path):
    code, out, err = cli("rank", tiny_index.path, "--positives", tmp_path / "missing.txt")
    assert code == 1 and err.strip().startswith("ulisse: error:") and "no such file" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "pos.txt").write_text("nope\n")
    code, out, err = cli("rank", tiny_index.path, "--positives", tmp_path / "pos.txt")
    assert code == 1 and "unknown id" in err


def test_marks_read_whole_while_another_process_commits_them(tiny_index):
    """A reader never sees half of one marks file and half of the next (a writer's commit is an os.replace)."""
    import subprocess
    import sys

    mark(tiny_index, [tiny_index.id_of(0)], True)
    path = marks_path(tiny_index)
    writer = subprocess.Popen([sys.executable, "-c", f"""
import os, pandas as pd
path, k = {str(path)!r}, 0
while True:  # new marks files of changing sizes, each replacing the last as a commit does
    n = 200 + (k % 40) * 50
    pd.DataFrame({{"id": [f"obj{{i}}" for i in range(n)], "relevant": [i % 2 == 0 for i in range(n)],
                  "time": ["2026-12-06T00:00:00Z"] * n}}).to_parquet(path + ".next", index=False)
    os.replace(path + ".next", path)
    k += 1
"""])
    try:
        import time

        sizes, reads, deadline = set(), 0, time.monotonic() + 120
        # by path, pandas opens the file twice: about 1 read in 10 tore before; 400 reads at least, and until the
        # writer (a new Python importing pandas: seconds on a busy machine) has replaced the file a few times
        while (reads < 400 or len(sizes) <= 5) and time.monotonic() < deadline:
            table = marks(tiny_index)
            assert list(table.columns) == ["id", "relevant", "time"]
            sizes.add(len(table))
            reads += 1
        assert len(sizes) > 5  # the writer was replacing the file all along
    finally:
        writer.kill()
        writer.wait()
        path.with_name(path.name + ".next").unlink(missing_ok=True)
        clear_marks(tiny_index)


def test_rank_command_uses_the_stored_marks_and_leaves_marked_objects_out(cli, tiny_index, tmp_path):
    """The web UI's marks train `ulisse rank` as they do `ulisse anomalies`: no --positives needed, and an object
    marked (relevant or not) is never in the list; --no-marks uses the files alone."""
    labels = kinds(tiny_index)
    doubles = list(labels[labels == "double"].index)
    others = list(labels[labels != "double"].index)
    mark(tiny_index, doubles[:3], relevant=True)
    mark(tiny_index, others[:4], relevant=False)
    code, out, err = cli("rank", tiny_index.path, "-k", "6", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["positives"] == 3 and data["negatives"] == 4 and data["marks"] is True
    assert not {r["id"] for r in data["rows"]} & set(doubles[:3] + others[:4])
    code, out, err = cli("rank", tiny_index.path, "-k", "6")
    assert "# 3 relevant and 4 not relevant marks (with those stored with the index)" in out
    (tmp_path / "pos.txt").write_text(others[5] + "\n")
    code, out, err = cli("rank", tiny_index.path, "--positives", tmp_path / "pos.txt", "--no-marks", "-k", "30",
                         "--format", "csv")
    ids = set(pd.read_csv(io.StringIO(out))["id"])
    assert code == 0 and set(doubles[:3]) <= ids and others[5] not in ids  # the stored marks ignored
    clear_marks(tiny_index)
    code, out, err = cli("rank", tiny_index.path)
    assert code == 1 and "no relevant object" in err and "none is stored" in err and len(err.strip().splitlines()) == 1


def test_marks_command_lists_adds_removes_and_exports(cli, tiny_index, tmp_path):
    from astropy.table import Table

    ids = list(tiny_index.ids)
    (tmp_path / "yes.txt").write_text("\n".join(ids[:3]) + "\n")
    (tmp_path / "no.csv").write_text("note,id\nstar,%s\n" % ids[5])
    code, out, err = cli("marks", tiny_index.path, "--relevant", tmp_path / "yes.txt", "--not-relevant",
                         tmp_path / "no.csv", "--output", tmp_path / "marks.vot")
    assert code == 0, err
    assert "# 3 relevant and 1 not relevant marks stored with" in out
    t = Table.read(tmp_path / "marks.vot", format="votable")
    assert sorted(map(str, t["id"])) == sorted(ids[:3] + [ids[5]]) and "label" in t.colnames  # with the metadata
    stored = marks(tiny_index).set_index("id")["relevant"]
    assert stored[ids[0]] and not stored[ids[5]]
    code, out, err = cli("index", "info", tiny_index.path)
    assert code == 0 and "marks      3 relevant, 1 not relevant (latest " in out
    (tmp_path / "off.txt").write_text(ids[0] + "\n")
    code, out, err = cli("marks", tiny_index.path, "--unmark", tmp_path / "off.txt", "--format", "csv")
    assert code == 0 and ids[0] not in set(pd.read_csv(io.StringIO(out))["id"]) and len(marks(tiny_index)) == 3
    before = marks_path(tiny_index).read_bytes()
    (tmp_path / "bad.txt").write_text(ids[1] + "\nnot-an-id\n")
    code, out, err = cli("marks", tiny_index.path, "--relevant", tmp_path / "bad.txt")
    assert code == 1 and "not-an-id" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("marks", tiny_index.path, "--relevant", tmp_path / "yes.txt", "--not-relevant",
                         tmp_path / "yes.txt")
    assert code == 1 and "in both" in err
    assert marks_path(tiny_index).read_bytes() == before  # nothing written by a refused change
    code, out, err = cli("marks", tiny_index.path, "--clear")
    assert code == 0 and marks(tiny_index).empty and "# 0 relevant and 0 not relevant" in out
    code, out, err = cli("index", "info", tiny_index.path)
    assert "marks " not in out
