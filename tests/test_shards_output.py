"""Per-shard figures of a run: OUT/shards.parquet, the summary's shard keys, `shard` on events,
and the sharded run against the one-shard run (border components solved on the shards, exactly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from matcher.analysis.audit import check_run
from matcher.analysis.metrics import read_events
from matcher.config import RunConfig, ShardConfig
from matcher.io.schemas import SHARDS
from matcher.sim.replay import run_replay

pytestmark = pytest.mark.slow  # two replays of 10 minutes (about 20 s)

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO / "data" / "synth-small.parquet"
SYNTH_DRIVERS = REPO / "data" / "synth-small-drivers.parquet"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    t = pl.read_parquet(SYNTH).sort("request_time")
    root = tmp_path_factory.mktemp("shards-out")
    trace = root / "synth10.parquet"
    t.filter(pl.col("request_time") < t["request_time"][0] + pl.duration(minutes=10)).write_parquet(trace)
    out = {}
    for k in (1, 4):
        cfg = RunConfig(
            trace=str(trace),
            out=str(root / f"k{k}"),
            drivers=str(SYNTH_DRIVERS),
            quiet=True,
            shard=ShardConfig(shards=k, backend="inprocess", rebalance_ticks=10),
        )
        out[k] = (root / f"k{k}", run_replay(cfg))
    return out


def test_shards_parquet_has_one_row_per_tick_and_shard_and_adds_up(runs):
    for k, (out, summary) in runs.items():
        assert check_run(out) == []
        assert pq.read_schema(out / "shards.parquet").remove_metadata() == SHARDS
        sh = pl.read_parquet(out / "shards.parquet")
        ticks = pl.read_parquet(out / "ticks.parquet")
        assert sh.height == k * ticks.height > 0
        assert sorted(sh["shard"].unique().to_list()) == list(range(k))
        per_tick = sh.group_by("tick").agg(pl.col("matched").sum(), pl.col("border").sum(), pl.col("pending").sum())
        joined = ticks.join(per_tick, on="tick", suffix="_shards")
        assert (joined["matched"] == joined["matched_shards"]).all()
        assert (joined["deferred"] == joined["border"]).all()
        assert (joined["pending"] == joined["pending_shards"]).all()
        assert (sh["solve_ms"] >= 0).all() and (sh["drivers"] >= 0).all()
        assert sh["handoffs_in"].sum() == sh["handoffs_out"].sum()
        # shard_cpu_ms of a tick is the CPU of the shards waited for (both rounds); a shard not waited
        # for is sent nothing (no report here can be refused), so solve_ms holds the same CPU
        cpu = sh.group_by("tick").agg(pl.col("solve_ms").sum()).join(ticks, on="tick")
        np.testing.assert_allclose(cpu["solve_ms"].to_numpy(), cpu["shard_cpu_ms"].to_numpy(), atol=1e-9)
        assert (sh["solve_ms"] == 0).any()  # some shards were not waited for, and were sent nothing
        per_shard = sh.group_by("shard").agg(pl.col("solve_ms").sum())["solve_ms"].to_numpy()
        assert summary["shard_balance"] == pytest.approx(per_shard.max() / per_shard.mean())
        coord = ticks["coordinator_ms"].sum()
        assert summary["coordinator_solve_share"] == pytest.approx(coord / (coord + per_shard.sum()))
        assert 1.0 <= summary["modeled_speedup"] <= k + 1e-9
    one, four = runs[1][1], runs[4][1]
    assert one["shard_balance"] == 1.0 and four["shard_balance"] >= 1.0
    # the regions moved during the run (rebalances) and drivers were handed off
    assert pl.read_parquet(runs[4][0] / "shards.parquet")["handoffs_in"].sum() > 0


def test_every_event_a_shard_produced_names_it(runs):
    for k, (out, _) in runs.items():
        ev = read_events(out)
        own = ev.filter(pl.col("kind").is_in(["request", "expire", "match"]))
        assert own["shard"].null_count() == 0
        assert own["shard"].min() >= 0 and own["shard"].max() < k
        world = ev.filter(~pl.col("kind").is_in(["request", "expire", "match"]))
        assert world["shard"].null_count() == world.height
    ev = read_events(runs[4][0])
    assert ev.filter(pl.col("kind") == "request")["shard"].n_unique() == 4


def test_four_shards_make_the_one_shard_run_exactly(runs):
    """Border components are solved whole (on some shard), with the one-shard tie rules: same matches."""
    cols = ["seq", "ts", "tick", "kind", "request_id", "driver_id", "pickup_eta_s"]
    a = read_events(runs[1][0]).select(cols).sort("seq")
    b = read_events(runs[4][0]).select(cols).sort("seq")
    assert a.height == b.height
    assert a.equals(b)
    s1, s4 = runs[1][1], runs[4][1]
    assert s4["border_share"] > 0  # there was border work, and it was solved on the shards
    for key in ("completed", "served_rate", "pickup_eta_s", "wait_s"):
        assert s1[key] == s4[key]
