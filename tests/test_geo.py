"""Tests for matcher.core.geo: geohash against a scalar bisection reference, neighbours, distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.core import geo

ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
PRECISIONS = range(1, 13)
R = 6_371_008.8
OPPOSITE = {0: 4, 1: 5, 2: 6, 3: 7, 4: 0, 5: 1, 6: 2, 7: 3}  # N<->S, NE<->SW, E<->W, SE<->NW
D_LAT = (1, 1, 0, -1, -1, -1, 0, 1)
D_LNG = (0, 1, 1, 1, 0, -1, -1, -1)


# ------------------------------------------------------------ reference impl


def ref_encode(lat: float, lng: float, precision: int) -> str:
    """Classic geohash: bisect lng/lat alternately (lng first), `>=` mid -> upper half."""
    lat_lo, lat_hi, lng_lo, lng_hi = -90.0, 90.0, -180.0, 180.0
    out, code = [], 0
    for i in range(5 * precision):
        if i % 2 == 0:
            mid = (lng_lo + lng_hi) / 2
            bit = lng >= mid
            lng_lo, lng_hi = (mid, lng_hi) if bit else (lng_lo, mid)
        else:
            mid = (lat_lo + lat_hi) / 2
            bit = lat >= mid
            lat_lo, lat_hi = (mid, lat_hi) if bit else (lat_lo, mid)
        code = code * 2 + int(bit)
        if i % 5 == 4:
            out.append(ALPHABET[code])
            code = 0
    return "".join(out)


def bits(p: int) -> tuple[int, int]:
    return (5 * p) // 2, 5 * p - (5 * p) // 2


def boundary_values(p: int, rng: np.random.Generator, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Exact cell edges at precision p, their float neighbours, and special values."""
    nlat, nlng = bits(p)
    klat = np.concatenate([[0, 1, (1 << nlat) - 1, 1 << nlat, 1 << (nlat - 1)], rng.integers(0, 1 << nlat, n)])
    klng = np.concatenate([[0, 1, (1 << nlng) - 1, 1 << nlng, 1 << (nlng - 1)], rng.integers(0, 1 << nlng, n)])
    lat_edges = klat * (180.0 / (1 << nlat)) - 90.0
    lng_edges = klng * (360.0 / (1 << nlng)) - 180.0
    special = np.array([0.0, -0.0, 1e-300, -1e-300, 5e-324, -5e-324])

    def around(v: np.ndarray, lim: float) -> np.ndarray:
        v = np.concatenate([v, np.nextafter(v, np.inf), np.nextafter(v, -np.inf), special, [lim, -lim]])
        return np.clip(v, -lim, lim)

    lats, lngs = around(lat_edges, 90.0), around(lng_edges, 180.0)
    # every lat with a random lng, every lng with a random lat, plus the full special grid
    lat = np.concatenate([lats, rng.choice(lats, lngs.size)])
    lng = np.concatenate([rng.choice(lngs, lats.size), lngs])
    sl, sg = np.meshgrid(np.r_[special, 90.0, -90.0], np.r_[special, 180.0, -180.0])
    return np.r_[lat, sl.ravel()], np.r_[lng, sg.ravel()]


# ------------------------------------------------------------------ encode


def test_reference_vectors():
    assert geo.encode(57.64911, 10.40744, 11) == "u4pruydqqvj"
    assert geo.encode(42.6, -5.6, 5) == "ezs42"
    assert geo.encode(-25.382708, -49.265506, 8) == "6gkzwgjz"
    assert geo.encode(37.8324, 112.5584, 9) == "ww8p1r4t8"
    lat = np.array([57.64911, 42.6, -25.382708])
    lng = np.array([10.40744, -5.6, -49.265506])
    assert geo.encode(lat, lng, 5).tolist() == ["u4pru", "ezs42", "6gkzw"]
    assert geo.encode(lat, lng, 5).dtype == np.dtype("<U5")


@pytest.mark.parametrize("h", ["u4pruydqqvj", "ezs42", "6gkzwgjz", "s", "zzzzzzzzzzzz", "000000000000"])
def test_decode_round_trip(h):
    lat, lng = geo.decode(h)
    lat0, lat1, lng0, lng1 = geo.bounds(h)
    assert lat0 < lat < lat1 and lng0 < lng < lng1
    assert geo.encode(lat, lng, len(h)) == h
    assert ref_encode(float(lat), float(lng), len(h)) == h


