"""The numbers behind report.html: time series, supply and demand, cells, cancels, noise, shards, local time.

Brute-force oracles on small inputs (hypothesis composite strategies, so failures shrink) and
hand-computed figures of tests/eventlog.tiny_log. No Ray.
"""

from __future__ import annotations

import math
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from eventlog import BASE, events_frame, ticks_table, tiny_log, write_run

from matcher.analysis import cells, localtime, metrics, riders, significance, supply
from matcher.analysis.shardload import shard_load
from matcher.core import geo
from matcher.errors import MatcherError

BASE_MS = int(BASE.timestamp() * 1000)


# --------------------------------------------------------------------------- metrics: time series
@st.composite
def times_and_grid(draw):
    n = draw(st.integers(0, 30))
    t = draw(st.lists(st.integers(0, 100), min_size=n, max_size=n))
    grid = draw(st.lists(st.integers(-5, 110), min_size=1, max_size=15))
    return np.array(t, float), np.array(sorted(grid), float)


@settings(deadline=None)  # timing varies on a loaded machine; the oracle is what counts
@given(times_and_grid(), st.data())
def test_rolling_share_against_brute_force(tg, data):
    t, grid = tg
    flag = np.array(data.draw(st.lists(st.booleans(), min_size=len(t), max_size=len(t))), bool)
    w = data.draw(st.sampled_from([1.0, 5.0, 30.0]))
    got = metrics.rolling_share(t, flag, grid, w)
    for g, v in zip(grid, got):
        inside = (t > g - w) & (t <= g)
        if inside.any():
            assert v == pytest.approx(flag[inside].mean())
        else:
            assert math.isnan(v)


@settings(deadline=None)  # timing varies on a loaded machine; the oracle is what counts
@given(times_and_grid(), st.data())
def test_in_system_against_brute_force(tg, data):
    t_in, grid = tg
    stay = np.array(data.draw(st.lists(st.integers(0, 40), min_size=len(t_in), max_size=len(t_in))), float)
    t_out = t_in + stay
    got = metrics.in_system(t_in, t_out, grid)
    for g, v in zip(grid, got):
        assert v == int(((t_in <= g) & (t_out > g)).sum())


@settings(deadline=None)  # timing varies on a loaded machine; the oracle is what counts
@given(times_and_grid(), st.data())
def test_littles_law_against_brute_force(tg, data):
    arrival, grid = tg
    soj = np.array(data.draw(st.lists(st.integers(0, 40), min_size=len(arrival), max_size=len(arrival))), float)
    w, end = 20.0, 100.0
    got = metrics.littles_law(arrival, soj, grid, w, end)
    for g, v in zip(grid, got):
        if g - w / 2 < 0 or g + w / 2 > end:
            assert math.isnan(v)
        else:
            inside = (arrival >= g - w / 2) & (arrival < g + w / 2)
            assert v == pytest.approx(soj[inside].sum() / w)


# --------------------------------------------------------------------------- supply and demand
KINDS = ("request", "match", "accept", "decline", "pickup", "dropoff", "cancel", "expire")
DRIVER_KINDS = ("driver_online", "match", "accept", "decline", "pickup", "dropoff", "cancel", "driver_offline")


@st.composite
def event_logs(draw):
    """Any order of kinds per key (the definitions hold for every sequence), ties in ts included."""
    rows = []
    for k in range(draw(st.integers(1, 5))):
        t = 0
        for j, kind in enumerate(draw(st.lists(st.sampled_from(DRIVER_KINDS), min_size=1, max_size=6))):
            t += draw(st.integers(0, 20))
            rows.append((t, kind, None if kind.startswith("driver_") else f"r{k}-{j}", f"d{k}"))
    for k in range(draw(st.integers(0, 5))):
        t = draw(st.integers(0, 50))
        for kind in ["request", *draw(st.lists(st.sampled_from(KINDS[1:]), max_size=5))]:
            rows.append((t, kind, f"q{k}", None))
            t += draw(st.integers(0, 20))
    rows.sort(key=lambda r: r[0])
    return rows


