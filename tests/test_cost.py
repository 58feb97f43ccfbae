"""The ETA model is chosen by configuration, in one place (matcher.core.cost.make_eta)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher.config import EtaConfig, MatchConfig, RunConfig, SimConfig
from matcher.core import cost
from matcher.core.cost import StraightLineEta, make_eta
from matcher.core.shard import ShardState

SYNTH = Path(__file__).resolve().parents[1] / "data" / "synth-small.parquet"


def test_default_model_is_the_straight_line():
    m = make_eta(EtaConfig())
    assert isinstance(m, StraightLineEta)
    assert make_eta(EtaConfig(), speed_mps=3.5).cfg.city_speed_mps == 3.5


def test_unknown_model_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown ETA model 'teleport' .*straight_line"):
        make_eta(EtaConfig(model="teleport"))


@given(
    dist=st.floats(0, 50_000),
    brg=st.floats(-180, 180),
    hd=st.floats(0, 360),
    sp=st.floats(0, 40),
    turn=st.floats(0, 300),
)
def test_straight_line_eta_bounds(dist, brg, hd, sp, turn):
    m = make_eta(EtaConfig(turnaround_s=turn))
    travel = dist * 1.3 / 7.0
    eta = float(m.pickup_eta_s(dist, brg, hd, sp))
    assert travel - 1e-6 <= eta <= travel + turn + 1e-6
    assert m.drive_s(dist) == pytest.approx(travel)
    if sp < 1.0:  # a stopped driver turns for free
        assert eta == pytest.approx(travel)


@dataclass(frozen=True)
class _Teleport:
    """A test model: every pickup takes 1 s."""

    cfg: EtaConfig = field(default_factory=EtaConfig)

    def pickup_eta_s(self, dist_m, bearing_deg, heading_deg, speed_mps):
        return np.ones_like(np.asarray(dist_m, np.float64))

    def drive_s(self, dist_m):
        return 1.0


def test_the_configured_model_drives_the_shards_and_the_world(monkeypatch, tmp_path):
    """One name in the config reaches both the matcher's costs and the world's driving."""
    from matcher.analysis.metrics import read_events
    from matcher.sim.replay import run_replay

    monkeypatch.setitem(cost.ETA_MODELS, "teleport", _Teleport)
    match = replace(MatchConfig(), eta=EtaConfig(model="teleport"))
    assert isinstance(ShardState(0, match).eta, _Teleport)
    trace = tmp_path / "t.parquet"
    pl.read_parquet(SYNTH).sort("request_time").head(60).write_parquet(trace)
    sim = SimConfig(accept_prob=1.0, cancel_base=0.0, cancel_per_min=0.0, driver_fault_rate_per_h=0.0)
    run_replay(RunConfig(trace=str(trace), out=str(tmp_path / "o"), drivers=60, quiet=True, sim=sim, match=match))
    ev = read_events(tmp_path / "o")
    matches = ev.filter(pl.col("kind") == "match")
    assert matches.height > 0 and (matches["pickup_eta_s"] == 1.0).all()
    acc = ev.filter(pl.col("kind") == "accept").select("request_id", pl.col("ts").alias("a"))
    pick = ev.filter(pl.col("kind") == "pickup").select("request_id", pl.col("ts").alias("p"))
    drive = acc.join(pick, on="request_id").select((pl.col("p") - pl.col("a")).dt.total_milliseconds())
    assert drive.height > 0 and (drive.to_series() == 1000).all()  # the world drove 1 s too