def test_decode_known():
    lat, lng = geo.decode("ezs42")
    assert abs(lat - 42.6) < 0.03 and abs(lng - -5.6) < 0.03
    lat, lng = geo.decode("u4pruydqqvj")
    assert abs(lat - 57.64911) < 1e-5 and abs(lng - 10.40744) < 1e-5


def test_matches_bisection_random_all_precisions():
    rng = np.random.default_rng(12345)
    n = 3000
    lat = rng.uniform(-90, 90, n)
    lng = rng.uniform(-180, 180, n)
    # also points clustered in a city, where the last characters matter
    lat = np.r_[lat, 37.7749 + rng.normal(0, 0.05, 500)]
    lng = np.r_[lng, -122.4194 + rng.normal(0, 0.05, 500)]
    # bisection is prefix-stable: the p-char hash is the prefix of the 12-char one
    ref12 = [ref_encode(a, b, 12) for a, b in zip(lat.tolist(), lng.tolist())]
    for p in PRECISIONS:
        got = geo.encode(lat, lng, p)
        assert got.tolist() == [r[:p] for r in ref12], p
        # and directly at precision p for a subset (no reliance on the prefix property)
        assert got[:200].tolist() == [ref_encode(a, b, p) for a, b in zip(lat[:200].tolist(), lng[:200].tolist())]


@pytest.mark.parametrize("p", PRECISIONS)
def test_matches_bisection_on_boundaries(p):
    rng = np.random.default_rng(p)
    lat, lng = boundary_values(p, rng)
    got = geo.encode(lat, lng, p).tolist()
    want = [ref_encode(a, b, p) for a, b in zip(lat.tolist(), lng.tolist())]
    bad = [(a, b, g, w) for a, b, g, w in zip(lat.tolist(), lng.tolist(), got, want) if g != w]
    assert not bad, bad[:5]


def test_tiny_values_below_a_boundary():
    # -1e-300 + 90 rounds to 90 in float; bisection still puts it in the southern half.
    for p in PRECISIONS:
        assert geo.encode(-1e-300, -1e-300, p) == ref_encode(-1e-300, -1e-300, p)
    assert geo.encode(-1e-300, 0.0, 1) == "k"  # lat < 0 -> southern cell
    assert geo.encode(0.0, 0.0, 1) == "s"


def test_edges_clip_into_last_cell():
    for p in PRECISIONS:
        assert geo.encode(90.0, 180.0, p) == "z" * p
        assert geo.encode(-90.0, -180.0, p) == "0" * p
        assert geo.encode(90.0, -180.0, p) == ref_encode(90.0, -180.0, p)


def test_int_and_str_paths_agree():
    rng = np.random.default_rng(7)
    lat, lng = rng.uniform(-90, 90, 2000), rng.uniform(-180, 180, 2000)
    for p in PRECISIONS:
        h = geo.encode_int(lat, lng, p)
        s = geo.encode(lat, lng, p)
        assert h.dtype == np.uint64 and int(h.max()) < 2 ** (5 * p)
        assert (geo.int_to_str(h, p) == s).all()
        assert (geo.str_to_int(s) == h).all()
        assert (geo.str_to_int(s.astype("S")) == h).all()
        dlat, dlng = geo.decode_int(h, p)
        assert (geo.encode_int(dlat, dlng, p) == h).all()
        dlat2, dlng2 = geo.decode(s)
        assert (dlat == dlat2).all() and (dlng == dlng2).all()


def test_shapes_and_scalars():
    s = geo.encode(1.0, 2.0, 4)
    assert isinstance(s, np.ndarray) and s.shape == () and s.dtype == np.dtype("<U4")
    assert geo.encode_int(1.0, 2.0, 4).shape == ()
    lat, lng = geo.decode("ezs42")
    assert lat.shape == () and lng.shape == ()
    assert geo.neighbors("ezs42").shape == (8,)
    assert geo.neighbors_int(np.uint64(5), 1).shape == (8,)
    grid = geo.encode(np.zeros((3, 4)), np.zeros(4), 5)  # broadcasting
    assert grid.shape == (3, 4)
    assert geo.neighbors(grid).shape == (3, 4, 8)
    assert geo.bounds(grid)[0].shape == (3, 4)
    assert geo.encode([], [], 3).shape == (0,)
    assert geo.neighbors(np.array([], dtype=str)).shape == (0, 8)


@pytest.mark.parametrize("p", [0, 13, -1, 2.5])
def test_bad_precision(p):
    with pytest.raises(ValueError):
        geo.encode(0.0, 0.0, p)
    with pytest.raises(ValueError):
        geo.encode_int(0.0, 0.0, p)


