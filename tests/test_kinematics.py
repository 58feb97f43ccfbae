"""Geometry of driving: the short way across the antimeridian, sane at the poles (property-tested),
and the world's pings and location history use it."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher.core import geo
from matcher.sim import kinematics as kin


def _destination(lat, lng, brg, d):
    """The point ``d`` metres from (lat, lng) at initial bearing ``brg`` (great circle)."""
    p, lam, b, dr = math.radians(lat), math.radians(lng), math.radians(brg), d / geo.EARTH_RADIUS_M
    p2 = math.asin(min(1.0, max(-1.0, math.sin(p) * math.cos(dr) + math.cos(p) * math.sin(dr) * math.cos(b))))
    lam2 = lam + math.atan2(math.sin(b) * math.sin(dr) * math.cos(p), math.cos(dr) - math.sin(p) * math.sin(p2))
    lng2 = (math.degrees(lam2) + 180.0) % 360.0 - 180.0
    return math.degrees(p2), lng2


@st.composite
def segments(draw):
    """A drive of up to 50 km anywhere: often near a pole or across the antimeridian."""
    where = draw(st.sampled_from(["anywhere", "antimeridian", "pole"]))
    if where == "antimeridian":
        lat = draw(st.floats(-80, 80))
        lng = draw(st.sampled_from([-1.0, 1.0])) * draw(st.floats(179.0, 180.0))
    elif where == "pole":
        lat = draw(st.sampled_from([-1.0, 1.0])) * draw(st.floats(88.0, 90.0))
        lng = draw(st.floats(-180, 180))
    else:
        lat, lng = draw(st.floats(-90, 90)), draw(st.floats(-180, 180))
    d = draw(st.floats(0.0, 50_000.0))
    lat1, lng1 = _destination(lat, lng, draw(st.floats(0, 360)), d)
    return lat, lng, lat1, lng1, draw(st.floats(0.0, 1.0))


@given(segments())
def test_interpolation_follows_the_short_great_circle(seg):
    lat0, lng0, lat1, lng1, a = seg
    dist = geo.haversine1(lat0, lng0, lat1, lng1)
    lat, lng, _ = kin.interpolate1(lat0, lng0, lat1, lng1, a, 0.0, dist)
    assert math.isfinite(lat) and math.isfinite(lng)
    assert abs(lat) <= 90.0 and abs(lng) <= 180.0
    tol = 0.005 * dist + 0.01
    d0, d1 = geo.haversine1(lat0, lng0, lat, lng), geo.haversine1(lat, lng, lat1, lng1)
    assert d0 + d1 <= dist + 2 * tol  # on the shortest path, never the long way round
    assert abs(d0 - a * dist) <= 2 * tol
    # the vector form gives the same numbers
    vl, vg, _ = kin.interpolate([lat0], [lng0], [lat1], [lng1], [a], np.zeros(1, np.float32))
    assert (float(vl[0]), float(vg[0])) == (lat, lng)


def test_the_issues_antimeridian_drive_stays_near_the_line():
    lat0, lng0, lat1, lng1 = -16.8, 179.995, -16.8, -179.995
    dist = geo.haversine1(lat0, lng0, lat1, lng1)
    assert dist < 1100
    a = np.linspace(0, 1, 101)
    lat, lng, _ = kin.interpolate(lat0, lng0, lat1, lng1, a, np.float32(90.0))
    assert np.all(np.abs(lng) >= 179.99)
    assert geo.haversine_m(lat0, lng0, lat, lng).max() <= dist + 1e-6


def test_over_the_pole():
    """A drive from 89.9N 0E to 89.9N 180E goes over the pole (22 km), not round it (35 km)."""
    lat, lng, hd = kin.interpolate(89.9, 0.0, 89.9, 180.0, np.array([0.25, 0.5, 0.75]), np.float32(0.0))
    assert lat[1] == pytest.approx(90.0, abs=1e-6)
    assert hd[0] == pytest.approx(0.0, abs=1e-3)  # heading north toward the pole ...
    assert hd[2] == pytest.approx(180.0, abs=1e-3)  # ... then south from it


@given(segments())
def test_city_segments_off_the_antimeridian_keep_the_old_arithmetic(seg):
    """Runs of earlier releases are reproduced: plain linear interpolation where it was right."""
    lat0, lng0, lat1, lng1, a = seg
    dist = geo.haversine1(lat0, lng0, lat1, lng1)
    if abs(lng1 - lng0) <= 180.0 and not kin._needs_gc(lat0, lat1, dist):
        lat, lng, _ = kin.interpolate1(lat0, lng0, lat1, lng1, a, 0.0, dist)
        assert (lat, lng) == (lat0 + (lat1 - lat0) * a, lng0 + (lng1 - lng0) * a)


def _trace(path, lat, lng, n=40, seed=1):
    """``n`` requests over 20 minutes at (lat, lng) arrays' points, with dropoffs at other points."""
    from datetime import UTC, datetime, timedelta

    rng = np.random.default_rng(seed)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    i, j = rng.integers(0, len(lat), n), rng.integers(0, len(lat), n)
    pl.DataFrame(
        {
            "request_id": [f"r{k}" for k in range(n)],
            "request_time": [t0 + timedelta(seconds=30 * k) for k in range(n)],
            "pickup_lat": lat[i],
            "pickup_lng": lng[i],
            "dropoff_lat": lat[j],
            "dropoff_lng": lng[j],
        }
    ).write_parquet(path)


@pytest.mark.parametrize(
    "where",
    [
        # Taveuni, Fiji: the 180th meridian runs through the island
        ("antimeridian", np.array([-16.80, -16.81, -16.79, -16.80]), np.array([179.995, -179.995, 179.99, -179.99])),
        # a research camp around the north pole
        ("pole", np.array([89.995, 89.99, 89.995, 89.99]), np.array([0.0, 90.0, 180.0, -90.0])),
    ],
    ids=lambda w: w[0],
)
def test_replay_drives_the_short_way(tmp_path, where):
    """Every ping, recorded location and event of a replay stays in the small area it runs in."""
    from matcher.analysis.audit import check_run
    from matcher.analysis.metrics import read_events
    from matcher.config import RunConfig
    from matcher.sim.replay import run_replay

    name, lat, lng = where
    _trace(tmp_path / "t.parquet", lat, lng)
    out = tmp_path / "out"
    s = run_replay(
        RunConfig(trace=str(tmp_path / "t.parquet"), out=str(out), drivers=6, quiet=True, record_locations=True)
    )
    assert check_run(out) == []
    assert s["completed"] > 0
    loc = pl.read_parquet(out / "locations" / "*.parquet")
    ev = read_events(out).drop_nulls("lat")
    clat, clng = float(np.mean(lat)), 180.0 if name == "antimeridian" else 0.0
    if name == "pole":
        clat = 90.0
    for df in (loc, ev):
        d = geo.haversine_m(clat, clng, df["lat"].to_numpy(), df["lng"].to_numpy())
        assert d.max() < 3_000, f"{name}: a position {d.max():.0f} m from the area"
        assert (df["lat"].abs() <= 90).all() and (df["lng"].abs() <= 180).all()