def _oracle(rows, key_index: int, opens, g: float) -> int:
    """Keys whose last event at or before g (by ts, then listed order) opens an interval."""
    last = {}
    for t, kind, *ids in rows:
        key = ids[key_index - 2]
        if key is not None and t <= g:
            last[key] = kind
    return sum(kind in opens for kind in last.values())


@settings(max_examples=60, deadline=None)
@given(event_logs())
def test_occupancy_against_replaying_the_log(rows):
    ev = events_frame(rows)
    end_ms = BASE_MS + 1000 * max(r[0] for r in rows)
    grid = np.arange(0, max(r[0] for r in rows), 0.5)  # before the log's end: every interval is closed there
    for key, idx, opens, place in (
        ("request_id", 2, supply.SEARCHING_OPENS, "request"),
        ("driver_id", 3, supply.AVAILABLE_OPENS, None),
    ):
        sl = ev.filter(pl.col(key).is_not_null()).sort(key, "ts", "seq")
        start, end, _, _ = supply.intervals(sl, key, opens, end_ms, place)
        got = metrics.in_system((start - BASE_MS) / 1000, (end - BASE_MS) / 1000, grid)
        assert got.tolist() == [_oracle(rows, idx, opens, g) for g in grid]


def test_supply_and_demand_of_the_tiny_log(tmp_path):
    out = write_run(tmp_path / "run", tiny_log())
    grid = np.array([1, 10, 15, 30, 51, 100, 200, 750, 900, 1100, 1200, 1300], float)
    sd = supply.supply_demand(out, BASE_MS, grid, [(0.0, 200.0), (200.0, 1400.0)])
    assert sd.available.tolist() == [2, 1, 0, 1, 1, 0, 1, 2, 1, 0, 1, 1]
    assert sd.waiting.tolist() == [1, 1, 0, 1, 2, 1, 1, 0, 0, 1, 1, 1]
    assert (sd.supply_source, sd.demand_source, sd.precision) == ("events", "events", supply.SUPPLY_PRECISION)
    # every event is at one point, so one cell: time averages are seconds in the state / period length
    c = sd.cells.sort("period")
    assert c["cell"].unique().to_list() == [geo.encode(40.75, -73.98, 5).item()]
    # waiting in [0, 200): r1 2 s, r2 2 + 180 s (decline at 20 until 310), r3 4 s -> 188 / 200
    assert c["waiting"].to_list() == pytest.approx([188 / 200, (110 + 6 + 300) / 1200])
    # available in [0, 200): d1 0-2, d2 0-12, 20-54, 160-200 -> 2 + 12 + 34 + 40 = 88
    # in [200, 1400): d1 700-806 and 1200-1400, d2 200-1000 -> 106 + 200 + 800 = 1106
    assert c["available"].to_list() == pytest.approx([88 / 200, 1106 / 1200])


