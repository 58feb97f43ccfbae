"""The synthetic city: deterministic, realistic enough, always valid."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matcher.io import trace
from matcher.io.schemas import DRIVERS, REQUESTS
from matcher.sim.synth import DEFAULT_CENTER, _world, demand_curve, synthesize


def _synth(tmp_path, name="s", **kw):
    out, drv = tmp_path / f"{name}.parquet", tmp_path / f"{name}-drivers.parquet"
    rep = synthesize(str(out), str(drv), **kw)
    return rep, pq.read_table(out), pq.read_table(drv)


def _haversine_km(lat1, lng1, lat2, lng2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lng2 - lng1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(a))


def _geohash5_cells(lat, lng):
    """The geohash-5 cell of each point as (lng bucket, lat bucket): 13 longitude bits, 12 latitude bits."""
    x = np.floor((np.asarray(lng) + 180.0) / 360.0 * 2**13).astype(np.int64)
    y = np.floor((np.asarray(lat) + 90.0) / 180.0 * 2**12).astype(np.int64)
    return x * 2**12 + y


def test_deterministic_for_a_seed(tmp_path):
    _, r1, d1 = _synth(tmp_path, "a", drivers=300, requests_per_s=1.0, hours=0.5, seed=7)
    _, r2, d2 = _synth(tmp_path, "b", drivers=300, requests_per_s=1.0, hours=0.5, seed=7)
    _, r3, d3 = _synth(tmp_path, "c", drivers=300, requests_per_s=1.0, hours=0.5, seed=8)
    assert r1.equals(r2) and d1.equals(d2)
    assert not r1.equals(r3) and not d1.equals(d3)
    # the requests do not depend on the fleet size
    _, r4, _ = _synth(tmp_path, "d", drivers=10, requests_per_s=1.0, hours=0.5, seed=7)
    assert r1.equals(r4)


def test_metro_shape_and_validity(tmp_path):
    rep, r, d = _synth(tmp_path, drivers=3000, requests_per_s=10.0, hours=1.0, seed=0)
    assert r.schema.equals(REQUESTS) and d.schema.equals(DRIVERS)
    assert abs(r.num_rows - 36_000) < 36_000 * 0.05 and d.num_rows == 3000 == rep.drivers
    assert rep.requests == r.num_rows and f"{r.num_rows:,} requests" in str(rep)
    times = r.column("request_time").cast(pa.int64()).to_numpy()
    t0 = int(datetime(2026, 1, 5, 6, tzinfo=UTC).timestamp() * 1000)
    assert (np.diff(times) >= 0).all() and times.min() >= t0 and times.max() < t0 + 3_600_000
    # every row passes validation
    v = trace.validate(str(tmp_path / "s.parquet"), drivers=str(tmp_path / "s-drivers.parquet"))
    assert v.ok and v.quarantined == {} and v.valid == r.num_rows and v.drivers.quarantined == {}
    # ride and vehicle mix
    rides = dict(zip(*np.unique(r.column("ride_type").to_numpy(zero_copy_only=False), return_counts=True)))
    share = {k: rides[k] / r.num_rows for k in rides}
    assert abs(share["uberx"] - 0.80) < 0.02 and abs(share["pool"] - 0.08) < 0.01
    assert abs(share["xl"] - 0.08) < 0.01 and abs(share["black"] - 0.04) < 0.01
    veh = dict(zip(*np.unique(d.column("vehicle_type").to_numpy(zero_copy_only=False), return_counts=True)))
    assert abs(veh["uberx"] / 3000 - 0.80) < 0.04 and abs(veh["xl"] / 3000 - 0.12) < 0.03
    # trips: lognormal around 4 km, positive durations at city speeds
    km = _haversine_km(*(r.column(c).to_numpy() for c in ("pickup_lat", "pickup_lng", "dropoff_lat", "dropoff_lng")))
    assert 3.0 < np.median(km) < 5.5
    dur = r.column("trip_duration_s").to_numpy()
    assert (dur >= 60).all()
    speed = km[km > 2] * 1000 / dur[km > 2]
    assert 3.0 < np.median(speed) < 12.0
    # near the centre
    lat = r.column("pickup_lat").to_numpy()
    assert abs(np.median(lat) - DEFAULT_CENTER[0]) < 0.05
    # fleet: most drivers online for the whole short window, ratings 1..5
    on = d.column("online_from").cast(pa.int64()).to_numpy()
    off = d.column("online_until").cast(pa.int64()).to_numpy()
    assert (off > on).all() and ((on == t0) & (off == t0 + 3_600_000)).mean() > 0.7
    rating = d.column("rating").to_numpy()
    assert (rating >= 1).all() and (rating <= 5).all() and 4.6 < rating.mean() < 4.95
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temporary file left


def test_demand_curve_has_rush_hours(tmp_path):
    h = np.arange(24) + 0.5
    f = demand_curve(h)
    assert 7 <= int(np.argmax(f[:12])) <= 9 and 16 <= 12 + int(np.argmax(f[12:])) <= 19
    assert f[3] < 0.3 * f.max()
    # and the generated requests follow it: local midnight in New York is 05:00 UTC in January
    _, r, _ = _synth(tmp_path, drivers=50, requests_per_s=1.0, hours=24, seed=1, start="2026-01-05T05:00:00Z")
    t = r.column("request_time").cast(pa.int64()).to_numpy()
    t0 = int(datetime(2026, 1, 5, 5, tzinfo=UTC).timestamp() * 1000)
    per_hour = np.bincount((t - t0) // 3_600_000, minlength=24)
    assert len(per_hour) == 24
    morning, evening = int(np.argmax(per_hour[5:12])) + 5, int(np.argmax(per_hour[14:22])) + 14
    assert 7 <= morning <= 9 and 16 <= evening <= 19
    assert per_hour[morning] > 1.8 * per_hour[11] and per_hour[evening] > 1.8 * per_hour[13]
    assert per_hour[2:5].max() < 0.3 * per_hour.max()


def test_airport_is_a_hot_cell(tmp_path):
    seed = 3
    _, r, _ = _synth(tmp_path, drivers=10, requests_per_s=10.0, hours=1.0, seed=seed)
    cells = _geohash5_cells(r.column("pickup_lat").to_numpy(), r.column("pickup_lng").to_numpy())
    ids, counts = np.unique(cells, return_counts=True)
    w = _world(np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[0]), 1, DEFAULT_CENTER)
    a_lat = DEFAULT_CENTER[0] + w.muy[0, 6] / 110.574
    a_lng = DEFAULT_CENTER[1] + w.mux[0, 6] / (111.320 * np.cos(np.radians(DEFAULT_CENTER[0])))
    airport = _geohash5_cells(np.array([a_lat]), np.array([a_lng]))[0]
    d_km = _haversine_km(DEFAULT_CENTER[0], DEFAULT_CENTER[1], a_lat, a_lng)
    assert 12 < d_km < 18
    load = counts[ids == airport][0]
    hotter = int((counts > load).sum())  # the downtown core's cells and maybe a neighbourhood
    assert hotter < 0.06 * len(counts) and load > 20 * np.median(counts)
    assert load > 0.05 * r.num_rows


def test_global_mode(tmp_path):
    rep, r, d = _synth(tmp_path, drivers=20_000, requests_per_s=20.0, hours=1.0, seed=0, cities=100)
    assert rep.cities == 100 and "100 cities" in str(rep)
    lat, lng = r.column("pickup_lat").to_numpy(), r.column("pickup_lng").to_numpy()
    assert lat.max() > 69 and lat.min() < -50  # high latitudes (Longyearbyen, Tromsø, Ushuaia...)
    assert (lng > 179.5).any() and (lng < -179.5).any()  # a city straddles the antimeridian
    assert np.abs(lng).max() <= 180 and np.abs(lat).max() <= 90
    v = trace.validate(str(tmp_path / "s.parquet"), drivers=str(tmp_path / "s-drivers.parquet"))
    assert v.ok and v.quarantined == {} and v.drivers.quarantined == {}
    times = r.column("request_time").cast(pa.int64()).to_numpy()
    assert (np.diff(times) >= 0).all()
    ids = r.column("request_id")
    assert pa.compute.count_distinct(ids).as_py() == r.num_rows
    assert pa.compute.count_distinct(d.column("driver_id")).as_py() == 20_000


def test_chunked_writing_streams(tmp_path, monkeypatch):
    import matcher.sim.synth as synth

    monkeypatch.setattr(synth, "CHUNK_ROWS", 1000)  # many chunks, same rules
    rep, r, d = _synth(tmp_path, drivers=5000, requests_per_s=5.0, hours=1.0, seed=0, cities=3)
    assert rep.requests == r.num_rows and d.num_rows == 5000
    times = r.column("request_time").cast(pa.int64()).to_numpy()
    assert (np.diff(times) >= 0).all()
    assert trace.validate(str(tmp_path / "s.parquet"), drivers=str(tmp_path / "s-drivers.parquet")).ok


def test_committed_synth_sample_matches_its_command(tmp_path):
    data = Path(__file__).resolve().parents[1] / "data"
    _, r, d = _synth(tmp_path, drivers=1500, requests_per_s=2.0, hours=1.0, seed=0)
    sr, sd = pq.read_table(data / "synth-small.parquet"), pq.read_table(data / "synth-small-drivers.parquet")
    assert sr.equals(r) and sd.equals(d), "data/synth-small*.parquet is stale: rerun data/make_samples.sh"


def test_cli_synth(tmp_path, capsys):
    from matcher.cli import main

    out, drv = tmp_path / "t.parquet", tmp_path / "d.parquet"
    assert (
        main(
            [
                "synth",
                "--out",
                str(out),
                "--drivers-out",
                str(drv),
                "--drivers",
                "100",
                "--requests-per-s",
                "0.5",
                "--hours",
                "0.25",
                "--seed",
                "2",
                "--cities",
                "4",
            ]
        )
        == 0
    )
    assert "4 cities" in capsys.readouterr().out
    assert main(["validate", str(out), "--drivers", str(drv)]) == 0
    with pytest.raises(SystemExit) as e:
        main(["synth", "--out", str(out), "--drivers-out", str(drv), "--cities", "0"])
    assert e.value.code == 2