@pytest.mark.parametrize("s", ["a", "ezs4i", "EZS42", "0123456789bcd", "ez s4"])
def test_bad_strings(s):
    with pytest.raises(ValueError):
        geo.str_to_int(s)


def test_mixed_lengths():
    hs = np.array(["ezs42", "u4", "", "u4pruydqqvj"])
    lat, lng = geo.decode(hs)
    for i, h in enumerate(hs.tolist()):
        if h:
            assert (lat[i], lng[i]) == tuple(map(float, geo.decode(h)))
        else:
            assert np.isnan(lat[i]) and np.isnan(lng[i])
    nb = geo.neighbors(hs)
    for i, h in enumerate(hs.tolist()):
        assert nb[i].tolist() == geo.neighbors(h).tolist()
    ints = geo.str_to_int(hs)
    assert ints[2] == geo.NO_CELL
    assert geo.int_to_str(ints, np.array([5, 2, 1, 11])).tolist() == hs.tolist()


# -------------------------------------------------------------- properties

lats = st.floats(-90, 90, allow_nan=False)
lngs = st.floats(-180, 180, allow_nan=False)
precs = st.integers(1, 12)


@settings(max_examples=300, deadline=None)
@given(lats, lngs, precs)
def test_point_inside_its_cell(lat, lng, p):
    h = geo.encode(lat, lng, p)
    assert h == ref_encode(lat, lng, p)
    lat0, lat1, lng0, lng1 = (float(x) for x in geo.bounds(h))
    assert lat0 <= lat and (lat < lat1 or lat == lat1 == 90.0)
    assert lng0 <= lng and (lng < lng1 or lng == lng1 == 180.0)
    nlat, nlng = bits(p)
    assert lat1 - lat0 == 180.0 / (1 << nlat)
    assert lng1 - lng0 == 360.0 / (1 << nlng)


def _lng_touch(a0: float, a1: float, b0: float, b1: float, d: int) -> bool:
    """B is one cell east (d=1) / west (d=-1) / same column (d=0) of A, modulo 360."""
    if d == 0:
        return (a0, a1) == (b0, b1)
    if d == 1:
        return b0 == a1 or (a1 == 180.0 and b0 == -180.0)
    return b1 == a0 or (a0 == -180.0 and b1 == 180.0)


def _lat_touch(a0: float, a1: float, b0: float, b1: float, d: int) -> bool:
    if d == 0:
        return (a0, a1) == (b0, b1)
    return b0 == a1 if d == 1 else b1 == a0


@settings(max_examples=300, deadline=None)
@given(lats, lngs, precs)
def test_neighbors_adjacent_mutual_distinct(lat, lng, p):
    a = str(geo.encode(lat, lng, p))
    nb = geo.neighbors(a).tolist()
    a_lat0, a_lat1, a_lng0, a_lng1 = (float(x) for x in geo.bounds(a))
    polar = a_lat1 == 90.0 or a_lat0 == -90.0
    for d, b in enumerate(nb):
        beyond = (a_lat1 == 90.0 and D_LAT[d] == 1) or (a_lat0 == -90.0 and D_LAT[d] == -1)
        if beyond:
            assert b == ""
            continue
        assert len(b) == p
        b_lat0, b_lat1, b_lng0, b_lng1 = (float(x) for x in geo.bounds(b))
        assert _lat_touch(a_lat0, a_lat1, b_lat0, b_lat1, D_LAT[d]), (a, d, b)
        assert _lng_touch(a_lng0, a_lng1, b_lng0, b_lng1, D_LNG[d]), (a, d, b)
        back = geo.neighbors(b).tolist()
        assert back[OPPOSITE[d]] == a  # mutual, in the opposite direction
    real = [b for b in nb if b]
    assert len(real) == (5 if polar else 8)
    assert len(set(real)) == len(real) and a not in real
    # int variant agrees
    nbi = geo.neighbors_int(geo.str_to_int(a), p)
    assert geo.int_to_str(nbi, p).tolist() == nb


def test_neighbors_known():
    assert geo.neighbors("ezs42").tolist() == ["ezs48", "ezs49", "ezs43", "ezs41", "ezs40", "ezefp", "ezefr", "ezefx"]
    assert geo.neighbors("dqcjq").tolist() == ["dqcjw", "dqcjx", "dqcjr", "dqcjp", "dqcjn", "dqcjj", "dqcjm", "dqcjt"]


