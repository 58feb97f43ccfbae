"""The output folder (docs/run-output.md, "The output folder"): one writer, refuse instead of
emptying, --overwrite removes a run whole and never what a run did not write, and failures of
the environment are one line naming the path and the cause."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from procs import one_line
from procs import run_cli as run

from matcher.io import runfolder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The first 40 requests of the synthetic sample: a replay of about a second."""
    p = tmp_path_factory.mktemp("tiny") / "tiny.parquet"
    pq.write_table(pq.read_table(REPO / "data" / "synth-small.parquet").slice(0, 40), p)
    return p


def replay(trace, out, *extra) -> tuple[int, str, str]:
    return run("replay", str(trace), "--out", str(out), "--drivers", "5", "--quiet", *extra)


# --------------------------------------------------------------------------- refuse, overwrite


def test_existing_run_is_refused_without_overwrite_and_kept(tiny, tmp_path):
    out = tmp_path / "out"
    assert replay(tiny, out)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, _, err = replay(tiny, out)
    assert code == 2
    line = one_line(err)
    assert str(out) in line and "--overwrite" in line
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # untouched


def test_overwrite_removes_the_old_run_whole(tiny, tmp_path):
    out = tmp_path / "out"
    assert replay(tiny, out, "--record-locations")[0] == 0
    assert (out / "locations").is_dir()
    (out / "stale-policy").mkdir()  # e.g. a policy folder a compare once wrote here
    (out / "stale-policy" / runfolder.MARKER).write_text("{}")
    (out / "stale-policy" / "summary.json").write_text("{}")
    code, _, err = replay(tiny, out, "--overwrite")
    assert code == 0, err
    assert not (out / "locations").exists() and not (out / "stale-policy").exists()
    assert (out / "report.html").is_file() and (out / "summary.json").is_file()