def test_cells_and_locations_files_take_over(tmp_path):
    out = write_run(tmp_path / "run", tiny_log())
    ts = pa.array([BASE + timedelta(seconds=s) for s in (0, 4, 8)], pa.timestamp("ms", tz="UTC"))
    tick_ts = pa.array([BASE + timedelta(seconds=s) for s in (0, 0, 4)], pa.timestamp("ms", tz="UTC"))
    locs = pa.table(
        {
            "driver_id": ["d1", "d1", "d1"],
            "ts": ts,
            "lat": [40.75, 40.75, 40.80],
            "lng": [-73.98, -73.98, -73.90],
            "heading_deg": pa.array([0, 0, 0], pa.float32()),
            "speed_mps": pa.array([0, 0, 0], pa.float32()),
            "status": ["available", "offered", "available"],
        }
    )
    (out / "locations").mkdir()
    pq.write_table(locs, out / "locations" / "part-00000.parquet")
    sd = supply.supply_demand(out, BASE_MS, np.array([1.0, 5.0, 9.0]), [(0.0, 12.0)])
    assert sd.supply_source == "locations/" and sd.available.tolist() == [1, 0, 1]
    assert sd.cells.filter(pl.col("available") > 0)["available"].sum() == pytest.approx(2 / 3)
    cells_file = pa.table(
        {
            "tick": [0, 0, 1],
            "ts": tick_ts,
            "cell": ["dr5ru", "dr5rv", "dr5ru"],
            "demand": pa.array([2, 1, 4], pa.int32()),
            "supply": pa.array([3, 0, 1], pa.int32()),
        }
    )
    pq.write_table(cells_file, out / "cells.parquet")
    sd = supply.supply_demand(out, BASE_MS, np.array([1.0, 5.0, 9.0]), [(0.0, 12.0)])
    assert (sd.supply_source, sd.demand_source, sd.precision) == ("cells.parquet", "cells.parquet", 5)
    assert sd.waiting.tolist() == [3, 4, 4] and sd.available.tolist() == [3, 1, 1]
    got = {r["cell"]: (r["waiting"], r["available"]) for r in sd.cells.iter_rows(named=True)}
    assert got == {"dr5ru": (pytest.approx(3.0), pytest.approx(2.0)), "dr5rv": (pytest.approx(0.5), 0.0)}


# --------------------------------------------------------------------------- cells
@st.composite
def requests_with_places(draw):
    n = draw(st.integers(1, 25))
    lat = draw(st.lists(st.sampled_from([40.70, 40.71, 40.75, 41.2]), min_size=n, max_size=n))
    lng = draw(st.lists(st.sampled_from([-74.0, -73.99, -73.9]), min_size=n, max_size=n))
    outcome = draw(st.lists(st.sampled_from(["completed", "cancelled", "expired", None]), min_size=n, max_size=n))
    wait = draw(st.lists(st.floats(0, 900), min_size=n, max_size=n))
    eta = draw(st.lists(st.one_of(st.none(), st.floats(0, 600)), min_size=n, max_size=n))
    ids = [f"r{i}" for i in range(n)]
    req = pl.DataFrame(
        {
            "request_id": ids,
            "outcome": outcome,
            "wait_s": [w if o == "completed" else None for w, o in zip(wait, outcome)],
            "pickup_eta_s": eta,
        },
        schema_overrides={"outcome": pl.String, "pickup_eta_s": pl.Float64},
    )
    return req, pl.DataFrame({"request_id": ids, "lat": lat, "lng": lng})


@settings(deadline=None)  # timing varies on a loaded machine; the oracle is what counts
@given(requests_with_places(), st.sampled_from([4, 5, 6]))
def test_cell_stats_against_brute_force(rp, precision):
    req, places = rp
    got = {r["cell"]: r for r in cells.cell_stats(req, places, precision).iter_rows(named=True)}
    by_cell: dict[str, list] = {}
    for r, p in zip(req.iter_rows(named=True), places.iter_rows(named=True)):
        by_cell.setdefault(str(geo.encode(p["lat"], p["lng"], precision)), []).append(r)
    assert set(got) == set(by_cell)
    for cell, rs in by_cell.items():
        g = got[cell]
        assert g["requests"] == len(rs)
        assert g["expired_share"] == pytest.approx(sum(r["outcome"] == "expired" for r in rs) / len(rs))
        waits = [r["wait_s"] for r in rs if r["outcome"] == "completed"]
        assert g["wait_mean_s"] == (pytest.approx(np.mean(waits)) if waits else None)
        etas = [r["pickup_eta_s"] for r in rs if r["pickup_eta_s"] is not None]
        assert g["eta_mean_s"] == (pytest.approx(np.mean(etas)) if etas else None)


