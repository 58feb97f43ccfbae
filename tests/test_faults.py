"""Faults: a shard process killed mid-run, and retried (at-least-once) ticks.

The Ray test really kills a shard actor's worker process with SIGKILL; the
others simulate the same faults in-process (no Ray): a shard that comes back
empty, and ticks delivered twice. In every case the run must complete, keep
every contract rule (matcher.analysis.audit.check_run) and write exactly the event log
of the same run without the fault.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from matcher.analysis import metrics
from matcher.analysis.audit import check_run
from matcher.config import MatchConfig, RunConfig, ShardConfig, SimConfig
from matcher.core.candidates import RequestBatch
from matcher.core.driver_table import Pings
from matcher.core.shard import ShardState, TickInput
from matcher.core.states import DriverStatus
from matcher.dist.backend import InProcessBackend, ShardLostError, make_backend
from matcher.errors import RunStopped
from matcher.sim.replay import resume_replay, run_replay

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "data" / "synth-small.parquet"
DRIVERS = REPO / "data" / "synth-small-drivers.parquet"

# summary figures that come from the simulation (not from wall-clock time)
SIM_KEYS = (
    "requests",
    "completed",
    "cancelled",
    "expired",
    "quarantined",
    "declines",
    "drivers",
    "matches",
    "served_rate",
    "wait_s",
    "match_delay_s",
    "pickup_eta_s",
    "pickup_distance_m",
    "utilization",
    "sim_seconds",
)


def _cut(minutes: float, path: Path) -> str:
    """The first ``minutes`` of data/synth-small.parquet."""
    t = pq.read_table(TRACE)
    ms = t.column("request_time").cast(pa.int64())
    t = t.filter(pc.less(ms, pc.min(ms).as_py() + int(minutes * 60_000)))
    pq.write_table(t, path)
    return str(path)


def _cfg(trace: str, out: Path, backend: str, shards: int = 2) -> RunConfig:
    return RunConfig(
        trace=trace,
        out=str(out),
        drivers=str(DRIVERS),
        sim=SimConfig(seed=0),
        shard=ShardConfig(shards=shards, backend=backend, num_cpus=0.25),
        quiet=True,
    )


def _events(out: Path):
    return metrics.read_events(out).sort("seq")


def _run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _assert_same_run(out: Path, base: Path) -> None:
    assert _run_json(out).get("failed_ticks", 0) == 0  # every tick went through (none given up)
    assert check_run(out) == []
    assert_frame_equal(_events(out), _events(base))  # the full event log, every column
    got, want = (json.loads((d / "summary.json").read_text()) for d in (out, base))
    assert {k: got[k] for k in SIM_KEYS} == {k: want[k] for k in SIM_KEYS}


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory) -> str:
    return _cut(15, tmp_path_factory.mktemp("trace") / "synth-15min.parquet")


# --------------------------------------------------------------------------- a real crash (Ray)


@pytest.fixture(scope="module")
def ray_baseline(ray_session, small_trace, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray-base") / "run"
    run_replay(_cfg(small_trace, out, "ray"))
    assert check_run(out) == []
    assert _run_json(out)["shard_restarts"] == 0
    return out


@pytest.mark.ray
@pytest.mark.parametrize("when", ["before_fanout", "during_tick"])
def test_shard_process_killed_mid_run(ray_session, small_trace, ray_baseline, tmp_path, when):
    """SIGKILL one shard actor's worker process after some ticks; Ray restarts it, the
    coordinator rebuilds it from the latest driver reports and re-runs the tick.

    ``before_fanout``: the kill lands right before a tick's calls go out (deterministic).
    ``during_tick``: a background thread kills it while the tick is in flight (the tick
    either dies with the process and is retried, or completed and the next one finds
    the shard restarted: the same outcome either way).
    """
    kill_at = {120: 1, 300: 0}  # backend tick call -> shard to kill (the run makes ~550 calls)
    calls = {"n": 0}
    killed: list[tuple[int, int]] = []  # (shard, pid)
    replaced: list[tuple[int, int, int]] = []  # (shard, old pid, new pid)

    def killing(shard, match, run_name):
        b = make_backend(shard, match, run_name)
        orig_tick = b.tick

        def tick(inputs, answer, idle=None):
            calls["n"] += 1
            s = kill_at.get(calls["n"])
            if s is None:
                return orig_tick(inputs, answer, idle)
            pid = b.pids()[s]
            killed.append((s, pid))
            if when == "before_fanout":
                os.kill(pid, signal.SIGKILL)
                outs = orig_tick(inputs, answer, idle)
            else:
                th = threading.Thread(target=os.kill, args=(pid, signal.SIGKILL))
                th.start()
                outs = orig_tick(inputs, answer, idle)
                th.join()
            # Ray has restarted the shard: it answers from a new process
            replaced.append((s, pid, b.pids()[s]))
            return outs

        b.tick = tick  # this backend only
        return b

    out = tmp_path / "run"
    run_replay(_cfg(small_trace, out, "ray"), backend_factory=killing)

    assert [s for s, _ in killed] == [1, 0], "the kills did not happen (the run made fewer backend calls?)"
    assert len(replaced) == len(killed)
    for s, old, new in replaced:
        assert new != old, f"shard {s} still runs in the killed process {old}"
    meta = _run_json(out)
    assert meta["shard_restarts"] >= 1
    assert meta["shard_restarts"] == len(killed)
    _assert_same_run(out, ray_baseline)


@pytest.mark.ray
def test_a_broken_channel_to_a_living_shard_rebuilds_it_to_the_same_run(
    ray_session, small_trace, ray_baseline, tmp_path
):
    """The direct channel to a shard breaks (its stream reset) while the shard process lives:
    inputs sent on it may be lost, so the shard starts empty on the new stream, answers
    `restarted` and is rebuilt from the latest reports. Same process, same event log."""
    calls = {"n": 0}
    seen: dict[str, object] = {}

    def breaking(shard, match, run_name):
        b = make_backend(shard, match, run_name)
        orig_tick = b.tick
        seen["open"] = [c.chan is not None for c in b._calls]  # every shard has its channel

        def tick(inputs, answer, idle=None):
            calls["n"] += 1
            if calls["n"] == 150:
                seen["pid"] = b.pids()[1]
                b._calls[1].chan._sock.shutdown(socket.SHUT_RDWR)  # the stream is reset under the backend
            outs = orig_tick(inputs, answer, idle)
            if calls["n"] == 150:
                seen["pid after"] = b.pids()[1]
                seen["reopened"] = b._calls[1].chan is not None and not b._calls[1].chan.closed
            return outs

        b.tick = tick
        return b

    out = tmp_path / "run"
    run_replay(_cfg(small_trace, out, "ray"), backend_factory=breaking)
    assert seen["open"] == [True, True]
    assert seen["pid after"] == seen["pid"]  # the process lived through it
    assert seen["reopened"]  # on a new channel
    assert _run_json(out)["shard_restarts"] >= 1  # it was rebuilt (counted as a restart)
    _assert_same_run(out, ray_baseline)


@pytest.mark.ray
def test_ray_calls_instead_of_the_direct_channel_give_the_same_run(ray_session, small_trace, ray_baseline, tmp_path):
    """``direct_calls=False``: every shard call goes through Ray (what a cluster that blocks the
    channel's ports gets); the run is the same, event for event."""
    cfg = _cfg(small_trace, tmp_path / "run", "ray")
    cfg = dataclasses.replace(cfg, shard=dataclasses.replace(cfg.shard, direct_calls=False))
    seen = {}

    def watching(shard, match, run_name):
        b = make_backend(shard, match, run_name)
        seen["chans"] = [c.chan for c in b._calls]
        return b

    run_replay(cfg, backend_factory=watching)
    assert seen["chans"] == [None, None]
    _assert_same_run(tmp_path / "run", ray_baseline)


# --------------------------------------------------------------------------- the same faults, in-process


class FlakyBackend(InProcessBackend):
    """In-process shards with injected faults (no Ray):

    - ``crash_at`` {backend call: shard}: before that call the shard loses its process (a
      fresh ShardState, as after a Ray restart);
    - ``crash_on_retry``: on the coordinator's retry that follows such a crash, every other
      shard dies too (a second fault while the first is being repaired);
    - ``deliver_twice``: every call is delivered twice, the first answers lost (a retry after
      a lost reply: a shard must answer it from its stored result).
    """

    def __init__(
        self,
        n_shards: int,
        match: MatchConfig,
        crash_at: dict[int, int],
        deliver_twice: bool = False,
        crash_on_retry: bool = False,
    ):
        super().__init__(n_shards, match)
        self.match, self.crash_at, self.twice, self.on_retry = match, crash_at, deliver_twice, crash_on_retry
        self.calls = 0
        self.crashed: list[int] = []
        self._armed = False

    def _crash(self, s: int) -> None:
        self.shards[s] = ShardState(s, self.match)
        self.crashed.append(s)

    def tick(self, inputs, answer, idle=None):
        self.calls += 1
        if self._armed and any(i is not None and i.reset for i in inputs):  # the coordinator's rebuild-and-retry
            self._armed = False
            for s, inp in enumerate(inputs):
                if inp is None or not inp.reset:
                    self._crash(s)
        s = self.crash_at.get(self.calls)
        if s is not None:
            self._crash(s)
            self._armed = self.on_retry
        outs = super().tick(inputs, answer, idle)
        if not self.twice:
            return outs
        n_late = len(self._late)
        again = super().tick(inputs, answer, idle)
        del self._late[n_late:]  # the second delivery's unanswered outputs: already listed once
        for inp, a, b in zip(inputs, outs, again):
            if a is None:  # not answered (or nothing sent)
                continue
            if a.restarted:  # an empty shard keeps saying so until it is rebuilt
                assert b.restarted
            elif inp.reset:  # a rebuild from full state is recomputed, to the same answer
                for name in ("req", "key", "eta", "dist"):
                    np.testing.assert_array_equal(getattr(b.matches, name), getattr(a.matches, name))
            else:
                assert b is a, "a retried tick was applied again"
        return again


@pytest.fixture(scope="module")
def inprocess_baseline(small_trace, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inproc-base") / "run"
    run_replay(_cfg(small_trace, out, "inprocess"))
    assert check_run(out) == []
    return out


@pytest.mark.parametrize(
    "crash_at, twice, on_retry, restarts",
    [
        ({120: 1, 300: 0}, False, False, 2),
        ({120: 1, 300: 0}, False, True, 4),
        ({200: 0}, True, False, 1),
    ],
    ids=["crashes", "second-crash-during-the-retry", "crash-and-every-tick-twice"],
)
def test_simulated_restarts_and_retries_keep_the_run(
    small_trace, inprocess_baseline, tmp_path, crash_at, twice, on_retry, restarts
):
    made: list[FlakyBackend] = []

    def make(shard, match, run_name, **kw):
        made.append(FlakyBackend(shard.shards, match, crash_at, twice, on_retry))
        return made[-1]

    out = tmp_path / "run"
    run_replay(_cfg(small_trace, out, "inprocess"), backend_factory=make)
    assert len(made[0].crashed) == restarts
    assert _run_json(out)["shard_restarts"] == restarts
    _assert_same_run(out, inprocess_baseline)


# --------------------------------------------------------------------------- one shard, pure


def _city(rng, n_drv: int, n_req: int, now: float):
    n = n_drv
    pings = Pings(
        key=np.arange(n, dtype=np.int64) * 3,
        lat=rng.uniform(40.70, 40.80, n),
        lng=rng.uniform(-74.05, -73.90, n),
        heading=rng.uniform(0, 360, n).astype(np.float32),
        speed=np.zeros(n, np.float32),
        status=np.full(n, int(DriverStatus.AVAILABLE), np.int8),
        vehicle=np.zeros(n, np.int8),
        rating=np.full(n, 4.8, np.float32),
        ts=np.full(n, now - 1.0),
        owned=np.ones(n, bool),
        shared=np.zeros(n, bool),
    )
    m = n_req
    reqs = RequestBatch(
        np.arange(m, dtype=np.int64) * 7,
        rng.uniform(40.70, 40.80, m),
        rng.uniform(-74.05, -73.90, m),
        np.zeros(m, np.int8),
        rng.uniform(0, 60, m),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )
    return pings, reqs


def test_same_tick_twice_gives_no_double_offer():
    """A shard receiving tick t again (the driver retried after a lost answer) answers with
    the stored result: the same offers, none added, no driver offered twice, nothing applied."""
    rng = np.random.default_rng(5)
    now = 1_000.0
    pings, reqs = _city(rng, 60, 90, now)  # more requests than drivers: every driver is wanted
    shard = ShardState(0, MatchConfig())
    inp = TickInput(7, now, pings, np.empty(0, np.int64), reqs)
    first = shard.tick(inp)
    assert 0 < len(first.matches) <= len(pings)
    before = shard.table.snapshot()

    offers: list[tuple[int, int]] = []
    for retry in (inp, TickInput(7, now, pings, np.empty(0, np.int64), reqs, expect_state=True)):
        again = shard.tick(retry)
        assert again.tick == 7 and not again.restarted
        offers += list(zip(again.matches.req.tolist(), again.matches.key.tolist()))
        for name, arr in shard.table.snapshot().items():
            np.testing.assert_array_equal(arr, before[name], err_msg=name)
    first_offers = list(zip(first.matches.req.tolist(), first.matches.key.tolist()))
    assert offers == first_offers * 2  # the same answer each time ...
    keys = first.matches.key.tolist()
    assert len(set(keys)) == len(keys)  # ... in which no driver is offered twice
    assert len(set(first.matches.req.tolist())) == len(first.matches)

    # the next tick: the drivers offered at tick 7 are not offered again
    left = np.flatnonzero(~np.isin(reqs.idx, first.matches.req))
    nxt = shard.tick(TickInput(8, now + 2, Pings.empty(), np.empty(0, np.int64), reqs.take(left), expect_state=True))
    assert not set(nxt.matches.key.tolist()) & set(keys)


def test_restarted_shard_says_so_and_rebuilds_to_the_same_answer():
    """A fresh ShardState (the process died, Ray built it again) that is expected to hold
    drivers answers ``restarted`` and changes nothing; rebuilt from the latest reports
    (reset=True) it gives the answer the lost shard would have given for that tick."""
    rng = np.random.default_rng(9)
    now = 2_000.0
    pings, reqs = _city(rng, 80, 50, now)
    live = ShardState(0, MatchConfig())
    live.tick(TickInput(1, now - 2, pings, np.empty(0, np.int64), RequestBatch.empty()))
    want = live.tick(TickInput(2, now, Pings.empty(), np.empty(0, np.int64), reqs, expect_state=True))

    fresh = ShardState(0, MatchConfig())
    inp = TickInput(2, now, Pings.empty(), np.empty(0, np.int64), reqs, expect_state=True)
    lost = fresh.tick(inp)
    assert lost.restarted and len(lost.matches) == 0 and fresh.table.n == 0
    rebuilt = fresh.tick(TickInput(2, now, pings, np.empty(0, np.int64), reqs, reset=True))
    assert not rebuilt.restarted
    for name in ("req", "key", "eta", "dist"):
        np.testing.assert_array_equal(getattr(rebuilt.matches, name), getattr(want.matches, name), err_msg=name)
    # and a retry of that tick now answers from the stored result
    assert fresh.tick(inp) is rebuilt


# --------------------------------------------------------------------------- restarts used up


@pytest.mark.ray
@pytest.mark.slow
def test_a_shard_that_dies_more_often_than_max_restarts_has_its_regions_moved(ray_session, small_trace, tmp_path):
    """max_restarts=1: the first SIGKILL is a restart, the second kills shard 1 for good. The
    run goes on, its regions on shard 0, with no tick given up and no per-tick wait, and
    run.json says which shard was lost and when."""
    kill_at = {60: 1, 200: 1}
    calls = {"n": 0}

    def killing(shard, match, run_name):
        b = make_backend(shard, match, run_name)
        orig_tick = b.tick

        def tick(inputs, answer, idle=None):
            calls["n"] += 1
            s = kill_at.get(calls["n"])
            if s is not None:
                os.kill(b.pids()[s], signal.SIGKILL)
            return orig_tick(inputs, answer, idle)

        b.tick = tick
        return b

    cfg = _cfg(small_trace, tmp_path / "run", "ray")
    cfg = dataclasses.replace(cfg, shard=dataclasses.replace(cfg.shard, max_restarts=1, tick_timeout_s=20))
    t0 = time.monotonic()
    run_replay(cfg, backend_factory=killing)
    wall = time.monotonic() - t0
    out = tmp_path / "run"
    meta = _run_json(out)
    assert [x["shard"] for x in meta["lost_shards"]] == [1], meta["lost_shards"]
    lost_at = meta["lost_shards"][0]["tick"]
    assert meta["failed_ticks"] == 0
    assert check_run(out) == []
    ev = _events(out)
    after = ev.filter((ev["kind"] == "match") & (ev["tick"] > lost_at))
    assert after.height > 0 and set(after["shard"].to_list()) == {0}  # the living shard took over
    assert wall < 120, f"{wall:.0f} s: a lost shard must not cost a wait per tick"


class _LosesItsOnlyShard(InProcessBackend):
    """One in-process shard that is lost for good at its 100th tick call (no Ray)."""

    calls = 0

    def tick(self, inputs, answer, idle=None):
        self.calls += 1
        if self.calls == 100:
            raise ShardLostError(0, "simulated: restarts used up")
        return super().tick(inputs, answer, idle)


def test_losing_the_last_shard_stops_the_run_with_a_checkpoint_that_resumes(small_trace, tmp_path):
    base = tmp_path / "base"
    run_replay(_cfg(small_trace, base, "inprocess", shards=1))
    out = tmp_path / "run"
    cfg = _cfg(small_trace, out, "inprocess", shards=1)
    with pytest.raises(RunStopped, match=r"shard 0.*is lost.*stopped at tick \d+ with a checkpoint: matcher replay"):
        run_replay(cfg, backend_factory=lambda sh, m, name: _LosesItsOnlyShard(sh.shards, m))
    assert (out / "checkpoint.pkl").exists() and not (out / "summary.json").exists()
    resume_replay(str(out))  # new shards
    _assert_same_run(out, base)