def test_neighbors_match_offset_centres():
    """Neighbour d of a cell == the cell containing centre + one cell step (lng wrapped)."""
    rng = np.random.default_rng(3)
    for p in PRECISIONS:
        nlat, nlng = bits(p)
        ilat = np.r_[rng.integers(1, (1 << nlat) - 1, 500), 0, (1 << nlat) - 1]
        ilng = np.r_[rng.integers(0, 1 << nlng, 500), 0, (1 << nlng) - 1]
        clat, clng = 180.0 / (1 << nlat), 360.0 / (1 << nlng)
        lat = (ilat + 0.5) * clat - 90.0
        lng = (ilng + 0.5) * clng - 180.0
        nb = geo.neighbors(geo.encode(lat, lng, p))
        for d in range(8):
            nlat_c = lat + D_LAT[d] * clat
            nlng_c = (lng + D_LNG[d] * clng + 180.0) % 360.0 - 180.0
            want = geo.encode(nlat_c, nlng_c, p)
            want = np.where(np.abs(nlat_c) > 90.0, "", want)
            assert (nb[:, d] == want).all(), (p, d)


def test_antimeridian_wrap():
    for p in PRECISIONS:
        east_edge = geo.encode(10.0, 180.0, p)  # touches +180
        west_edge = geo.encode(10.0, -180.0, p)  # touches -180
        assert geo.bounds(east_edge)[3] == 180.0 and geo.bounds(west_edge)[2] == -180.0
        e = geo.neighbors(east_edge)
        w = geo.neighbors(west_edge)
        assert e[2] == west_edge and w[6] == east_edge
        assert geo.bounds(e[1])[2] == -180.0 and geo.bounds(e[3])[2] == -180.0
    assert geo.neighbors("z")[2] == "b" and geo.neighbors("b")[6] == "z"


def test_poles():
    for p in PRECISIONS:
        north = geo.encode(90.0, 12.0, p)
        south = geo.encode(-90.0, 12.0, p)
        n = geo.neighbors(north).tolist()
        s = geo.neighbors(south).tolist()
        assert [n[i] for i in (7, 0, 1)] == ["", "", ""] and all(n[i] for i in range(2, 7))
        assert [s[i] for i in (3, 4, 5)] == ["", "", ""] and all(s[i] for i in (0, 1, 2, 6, 7))
        ni = geo.neighbors_int(geo.str_to_int(north), p)
        assert (ni[[7, 0, 1]] == geo.NO_CELL).all() and (ni[2:7] != geo.NO_CELL).all()
    assert np.iinfo(np.uint64).max == geo.NO_CELL
    assert geo.int_to_str(geo.NO_CELL, 4) == ""
    assert geo.str_to_int("") == geo.NO_CELL
    assert np.isnan(geo.decode("")[0])
    assert geo.neighbors("").tolist() == [""] * 8
    assert (geo.neighbors_int(geo.NO_CELL, 3) == geo.NO_CELL).all()


# ---------------------------------------------------------------- distances


def test_haversine_known_and_basic():
    paris, london = (48.8566, 2.3522), (51.5074, -0.1278)
    d = float(geo.haversine_m(*paris, *london))
    assert abs(d - 343_500) / 343_500 < 0.005
    assert geo.haversine_m(*london, *paris) == d
    assert geo.haversine_m(*paris, *paris) == 0.0
    assert geo.haversine_m(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * R)
    assert geo.haversine_m(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * R)
    # one degree of latitude
    assert geo.haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(R * math.pi / 180)


def test_haversine_symmetric_broadcast():
    rng = np.random.default_rng(11)
    a = rng.uniform(-90, 90, 1000), rng.uniform(-180, 180, 1000)
    b = rng.uniform(-90, 90, 1000), rng.uniform(-180, 180, 1000)
    d = geo.haversine_m(*a, *b)
    assert d.shape == (1000,)
    np.testing.assert_allclose(d, geo.haversine_m(*b, *a), rtol=1e-12, atol=1e-6)
    assert (geo.haversine_m(*a, *a) == 0).all()
    assert ((d >= 0) & (d <= math.pi * R + 1e-6)).all()
    assert geo.haversine_m(a[0][:, None], a[1][:, None], b[0][None, :5], b[1][None, :5]).shape == (1000, 5)


