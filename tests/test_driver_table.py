"""Tests for matcher.core.driver_table: ping application, refusals, remove, snapshots, eligibility."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from matcher.config import VEHICLE_TYPES
from matcher.core import geo
from matcher.core.driver_table import _COLUMNS, PING_REASONS, DriverTable, Pings
from matcher.core.states import DriverStatus


def make_pings(
    key,
    lat=None,
    lng=None,
    ts=None,
    status=None,
    vehicle=None,
    heading=None,
    speed=None,
    rating=None,
    owned=None,
    shared=None,
) -> Pings:
    key = np.asarray(key, np.int64)
    n = len(key)

    def col(v, default, dt):
        if v is None:
            return np.full(n, default, dt)
        return np.asarray(v, dt) if np.ndim(v) else np.full(n, v, dt)

    return Pings(
        key=key,
        lat=col(lat, 40.0, np.float64),
        lng=col(lng, -74.0, np.float64),
        heading=col(heading, 0.0, np.float32),
        speed=col(speed, 0.0, np.float32),
        status=col(status, int(DriverStatus.AVAILABLE), np.int8),
        vehicle=col(vehicle, 0, np.int8),
        rating=col(rating, 4.8, np.float32),
        ts=col(ts, 0.0, np.float64),
        owned=col(owned, True, np.bool_),
        shared=col(shared, False, np.bool_),
    )


def check_invariants(t: DriverTable) -> None:
    keys = t.col("key")
    assert len(np.unique(keys)) == t.n, "a key occupies more than one row"
    assert (t.rows_of(keys) == np.arange(t.n)).all()
    # every mapped key points to a live row holding that key; nothing else is mapped
    mapped = np.flatnonzero(t._row_of_key >= 0)
    assert sorted(mapped.tolist()) == sorted(keys.tolist())
    xyz = geo.to_unit_xyz(t.col("lat"), t.col("lng"))
    np.testing.assert_allclose(np.column_stack((t.col("x"), t.col("y"), t.col("z"))), xyz, atol=1e-12)


# ----------------------------------------------------------------- inserts/updates


def test_insert_then_update():
    t = DriverTable(capacity=2)  # forces growth
    c = t.apply_pings(
        make_pings(
            [5, 1, 9],
            lat=[1.0, 2.0, 3.0],
            lng=[10.0, 20.0, 30.0],
            ts=10.0,
            vehicle=[0, 1, 2],
            speed=[0, 5, 9],
            heading=[0, 90, 180],
        )
    )
    assert c == dict.fromkeys(PING_REASONS, 0)
    assert t.n == 3
    assert t.rows_of(np.array([5, 1, 9, 2, 1000, -3])).tolist() == [0, 1, 2, -1, -1, -1]
    c = t.apply_pings(
        make_pings(
            [9, 7],
            lat=[-3.0, 4.0],
            lng=[-30.0, 40.0],
            ts=11.0,
            status=[int(DriverStatus.ON_TRIP), int(DriverStatus.AVAILABLE)],
            owned=[False, True],
            shared=[True, False],
        )
    )
    assert sum(c.values()) == 0
    assert t.n == 4
    r9 = t.rows_of(np.array([9]))[0]
    assert r9 == 2  # updated in place
    assert (t.lat[r9], t.lng[r9], t.last_ping[r9]) == (-3.0, -30.0, 11.0)
    assert t.status[r9] == DriverStatus.ON_TRIP and not t.owned[r9] and t.shared[r9]
    r5 = t.rows_of(np.array([5]))[0]
    assert (t.lat[r5], t.last_ping[r5]) == (1.0, 10.0)  # untouched
    check_invariants(t)


def test_equal_timestamp_is_applied():
    t = DriverTable()
    t.apply_pings(make_pings([3], lat=1.0, ts=5.0))
    c = t.apply_pings(make_pings([3], lat=2.0, ts=5.0))
    assert c["out_of_order"] == 0 and t.lat[0] == 2.0


def test_negative_key_raises():
    with pytest.raises(ValueError):
        DriverTable().apply_pings(make_pings([1, -1]))


def test_empty_batch():
    t = DriverTable()
    assert t.apply_pings(Pings.empty()) == dict.fromkeys(PING_REASONS, 0)
    assert t.n == 0


# ----------------------------------------------------------------- refusals


def test_refusals_counted_by_reason_exactly():
    t = DriverTable()
    t.apply_pings(make_pings([100, 101], lat=[0.0, 0.0], lng=[0.0, 0.0], ts=[50.0, 50.0]))
    before = t.snapshot()
    nan, inf = np.nan, np.inf
    rows = [
        # key, lat, lng, ts, status, vehicle, expected reason (None: applied)
        (1, nan, 0.0, 60, 0, 0, "bad_coordinate"),
        (2, 0.0, nan, 60, 0, 0, "bad_coordinate"),
        (3, inf, 0.0, 60, 0, 0, "bad_coordinate"),
        (4, 0.0, -inf, 60, 0, 0, "bad_coordinate"),
        (5, 90.0001, 0.0, 60, 0, 0, "bad_coordinate"),
        (6, 0.0, -180.5, 60, 0, 0, "bad_coordinate"),
        (7, 0.0, 0.0, nan, 0, 0, "bad_coordinate"),
        (8, nan, 0.0, 60, 99, 99, "bad_coordinate"),  # first failing check wins
        (9, 0.0, 0.0, 60, len(DriverStatus), 0, "unknown_status"),
        (10, 0.0, 0.0, 60, -1, 0, "unknown_status"),
        (11, 0.0, 0.0, 60, 7, 99, "unknown_status"),
        (12, 0.0, 0.0, 60, 0, len(VEHICLE_TYPES), "unknown_vehicle"),
        (13, 0.0, 0.0, 60, 0, -2, "unknown_vehicle"),
        (20, 1.0, 1.0, 60, 0, 0, None),
        (20, 2.0, 2.0, 60, 0, 0, "duplicate_in_batch"),
        (20, 3.0, 3.0, 70, 0, 0, "duplicate_in_batch"),
        (100, 5.0, 5.0, 49.9, 0, 0, "out_of_order"),
        (101, 6.0, 6.0, 51.0, 0, 0, None),
        (21, 90.0, 180.0, 60, 0, 2, None),  # the edges of the valid range are valid
        (22, -90.0, -180.0, 60, 4, 0, None),
    ]
    p = make_pings(
        [r[0] for r in rows],
        lat=[r[1] for r in rows],
        lng=[r[2] for r in rows],
        ts=[r[3] for r in rows],
        status=[r[4] for r in rows],
        vehicle=[r[5] for r in rows],
    )
    c = t.apply_pings(p)
    expected = dict.fromkeys(PING_REASONS, 0)
    for r in rows:
        if r[6]:
            expected[r[6]] += 1
    assert c == expected
    # applied: 20 (first ping), 101 (update), 21, 22; nothing of the refused ones
    assert sorted(t.col("key").tolist()) == [20, 21, 22, 100, 101]
    r20, r100, r101 = t.rows_of(np.array([20, 100, 101]))
    assert (t.lat[r20], t.lng[r20], t.last_ping[r20]) == (1.0, 1.0, 60.0)  # the first stays
    assert (t.lat[r100], t.last_ping[r100]) == (before["lat"][0], 50.0)  # out of order: unchanged
    assert (t.lat[r101], t.last_ping[r101]) == (6.0, 51.0)
    check_invariants(t)


def test_refused_first_ping_still_makes_later_duplicates_refused():
    # "a key seen earlier in the same batch": the first ping of the key is refused
    # for a bad coordinate, the second is then a duplicate; each counted once.
    t = DriverTable()
    c = t.apply_pings(make_pings([4, 4], lat=[np.nan, 1.0]))
    assert c["bad_coordinate"] == 1 and c["duplicate_in_batch"] == 1 and t.n == 0


@st.composite
def ping_batches(draw, max_rows: int = 30):
    """(key, lat, lng, ts, status, vehicle) of one batch: repeated keys, bad coordinates (NaN,
    |lat| > 90), unknown codes (-1 and one past the last) and ties in time, each shrinking away."""
    n = draw(st.integers(0, max_rows))

    def col(dtype, elements):
        return draw(hnp.arrays(dtype, n, elements=elements))

    key = col(np.int64, st.integers(0, 24))
    lat = col(np.float64, st.one_of(st.floats(-95, 95), st.just(np.nan)))
    lng = col(np.float64, st.floats(-170, 170))
    ts = col(np.float64, st.integers(0, 100).map(float))
    status = col(np.int64, st.integers(-1, len(DriverStatus)))
    vehicle = col(np.int64, st.integers(-1, len(VEHICLE_TYPES)))
    return key, lat, lng, ts, status, vehicle


@settings(max_examples=40, deadline=None)
@given(st.lists(ping_batches(), min_size=1, max_size=4))
def test_random_batches_counts_sum_and_model(batches):
    """Random batches against a scalar model: counts per reason and resulting state."""
    t = DriverTable(capacity=4)
    model: dict[int, tuple[float, float]] = {}  # key -> (lat, last_ping)
    for key, lat, lng, ts, status, vehicle in batches:
        n = len(key)
        c = t.apply_pings(make_pings(key, lat=lat, lng=lng, ts=ts, status=status, vehicle=vehicle))
        exp = dict.fromkeys(PING_REASONS, 0)
        seen = set()
        for i in range(n):
            k = int(key[i])
            first = k not in seen
            seen.add(k)
            if not (np.isfinite(lat[i]) and abs(lat[i]) <= 90):
                exp["bad_coordinate"] += 1
            elif not 0 <= status[i] < len(DriverStatus):
                exp["unknown_status"] += 1
            elif not 0 <= vehicle[i] < len(VEHICLE_TYPES):
                exp["unknown_vehicle"] += 1
            elif not first:
                exp["duplicate_in_batch"] += 1
            elif k in model and ts[i] < model[k][1]:
                exp["out_of_order"] += 1
            else:
                model[k] = (float(lat[i]), float(ts[i]))
        assert c == exp
        assert sum(c.values()) <= n
        check_invariants(t)
        got = {int(k): (float(la), float(lp)) for k, la, lp in zip(t.col("key"), t.col("lat"), t.col("last_ping"))}
        assert got == model


# ----------------------------------------------------------------- remove


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(st.integers(-2, 40), max_size=12)), max_size=15))
def test_remove_interleaved_with_apply_matches_dict_model(ops):
    """Random interleavings of apply/remove against a dict model."""
    t = DriverTable(capacity=2)
    model: dict[int, tuple[float, float]] = {}  # key -> (lat, last_ping)
    clock = 0.0
    for is_apply, keys in ops:
        if is_apply:
            keys = [k for k in keys if k >= 0]
            clock += 1.0
            lat = np.array([(k * 7 + clock) % 80 for k in keys], float)
            c = t.apply_pings(make_pings(keys, lat=lat, ts=clock))
            seen = set()
            for k, la in zip(keys, lat):
                if k not in seen:
                    model[k] = (float(la), clock)
                seen.add(k)
            assert c["duplicate_in_batch"] == len(keys) - len(seen)
        else:
            removed = t.remove(np.array(keys, np.int64))
            present = {k for k in keys if k in model}
            assert removed == len(present)
            for k in present:
                del model[k]
        check_invariants(t)
        got = {int(k): (float(la), float(lp)) for k, la, lp in zip(t.col("key"), t.col("lat"), t.col("last_ping"))}
        assert got == model


def test_remove_unknown_and_empty():
    t = DriverTable()
    t.apply_pings(make_pings([1, 2, 3]))
    assert t.remove(np.array([], np.int64)) == 0
    assert t.remove(np.array([7, 10**9, -1])) == 0
    assert t.remove(np.array([2])) == 1
    assert t.col("key").tolist() == [1, 3]
    check_invariants(t)
    # a removed key can come back as a fresh insert (no out-of-order memory)
    t.apply_pings(make_pings([2], ts=-5.0))
    assert t.rows_of(np.array([2]))[0] == 2
    check_invariants(t)


# ----------------------------------------------------------------- snapshot


def test_snapshot_roundtrip():
    rng = np.random.default_rng(3)
    t = DriverTable(capacity=3)
    n = 50
    t.apply_pings(
        make_pings(
            rng.permutation(500)[:n],
            lat=rng.uniform(-80, 80, n),
            lng=rng.uniform(-179, 179, n),
            ts=rng.uniform(0, 9, n),
            status=rng.integers(0, 5, n),
            vehicle=rng.integers(0, 3, n),
            heading=rng.uniform(0, 360, n),
            speed=rng.uniform(0, 20, n),
            owned=rng.random(n) < 0.5,
            shared=rng.random(n) < 0.5,
        )
    )
    t.remove(t.col("key")[::7].copy())
    snap = t.snapshot()
    assert set(snap) == set(_COLUMNS)
    u = DriverTable.from_snapshot(snap)
    assert u.n == t.n
    check_invariants(u)
    for name, arr in u.snapshot().items():
        assert arr.dtype == snap[name].dtype
        np.testing.assert_array_equal(arr, snap[name], err_msg=name)
    # the snapshot is a copy, and the restored table behaves like the original
    snap["lat"][:] = 0.0
    assert not (t.col("lat") == 0).all()
    p = make_pings(np.concatenate([t.col("key")[:5], [999]]), ts=100.0, lat=1.5)
    assert t.apply_pings(p) == u.apply_pings(p)
    for name in _COLUMNS:
        np.testing.assert_array_equal(t.col(name), u.col(name), err_msg=name)


def test_from_empty_snapshot():
    u = DriverTable.from_snapshot(DriverTable().snapshot())
    assert u.n == 0
    u.apply_pings(make_pings([3]))
    assert u.n == 1
    check_invariants(u)


# ----------------------------------------------------------------- eligible


def test_eligible_excludes_stale_and_busy():
    t = DriverTable()
    S = DriverStatus
    statuses = [S.AVAILABLE, S.AVAILABLE, S.AVAILABLE, S.OFFERED, S.EN_ROUTE, S.ON_TRIP, S.OFFLINE, S.AVAILABLE]
    ts = [100.0, 70.0, 69.9, 100.0, 100.0, 100.0, 100.0, 101.0]
    t.apply_pings(make_pings(np.arange(8), status=[int(s) for s in statuses], ts=ts))
    now, timeout = 100.0, 30.0
    el = t.eligible(now, timeout)
    # 0 fresh, 1 exactly at the timeout (still fresh), 2 just past it, 3..6 busy/offline,
    # 7 pinged "in the future" relative to now (fresh)
    assert el.tolist() == [True, True, False, False, False, False, False, True]
    assert not t.eligible(1000.0, timeout).any()
    t.set_status(np.array([0]), S.OFFERED)
    assert not t.eligible(now, timeout)[0]


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int64, n, elements=st.integers(0, len(DriverStatus) - 1)),
            hnp.arrays(np.float64, n, elements=st.floats(0, 100)),
        )
    ),
    st.floats(50, 150),
    st.floats(1, 60),
)
def test_eligible_random(drivers, now, timeout):
    status, ts = drivers
    n = len(status)
    t = DriverTable()
    t.apply_pings(make_pings(np.arange(n), status=status, ts=ts))
    exp = (status == DriverStatus.AVAILABLE) & (now - ts <= timeout)
    assert t.eligible(now, timeout).tolist() == exp.tolist()
