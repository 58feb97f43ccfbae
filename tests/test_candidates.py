"""Tests for matcher.core.candidates.find_candidates against a brute-force oracle."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from matcher.config import RIDE_TYPES, VEHICLE_TYPES, MatchConfig
from matcher.core import geo
from matcher.core.candidates import RequestBatch, compat_matrix, find_candidates
from matcher.core.cost import StraightLineEta
from matcher.core.driver_table import DriverTable, Pings
from matcher.core.states import DriverStatus

R = geo.EARTH_RADIUS_M
NOW = 1000.0
CENTERS = [(40.75, -73.98), (0.0, 179.995), (-33.9, -179.99), (89.985, 10.0), (-89.99, -120.0), (0.0, 0.0)]


def destination(lat, lng, bearing_deg, dist_m):
    """Great-circle destination point (spherical), longitude wrapped to [-180, 180)."""
    p1, l1 = np.radians(lat), np.radians(lng)
    b, d = np.radians(bearing_deg), np.asarray(dist_m) / R
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(b))
    l2 = l1 + np.arctan2(np.sin(b) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    lng2 = (np.degrees(l2) + 180.0) % 360.0 - 180.0
    return np.degrees(p2), lng2


def make_table(key, lat, lng, heading, speed, status, vehicle, ts, shared=None) -> DriverTable:
    n = len(key)
    t = DriverTable(capacity=4)
    t.apply_pings(
        Pings(
            key=np.asarray(key, np.int64),
            lat=np.asarray(lat, float),
            lng=np.asarray(lng, float),
            heading=np.asarray(heading, np.float32),
            speed=np.asarray(speed, np.float32),
            status=np.asarray(status, np.int8),
            vehicle=np.asarray(vehicle, np.int8),
            rating=np.full(n, 4.8, np.float32),
            ts=np.asarray(ts, float),
            owned=np.ones(n, bool),
            shared=np.zeros(n, bool) if shared is None else np.asarray(shared, bool),
        )
    )
    return t


def _floats(n: int, lo: float, hi: float):
    return hnp.arrays(np.float64, n, elements=st.floats(lo, hi))


@st.composite
def worlds(draw, center, n_drv: int, n_req: int, spread_m=3000.0, req_spread_m=1500.0, p_bar=0.3):
    """(table, requests): a random fleet and batch around `center` (any place on the globe).

    Every column is drawn on its own, so a failing case shrinks: drivers to the centre, available,
    stopped, heading north, fresh; requests at the centre; barred pairs to the first ones."""
    clat, clng = center
    dlat, dlng = destination(clat, clng, draw(_floats(n_drv, 0, 360)), spread_m * np.sqrt(draw(_floats(n_drv, 0, 1))))
    key = np.array(draw(st.lists(st.integers(0, 10 * n_drv + 9), min_size=n_drv, max_size=n_drv, unique=True)))
    status = draw(hnp.arrays(np.int8, n_drv, elements=st.sampled_from([int(s) for s in DriverStatus])))
    # ages clear of the 30 s GPS timeout: fresh (0..29 s) or stale (31..200 s)
    age = draw(hnp.arrays(np.float64, n_drv, elements=st.one_of(st.floats(0, 29), st.floats(31, 200))))
    speed = draw(hnp.arrays(np.float64, n_drv, elements=st.one_of(st.just(0.0), st.floats(0, 15))))
    heading = draw(_floats(n_drv, 0, 360))
    vehicle = draw(hnp.arrays(np.int8, n_drv, elements=st.integers(0, len(VEHICLE_TYPES) - 1)))
    table = make_table(key, dlat, dlng, heading, speed, status, vehicle, NOW - age)
    rlat, rlng = destination(
        clat, clng, draw(_floats(n_req, 0, 360)), req_spread_m * np.sqrt(draw(_floats(n_req, 0, 1)))
    )
    idx = np.array(draw(st.lists(st.integers(0, 999), min_size=n_req, max_size=n_req, unique=True)), np.int64)
    # barred pairs: some real (request, driver) pairs plus noise for unknown requests/drivers
    nb = int(p_bar * n_req * 3)
    b_req = draw(st.lists(st.sampled_from(idx.tolist()), min_size=nb, max_size=nb)) + [5000, 5001]
    b_key = draw(st.lists(st.sampled_from(key.tolist()), min_size=nb, max_size=nb)) + [int(key[0]), 10**6]
    reqs = RequestBatch(
        idx,
        rlat,
        rlng,
        draw(hnp.arrays(np.int8, n_req, elements=st.integers(0, len(RIDE_TYPES) - 1))),
        draw(_floats(n_req, 0, 300)),
        np.array(b_req, np.int64),
        np.array(b_key, np.int64),
    )
    return table, reqs


def oracle(table: DriverTable, reqs: RequestBatch, now: float, cfg: MatchConfig, eta):
    """Brute force: every (request, driver) pair, scalar filters, same ETA, k cheapest (ties by key).

    ``k_search`` is honoured as find_candidates documents it: the nearest k_search
    eligible, compatible drivers within the radius are examined; a barred driver
    among them still takes one of those places (barring is applied after the search).
    Returns {request position: [(key, cost, dist), ...] in (cost, key) order}, plus the
    minimum of |distance - radius| and of the distance gap at the k_search cut (to reject
    instances where the radius or the cut is ambiguous: a driver on the boundary, a tie).
    """
    comp = compat_matrix(cfg.compat)
    barred = set(zip(reqs.barred_req.tolist(), reqs.barred_key.tolist()))
    out, margin = {}, math.inf
    for i in range(len(reqs)):
        cands = []
        for j in range(table.n):
            if table.status[j] != DriverStatus.AVAILABLE or now - table.last_ping[j] > cfg.gps_timeout_s:
                continue
            if not comp[reqs.ride_type[i], table.vehicle[j]]:
                continue
            d = float(geo.haversine_m(table.lat[j], table.lng[j], reqs.lat[i], reqs.lng[i]))
            margin = min(margin, abs(d - cfg.radius_m))
            if d > cfg.radius_m:
                continue
            moving = table.speed[j] >= cfg.eta.moving_mps
            b = float(geo.bearing_deg(table.lat[j], table.lng[j], reqs.lat[i], reqs.lng[i])) if moving else 0.0
            c = float(eta.pickup_eta_s(d, b, table.heading[j], table.speed[j]))
            cands.append((c, int(table.key[j]), d))
        cands = sorted(cands, key=lambda x: x[2])
        if len(cands) > cfg.k_search:  # which of two equidistant drivers is "nearer" is undefined
            margin = min(margin, cands[cfg.k_search][2] - cands[cfg.k_search - 1][2])
        cands = cands[: cfg.k_search]
        cands = sorted(x for x in cands if (int(reqs.idx[i]), x[1]) not in barred)
        out[i] = [(k, c, d) for c, k, d in cands[: cfg.k]]
    return out, margin


def edges_by_request(table, e):
    got = {}
    for r, row, c, d in zip(e.req, e.row, e.cost, e.dist):
        got.setdefault(int(r), []).append((int(table.key[row]), float(c), float(d)))
    return got


def assert_sorted(e):
    assert (np.diff(e.req) >= 0).all()
    same = e.req[1:] == e.req[:-1]
    assert (e.cost[1:][same] >= e.cost[:-1][same]).all()


def _tie_order(edges):
    return [k for k, _, _ in sorted(edges, key=lambda e: (round(e[1], 6), e[0]))]


def compare_with_oracle(table, reqs, cfg, eta=None, now=NOW):
    eta = eta or StraightLineEta(cfg.eta)
    e = find_candidates(table, reqs, now, cfg, eta)
    exp, margin = oracle(table, reqs, now, cfg, eta)
    assume(margin > 1e-3)  # no driver within a millimetre of the radius or tied at the k_search cut
    assert_sorted(e)
    got = edges_by_request(table, e)
    for i in range(len(reqs)):
        g, x = got.get(i, []), exp[i]
        # a near-tie at the k-th place could legitimately flip; require a clear gap
        if len(x) == cfg.k:
            full, _ = oracle(table, reqs, now, replace(cfg, k=10**6), eta)
            if len(full[i]) > cfg.k:
                assume(full[i][cfg.k][1] - full[i][cfg.k - 1][1] > 1e-6)
        # the same drivers in the same (cost, key) order; costs equal up to float noise count as a tie
        # (the index derives distances from chords, the oracle from haversine: they differ in the last bits)
        assert _tie_order(g) == _tie_order(x), i
        assert sorted(k for k, _, _ in g) == sorted(k for k, _, _ in x), i
        np.testing.assert_allclose([c for _, c, _ in g], [c for _, c, _ in x], rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose([d for _, _, d in g], [d for _, _, d in x], rtol=1e-9, atol=1e-5)
    return e


# ------------------------------------------------------------------ oracle equality


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(CENTERS),
    st.integers(1, 40),
    st.integers(1, 12),
    st.sampled_from([500.0, 1500.0, 2500.0]),
    st.data(),
)
def test_equals_oracle_when_k_search_covers_fleet(center, n_drv, n_req, radius, data):
    table, reqs = data.draw(worlds(center, n_drv, n_req))
    k = data.draw(st.integers(1, n_drv + 1))
    cfg = MatchConfig(radius_m=radius, k=k, k_search=n_drv + data.draw(st.integers(0, 2)))
    compare_with_oracle(table, reqs, cfg)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(CENTERS),
    st.integers(1, 60),
    st.integers(1, 15),
    st.integers(1, 10),
    st.integers(1, 10),
    st.data(),
)
def test_never_an_ineligible_driver(center, n_drv, n_req, k, k_search, data):
    """Any k/k_search: every edge is eligible, compatible, not barred, within the radius, correctly costed."""
    table, reqs = data.draw(worlds(center, n_drv, n_req, spread_m=2500.0))
    cfg = MatchConfig(radius_m=2000.0, k=k, k_search=k_search)
    eta = StraightLineEta(cfg.eta)
    e = find_candidates(table, reqs, NOW, cfg, eta)
    assert_sorted(e)
    comp = compat_matrix(cfg.compat)
    barred = set(zip(reqs.barred_req.tolist(), reqs.barred_key.tolist()))
    pairs = list(zip(e.req.tolist(), e.row.tolist()))
    assert len(set(pairs)) == len(pairs)
    assert (np.bincount(e.req, minlength=len(reqs)) <= min(k, k_search)).all()
    full, _ = oracle(table, reqs, NOW, MatchConfig(radius_m=2000.0, k=10**6, k_search=10**6), eta)
    for (i, row), c, d in zip(pairs, e.cost, e.dist):
        assert 0 <= row < table.n
        assert table.status[row] == DriverStatus.AVAILABLE, "busy driver"
        assert NOW - table.last_ping[row] <= cfg.gps_timeout_s, "stale driver"
        assert comp[reqs.ride_type[i], table.vehicle[row]], "incompatible vehicle"
        assert (int(reqs.idx[i]), int(table.key[row])) not in barred, "barred pair"
        true_d = float(geo.haversine_m(table.lat[row], table.lng[row], reqs.lat[i], reqs.lng[i]))
        assert true_d <= cfg.radius_m + 1e-6, "outside the radius"
        assert d == pytest.approx(true_d, rel=1e-9, abs=1e-5)
        assert c == pytest.approx(next(x[1] for x in full[i] if x[0] == table.key[row]), rel=1e-9, abs=1e-6)
    # and the exact edge set, k_search semantics included
    compare_with_oracle(table, reqs, cfg)


def test_barred_driver_takes_a_k_search_place():
    """Documents current behaviour: barring is applied after the k_search nearest are
    fetched, so with k_search=1 a request whose nearest driver is barred gets no edge."""
    table = make_table([1, 2], [40.0, 40.0], [-74.001, -74.002], [0, 0], [0, 0], [0, 0], [0, 0], [NOW, NOW])
    reqs = RequestBatch(
        np.array([10]),
        np.array([40.0]),
        np.array([-74.0]),
        np.array([0], np.int8),
        np.zeros(1),
        np.array([10]),
        np.array([1]),
    )
    assert len(find_candidates(table, reqs, NOW, MatchConfig(k_search=1), StraightLineEta())) == 0
    e = find_candidates(table, reqs, NOW, MatchConfig(k_search=2), StraightLineEta())
    assert table.key[e.row].tolist() == [2]


def test_ties_broken_by_key():
    lat, lng = np.full(4, 40.0), np.full(4, -74.0 + 0.005)
    table = make_table([7, 3, 5, 9], lat, lng, np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(4), np.full(4, NOW))
    reqs = RequestBatch(
        np.array([0]),
        np.array([40.0]),
        np.array([-74.0]),
        np.array([0], np.int8),
        np.array([0.0]),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )
    e = find_candidates(table, reqs, NOW, MatchConfig(k=2), StraightLineEta())
    assert table.key[e.row].tolist() == [3, 5]


def test_barred_pair_only_bars_that_request():
    table = make_table([1, 2], [40.0, 40.0], [-74.001, -74.002], [0, 0], [0, 0], [0, 0], [0, 0], [NOW, NOW])
    reqs = RequestBatch(
        np.array([10, 11]),
        np.array([40.0, 40.0]),
        np.array([-74.0, -74.0]),
        np.array([0, 0], np.int8),
        np.zeros(2),
        np.array([11]),
        np.array([1]),
    )
    e = find_candidates(table, reqs, NOW, MatchConfig(), StraightLineEta())
    got = {(int(r), int(table.key[w])) for r, w in zip(e.req, e.row)}
    assert got == {(0, 1), (0, 2), (1, 2)}


def test_empty_inputs():
    table = make_table([1], [40.0], [-74.0], [0], [0], [0], [0], [NOW])
    cfg, eta = MatchConfig(), StraightLineEta()
    assert len(find_candidates(table, RequestBatch.empty(), NOW, cfg, eta)) == 0
    reqs = RequestBatch(
        np.array([0]),
        np.array([40.0]),
        np.array([-74.0]),
        np.array([0], np.int8),
        np.zeros(1),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )
    assert len(find_candidates(DriverTable(), reqs, NOW, cfg, eta)) == 0
    # nobody eligible: no edges, no error
    assert len(find_candidates(table, reqs, NOW + 10 * cfg.gps_timeout_s, cfg, eta)) == 0


# ------------------------------------------------------------------ ETA / geometry


def test_turnaround_penalty_beats_distance():
    """500 m away heading away costs more than 700 m away heading to the pickup."""
    plat, plng = 40.75, -73.98
    # driver A: 500 m due east, heading east (away); driver B: 700 m due west, heading east (toward)
    alat, alng = destination(plat, plng, 90.0, 500.0)
    blat, blng = destination(plat, plng, 270.0, 700.0)
    table = make_table([1, 2], [alat, blat], [alng, blng], [90.0, 90.0], [8.0, 8.0], [0, 0], [0, 0], [NOW, NOW])
    reqs = RequestBatch(
        np.array([0]),
        np.array([plat]),
        np.array([plng]),
        np.array([0], np.int8),
        np.zeros(1),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )
    cfg = MatchConfig()
    e = find_candidates(table, reqs, NOW, cfg, StraightLineEta(cfg.eta))
    keys = table.key[e.row].tolist()
    assert keys == [2, 1], "the driver heading to the pickup must come first"
    c = cfg.eta
    cost = dict(zip(keys, e.cost))
    assert cost[2] == pytest.approx(700 * c.detour_factor / c.city_speed_mps, rel=1e-6)
    assert cost[1] == pytest.approx(500 * c.detour_factor / c.city_speed_mps + c.turnaround_s, rel=1e-6)
    # with k=1 only the heading-in driver is kept, although it is farther
    e1 = find_candidates(table, reqs, NOW, MatchConfig(k=1), StraightLineEta(cfg.eta))
    assert table.key[e1.row].tolist() == [2]
    # the same two drivers stopped: heading means nothing, the nearer one wins
    table.speed[:2] = 0.0
    e2 = find_candidates(table, reqs, NOW, cfg, StraightLineEta(cfg.eta))
    assert table.key[e2.row].tolist() == [1, 2]


def _pickup_batch(lat, lng, ride_type=0):
    return RequestBatch(
        np.array([0]),
        np.array([lat]),
        np.array([lng]),
        np.array([ride_type], np.int8),
        np.zeros(1),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )


def test_across_the_antimeridian():
    # pickup just east of 180 (lng -179.995); drivers on both sides
    plat, plng = 10.0, -179.995
    d_lng = [179.99, -179.99, 179.97, 179.9]  # ~1.6 km, ~0.5 km, ~3.8 km, ~10 km away
    table = make_table(
        [1, 2, 3, 4], np.full(4, plat), d_lng, np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(4), np.full(4, NOW)
    )
    cfg = MatchConfig(radius_m=2000.0)
    e = find_candidates(table, _pickup_batch(plat, plng), NOW, cfg, StraightLineEta(cfg.eta))
    assert table.key[e.row].tolist() == [2, 1]
    for row, d in zip(e.row, e.dist):
        assert d == pytest.approx(float(geo.haversine_m(table.lat[row], table.lng[row], plat, plng)), rel=1e-9)
    assert e.dist.max() < 2000.0
    cfg5 = MatchConfig(radius_m=5000.0)
    e5 = find_candidates(table, _pickup_batch(plat, plng), NOW, cfg5, StraightLineEta(cfg.eta))
    assert table.key[e5.row].tolist() == [2, 1, 3]


def test_near_the_pole():
    # pickup 1 km from the north pole; drivers spread in longitude, some across the pole
    plat, plng = 90.0 - math.degrees(1000.0 / R), 0.0
    dlat = [90.0 - math.degrees(800.0 / R)] * 4 + [plat]
    dlng = [180.0, 90.0, -90.0, 0.0, 45.0]
    # 1.8 km across the pole, ~1.28 km, ~1.28 km, 200 m, and ~0.77 km (same latitude, 45 degrees round)
    table = make_table([1, 2, 3, 4, 5], dlat, dlng, np.zeros(5), np.zeros(5), np.zeros(5), np.zeros(5), np.full(5, NOW))
    for radius, want in ((2000.0, [4, 5, 2, 3, 1]), (1500.0, [4, 5, 2, 3]), (1000.0, [4, 5])):
        cfg = MatchConfig(radius_m=radius)
        e = find_candidates(table, _pickup_batch(plat, plng), NOW, cfg, StraightLineEta(cfg.eta))
        keys = table.key[e.row].tolist()
        assert sorted(keys) == sorted(want), radius
        assert keys[:2] == [4, 5]


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([(0.0, 180.0), (0.0, -180.0), (89.999, 0.0), (-89.999, 77.0)]), st.data())
def test_oracle_at_singular_places(center, data):
    table, reqs = data.draw(worlds(center, 30, 8, spread_m=2500.0, req_spread_m=800.0))
    n = table.n
    compare_with_oracle(table, reqs, MatchConfig(radius_m=2000.0, k=n, k_search=n))
