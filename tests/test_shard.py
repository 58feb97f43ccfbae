"""Tests for matcher.core.shard: ShardState.tick (commit, idempotency) and the decomposition
guarantee (local solves + coordinator solve of deferred edges == one global solve)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.config import RIDE_TYPES, VEHICLE_TYPES, MatchConfig
from matcher.core import geo
from matcher.core.assignment import unmatched_penalty
from matcher.core.candidates import RequestBatch
from matcher.core.driver_table import Pings
from matcher.core.shard import Matches, ShardState, TickInput, greedy_order, solve_deferred
from matcher.core.states import DriverStatus
from matcher.dist.merge import merge_step

NOW = 10_000.0
CITY = (40.70, 40.80, -74.10, -73.86)  # lat_min, lat_max, lng_min, lng_max: ~11 km x 20 km
HALO_M = 2500.0
RADIUS_M = 2000.0


def random_city(rng, n_drv, n_req):
    lat0, lat1, lng0, lng1 = CITY
    n = n_drv
    key = rng.permutation(5 * n + 5)[:n].astype(np.int64)
    status = np.where(rng.random(n) < 0.8, int(DriverStatus.AVAILABLE), rng.integers(1, 5, n)).astype(np.int8)
    stale = rng.random(n) < 0.05
    pings = Pings(
        key=key,
        lat=rng.uniform(lat0, lat1, n),
        lng=rng.uniform(lng0, lng1, n),
        heading=rng.uniform(0, 360, n).astype(np.float32),
        speed=np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0, 15, n)).astype(np.float32),
        status=status,
        vehicle=rng.integers(0, len(VEHICLE_TYPES), n).astype(np.int8),
        rating=np.full(n, 4.8, np.float32),
        ts=NOW - np.where(stale, 100.0, rng.uniform(0, 10, n)),
        owned=np.ones(n, bool),
        shared=np.zeros(n, bool),
    )
    m = n_req
    idx = rng.permutation(10 * m + 10)[:m].astype(np.int64)
    nb = m // 3
    reqs = RequestBatch(
        idx=idx,
        lat=rng.uniform(lat0, lat1, m),
        lng=rng.uniform(lng0, lng1, m),
        ride_type=rng.choice(len(RIDE_TYPES), m, p=[0.55, 0.15, 0.2, 0.1]).astype(np.int8),
        # whole seconds, with repeats: greedy order ties on wait are broken by idx
        wait_s=rng.integers(0, 30, m).astype(float) * 10,
        barred_req=rng.choice(idx, nb).astype(np.int64),
        barred_key=rng.choice(key, nb).astype(np.int64),
    )
    return pings, reqs


def band_of(lng, cuts):
    """Band index of each longitude; `cuts` are the inner band edges, ascending."""
    return np.searchsorted(cuts, lng, side="right")


def dist_to_band_m(lat, lng, lo, hi):
    """East-west distance from a point to the band [lo, hi) along its parallel (metres)."""
    dlng = np.maximum(np.maximum(lo - lng, lng - hi), 0.0)
    return np.radians(dlng) * geo.EARTH_RADIUS_M * np.cos(np.radians(lat))


def split(pings, reqs, n_shards, cuts):
    """Per-shard ping batches (own drivers owned=True + halo copies owned=False, shared where
    visible to more than one shard) and per-shard request batches (band of the pickup)."""
    edges = np.concatenate([[-np.inf], cuts, [np.inf]])
    own = band_of(pings.lng, cuts)
    visible = np.stack(
        [(own == s) | (dist_to_band_m(pings.lat, pings.lng, edges[s], edges[s + 1]) <= HALO_M) for s in range(n_shards)]
    )
    shared = visible.sum(axis=0) > 1
    req_band = band_of(reqs.lng, cuts)
    out = []
    for s in range(n_shards):
        sel = np.flatnonzero(visible[s])
        p = pings.take(sel)
        p.owned = own[sel] == s
        p.shared = shared[sel]
        out.append((p, reqs.take(np.flatnonzero(req_band == s))))
    return out, own, shared


def objective(matches: Matches, reqs: RequestBatch, cfg: MatchConfig) -> float:
    pen = unmatched_penalty(reqs.wait_s, cfg.unmatched_base_s, cfg.unmatched_per_wait)
    matched = np.isin(reqs.idx, matches.req)
    return float(matches.eta.sum() + pen[~matched].sum())


def run_sharded(pings, reqs, n_shards, cuts, cfg, policy):
    """Every shard ticks, then THE merge step (matcher.dist.merge): border components solved on the shards."""
    parts, own, shared = split(pings, reqs, n_shards, cuts)
    outs = []
    for s, (p, r) in enumerate(parts):
        st_ = ShardState(s, cfg)
        outs.append((st_, st_.tick(TickInput(1, NOW, p, np.empty(0, np.int64), r, policy))))
    shards = [st_ for st_, _ in outs]

    def solve(tasks):
        return {s: shards[s].solve_border(t) for s, t in tasks.items()}

    merged = merge_step(1, [o for _, o in outs], reqs, policy, solve, len(outs))
    dreq = np.concatenate([o.deferred_req for _, o in outs])
    round2 = [r.matches for r in solve(merged.plan.tasks).values()]  # idempotent: stored results
    border = Matches.concat([*merged.plan.settled.values(), *round2])  # settled from round 1, then round 2
    return outs, border, own, shared, dreq, merged


def run_global(pings, reqs, cfg, policy):
    g = ShardState(0, cfg)
    return g, g.tick(TickInput(1, NOW, pings, np.empty(0, np.int64), reqs, policy))


def as_dict(m: Matches) -> dict[int, int]:
    return dict(zip(m.req.tolist(), m.key.tolist()))


# ------------------------------------------------------------------ decomposition


def check_decomposition(seed, n_shards, policy, k):
    rng = np.random.default_rng(seed)
    pings, reqs = random_city(rng, int(rng.integers(60, 220)), int(rng.integers(20, 120)))
    lng0, lng1 = CITY[2], CITY[3]
    cuts = np.sort(rng.uniform(lng0 + 0.02, lng1 - 0.02, n_shards - 1))
    cfg = MatchConfig(radius_m=RADIUS_M, k=k, dense_max_cells=int(rng.choice([0, 40_000])))

    outs, dm, own, shared, dreq, merged = run_sharded(pings, reqs, n_shards, cuts, cfg, policy)
    local = Matches.concat([o.matches for _, o in outs])
    allm = merged.matches
    assert len(allm) == len(local) + len(dm)
    # each contested border component went whole to one shard in round 2, the uncontested ones were
    # settled from their shard's tentative solve; every match names the shard that made it
    plan = merged.plan
    assert merged.deferred == len(dreq) and sum(len(t.req_idx) for t in plan.tasks.values()) == plan.contested
    sent = np.concatenate([t.req_idx for t in plan.tasks.values()] or [np.empty(0, np.int64)])
    assert not set(sent.tolist()) & {r for m in plan.settled.values() for r in m.req.tolist()}
    for s, m in plan.settled.items():  # a shard's settled matches are of its own requests
        assert set(m.req.tolist()) <= set(outs[s][1].deferred_req.tolist())
        # uncontested: no other shard deferred an edge to a driver of them
        others = {kk for t, (_, o) in enumerate(outs) if t != s for kk in o.deferred.key.tolist()}
        assert not set(m.key.tolist()) & others
    assert merged.matched_by.sum() == len(allm) and len(merged.shard_of) == len(allm)

    # (a) no driver matched twice across shards + coordinator; no request twice either
    assert len(np.unique(allm.key)) == len(allm), "a driver is matched twice"
    assert len(np.unique(allm.req)) == len(allm), "a request is matched twice"
    # a shard commits only drivers it owns and nobody else can see
    own_of = dict(zip(pings.key.tolist(), own.tolist()))
    shared_of = dict(zip(pings.key.tolist(), shared.tolist()))
    for s, (st_, o) in enumerate(outs):
        for r, kk in zip(o.matches.req.tolist(), o.matches.key.tolist()):
            assert own_of[kk] == s and not shared_of[kk]
        # committed drivers are OFFERED in that shard's table; deferred ones are untouched
        rows = st_.table.rows_of(o.matches.key)
        assert (st_.table.status[rows] == DriverStatus.OFFERED).all()
        assert o.pending == int((band_of(reqs.lng, cuts) == s).sum())
        # deferred edges name only deferred requests, and matched/deferred requests are disjoint
        assert set(o.deferred.req.tolist()) <= set(o.deferred_req.tolist())
        assert not set(o.matches.req.tolist()) & set(o.deferred_req.tolist())
    # round 2 only matches deferred requests
    assert set(dm.req.tolist()) <= set(dreq.tolist())

    # (b) the same objective as one global solve
    g, gout = run_global(pings, reqs, cfg, policy)
    assert len(np.unique(gout.deferred_req)) == 0 and len(gout.deferred) == 0
    got, want = objective(allm, reqs, cfg), objective(gout.matches, reqs, cfg)
    assert got == pytest.approx(want, rel=1e-6)
    if policy == "greedy":
        # greedy decomposes by components when the arrival order is the same: exact equality
        assert as_dict(allm) == as_dict(gout.matches)
    # every match reports its edge's real ETA/distance and the driver's position
    pos = {int(kk): i for i, kk in enumerate(pings.key)}
    for kk, d, la, ln in zip(allm.key.tolist(), allm.dist, allm.lat, allm.lng):
        i = pos[kk]
        assert (la, ln) == (pings.lat[i], pings.lng[i])
    return len(dreq), len(allm), plan.contested, sum(len(m) for m in plan.settled.values())


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4), st.sampled_from(["batch", "greedy"]), st.sampled_from([3, 8, 20]))
def test_sharded_equals_global(seed, n_shards, policy, k):
    check_decomposition(seed, n_shards, policy, k)


@pytest.mark.parametrize("policy", ["batch", "greedy"])
@pytest.mark.parametrize("n_shards", [2, 3, 4])
def test_sharded_equals_global_has_border_work(policy, n_shards):
    """Fixed seeds where the coordinator really has border work, both settled from round 1 and
    contested (round 2): the hypothesis test could in principle pass on instances with none."""
    total_deferred = total_matched = total_contested = total_settled = 0
    for seed in range(3):
        d, m, c, settled = check_decomposition(seed, n_shards, policy, 20)
        total_deferred += d
        total_matched += m
        total_contested += c
        total_settled += settled
    assert total_deferred > 0 and total_matched > 0
    assert total_contested > 0 and total_settled > 0


# ------------------------------------------------------------------ tick behaviour


def test_tick_commits_offers_and_never_reoffers():
    rng = np.random.default_rng(7)
    pings, reqs = random_city(rng, 150, 80)
    cfg = MatchConfig()
    shard = ShardState(0, cfg)
    out1 = shard.tick(TickInput(1, NOW, pings, np.empty(0, np.int64), reqs))
    assert len(out1.matches) > 0 and len(out1.deferred) == 0
    assert out1.pending == len(reqs) and out1.drivers == len(pings)
    assert sum(out1.ping_refusals.values()) == 0
    t = shard.table
    rows = t.rows_of(out1.matches.key)
    assert (rows >= 0).all()
    assert (t.status[rows] == DriverStatus.OFFERED).all()
    # everyone else keeps the status of their ping
    other = np.setdiff1d(np.arange(t.n), rows)
    ping_status = dict(zip(pings.key.tolist(), pings.status.tolist()))
    assert all(t.status[r] == ping_status[int(t.key[r])] for r in other)
    # matched drivers were eligible, and each match is a real (request, driver) edge
    assert len(np.unique(out1.matches.key)) == len(out1.matches)
    assert (out1.matches.dist <= cfg.radius_m + 1e-6).all()

    # next tick: the unmatched requests plus new ones, no new pings
    left = np.flatnonzero(~np.isin(reqs.idx, out1.matches.req))
    _, more = random_city(np.random.default_rng(8), 1, 40)
    more.idx = more.idx + 10_000
    more.barred_req = more.barred_req + 10_000
    reqs2 = RequestBatch.concat([reqs.take(left), more])
    out2 = shard.tick(TickInput(2, NOW + 2, Pings.empty(), np.empty(0, np.int64), reqs2))
    assert len(out2.matches) > 0
    assert not set(out2.matches.key.tolist()) & set(out1.matches.key.tolist()), "a driver was offered twice"
    rows2 = t.rows_of(out2.matches.key)
    assert (t.status[rows2] == DriverStatus.OFFERED).all()
    assert (t.status[rows] == DriverStatus.OFFERED).all()


@pytest.mark.parametrize("policy", ["batch", "greedy"])
def test_retried_tick_is_idempotent(policy):
    rng = np.random.default_rng(11)
    pings, reqs = random_city(rng, 120, 60)
    shard = ShardState(0, MatchConfig())
    inp = TickInput(5, NOW, pings, np.empty(0, np.int64), reqs, policy)
    out = shard.tick(inp)
    snap = shard.table.snapshot()
    assert len(out.matches) > 0
    # the exact same retry, and a retry whose payload would change things if applied
    later = pings.take(np.arange(len(pings)))
    later.ts = later.ts + 1.0
    later.status = np.full(len(later), int(DriverStatus.AVAILABLE), np.int8)
    for retry in (inp, TickInput(5, NOW + 1, later, pings.key[:10].copy(), reqs, policy)):
        again = shard.tick(retry)
        assert again is out
        for name, arr in shard.table.snapshot().items():
            np.testing.assert_array_equal(arr, snap[name], err_msg=name)
    # a new tick id runs again (and the offered drivers stay out of it)
    out6 = shard.tick(TickInput(6, NOW + 2, Pings.empty(), np.empty(0, np.int64), reqs, policy))
    assert out6 is not out and out6.tick == 6
    assert not set(out6.matches.key.tolist()) & set(out.matches.key.tolist())


def test_drop_keys_removes_before_matching():
    rng = np.random.default_rng(3)
    pings, reqs = random_city(rng, 80, 30)
    shard = ShardState(0, MatchConfig())
    shard.tick(TickInput(1, NOW, pings, np.empty(0, np.int64), RequestBatch.empty()))
    gone = pings.key[::2].copy()
    out = shard.tick(TickInput(2, NOW, Pings.empty(), gone, reqs))
    assert shard.table.n == len(pings) - len(gone)
    assert not set(out.matches.key.tolist()) & set(gone.tolist())


def test_greedy_order_longest_wait_first_then_idx():
    reqs = RequestBatch(
        np.array([5, 3, 9, 1]),
        np.zeros(4),
        np.zeros(4),
        np.zeros(4, np.int8),
        np.array([10.0, 30.0, 30.0, 0.0]),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )
    assert reqs.idx[greedy_order(reqs)].tolist() == [3, 9, 5, 1]


def test_solve_deferred_empty():
    assert len(solve_deferred(Matches.empty(), np.empty(0, np.int64), np.empty(0), "batch", MatchConfig())) == 0
    assert len(solve_deferred(Matches.empty(), np.array([4]), np.array([0.0]), "greedy", MatchConfig())) == 0


def test_greedy_ties_decompose_exactly():
    """Two drivers at the very same spot (an airport queue) cost exactly the same for a
    request. Greedy breaks such ties by driver key everywhere (find_candidates orders by
    key, the coordinator's columns are keys), so the sharded result must not depend on
    the row order of a shard's table. Here the tie decides whether a later request can
    be served at all, so a row-based tie-break would change the objective."""
    cut = -74.0
    lat, lng = 40.75, cut + 0.001  # both drivers are near the cut: visible to both shards
    n = 2
    pings = Pings(
        key=np.array([9, 3]),
        lat=np.full(n, lat),
        lng=np.full(n, lng),
        heading=np.zeros(n, np.float32),
        speed=np.zeros(n, np.float32),
        status=np.zeros(n, np.int8),
        vehicle=np.array([VEHICLE_TYPES.index("uberx"), VEHICLE_TYPES.index("xl")], np.int8),
        rating=np.full(n, 4.8, np.float32),
        ts=np.full(n, NOW),
        owned=np.ones(n, bool),
        shared=np.zeros(n, bool),
    )
    # request 0 (waited longest, uberx) ties between both; request 1 (xl) can only use key 3
    reqs = RequestBatch(
        np.array([0, 1]),
        np.array([40.75, 40.751]),
        np.array([cut - 0.005, cut + 0.004]),
        np.array([RIDE_TYPES.index("uberx"), RIDE_TYPES.index("xl")], np.int8),
        np.array([100.0, 0.0]),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )
    cfg = MatchConfig()
    outs, dm, _, shared, dreq, merged = run_sharded(pings, reqs, 2, np.array([cut]), cfg, "greedy")
    assert shared.all() and sorted(dreq.tolist()) == [0, 1]
    sharded = merged.matches
    _, gout = run_global(pings, reqs, cfg, "greedy")
    assert as_dict(sharded) == as_dict(gout.matches) == {0: 3}  # key 3 < key 9
    assert objective(sharded, reqs, cfg) == pytest.approx(objective(gout.matches, reqs, cfg))
