"""Interrupted runs: checkpoints, atomic part files and `matcher replay --resume`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from matcher.analysis.audit import check_run
from matcher.analysis.metrics import read_events
from matcher.cli import main
from matcher.config import RunConfig
from matcher.sim.replay import CHECKPOINT, resume_replay, run_replay

REPO = Path(__file__).resolve().parents[1]
NYC = REPO / "data" / "nyc-uber-2014-04-04.parquet"


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    t = pl.read_parquet(NYC).sort("request_time")
    sub = t.filter(pl.col("request_time") < t["request_time"][0] + pl.duration(hours=4))
    p = tmp_path_factory.mktemp("trace") / "nyc4h.parquet"
    sub.write_parquet(p)
    return p


class _Crash(Exception):
    pass


class _CrashAfter:
    """A progress hook that kills the run (like a crash) after n ticks."""

    def __init__(self, n):
        self.n = n

    def update(self, world):
        self.n -= 1
        if self.n == 0:
            raise _Crash()

    def close(self):
        pass


@pytest.mark.slow
def test_resume_after_a_crash_equals_an_uninterrupted_run(trace, tmp_path):
    cfg = RunConfig(trace=str(trace), out=str(tmp_path / "full"), drivers=40, quiet=True, checkpoint_every_s=900)
    full = run_replay(cfg)
    cut = replace(cfg, out=str(tmp_path / "cut"))
    with pytest.raises(_Crash):
        run_replay(cut, progress=_CrashAfter(2500))
    assert (tmp_path / "cut" / CHECKPOINT).exists()
    assert not (tmp_path / "cut" / "summary.json").exists()
    # every file on disk is whole
    for f in (tmp_path / "cut" / "events").glob("*.parquet"):
        pl.read_parquet(f)
    staged = sorted(p.name for p in (tmp_path / "cut").glob(".*.parts"))
    assert staged == [".cells.parts", ".shards.parts", ".ticks.parts"]  # the rows before the checkpoint
    resumed = resume_replay(str(tmp_path / "cut"))
    assert read_events(tmp_path / "cut").equals(read_events(tmp_path / "full"))
    assert check_run(tmp_path / "cut") == []
    _same_rows(tmp_path / "cut", tmp_path / "full")
    assert not list((tmp_path / "cut").glob(".*.parts"))
    for key in ("requests", "completed", "cancelled", "expired", "wait_s", "pickup_eta_s"):
        assert resumed[key] == full[key]
    assert not (tmp_path / "cut" / CHECKPOINT).exists()  # a finished run keeps no checkpoint


@pytest.mark.slow
def test_resume_after_sigkill(trace, tmp_path):
    """A real kill -9 of `matcher replay`, then `matcher replay --resume OUT`."""
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "matcher",
        "replay",
        str(trace),
        "--out",
        str(out),
        "--drivers",
        "40",
        "--quiet",
        "--checkpoint-every",
        "600",
        "--policy",
        "greedy",
    ]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 60
    while not (out / CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["replay", "--resume", str(out), "--quiet"]) == 0
    ref = tmp_path / "ref"
    assert main(["replay", str(trace), "--out", str(ref), "--drivers", "40", "--quiet", "--policy", "greedy"]) == 0
    assert read_events(out).equals(read_events(ref))
    assert check_run(out) == []
    _same_rows(out, ref)


TIMING = ("wall_ms", "solve_ms", "coordinator_ms", "critical_ms", "shard_cpu_ms")  # measured, not simulated


def _same_rows(out: Path, ref: Path) -> None:
    """ticks.parquet, shards.parquet and cells.parquet of a resumed run: every row of the
    uninterrupted run's, once, in order (the rows staged before the checkpoint included)."""
    for name, drop in (("ticks", TIMING), ("shards", ("solve_ms",)), ("cells", ())):
        got, want = (pl.read_parquet(d / f"{name}.parquet").drop(drop) for d in (out, ref))
        assert want.height > 0 and got.equals(want), name


def test_resume_errors_are_one_line(tmp_path, capsys):
    assert main(["replay", "--resume", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "Traceback" not in err and err.count("\n") == 1


def test_checkpoint_of_the_flat_layout_still_loads():
    """A checkpoint pickled before the subpackage move names ``matcher.world`` etc.: it loads."""
    import io
    import pickle

    from matcher.core.states import DriverStatus
    from matcher.sim.replay import _CheckpointUnpickler

    old = pickle.dumps({"status": DriverStatus.AVAILABLE}, protocol=0).replace(
        b"matcher.core.states", b"matcher.states"
    )
    assert b"matcher.states\n" in old
    assert _CheckpointUnpickler(io.BytesIO(old)).load() == {"status": DriverStatus.AVAILABLE}


@pytest.mark.slow
def test_resume_of_a_checkpoint_whose_ticks_lack_newer_columns(trace, tmp_path):
    """A checkpoint of an older release has no round2/critical_ms/... tick columns: the resumed
    run writes them as nulls for the ticks before it, and the same events as an uninterrupted run."""
    import pickle

    cfg = RunConfig(trace=str(trace), out=str(tmp_path / "full"), drivers=40, quiet=True, checkpoint_every_s=300)
    run_replay(cfg)
    cut = replace(cfg, out=str(tmp_path / "cut"))
    with pytest.raises(_Crash):
        run_replay(cut, progress=_CrashAfter(600))
    path = tmp_path / "cut" / CHECKPOINT
    state = pickle.loads(path.read_bytes())
    # the form of an older release: every tick row (without the newer columns) in the checkpoint,
    # nothing staged (ticks.parquet was written whole at the end)
    loop = state["loop"]
    staged = pl.read_parquet(tmp_path / "cut" / ".ticks.parts")
    old = ("coordinator_ms", "critical_ms", "shard_cpu_ms", "round2")
    staged = staged.drop(old).with_columns((pl.col("ts").dt.epoch("ms") - loop.t0_ms) / 1000.0)
    loop.ticks = staged.to_dict(as_series=False)
    for name in ("tick_log", "shard_log", "t0_ms", "last_ts"):
        del loop.__dict__[name]
    shutil.rmtree(tmp_path / "cut" / ".ticks.parts")
    shutil.rmtree(tmp_path / "cut" / ".shards.parts")
    before = len(loop.ticks["tick"])
    path.write_bytes(pickle.dumps(state))
    resume_replay(str(tmp_path / "cut"))
    assert read_events(tmp_path / "cut").equals(read_events(tmp_path / "full"))
    ticks = pl.read_parquet(tmp_path / "cut" / "ticks.parquet")
    assert before > 0 and ticks.height == pl.read_parquet(tmp_path / "full" / "ticks.parquet").height
    for name in old:
        assert ticks[name].head(before).is_null().all() and ticks[name].tail(ticks.height - before).is_not_null().all()
