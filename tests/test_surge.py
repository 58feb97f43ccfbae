"""Surge (matcher.core.surge): properties with hypothesis, a brute-force oracle, hysteresis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.config import SurgeConfig
from matcher.core import surge

CFG = SurgeConfig()


@st.composite
def ticks(draw):
    """A few ticks of open-request and available-driver cells over a handful of cells."""
    n_cells = draw(st.integers(1, 6))
    cells = np.arange(100, 100 + n_cells, dtype=np.uint64)
    out = []
    for _ in range(draw(st.integers(1, 8))):
        d = draw(st.lists(st.sampled_from(list(range(n_cells))), max_size=30))
        s = draw(st.lists(st.sampled_from(list(range(n_cells))), max_size=30))
        dt = draw(st.sampled_from([0.5, 2.0, 10.0, 60.0]))
        out.append((cells[np.array(d, np.int64)], cells[np.array(s, np.int64)], dt))
    return out


def run(seq, cfg=CFG):
    state = surge.SurgeState.empty()
    figs = []
    for d, s, dt in seq:
        state, f = surge.step(state, d, s, dt, cfg)
        figs.append(f)
    return state, figs


@given(ticks())
def test_multipliers_are_capped_whole_steps(seq):
    state, figs = run(seq)
    for f in figs:
        assert ((f.multiplier >= 1.0) & (f.multiplier <= CFG.cap)).all()
        steps = f.multiplier / CFG.step
        assert np.allclose(steps, np.round(steps))
        assert (np.diff(f.cells.astype(np.float64)) > 0).all()  # sorted, unique


@given(ticks())
def test_order_of_points_does_not_matter(seq):
    rng = np.random.default_rng(0)
    shuffled = [(rng.permutation(d), rng.permutation(s), dt) for d, s, dt in seq]
    a, _ = run(seq)
    b, _ = run(shuffled)
    assert np.array_equal(a.cells, b.cells) and np.array_equal(a.multiplier, b.multiplier)
    assert np.allclose(a.demand, b.demand) and np.allclose(a.supply, b.supply)


@given(ticks())
@settings(max_examples=50)
def test_matches_a_scalar_oracle(seq):
    """Brute force: per cell, a dict-based EWMA and the same target and hysteresis rules."""
    d_ew: dict[int, float] = {}
    s_ew: dict[int, float] = {}
    mult: dict[int, float] = {}
    state = surge.SurgeState.empty()
    for d, s, dt in seq:
        state, f = surge.step(state, d, s, dt, CFG)
        a = 1.0 - math.exp(-dt / CFG.tau_s)
        cells = set(d_ew) | {int(x) for x in d} | {int(x) for x in s}
        for c in cells:
            dn, sn = int((d == c).sum()), int((s == c).sum())
            d_ew[c] = (1 - a) * d_ew.get(c, 0.0) + a * dn
            s_ew[c] = (1 - a) * s_ew.get(c, 0.0) + a * sn
            ratio = d_ew[c] / max(s_ew[c], CFG.min_supply)
            target = min(max(round((1 + CFG.gain * (ratio - CFG.threshold)) / CFG.step) * CFG.step, 1.0), CFG.cap)
            m = mult.get(c, 1.0)
            if abs(target - m) >= CFG.band - 1e-9:
                m = target
            if ratio <= CFG.threshold:
                m = 1.0
            mult[c] = m
        for c, m in zip(f.cells.tolist(), f.multiplier.tolist()):
            assert math.isclose(m, mult[c], abs_tol=1e-9), (c, m, mult[c])


@given(st.integers(0, 40), st.integers(0, 40), st.integers(1, 10))
def test_more_demand_never_lowers_the_target(d, s, extra):
    r1 = np.array([d / max(s, CFG.min_supply)])
    r2 = np.array([(d + extra) / max(s, CFG.min_supply)])
    assert surge.target_multiplier(r2, CFG)[0] >= surge.target_multiplier(r1, CFG)[0]


def test_hysteresis_keeps_the_price_through_small_oscillations():
    cell = np.uint64(7)
    state = surge.SurgeState.empty()
    # a shortage: 30 requests against 10 drivers, long enough for the EWMA to settle
    for _ in range(200):
        state, f = surge.step(state, np.full(30, cell), np.full(10, cell), 5.0, CFG)
    settled = float(f.multiplier[0])
    assert settled == 2.0  # 1 + 0.5 * (3 - 1)
    seen = set()
    for i in range(200):  # demand wobbles by +-1 request around 30
        state, f = surge.step(state, np.full(30 + (1 if i % 2 else -1), cell), np.full(10, cell), 5.0, CFG)
        seen.add(float(f.multiplier[0]))
    assert seen == {settled}
    # demand gone: the multiplier falls back to 1 and the cell is eventually forgotten
    for _ in range(300):
        state, f = surge.step(state, np.empty(0, np.uint64), np.empty(0, np.uint64), 5.0, CFG)
    assert len(state) == 0 or (state.multiplier == 1.0).all()


def test_leaving_one_needs_the_band():
    """With dt = inf (no smoothing) the ratio jumps exactly; the multiplier moves a band at least."""
    cell, inf = np.uint64(3), math.inf

    def tick(state, d, s):
        return surge.step(state, np.full(d, cell), np.full(s, cell), inf, CFG)

    state, f = tick(surge.SurgeState.empty(), 12, 10)  # ratio 1.2: target 1.1, within the band of 1.0
    assert f.multiplier[0] == 1.0
    state, f = tick(state, 16, 10)  # ratio 1.6: target 1.3
    assert f.multiplier[0] == 1.3
    state, f = tick(state, 17, 10)  # target 1.35 -> 1.4: within the band of 1.3, stays
    assert f.multiplier[0] == 1.3
    state, f = tick(state, 14, 10)  # target 1.2: within the band, stays
    assert f.multiplier[0] == 1.3
    state, f = tick(state, 10, 10)  # no excess demand: back to 1 at once
    assert f.multiplier[0] == 1.0
    state, f = tick(state, 100, 1)  # a big shortage: capped
    assert f.multiplier[0] == CFG.cap


def test_cells_and_lookup():
    lat, lng = np.array([40.758, 40.7581, 51.5, np.nan]), np.array([-73.9855, -73.9856, -0.12, 0.0])
    c = surge.cells_of(lat, lng, CFG)
    assert len(c) == 3 and c[0] == c[1] != c[2]  # the invalid point is left out
    state = surge.SurgeState(np.array([c[0]], np.uint64), np.array([5.0]), np.array([1.0]), np.array([2.5]))
    assert surge.multiplier_at(state, c).tolist() == [2.5, 2.5, 1.0]


@pytest.mark.slow
def test_replay_writes_cells_parquet(small_trace, tmp_path):
    """Every tick of a replay: one row per tracked cell; demand sums to the tick's pending requests."""
    import polars as pl
    import pyarrow.parquet as pq

    from matcher.config import RunConfig
    from matcher.io.schemas import CELLS
    from matcher.sim.replay import run_replay

    out = tmp_path / "run"
    run_replay(RunConfig(trace=str(small_trace.trace), out=str(out), drivers=str(small_trace.drivers), quiet=True))
    assert pq.read_schema(out / "cells.parquet").equals(CELLS, check_metadata=False)
    cells = pl.read_parquet(out / "cells.parquet")
    ticks = pl.read_parquet(out / "ticks.parquet")
    per_tick = cells.group_by("tick").agg(pl.col("demand").sum()).sort("tick")
    joined = ticks.join(per_tick, on="tick", how="left").with_columns(pl.col("demand").fill_null(0))
    assert (joined["demand"] == joined["pending"]).all()
    assert cells["surge_multiplier"].min() >= 1.0 and cells["surge_multiplier"].max() <= CFG.cap
    assert not (out / ".cells.parts").exists()
