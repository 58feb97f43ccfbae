"""Match quality of the geographic sharding: the real Coordinator on 4 shards (RegionMap
halos, border components deferred to its solve) against the Coordinator on one shard, on
the very same tick snapshots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from matcher.config import MatchConfig, Policy, ShardConfig
from matcher.core.shard import Matches
from matcher.dist.backend import make_backend
from matcher.dist.coordinator import Coordinator, make_router
from matcher.dist.ring import popcount64

from .common import (
    KM_PER_DEG_LAT,
    KM_PER_DEG_LNG,
    NOW,
    Context,
    Pool,
    driver_pings,
    figure,
    load_pool,
    objective,
    request_batch,
)

NYC = Path(__file__).resolve().parents[1] / "data" / "nyc-uber-2014-04-04.parquet"

CFG = MatchConfig()


def _coordinated(n_shards: int, pings, reqs):
    """One tick of the real Coordinator on ``n_shards`` in-process shards (GeoRouter: tight halos,
    requests routed by pickup, border components solved together; one shard: SingleRouter).
    Returns (matches, deferred requests, share of drivers held by more than one shard, requests per shard)."""
    shard = ShardConfig(shards=n_shards, backend="inprocess")
    coord = Coordinator(make_backend(shard, CFG, "bench-sharded"), make_router(shard, CFG), len(pings), CFG, shard)
    matches, _, stats = coord.tick(1, NOW, pings, reqs, Policy.BATCH)
    shared = float((popcount64(coord.member) > 1).mean())
    per_shard = np.bincount(coord.router.route_requests(reqs.lat, reqs.lng), minlength=n_shards)
    return matches, stats.deferred, shared, per_shard


def _totals(m: Matches, reqs):
    matched = np.isin(reqs.idx, m.req)
    eta = np.zeros(len(reqs))
    pos = np.searchsorted(reqs.idx, m.req)  # reqs.idx is 0..n-1 sorted
    eta[pos] = m.eta
    return float(m.eta.sum()), objective(eta, matched, reqs.wait_s, CFG), int(matched.sum())


def nyc_pool() -> Pool:
    """The real NYC day (data/): drivers and pickups both drawn at its pickup points."""
    import pyarrow.parquet as pq

    r = pq.read_table(NYC, columns=["pickup_lat", "pickup_lng"])
    lat, lng = r["pickup_lat"].to_numpy(), r["pickup_lng"].to_numpy()
    lat0, lng0 = float(np.median(lat)), float(np.median(lng))
    kx = KM_PER_DEG_LNG * math.cos(math.radians(lat0))
    x, y = (lng - lng0) * kx, (lat - lat0) * KM_PER_DEG_LAT
    zeros = np.zeros(len(x), np.int8)  # uberx cars, uberx rides
    return Pool(lat0, lng0, x, y, zeros, x, y, zeros)


def _ratio_on(pool: Pool, n_shards: int, n_drv: int, n_req: int, snaps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    eta_g = eta_s = obj_g = obj_s = 0.0
    n_g = n_s = deferred = total = twice = 0
    shared_share, loads = [], np.zeros(n_shards)
    for _ in range(snaps):
        pings = driver_pings(pool, n_drv, rng)
        reqs = request_batch(pool, n_req, rng)
        g, _, _, _ = _coordinated(1, pings, reqs)
        s, d, sh, per = _coordinated(n_shards, pings, reqs)
        twice += len(s) - len(np.unique(s.key))
        a, b, c = _totals(g, reqs)
        eta_g, obj_g, n_g = eta_g + a, obj_g + b, n_g + c
        a, b, c = _totals(s, reqs)
        eta_s, obj_s, n_s = eta_s + a, obj_s + b, n_s + c
        deferred += d
        total += len(reqs)
        shared_share.append(sh)
        loads += per
    return {
        "ratio": eta_s / eta_g if eta_g else float("nan"),
        "obj": obj_s / obj_g,
        "n_s": n_s,
        "n_g": n_g,
        "border": deferred / total,
        "shared": float(np.mean(shared_share)),
        "loads": loads.astype(int).tolist(),
        "twice": twice,
    }


def cost_ratio_sharded_vs_global(ctx: Context) -> dict:
    n_shards = 4
    n_drv, n_req, snaps = (5_000, 50, 3) if ctx.quick else (50_000, 500, 10)
    notes, worst = [], 0.0
    for name, pool, nd, nr in (
        ("synthetic NYC metro", load_pool(ctx), n_drv, n_req),
        ("real NYC day (data/), drivers at its pickup points", nyc_pool(), n_drv // 10, n_req // 5),
    ):
        r = _ratio_on(pool, n_shards, nd, nr, snaps, seed=5)
        worst = max(worst, r["ratio"])
        notes.append(
            f"{name}: {snaps} snapshots of {nr} pending x {nd:,} drivers, total matched ETA ratio {r['ratio']:.6f}, "
            f"objective ratio {r['obj']:.6f}, matched {r['n_s']} vs {r['n_g']}, border (deferred) requests "
            f"{r['border']:.1%}, drivers visible to >1 shard {r['shared']:.1%}, requests per shard {r['loads']}, "
            f"drivers offered twice {r['twice']}"
        )
    note = (
        f"Coordinator.tick on {n_shards} in-process shards (GeoRouter: region precision 4, tight halos; border "
        "components solved together by merge_outputs) vs the Coordinator on one shard, on the same snapshots; "
        "value = the worse of the two traces. " + "; ".join(notes)
    )
    return {"cost_ratio_sharded_vs_global": figure(worst, "ratio", 1.01, "lower", note)}