def test_bearing():
    assert geo.bearing_deg(0.0, 0.0, 1.0, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert geo.bearing_deg(0.0, 0.0, 0.0, 1.0) == pytest.approx(90.0)
    assert geo.bearing_deg(0.0, 0.0, -1.0, 0.0) == pytest.approx(180.0)
    assert geo.bearing_deg(0.0, 0.0, 0.0, -1.0) == pytest.approx(270.0)
    assert geo.bearing_deg(10.0, 20.0, 10.0, 20.0) == 0.0
    assert geo.bearing_deg(45.0, 179.5, 45.0, -179.5) < 90.0  # across the antimeridian: eastward
    rng = np.random.default_rng(5)
    b = geo.bearing_deg(
        rng.uniform(-89, 89, 5000),
        rng.uniform(-180, 180, 5000),
        rng.uniform(-89, 89, 5000),
        rng.uniform(-180, 180, 5000),
    )
    assert ((b >= 0) & (b < 360)).all()
    # a tiny westward step rounds to -0.0...; must still land in [0, 360)
    assert 0.0 <= geo.bearing_deg(0.0, 0.0, 1.0, -1e-300) < 360.0


def test_unit_xyz_and_chord():
    rng = np.random.default_rng(9)
    n = 5000
    lat1, lng1 = rng.uniform(-90, 90, n), rng.uniform(-180, 180, n)
    # mix of far pairs and close pairs (the KD-tree case)
    lat2 = np.r_[rng.uniform(-90, 90, n // 2), np.clip(lat1[n // 2 :] + rng.normal(0, 0.01, n - n // 2), -90, 90)]
    lng2 = np.r_[rng.uniform(-180, 180, n // 2), lng1[n // 2 :] + rng.normal(0, 0.01, n - n // 2)]
    u1, u2 = geo.to_unit_xyz(lat1, lng1), geo.to_unit_xyz(lat2, lng2)
    assert u1.shape == (n, 3) and u1.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(u1, axis=1), 1.0, rtol=1e-14)
    chord = np.linalg.norm(u1 - u2, axis=1)
    via_d = geo.chord_for_distance(geo.haversine_m(lat1, lng1, lat2, lng2))
    np.testing.assert_allclose(via_d, chord, rtol=1e-9, atol=1e-12)
    assert geo.to_unit_xyz(0.0, 0.0).tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(geo.to_unit_xyz(90.0, 0.0), [0, 0, 1], atol=1e-15)
    assert geo.chord_for_distance(0.0) == 0.0
    assert geo.chord_for_distance(math.pi * R) == pytest.approx(2.0)
    assert geo.chord_for_distance(10 * R) == pytest.approx(2.0)  # clamped, stays monotone


def test_chord_radius_query_is_exact():
    """Points within r metres (haversine) are exactly those within chord_for_distance(r)."""
    rng = np.random.default_rng(21)
    lat = 40.0 + rng.uniform(-0.05, 0.05, 3000)
    lng = -74.0 + rng.uniform(-0.05, 0.05, 3000)
    r = 2000.0
    d = geo.haversine_m(40.0, -74.0, lat, lng)
    c = np.linalg.norm(geo.to_unit_xyz(lat, lng) - geo.to_unit_xyz(40.0, -74.0), axis=1)
    inside = c <= geo.chord_for_distance(r)
    margin = np.abs(d - r) > 1e-3  # ignore points within a millimetre of the circle
    assert (inside[margin] == (d <= r)[margin]).all()


def test_cell_size():
    h5, w5 = geo.cell_size_m(5, 0.0)
    assert 4800 < h5 < 5000 and 4800 < w5 < 5000
    h6, w6 = geo.cell_size_m(6, 0.0)
    assert 600 < h6 < 620 and 1200 < w6 < 1240
    h, w = geo.cell_size_m(6, np.array([0.0, 60.0]))
    assert h[0] == h[1] and w[1] == pytest.approx(w[0] / 2)
    # consistent with haversine across a real cell
    lat0, lat1, lng0, lng1 = (float(x) for x in geo.bounds("ezs42"))
    hh, ww = geo.cell_size_m(5, (lat0 + lat1) / 2)
    assert hh == pytest.approx(float(geo.haversine_m(lat0, lng0, lat1, lng0)), rel=1e-9)
    mid = (lat0 + lat1) / 2
    assert ww == pytest.approx(float(geo.haversine_m(mid, lng0, mid, lng1)), rel=1e-4)
    with pytest.raises(ValueError):
        geo.cell_size_m(13, 0.0)


def test_valid_coords():
    lat = np.array([0.0, 90.0, -90.0, 90.0001, np.nan, np.inf, 10.0, 10.0, 10.0])
    lng = np.array([0.0, 180.0, -180.0, 0.0, 0.0, 0.0, 180.5, -np.inf, np.nan])
    assert geo.valid_coords(lat, lng).tolist() == [True, True, True, False, False, False, False, False, False]
