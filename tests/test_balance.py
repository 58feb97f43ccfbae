"""Regions by measured load (matcher.dist.curve, balance, loadmap): the curve, the
weighted runs, and the partition and halo guarantees after any sequence of rebalances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from matcher.core import geo
from matcher.dist.balance import CurveRegions
from matcher.dist.cellgrid import UNKNOWN, CellGrid
from matcher.dist.curve import KEY_PRECISION, NO_KEY, cell_ranges, hilbert_index, keys_of_cells, point_keys
from matcher.dist.loadmap import LoadRouter

# ------------------------------------------------------------------ the curve


def _hilbert_ref(x: int, y: int, bits: int) -> int:
    """Scalar xy2d (the textbook statement, one level at a time)."""
    n, d = 1 << bits, 0
    s = n // 2
    while s > 0:
        rx = 1 if x & s else 0
        ry = 1 if y & s else 0
        d += s * s * ((3 * rx) ^ ry)
        if ry == 0:
            if rx == 1:
                x, y = n - 1 - x, n - 1 - y
            x, y = y, x
        s //= 2
    return d


@given(st.integers(1, 20), st.lists(st.tuples(st.integers(0, 2**20 - 1), st.integers(0, 2**20 - 1)), min_size=1))
def test_hilbert_matches_the_scalar_reference(bits, pts):
    x = np.array([p[0] % (1 << bits) for p in pts], np.uint64)
    y = np.array([p[1] % (1 << bits) for p in pts], np.uint64)
    got = hilbert_index(x, y, bits).tolist()
    assert got == [_hilbert_ref(int(a), int(b), bits) for a, b in zip(x, y)]


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 6])
def test_hilbert_is_a_bijection_of_touching_cells_with_the_block_property(bits):
    n = 1 << bits
    x, y = (a.ravel().astype(np.uint64) for a in np.meshgrid(np.arange(n), np.arange(n)))
    d = hilbert_index(x, y, bits)
    assert sorted(d.tolist()) == list(range(n * n))
    o = np.argsort(d)
    step = np.abs(np.diff(x[o].astype(int))) + np.abs(np.diff(y[o].astype(int)))
    assert (step == 1).all()  # consecutive cells touch: a run of the curve is connected
    if bits > 1:
        assert (d >> np.uint64(2) == hilbert_index(x >> np.uint64(1), y >> np.uint64(1), bits - 1)).all()


def test_point_keys_fall_in_their_cells_ranges():
    rng = np.random.default_rng(3)
    lat = np.concatenate([rng.uniform(-90, 90, 5000), [90.0, -90.0, 0.0]])
    lng = np.concatenate([rng.uniform(-180, 180, 5000), [180.0, -180.0, 0.0]])
    keys, _ = point_keys(lat, lng)
    for p in (2, 4, 6, 8):
        lo, hi = cell_ranges(geo.encode_int(lat, lng, p), p)
        assert ((keys >= lo) & (keys < hi)).all()
    bad, _ = point_keys([np.nan, 91.0], [0.0, 0.0])
    assert (bad == NO_KEY).all()


@st.composite
def _points(draw):
    """Points anywhere, on cell edges of the key grid, at the poles and the antimeridian, and invalid."""
    edge = st.builds(
        lambda k, d: k * 180.0 / 2**20 - 90.0 + d, st.integers(0, 2**20), st.sampled_from([0.0, -1e-12, 1e-12])
    )
    lat = st.one_of(st.floats(-90, 90), edge, st.sampled_from([90.0, -90.0, np.nan, np.inf, 91.0]))
    lng = st.one_of(st.floats(-180, 180), st.sampled_from([180.0, -180.0, 0.0, np.nan, -181.0]))
    n = draw(st.integers(0, 40))
    return np.array(draw(st.lists(lat, min_size=n, max_size=n))), np.array(draw(st.lists(lng, min_size=n, max_size=n)))


@settings(max_examples=200, deadline=None)
@given(_points())
def test_point_keys_are_the_keys_of_the_points_geohash_cells(pts):
    """The direct path (cell indices straight into the curve) against the definition: the
    geohash integer at KEY_PRECISION, its bits read back out into the grid (`keys_of_cells`)."""
    lat, lng = pts
    keys, cells = point_keys(lat, lng)
    ok = geo.valid_coords(lat, lng)
    want = np.full(lat.shape, geo.NO_CELL, np.uint64)
    want[ok] = geo.encode_int(lat[ok], lng[ok], KEY_PRECISION)
    assert cells.tolist() == want.tolist()
    assert keys.tolist() == keys_of_cells(want).tolist()


# ------------------------------------------------------------------ weighted runs


@st.composite
def loads(draw):
    n = draw(st.integers(1, 300))
    base = draw(st.integers(0, 2**40 - 2**20))
    spread = draw(st.sampled_from([1, 2**8, 2**20]))
    keys = np.array(draw(st.lists(st.integers(0, spread), min_size=n, max_size=n)), np.uint64) + np.uint64(base)
    w = np.array(draw(st.lists(st.floats(0.0, 50.0), min_size=n, max_size=n)))
    return keys, w


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.lists(loads(), min_size=1, max_size=4), st.floats(0.01, 1.0))
def test_runs_partition_and_a_rebalance_moves_at_most_its_bound(k, seq, max_move):
    r = CurveRegions(k)
    for i, (keys, w) in enumerate(seq):
        before = r.owners(keys)
        if i == 0:
            r.place(keys, w)
        else:
            moved = r.rebalance(keys, w, max_move)
            changed = float(w[r.owners(keys) != before].sum())
            total = float(w.sum())
            assert moved == pytest.approx(changed / total if total else 0.0, abs=1e-9)
            # bound: max_move of the load, plus at most one key's weight per cut (cuts snap to keys)
            heaviest = max((float(w[keys == u].sum()) for u in np.unique(keys)), default=0.0)
            assert changed <= max_move * total + (k - 1) * heaviest + 1e-9
        assert (np.diff(r.cuts.astype(np.float64)) >= 0).all()
        own = r.owners(keys)
        assert ((own >= 0) & (own < k)).all()
        assert r.loads(keys, w).sum() == pytest.approx(w.sum())


def test_placement_balances_a_skewed_load_and_rebalance_converges():
    rng = np.random.default_rng(7)
    keys, _ = point_keys(40.75 + rng.normal(0, 0.05, 20000), -73.97 + rng.normal(0, 0.06, 20000))
    w = np.ones(keys.size)
    r = CurveRegions(8)
    r.place(keys, w)
    assert r.imbalance(keys, w) < 1.01
    # the load moves (a hot spot appears): each rebalance moves <= 1/8, and a few bring it back
    hot, _ = point_keys(40.64 + rng.normal(0, 0.005, 20000), -73.78 + rng.normal(0, 0.005, 20000))
    keys2 = np.concatenate([keys, hot])
    w2 = np.ones(keys2.size)
    first = r.imbalance(keys2, w2)
    moves = [r.rebalance(keys2, w2, 1 / 8) for _ in range(12)]
    assert max(moves) <= 1 / 8 + 1e-3
    assert first > 2 and r.imbalance(keys2, w2) < 1.05


def test_a_rebalance_needs_both_the_ratio_and_the_excess():
    """rebalance_min_excess: a small city whose shards differ by a few drivers keeps its cuts;
    the same ratio on ten times the load moves them."""
    rng = np.random.default_rng(3)

    def drift(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lat, lng = 40.75 + rng.normal(0, 0.05, n), -73.97 + rng.normal(0, 0.06, n)
        # then a fifth of them drive to one corner: the ratio goes well past 1.1
        moved = rng.random(n) < 0.2
        return lat, lng, np.where(moved, 40.70, lat), np.where(moved, -74.01, lng)

    for n, moves in ((400, False), (4000, True)):
        r = LoadRouter(4, rebalance_ticks=1, rebalance_tolerance=1.1, rebalance_min_excess=100)
        lat, lng, lat2, lng2 = drift(n)
        r.observe([], [], lat, lng)
        keys, _ = point_keys(lat2, lng2)
        w = np.ones(keys.size)
        assert r.regions.imbalance(keys, w) > 1.1
        assert (r.regions.excess(keys, w) > 100) == moves
        v = r.version
        r.observe([], [], lat2, lng2)
        assert (r.version != v) == moves


def test_range_masks_name_every_owner_of_the_range():
    r = CurveRegions(5)
    r.cuts = np.array([10, 20, 20, 35], np.uint64)
    lo = np.array([0, 5, 19, 20, 34, 35, 0], np.uint64)
    hi = np.array([10, 11, 21, 21, 36, 2**40, 2**40], np.uint64)
    want = []
    for a, b in zip(lo.tolist(), hi.tolist()):
        ks = np.arange(a, min(b, 60), dtype=np.uint64)
        want.append(sum(1 << int(s) for s in np.unique(r.owners(ks))))
    assert r.range_masks(lo, hi).tolist() == want


# ------------------------------------------------------------------ the router's guarantees


def _destination(lat, lng, bearing_deg, dist_m):
    phi1, lam1 = np.radians(lat), np.radians(lng)
    th, d = np.radians(bearing_deg), np.asarray(dist_m) / geo.EARTH_RADIUS_M
    s = np.clip(np.sin(phi1) * np.cos(d) + np.cos(phi1) * np.sin(d) * np.cos(th), -1.0, 1.0)
    phi2 = np.arcsin(s)
    lam2 = lam1 + np.arctan2(np.sin(th) * np.sin(d) * np.cos(phi1), np.cos(d) - np.sin(phi1) * s)
    return np.degrees(phi2), (np.degrees(lam2) + 180.0) % 360.0 - 180.0


@st.composite
def cities(draw):
    """A small random city anywhere (poles and the antimeridian included) and a sequence of loads."""
    lat0 = draw(st.sampled_from([0.0, 40.75, -33.9, 64.1, 71.0, 89.99, -89.99]))
    lng0 = draw(st.sampled_from([-73.97, 179.99, -179.99, 0.0, 151.2]))
    spread = draw(st.sampled_from([0.005, 0.03, 0.1]))
    k = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    n_loads = draw(st.integers(1, 4))
    radius = draw(st.sampled_from([500.0, 2000.0]))
    return lat0, lng0, spread, k, seed, n_loads, radius


def _clip(lat, lng):
    return np.clip(lat, -90, 90), (lng + 180.0) % 360.0 - 180.0


def _answers_as_an_empty_cache(router, radius, lat, lng, own, mask) -> None:
    """The halo cache and the cell grid, refreshed at every change of the cuts, answer as an
    empty halo cache does cell by cell (a router whose grid may hold no cell)."""
    fresh = LoadRouter(router.k, radius_m=radius)
    fresh._grid = CellGrid(max_cells=0)
    fresh.regions.cuts, fresh.regions.version = router.regions.cuts.copy(), router.regions.version
    f_own, f_mask = fresh.memberships(lat, lng)
    assert fresh._grid.h == 0
    assert (f_own == own).all() and (f_mask == mask).all()


@settings(max_examples=40, deadline=None)
@given(cities())
def test_partition_and_halo_hold_after_any_sequence_of_rebalances(city):
    lat0, lng0, spread, k, seed, n_loads, radius = city
    rng = np.random.default_rng(seed)
    router = LoadRouter(k, radius_m=radius, rebalance_ticks=1, rebalance_tolerance=1.0)
    dlat, dlng = _clip(lat0 + rng.normal(0, spread, 300), lng0 + rng.normal(0, spread, 300))
    for _ in range(n_loads):
        c_lat, c_lng = _clip(lat0 + rng.normal(0, spread, 2), lng0 + rng.normal(0, spread, 2))
        qlat, qlng = _clip(c_lat[0] + rng.normal(0, spread / 3, 100), c_lng[0] + rng.normal(0, spread / 3, 100))
        router.observe(qlat, qlng, dlat, dlng)
        own, mask = router.memberships(dlat, dlng)
        _answers_as_an_empty_cache(router, radius, dlat, dlng, own, mask)
        # partition: one owner per point, and the driver's owner is the owner of its point
        assert ((own >= 0) & (own < k)).all()
        assert (own == router.route_requests(dlat, dlng)).all()
        assert (((mask >> own.astype(np.uint64)) & np.uint64(1)) == 1).all()
        # halo: every point within the radius of a driver is routed to a shard that sees it
        d = rng.integers(0, dlat.size, 3000)
        plat, plng = _destination(dlat[d], dlng[d], rng.uniform(0, 360, d.size), rng.uniform(0, radius, d.size))
        near = geo.haversine_m(dlat[d], dlng[d], plat, plng) <= radius
        q = router.route_requests(plat, plng)
        seen = ((mask[d] >> q.astype(np.uint64)) & np.uint64(1)) == 1
        assert seen[near].all()
        # the drivers move a little: the next answers come partly from cells cached before the change
        dlat, dlng = _clip(dlat + rng.normal(0, spread / 10, dlat.size), dlng + rng.normal(0, spread / 10, dlng.size))


@settings(max_examples=60, deadline=None)
@given(cities(), st.integers(1, 40), st.integers(1, 40))
@example(city=(0.0, -179.99, 0.005, 2, 0, 1, 500.0), h=1, w=2)  # a window starting west of column 0
def test_a_window_of_halo_cells_answers_as_each_cell_does(city, h, w):
    """`Halo.window` (every cell of a window at once) against `Halo.memberships` of each cell."""
    lat0, lng0, spread, k, seed, _, radius = city
    rng = np.random.default_rng(seed)
    router = LoadRouter(k, radius_m=radius)
    qlat, qlng = _clip(lat0 + rng.normal(0, spread, 200), lng0 + rng.normal(0, spread, 200))
    router.observe(qlat, qlng, qlat, qlng)
    hp = router._hp
    r, c = geo.cell_indices(np.array([lat0]), np.array([lng0]), hp)
    r0, c0 = int(r[0]) - h // 2, int(c[0]) - w // 2
    got = router.halo.window(r0, c0, h, w)
    nrows = ncols = 1 << (5 * hp // 2)
    a = router.halo.rows
    if r0 - a < 0 or r0 + h + a > nrows or c0 < 0 or c0 + w > ncols:
        assert got is None  # a pole or the antimeridian within reach: cell by cell
        return
    if got is None:  # only where the halo's columns pass the window's margin
        return
    R, C = np.meshgrid(np.arange(r0, r0 + h, dtype=np.uint64), np.arange(c0, c0 + w, dtype=np.uint64), indexing="ij")
    cells = geo.interleave(R.reshape(-1), C.reshape(-1), hp)
    zero = np.zeros(cells.size)
    own, mask = router.halo.memberships(cells, zero, zero)
    assert got[0].reshape(-1).tolist() == own.tolist()
    assert got[1].reshape(-1).tolist() == mask.tolist()


def test_the_cell_grid_answers_unknown_outside_its_window_and_grows_within_its_bound():
    g = CellGrid(max_cells=400)
    row, col = np.array([5, 6], np.uint64), np.array([7, 9], np.uint64)
    assert g.get(row, col)[0].tolist() == [UNKNOWN, UNKNOWN]
    r0, c0, h, w = g.grown(row, col)
    assert (r0, c0) == (0, 0) and r0 + h > 6 and c0 + w > 9 and h * w <= 400
    g.fill(r0, c0, np.arange(h * w, dtype=np.int32).reshape(h, w), np.ones((h, w), np.uint64))
    own, mask = g.get(np.array([5, 6, 500], np.uint64), np.array([7, 9, 0], np.uint64))
    assert own.tolist() == [5 * w + 7, 6 * w + 9, UNKNOWN] and mask.tolist() == [1, 1, 0]
    assert g.grown(np.array([500], np.uint64), np.array([0], np.uint64)) is None  # past max_cells


def test_router_answers_invalid_points_and_shapes():
    r = LoadRouter(3)
    own, mask = r.memberships([np.nan, 40.0], [0.0, -73.0])
    assert own.tolist()[0] == -1 and int(mask[0]) == 0 and own[1] >= 0
    assert r.route_requests([], []).shape == (0,)
    assert r.route_requests([[40.0, 41.0]], [[-73.0, -74.0]]).shape == (1, 2)
    with pytest.raises(ValueError, match="even"):
        LoadRouter(3, halo_precision=5)


@settings(max_examples=40, deadline=None)
@given(cities(), st.data())
def test_a_lost_shard_owns_nothing_and_is_left_out_of_rebalances(city, data):
    """remove_shard: the lost run collapses to empty; partition and halo hold over the living
    shards only, through later rebalances (none moves load back onto a lost shard)."""
    lat0, lng0, spread, k, seed, n_loads, radius = city
    rng = np.random.default_rng(seed)
    router = LoadRouter(k, radius_m=radius, rebalance_ticks=1, rebalance_tolerance=1.0)
    dlat, dlng = _clip(lat0 + rng.normal(0, spread, 300), lng0 + rng.normal(0, spread, 300))
    lost = data.draw(st.lists(st.integers(0, k - 1), unique=True, min_size=1, max_size=k - 1))
    dead = np.uint64(sum(1 << s for s in lost))
    router.observe(dlat, dlng, dlat, dlng)
    for s in lost:
        v = router.version
        router.remove_shard(s)
        assert router.version >= v
    assert router.living() == k - len(lost)
    for _ in range(n_loads):
        qlat, qlng = _clip(lat0 + rng.normal(0, spread / 3, 100), lng0 + rng.normal(0, spread / 3, 100))
        router.observe(qlat, qlng, dlat, dlng)
        own, mask = router.memberships(dlat, dlng)
        _answers_as_an_empty_cache(router, radius, dlat, dlng, own, mask)
        assert not set(own.tolist()) & set(lost)
        assert ((mask & dead) == 0).all()
        assert (own == router.route_requests(dlat, dlng)).all()
        d = rng.integers(0, dlat.size, 2000)
        plat, plng = _destination(dlat[d], dlng[d], rng.uniform(0, 360, d.size), rng.uniform(0, radius, d.size))
        near = geo.haversine_m(dlat[d], dlng[d], plat, plng) <= radius
        q = router.route_requests(plat, plng)
        assert not set(q[near].tolist()) & set(lost)
        assert ((((mask[d] >> q.astype(np.uint64)) & np.uint64(1)) == 1)[near]).all()


def test_curve_regions_remove_every_shard_but_one():
    r = CurveRegions(4)
    keys = np.arange(0, 1 << 40, (1 << 40) // 1000, dtype=np.uint64)
    r.place(keys, np.ones(keys.size))
    for s in (3, 0, 2):
        r.remove_shard(s)
    assert set(r.owners(keys).tolist()) == {1}
    r.rebalance(keys, np.ones(keys.size), np.inf)
    assert set(r.owners(keys).tolist()) == {1}
    with pytest.raises(ValueError, match="every shard"):
        r.remove_shard(1)
