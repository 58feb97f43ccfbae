"""Match quality of the geographic sharding: 4 shards (RegionMap halos, border
components deferred to the coordinator's solve) against one global shard, on the
very same tick snapshots."""
from __future__ import annotations

import numpy as np

from matcher.config import MatchConfig, ShardConfig
from matcher.shard import Matches, ShardState, TickInput, solve_deferred
from matcher.sharding import RegionMap, is_shared

from .common import NOW, Context, driver_pings, figure, load_pool, objective, request_batch

CFG = MatchConfig()
NO_DROPS = np.empty(0, np.int64)


def _global(pings, reqs) -> Matches:
    g = ShardState(0, CFG)
    return g.tick(TickInput(1, NOW, pings, NO_DROPS, reqs)).matches


def _sharded(rmap: RegionMap, n_shards: int, pings, reqs):
    """As the coordinator does it: memberships (tight halos, as GeoRouter asks) decide which
    shards hold each driver, owned/shared flags from them, requests routed by pickup; every
    shard ticks; the deferred border components are solved together."""
    owner, mask = rmap.memberships(pings.lat, pings.lng, tight=True)
    shared = is_shared(mask)
    req_shard = rmap.route_requests(reqs.lat, reqs.lng)
    outs = []
    for s in range(n_shards):
        bit = np.uint64(1) << np.uint64(s)
        sel = np.flatnonzero(mask & bit)
        p = pings.take(sel)
        p.owned = owner[sel] == s
        p.shared = shared[sel]
        outs.append(ShardState(s, CFG).tick(TickInput(1, NOW, p, NO_DROPS, reqs.take(np.flatnonzero(req_shard == s)))))
    dreq = np.concatenate([o.deferred_req for o in outs])
    deferred = Matches.concat([o.deferred for o in outs])
    srt = np.argsort(reqs.idx)
    wait = reqs.wait_s[srt[np.searchsorted(reqs.idx, dreq, sorter=srt)]]
    dm = solve_deferred(deferred, dreq, wait, "batch", CFG)
    local = Matches.concat([o.matches for o in outs])
    per_shard = [o.pending for o in outs]
    return Matches.concat([local, dm]), len(dreq), float(shared.mean()), per_shard


def _totals(m: Matches, reqs):
    matched = np.isin(reqs.idx, m.req)
    eta = np.zeros(len(reqs))
    pos = np.searchsorted(reqs.idx, m.req)  # reqs.idx is 0..n-1 sorted
    eta[pos] = m.eta
    return float(m.eta.sum()), objective(eta, matched, reqs.wait_s, CFG), int(matched.sum())


def cost_ratio_sharded_vs_global(ctx: Context) -> dict:
    n_shards = 4
    n_drv, n_req, snaps = (5_000, 50, 3) if ctx.quick else (50_000, 500, 10)
    pool = load_pool(ctx)
    rng = np.random.default_rng(5)
    rmap = RegionMap.from_config(ShardConfig(shards=n_shards), radius_m=CFG.radius_m)
    eta_g = eta_s = obj_g = obj_s = 0.0
    n_g = n_s = deferred = total = 0
    shared_share, loads = [], np.zeros(n_shards)
    twice = 0
    for _ in range(snaps):
        pings = driver_pings(pool, n_drv, rng)
        reqs = request_batch(pool, n_req, rng)
        g = _global(pings, reqs)
        s, d, sh, per = _sharded(rmap, n_shards, pings, reqs)
        twice += len(s) - len(np.unique(s.key))
        a, b, c = _totals(g, reqs)
        eta_g, obj_g, n_g = eta_g + a, obj_g + b, n_g + c
        a, b, c = _totals(s, reqs)
        eta_s, obj_s, n_s = eta_s + a, obj_s + b, n_s + c
        deferred += d
        total += len(reqs)
        shared_share.append(sh)
        loads += per
    ratio = eta_s / eta_g if eta_g else float("nan")
    note = (f"{snaps} snapshots of {n_req} pending x {n_drv:,} drivers (synthetic NYC metro), RegionMap with "
            f"{n_shards} shards (region precision 4, tight halos) + solve_deferred vs one ShardState: total matched ETA "
            f"ratio {ratio:.6f}, objective ratio {obj_s / obj_g:.6f}, matched {n_s} vs {n_g}; border (deferred) "
            f"requests {deferred / total:.1%}, drivers visible to >1 shard {np.mean(shared_share):.1%}; "
            f"requests per shard {loads.astype(int).tolist()}; drivers offered twice: {twice}")
    return {"cost_ratio_sharded_vs_global": figure(ratio, "ratio", 1.01, "lower", note)}
