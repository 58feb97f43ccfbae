"""Empty time is free: years without a request cost neither checkpoints nor timer steps.

The fault chains of idle drivers are parked (caught up when a driver becomes busy) and GPS
dropout windows are drawn in growing blocks; both give exactly the draws of stepping through
every one (tests/test_world_golden.py pins whole runs; the GPS roll is compared here).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from matcher.config import MatchConfig, RunConfig, SimConfig
from matcher.sim import replay as replay_mod
from matcher.sim.world import World

NYC = Path(__file__).resolve().parents[1] / "data" / "nyc-uber-2014-04-04.parquet"


def _gap_trace(path: Path, days: int) -> Path:
    t = pl.read_parquet(NYC).sort("request_time").head(60)
    late = t.tail(30).with_columns(pl.col("request_time") + pl.duration(days=days))
    pl.concat([t.head(30), late]).write_parquet(path)
    return path


def _run_counting(monkeypatch, trace: Path, out: Path) -> tuple[dict, int, int]:
    """The summary, the checkpoints written and the heap entries pushed by one replay."""
    counts = {"checkpoints": 0, "pushes": 0}
    real_ck, real_push = replay_mod._checkpoint, World._push

    def ck(*a, **k):
        counts["checkpoints"] += 1
        return real_ck(*a, **k)

    def push(self, *a, **k):
        counts["pushes"] += 1
        return real_push(self, *a, **k)

    monkeypatch.setattr(replay_mod, "_checkpoint", ck)
    monkeypatch.setattr(World, "_push", push)
    sim = replace(SimConfig(), driver_fault_rate_per_h=0.5, gps_dropout_rate_per_h=2.0)
    cfg = RunConfig(trace=str(trace), out=str(out), drivers=8, quiet=True, sim=sim, checkpoint_every_s=3600.0)
    s = replay_mod.run_replay(cfg)
    monkeypatch.undo()
    return s, counts["checkpoints"], counts["pushes"]


@pytest.mark.timeout(120)
def test_a_thirty_year_gap_costs_what_a_day_does(monkeypatch, tmp_path):
    from matcher.analysis.audit import check_run

    day = _run_counting(monkeypatch, _gap_trace(tmp_path / "day.parquet", 1), tmp_path / "day")
    years = _run_counting(monkeypatch, _gap_trace(tmp_path / "30y.parquet", int(30 * 365.25)), tmp_path / "30y")
    assert check_run(tmp_path / "30y") == []
    s = years[0]
    assert s["completed"] + s["cancelled"] + s["expired"] == s["requests"] == 60
    assert s["sim_seconds"] > 29 * 365 * 86400
    # stepping through 30 years would write ~263,000 hourly checkpoints and push a fault per driver every 2 h
    assert years[1] <= day[1] + 1
    assert years[2] <= day[2] + 20


def _world(m: int, rate_per_h: float) -> World:
    from matcher.sim.world import Fleet, Requests

    z = np.zeros(1)
    reqs = Requests(z, z + 40.7, z - 74.0, z + 40.71, z - 74.01, np.zeros(1, np.int8), np.full(1, np.nan))
    inf = np.full(m, np.inf)
    fleet = Fleet(np.full(m, 40.7), np.full(m, -74.0), np.zeros(m, np.int8), np.ones(m, np.float32), -inf, inf)

    class _NoLog:
        def add(self, *a, **k):
            pass

    return World(reqs, fleet, replace(SimConfig(), gps_dropout_rate_per_h=rate_per_h), MatchConfig(), _NoLog())


@pytest.mark.parametrize(
    ("jump_s", "rate_per_h"), [(1.0, 3.0), (600.0, 3.0), (86_400.0, 3.0), (30 * 365.25 * 86_400.0, 0.05)]
)
def test_gps_roll_in_blocks_draws_the_windows_one_by_one_would(jump_s, rate_per_h):
    w = _world(50, rate_per_h)
    ref = copy.deepcopy(w)
    w._roll_gps(jump_s)
    over = np.flatnonzero(ref.gps_until <= jump_s)
    while len(over):  # the one-by-one roll of earlier releases
        ref._schedule_gps(over, ref.gps_until[over])
        over = over[ref.gps_until[over] <= jump_s]
    assert np.array_equal(w.gps_n, ref.gps_n)
    assert np.array_equal(w.gps_from, ref.gps_from)
    assert np.array_equal(w.gps_until, ref.gps_until)
    assert (w.gps_until > jump_s).all()


def test_a_checkpoint_from_before_parked_chains_still_loads():
    """Old checkpoints hold every fault chain in the heap and no fault_at: the chains are read back from it."""
    import pickle

    from matcher.sim.world import Happening

    w = _world(3, 0.0)
    state = w.__getstate__()
    del state["fault_at"], state["fault_queued"], state["drive"]
    state["_heap"] = [(50.0, 0, int(Happening.FAULT), 1, -1, -1), (70.0, 1, int(Happening.EXPIRE), 0, -1, -1)]
    old = World.__new__(World)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old.fault_at.tolist() == [np.inf, 50.0, np.inf]
    assert old.fault_queued.tolist() == [False, True, False]
    assert old.drive.cfg.city_speed_mps == SimConfig().trip_speed_mps
