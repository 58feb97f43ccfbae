"""`matcher replay --resume` checks what it resumes, and Ctrl-C / SIGTERM stop a run resumably.

A resume continues the run it finds in OUT: the trace and driver files must be the ones it started
with (fingerprints in the checkpoint) and options given again must match the run's. Anything else
is refused with one line naming what changed, before any file in OUT changes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from procs import one_line
from procs import run_cli as run

from matcher.analysis.audit import check_run
from matcher.analysis.metrics import read_events
from matcher.io import fingerprint
from matcher.sim.replay import CHECKPOINT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def trace(tmp_path) -> Path:
    """Two hours of the synthetic sample, in a file of its own (the tests change it)."""
    t = pq.read_table(REPO / "data" / "synth-small.parquet")
    ms = t.column("request_time").cast(pa.int64())
    small = t.filter(pc.less(ms, pc.min(ms).as_py() + 40 * 60_000))
    p = tmp_path / "trace.parquet"
    pq.write_table(small, p, compression="none", use_dictionary=False)  # a same-length edit keeps its size
    return p


class _Crash(Exception):
    pass


def _interrupted_run(trace: Path, out: Path) -> None:
    """A run stopped (like a crash) after its first checkpoint, with part files after it."""
    from matcher.cli import build_parser, config_from_args
    from matcher.sim.replay import run_replay

    class CrashAfterCheckpoint:
        def update(self, world):
            if (out / CHECKPOINT).exists() and world.clock > 900:
                raise _Crash()

        def close(self):
            pass

    a = build_parser().parse_args(
        ["replay", str(trace), "--out", str(out), "--drivers", "30", "--quiet", "--checkpoint-every", "600"]
    )
    with pytest.raises(_Crash):
        run_replay(config_from_args(a), progress=CrashAfterCheckpoint())
    assert (out / CHECKPOINT).exists()


def _snapshot(out: Path) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".matcher.lock"}


def _same_length_other_ids(trace: Path) -> None:
    t = pq.read_table(trace)
    ids = t.column("request_id").to_pylist()[::-1]  # the same ids on other rows: same size, other trace
    t = t.set_column(t.column_names.index("request_id"), t.schema.field("request_id"), pa.array(ids, pa.string()))
    st = trace.stat()
    pq.write_table(t, trace, compression="none", use_dictionary=False)
    assert trace.stat().st_size == st.st_size
    os.utime(trace, ns=(st.st_atime_ns, st.st_mtime_ns))  # even the modification time is kept


def _shortened(trace: Path) -> None:
    t = pq.read_table(trace)
    pq.write_table(t.slice(0, t.num_rows // 2), trace)


@pytest.mark.parametrize("change, fragment", [(_same_length_other_ids, "content"), (_shortened, "size")])
def test_a_changed_trace_is_refused_and_nothing_changes(trace, tmp_path, change, fragment):
    out = tmp_path / "out"
    _interrupted_run(trace, out)
    before = _snapshot(out)
    change(trace)
    code, _, err = run("replay", "--resume", str(out), "--quiet")
    assert code == 1
    line = one_line(err)
    assert line.startswith(f"matcher: {out}: cannot resume: the trace changed (trace.parquet: ")
    assert fragment in line and "--overwrite" in line
    assert _snapshot(out) == before  # no part file deleted or written


def test_a_touched_trace_with_the_same_bytes_resumes(trace, tmp_path):
    out = tmp_path / "out"
    _interrupted_run(trace, out)
    os.utime(trace, None)  # a new modification time, same content
    code, _, err = run("replay", "--resume", str(out), "--quiet")
    assert code == 0, err
    assert check_run(out) == []


def test_a_changed_driver_file_is_refused(trace, tmp_path):
    drivers = tmp_path / "drivers.parquet"
    d = pq.read_table(REPO / "data" / "synth-small-drivers.parquet").slice(0, 30)
    pq.write_table(d, drivers)
    out = tmp_path / "out"
    from matcher.cli import build_parser, config_from_args
    from matcher.sim.replay import run_replay

    class Crash:
        def update(self, world):
            if (out / CHECKPOINT).exists():
                raise _Crash()

        def close(self):
            pass

    a = build_parser().parse_args(
        ["replay", str(trace), "--out", str(out), "--drivers", str(drivers), "--quiet", "--checkpoint-every", "300"]
    )
    with pytest.raises(_Crash):
        run_replay(config_from_args(a), progress=Crash())
    pq.write_table(d.slice(0, 29), drivers)
    code, _, err = run("replay", "--resume", str(out), "--quiet")
    assert code == 1
    assert "cannot resume: the driver file changed (drivers.parquet: size" in one_line(err)


def test_options_given_again_must_match_the_run(trace, tmp_path):
    out = tmp_path / "out"
    _interrupted_run(trace, out)
    for opt in (["--window", "5"], ["--seed", "3"], ["--drivers", "31"], ["--policy", "greedy"], ["--pat", "60"]):
        code, _, err = run("replay", "--resume", str(out), "--quiet", *opt)
        assert code == 2, opt
        line = one_line(err)
        assert "differs from the run's" in line and "--resume" in line, line
    for opt in (["--fault-rate", "0.5"], ["--reposition", "off"], ["--speed", "9"], ["--areas", "one"]):
        code, _, err = run("replay", "--resume", str(out), "--quiet", *opt)  # the world's options too
        assert code == 2 and "differs from the run's" in one_line(err), (opt, err)
    for opt in (["--world", "minimal"], ["--config", str(tmp_path / "x.toml")]):
        code, _, err = run("replay", "--resume", str(out), "--quiet", *opt)
        assert code == 2 and "cannot be given with --resume" in one_line(err), (opt, err)
    code, _, err = run(
        "replay",
        "--resume",
        str(out),
        "--quiet",
        "--window",
        "2",
        "--drivers",
        "30",
        "--speed",
        "7",
        "--reposition",
        "on",
    )
    assert code == 0, err  # the run's own values are fine


def test_resume_of_a_run_in_use_is_refused(trace, tmp_path):
    from matcher.io import runfolder

    out = tmp_path / "out"
    _interrupted_run(trace, out)
    with runfolder.claim(out, resume=True):
        code, _, err = run("replay", "--resume", str(out), "--quiet")
    assert code == 1 and f"pid {os.getpid()}" in one_line(err)


def test_fingerprint_changes_name_what_changed(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), a / "p1.parquet")
    old = fingerprint.inputs(a, 10)
    pq.write_table(pa.table({"x": [1, 2]}), a / "p2.parquet")
    assert fingerprint.changes(old, fingerprint.inputs(a, 10)) == "the trace changed (p2.parquet: added)"
    assert fingerprint.changes(old, fingerprint.inputs(a, 12)).startswith("the trace changed (p2.parquet: added)")
    assert fingerprint.changes(old, old) == ""
    assert fingerprint.changes(old, old, {"sim": {"window_s": 2.0}}, {"sim": {"window_s": 5.0}}) == (
        "the options changed (sim.window_s 2.0 -> 5.0)"
    )


# --------------------------------------------------------------------------- signals


def _start(trace: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "matcher", "replay", str(trace), "--out", str(out), "--drivers", "30", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_events(out: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if (out / "quarantine.parquet").exists():
            time.sleep(0.5)  # well inside the loop
            return
        time.sleep(0.05)
    raise AssertionError("the run ended or never started: " + (proc.stderr.read() if proc.poll() is not None else ""))


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_stops_resumably_with_one_line(trace, tmp_path, sig, code, word):
    out = tmp_path / "out"
    big = tmp_path / "big.parquet"
    t = pq.read_table(REPO / "data" / "synth-small.parquet")  # the whole sample: a run of several seconds
    pq.write_table(t, big)
    proc = _start(big, out, "--checkpoint-every", "0", "--quiet")
    _wait_for_events(out, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr and "Stack" not in stderr
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("matcher: output folder ")]
    assert lines == [f"matcher: {word}; continue with: matcher replay --resume {out}"]
    assert (out / CHECKPOINT).exists()  # written at the stop, though --checkpoint-every 0
    assert run("replay", "--resume", str(out), "--quiet")[0] == 0
    ref = tmp_path / "ref"
    assert run("replay", str(big), "--out", str(ref), "--drivers", "30", "--quiet", "--checkpoint-every", "0")[0] == 0
    assert read_events(out).equals(read_events(ref))
    assert check_run(out) == []


def test_signal_while_reading_the_trace_is_one_line(tmp_path, monkeypatch):
    """A signal outside the loop (no checkpoint yet) stops at once with one line and 143."""
    import matcher.sim.replay as replay_mod

    def slow_read(path):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not reached")

    monkeypatch.setattr(replay_mod.trace, "read_requests", slow_read)
    code, _, err = run("replay", str(REPO / "data" / "synth-small.parquet"), "--out", str(tmp_path / "o"), "--quiet")
    assert code == 143
    assert one_line(err) == "matcher: terminated before the first checkpoint; start again with --overwrite"
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored after main()
    assert pl.DataFrame({"x": [1]}).height == 1
