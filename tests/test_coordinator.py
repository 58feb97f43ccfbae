"""Sharded replays in-process: handoffs, hot-region splits, failed ticks and the time budget."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher.analysis.audit import check_run
from matcher.analysis.metrics import read_events
from matcher.config import RunConfig, ShardConfig
from matcher.dist import backend as backend_mod
from matcher.sim.replay import run_replay

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO / "data" / "synth-small.parquet"
SYNTH_DRIVERS = REPO / "data" / "synth-small-drivers.parquet"


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    t = pl.read_parquet(SYNTH).sort("request_time")
    p = tmp_path_factory.mktemp("trace") / "synth15.parquet"
    t.filter(pl.col("request_time") < t["request_time"][0] + pl.duration(minutes=15)).write_parquet(p)
    return p


def _cfg(trace, out, **shard) -> RunConfig:
    return RunConfig(
        trace=str(trace),
        out=str(out),
        drivers=str(SYNTH_DRIVERS),
        quiet=True,
        shard=replace(ShardConfig(backend="inprocess"), **shard),
    )


class _Watching(backend_mod.InProcessBackend):
    """In-process shards, checked after every tick: of the shards sent an input (the others are
    not read and catch up at their next one), no two own the same driver."""

    ticks = 0

    def tick(self, inputs, answer, idle=None):
        outs = super().tick(inputs, answer, idle)
        sent = [s for s, i in zip(self.shards, inputs, strict=True) if i is not None]
        owned = np.concatenate([s.table.col("key")[s.table.col("owned")] for s in sent] or [np.empty(0, np.int64)])
        assert len(owned) == len(np.unique(owned)), "a driver is owned by two shards"
        for s in self.shards:  # halo copies are never owned twice and never duplicated within a shard
            keys = s.table.col("key")
            assert len(keys) == len(np.unique(keys))
        type(self).ticks += 1
        return outs


def _watching(shard, match, run_name):
    return _Watching(shard.shards, match)


@pytest.fixture
def watched():
    _Watching.ticks = 0
    return _Watching


@pytest.mark.slow
def test_sharded_run_hands_off_and_never_duplicates(trace, tmp_path, watched):
    s4 = run_replay(_cfg(trace, tmp_path / "k4", shards=4), backend_factory=_watching)
    assert watched.ticks > 100
    assert check_run(tmp_path / "k4") == []
    meta = json.loads((tmp_path / "k4" / "run.json").read_text())
    assert meta["handoffs"] > 0  # drivers did cross region borders
    s1 = run_replay(_cfg(trace, tmp_path / "k1", shards=1))
    # same world, same quality: sharded matching is exact, so the runs stay close
    assert abs(s4["completed"] - s1["completed"]) <= 0.02 * s1["completed"]


@pytest.mark.slow
def test_hot_regions_split_and_the_run_stays_correct(trace, tmp_path, watched):
    s = run_replay(_cfg(trace, tmp_path / "hot", shards=3, hot_split_load=2), backend_factory=_watching)
    assert check_run(tmp_path / "hot") == []
    assert s["border_share"] > 0


class _Failing(backend_mod.InProcessBackend):
    """In-process shards whose 50th, 51st and 200th tick calls raise."""

    calls = 0

    def tick(self, inputs, answer, idle=None):
        self.calls += 1
        if self.calls in (50, 51, 200):
            raise RuntimeError("injected shard failure")
        return super().tick(inputs, answer, idle)


def test_a_failing_tick_is_counted_and_the_run_goes_on(trace, tmp_path):
    s = run_replay(
        _cfg(trace, tmp_path / "flaky", shards=2), backend_factory=lambda sh, m, name: _Failing(sh.shards, m)
    )
    assert check_run(tmp_path / "flaky") == []
    meta = json.loads((tmp_path / "flaky" / "run.json").read_text())
    assert meta["failed_ticks"] == 3
    assert s["completed"] > 0


def test_time_budget_falls_back_to_greedy_and_is_counted(trace, tmp_path):
    base = _cfg(trace, tmp_path / "budget", shards=1)
    cfg = replace(base, shard=replace(base.shard, solve_budget_ms=1e-9))
    s = run_replay(cfg)
    assert check_run(tmp_path / "budget") == []
    assert s["fallback_ticks"] > 0
    ev = read_events(tmp_path / "budget")
    assert ev.filter(pl.col("kind") == "match").height > 0


@given(st.lists(st.integers(0, 2**64 - 1), max_size=60), st.integers(1, 64))
def test_bit_counts_is_the_per_bit_count(values, k):
    """The coordinator's per-shard membership counts (byte-lane histograms) against a bit loop."""
    from matcher.dist.coordinator import bit_counts

    mask = np.array(values, np.uint64) & np.uint64(2**k - 1)
    want = [sum((int(v) >> s) & 1 for v in mask) for s in range(k)]
    assert bit_counts(mask, k).tolist() == want