def test_compare_overwrite_leaves_no_stale_policy_or_report(tiny, tmp_path):
    out = tmp_path / "cmp"
    code, _, err = run(
        "compare", str(tiny), "--out", str(out), "--drivers", "5", "--quiet", "--policies", "greedy,batch:2,batch:5"
    )
    assert code == 0, err
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"greedy", "batch-2s", "batch-5s"}
    code, _, err = run("compare", str(tiny), "--out", str(out), "--drivers", "5", "--quiet", "--policies", "greedy")
    assert code == 2 and "--overwrite" in one_line(err)
    code, _, err = run(
        "compare", str(tiny), "--out", str(out), "--drivers", "5", "--quiet", "--policies", "greedy", "--overwrite"
    )
    assert code == 0, err
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"greedy"}
    assert [r["label"] for r in json.loads((out / "compare.json").read_text())["runs"]] == ["greedy"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_that_is_not_a_run_is_never_deleted(tiny, tmp_path, overwrite):
    out = tmp_path / "mine"
    (out / "events").mkdir(parents=True)
    (out / "events" / "my-notes.txt").write_text("keep me")
    (out / "report.html").write_text("mine")
    code, _, err = replay(tiny, out, *(["--overwrite"] if overwrite else []))
    assert code == 2
    line = one_line(err)
    assert str(out) in line and "not a matcher run" in line
    assert (out / "events" / "my-notes.txt").read_text() == "keep me"
    assert (out / "report.html").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["events", "report.html"]  # not even a lock file added


def test_a_file_of_yours_inside_a_run_stops_the_overwrite(tiny, tmp_path):
    out = tmp_path / "out"
    assert replay(tiny, out)[0] == 0
    (out / "notes.txt").write_text("analysis notes")
    code, _, err = replay(tiny, out, "--overwrite")
    assert code == 2
    assert "notes.txt" in one_line(err)
    assert (out / "notes.txt").read_text() == "analysis notes" and (out / "summary.json").exists()


def test_a_run_that_stopped_before_writing_leaves_a_reusable_folder(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    out = tmp_path / "out"
    code, _, err = replay(bad, out)
    assert code == 1 and str(bad) in one_line(err)
    good = tmp_path / "good.parquet"
    pq.write_table(pq.read_table(REPO / "data" / "synth-small.parquet").slice(0, 20), good)
    assert replay(good, out)[0] == 0  # only the lock and the marker were there: it counts as empty


# --------------------------------------------------------------------------- one writer

HOLDER = textwrap.dedent(
    """
    import sys, time
    from matcher.io import runfolder
    with runfolder.claim(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_second_run_refuses_at_once_naming_the_holder(tiny, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        code, _, err = replay(tiny, out)
        assert time.monotonic() - t0 < 5  # at once, before reading the trace
        assert code == 1
        line = one_line(err)
        assert f"pid {holder.pid}" in line and "started 20" in line and str(out) in line
        code, _, err = run("replay", "--resume", str(out), "--quiet")
        assert code == 1  # no checkpoint yet: refused either way, never a second writer
    finally:
        holder.kill()
        holder.wait()
    assert runfolder.wait_unlocked(out, 10)
    code, _, err = replay(tiny, out, "--overwrite")  # the holder died: its lock is stale and taken over
    assert code == 0, err


def test_stale_lock_file_of_a_dead_process_is_taken_over(tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (out / runfolder.LOCK).write_text(json.dumps({"pid": pid, "started": "2026-01-01 00:00:00Z"}))
    with runfolder.claim(out) as c:
        assert c.took_over is not None and c.took_over["pid"] == pid
        assert runfolder.lock_holder(out)["pid"] == os.getpid()
    assert runfolder.lock_holder(out) == {}  # released cleanly: names no holder


# --------------------------------------------------------------------------- the environment


def test_out_is_a_file(tiny, tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    code, _, err = replay(tiny, f)
    assert code == 1
    line = one_line(err)
    assert str(f) in line and "is a file" in line


def test_out_below_a_file(tiny, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = replay(tiny, f / "out")
    assert code == 1
    line = one_line(err)
    assert str(f) in line and "Not a directory" in line


def test_read_only_folder_names_path_and_cause(tiny, tmp_path, monkeypatch):
    out = tmp_path / "ro" / "out"
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if self == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, _, err = replay(tiny, out)
    assert code == 1
    line = one_line(err)
    assert str(out) in line and "Permission denied" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_for_real(tiny, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = replay(tiny, ro / "out")
    finally:
        ro.chmod(0o755)
    assert code == 1 and "Permission denied" in one_line(err)


def test_full_disk_names_the_file_and_the_cause(tiny, tmp_path, monkeypatch):
    import matcher.io.eventlog as eventlog

    def full(table, where, **kw):
        raise OSError(
            errno.ENOSPC, "[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device"
        )

    monkeypatch.setattr(eventlog.pq, "write_table", full)
    out = tmp_path / "out"
    code, _, err = replay(tiny, out)
    assert code == 1
    line = one_line(err)
    assert str(out / "events") in line and "No space left on device" in line
    assert not list((out / "events").glob("*"))  # no partial part file left


def test_quarantine_write_failure_names_the_file(tiny, tmp_path, monkeypatch):
    import matcher.io.writers as writers

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.pq, "ParquetWriter", full)
    out = tmp_path / "out"
    code, _, err = replay(tiny, out)
    assert code == 1
    line = one_line(err)
    assert str(out / "quarantine.parquet") in line and "No space left on device" in line


def test_run_folder_markers_are_hidden_and_ignored_by_readers(tiny, tmp_path):
    out = tmp_path / "out"
    assert replay(tiny, out)[0] == 0
    assert (out / runfolder.MARKER).is_file() and (out / runfolder.LOCK).is_file()
    assert json.loads((out / runfolder.MARKER).read_text())["kind"] == "run"
    assert pa.types.is_timestamp(pq.read_schema(out / "ticks.parquet").field("ts").type)