def test_choose_precision():
    rng = np.random.default_rng(0)
    dense = rng.normal(0, 1e-4, (2, 2000)) + np.array([[40.75], [-73.98]])
    assert cells.choose_precision(dense[0], dense[1]) == 7  # everything in a few 150 m cells
    spread = rng.uniform(-1, 1, (2, 200)) * np.array([[20], [60]])
    assert cells.choose_precision(spread[0], spread[1]) == 4  # too thin for any finer cell
    assert cells.choose_precision([np.nan], [0.0]) == 4
    assert cells.cell_size_text(6, 40.75) == "925 x 611 m" and cells.cell_size_text(5, 40.75) == "3.7 x 4.9 km"
    assert cells.view_box([np.nan], [1.0]) is None


_lat = st.floats(-90, 90)
_lng = st.floats(-180, 180)


@st.composite
def points(draw):
    """Valid points anywhere (poles and single points included), a few of them clustered."""
    n = draw(st.integers(1, 6))
    lat = draw(st.lists(st.one_of(_lat, st.sampled_from([-90.0, 90.0, 40.75])), min_size=n, max_size=n))
    lng = draw(st.lists(st.one_of(_lng, st.sampled_from([-180.0, 180.0, -73.98])), min_size=n, max_size=n))
    return np.array(lat), np.array(lng)


@given(points())
def test_a_map_view_is_never_a_sliver(p):
    from matcher.analysis.report.maps import MAX_RATIO, view

    box = cells.view_box(*p)
    v = view(box)
    assert v.lat0 <= box[0] and v.lat1 >= box[1] and v.lng0 <= box[2] and v.lng1 >= box[3]  # holds the box
    assert v.lat1 > v.lat0 and v.lng1 > v.lng0
    assert 1 / MAX_RATIO - 1e-9 <= v.ratio <= MAX_RATIO + 1e-9
    assert math.isfinite(v.aspect) and v.aspect >= 1.0


@pytest.mark.parametrize(
    "lat,lng",
    [
        ([-90.0], [-74.07]),  # the one valid pickup at the south pole (a fuzz find)
        ([40.82, 40.70, -90.0], [-74.05, -73.92, -74.07]),  # a stray point at the south pole
        ([40.75], [-73.98]),  # one point
        ([0.0, 0.0], [-180.0, 180.0]),  # along the equator, around the world
        ([89.9, 89.95], [10.0, 10.01]),  # at the north pole
    ],
)
def test_maps_of_degenerate_views_render(lat, lng):
    """The figure is drawn (savefig lays it out): a sliver of a view once made matplotlib's
    layout invert a singular matrix."""
    from matcher.analysis.report.load import Run
    from matcher.analysis.report.maps import metric_maps

    lat, lng = np.array(lat), np.array(lng)
    precision = cells.choose_precision(lat, lng)
    names = geo.encode(lat, lng, precision)
    n = len(lat)
    st_ = pl.DataFrame({"cell": names, "requests": [1] + [9] * (n - 1), "wait_mean_s": [60.0] * n})
    st_ = st_.with_columns(expired_share=pl.lit(0.1), eta_mean_s=pl.lit(200.0))
    run = Run("batch", Path("unused"), {}, "#1f77b4")
    maps = metric_maps([run], {"batch": st_}, cells.view_box(lat, lng), precision)
    assert len(maps) == 3 and all(len(png) > 1000 for png, _, _ in maps)


# --------------------------------------------------------------------------- cancels against ETA
def test_offer_outcomes_of_the_tiny_log():
    o = riders.offer_outcomes(events_frame(tiny_log())).sort("pickup_eta_s")
    assert o.rows() == [(50.0, "dropoff"), (100.0, "dropoff"), (200.0, "decline"), (300.0, "cancel")]


def test_cancel_by_eta_bins_and_wilson():
    eta = [10.0] * 30 + [70.0] * 40 + [130.0] * 5
    ended = ["cancel"] * 3 + ["dropoff"] * 27 + ["cancel"] * 10 + ["decline"] * 30 + ["cancel"] * 5
    b = riders.cancel_by_eta(pl.DataFrame({"pickup_eta_s": eta + [20.0], "ended": ended + [None]}))
    assert b.select("eta_lo_s", "offers", "cancelled").rows() == [(0.0, 30, 3), (60.0, 40, 10)]  # 5 offers: too few
    assert b["share"].to_list() == pytest.approx([0.1, 0.25])
    assert (b["lo"] < b["share"]).all() and (b["share"] < b["hi"]).all()
    lo, hi = riders.wilson(np.array([0]), np.array([10]))
    assert lo[0] == pytest.approx(0.0, abs=1e-12) and 0.2 < hi[0] < 0.35  # the rule of three, roughly
    assert riders.model_cancel_p([0, 60, 6000], 0.02, 0.02).tolist() == pytest.approx([0.02, 0.04, 0.5])


# --------------------------------------------------------------------------- noise
def test_standard_errors_match_their_formulas():
    rng = np.random.default_rng(1)
    wait = rng.exponential(200.0, 4000)
    req = pl.DataFrame({"outcome": ["completed"] * 4000, "wait_s": wait})
    se = significance.standard_errors({"requests": 5000, "completed": 4000, "served_rate": 0.8, "declines": 100}, req)
    assert se["completed"] == pytest.approx(math.sqrt(5000 * 0.8 * 0.2))
    assert se["served_rate"] == pytest.approx(math.sqrt(0.8 * 0.2 / 5000))
    assert se["declines"] == pytest.approx(10.0)
    assert se["wait_s.mean"] == pytest.approx(wait.std(ddof=1) / math.sqrt(4000))
    # median of an exponential: asymptotic SE = sqrt(p (1 - p)) / (f(m) sqrt(n)), f(m) = 1 / (2 * 200)
    assert se["wait_s.p50"] == pytest.approx(0.5 * 400 / math.sqrt(4000), rel=0.15)
    assert "match_delay_s.mean" not in se  # no such column given
    assert significance.quantile_se(np.arange(5.0), 0.5) is None  # too few values


def test_best_only_beyond_noise():
    assert significance.best_index([10.0, 12.0], [0.5, 0.5], -1) == 0
    assert significance.best_index([10.0, 10.5], [0.5, 0.5], -1) is None  # within noise
    assert significance.best_index([10.0, 12.0, 10.2], [0.1, 0.1, 0.1], -1) is None  # runner-up too close
    assert significance.best_index([10.0, 12.0], [None, 0.5], -1) is None  # no noise estimate
    assert significance.best_index([0.8, 0.5], [0.0, 0.0], 0) is None  # never marked
    s = {"wait_s": {"mean": 300.0}, "served_rate": 0.55, "cancelled": 10, "expired": 0}
    b = {"wait_s": {"mean": 400.0}, "served_rate": 0.50, "cancelled": 10, "expired": 0}
    se = {"wait_s.mean": 5.0, "served_rate": 0.001}
    line = significance.headline("batch-2s", s, se, "greedy", b, se)
    assert (
        line == "batch-2s against greedy: mean wait -25%, served +5.0 points, cancelled unchanged, expired unchanged."
    )


# --------------------------------------------------------------------------- shards
def test_shard_load_from_shards_parquet_and_from_ticks(tmp_path):
    out = write_run(tmp_path / "run", tiny_log())
    df, source = shard_load(out)
    assert source == "ticks.parquet" and df["shard"].unique().to_list() == ["all"]
    pq.write_table(ticks_table([5.0, 6.0], pending=[4, 0], deferred=[1, 0]), out / "ticks.parquet")
    df, _ = shard_load(out)
    assert df["border_share"].to_list() == [0.25, None]
    shards = pa.table(
        {
            "tick": [0, 0, 1, 1],
            "shard": pa.array([0, 1, 0, 1], pa.int32()),
            "drivers": [3, 4, 3, 4],
            "halo_drivers": [1, 1, 1, 1],
            "pending": [2, 2, 0, 1],
            "matched": [1, 2, 0, 1],
            "border": [1, 0, 0, 1],
            "solve_ms": [0.5, 0.7, 0.1, 0.2],
            "handoffs_in": [0, 0, 0, 0],
            "handoffs_out": [0, 0, 0, 0],
        }
    )
    pq.write_table(shards, out / "shards.parquet")
    df, source = shard_load(out)
    assert source == "shards.parquet"
    assert df.select("shard", "pending", "border_share").rows() == [
        ("0", 2.0, 0.5),
        ("1", 2.0, 0.0),
        ("0", 0.0, None),
        ("1", 1.0, 1.0),
    ]
    assert shard_load(tmp_path) == (None, "no ticks.parquet")


def test_shard_load_of_a_split_run_joins_on_area_and_tick(tmp_path):
    """Areas count their ticks from 0 and number their shards from 0: a row of area b must never
    take the time of area a's tick, and shard 0 of two areas are two shards."""
    out = write_run(tmp_path / "run", tiny_log())
    t = ticks_table([5.0, 6.0, 7.0], pending=[4, 0, 2])
    ticks = pa.concat_tables([t.slice(0, 2), t.slice(2, 1).set_column(0, "tick", pa.array([0], pa.int64()))])
    pq.write_table(ticks.append_column("area", pa.array(["a", "a", "b"])), out / "ticks.parquet")
    shards = pa.table(
        {
            "tick": [0, 1, 0],
            "shard": pa.array([0, 0, 0], pa.int32()),
            "pending": [4, 0, 2],
            "matched": [1, 0, 2],
            "border": [1, 0, 0],
            "solve_ms": [0.5, 0.1, 0.3],
            "area": ["a", "a", "b"],
        }
    )
    pq.write_table(shards, out / "shards.parquet")
    df, source = shard_load(out)
    assert source == "shards.parquet"
    assert df.select("ts", "shard", "pending").rows() == [
        (ticks["ts"][0].as_py(), "a/0", 4.0),
        (ticks["ts"][1].as_py(), "a/0", 0.0),
        (ticks["ts"][2].as_py(), "b/0", 2.0),
    ]


# --------------------------------------------------------------------------- local time
def test_local_time_from_coordinates_and_tz():
    assert localtime.zone_at([40.75, 40.76, 91.0], [-73.98, -73.97, 0.0]) == "America/New_York"
    assert localtime.zone_at([48.85], [2.35]) == "Europe/Paris"
    assert localtime.zone_at([np.nan], [0.0]) is None
    assert localtime.resolve(None, [], []).name == "UTC"
    assert localtime.resolve("Asia/Tokyo", [40.75], [-73.98]) == localtime.LocalTime("Asia/Tokyo", "--tz")
    for bad in ("Mars/Olympus_Mons", "", "../etc/passwd", "america/new_york"):
        with pytest.raises(MatcherError, match="--tz: unknown time zone"):
            localtime.check_tz(bad)


def test_cli_tz_is_checked_and_used(tmp_path, capsys):
    from matcher.cli import main

    out = write_run(tmp_path / "run", tiny_log())
    with pytest.raises(SystemExit) as e:
        main(["report", str(out), "--tz", "Mars/Olympus_Mons"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown time zone 'Mars/Olympus_Mons'" in err
    assert main(["report", str(out), "--tz", "Asia/Tokyo"]) == 0
    text = (out / "report.html").read_text()
    assert "times in Asia/Tokyo (--tz)" in text and "hour (Asia/Tokyo)" in text
    # 08:00Z is 17:00 in Tokyo: the hourly table is in local time
    assert "<th>17:00</th>" in text
