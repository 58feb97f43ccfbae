"""Pings end to end through 4 Ray shard actors on a local Ray (2 CPUs)."""

from __future__ import annotations

import time

import numpy as np

from matcher.config import MatchConfig, ShardConfig
from matcher.core.candidates import RequestBatch
from matcher.dist.sharding import RegionMap

from .common import Context, driver_pings, failed, figure, load_pool, median, pct

N_SHARDS = 4


def _actors(ray, n: int):
    """The project's shard actor (matcher.dist.ray_backend.ShardActor) when it exists, else a minimal one."""
    try:
        from matcher.core.shard import TickInput
        from matcher.dist.ray_backend import ShardActor

        if not hasattr(ShardActor, "options"):
            raise ImportError("ShardActor is not a Ray actor class")
    except ImportError as e:
        from matcher.core.driver_table import DriverTable

        @ray.remote
        class IngestActor:  # minimal stand-in: a DriverTable behind one method
            def __init__(self):
                self.t = DriverTable()

            def apply(self, p):
                return sum(self.t.apply_pings(p).values())

        actors = [IngestActor.options(num_cpus=0.5).remote() for _ in range(n)]
        return actors, (lambda a, k, p: a.apply.remote(p)), f"a minimal bench actor (DriverTable.apply_pings): {e}"
    cfg = MatchConfig()
    actors = [ShardActor.options(num_cpus=0.5).remote(s, cfg) for s in range(n)]
    none = np.empty(0, np.int64)
    empty = RequestBatch.empty()

    def call(a, k, p):
        # a tick with pings and no pending requests: apply_pings + an empty solve
        return a.tick.remote(TickInput(k, 4.0 * k, p, none, empty))

    return actors, call, "the project's matcher.dist.ray_backend.ShardActor (ShardState.tick with pings, no requests)"


def ingest_pings_per_s_ray(ctx: Context) -> dict:
    unit, target = "pings/s", 200_000
    if ctx.quick:
        return {"ingest_pings_per_s_ray": failed(unit, target, "higher", "skipped with --quick (starts Ray)")}
    import ray

    n, batches, warm = 50_000, 40, 3
    pool = load_pool(ctx)
    rng = np.random.default_rng(6)
    # the same fleet reporting every 4 s: positions drift a little between batches
    base = driver_pings(pool, n, rng, now=0.0)
    prepared = []
    for b in range(warm + batches):
        p = driver_pings(pool, n, np.random.default_rng(1000 + b), now=4.0 * (b + 1))
        p.lat = base.lat + rng.normal(0, 2e-4, n)
        p.lng = base.lng + rng.normal(0, 2e-4, n)
        p.vehicle = base.vehicle
        prepared.append(p)
    rmap = RegionMap.from_config(ShardConfig(shards=N_SHARDS))
    started = False
    if not ray.is_initialized():
        t0 = time.perf_counter()
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
        started = True
        ctx.log(f"  ray.init {time.perf_counter() - t0:.1f} s")
    try:
        actors, call, which = _actors(ray, N_SHARDS)
        lat_ms, per_shard = [], np.zeros(N_SHARDS, np.int64)
        t_start = None
        for b, p in enumerate(prepared):
            if b == warm:
                t_start = time.perf_counter()
            t0 = time.perf_counter()
            owner = rmap.owner_of_points(p.lat, p.lng)  # routing is part of the path
            refs = []
            for s in range(N_SHARDS):
                sel = np.flatnonzero(owner == s)
                refs.append(call(actors[s], b + 1, p.take(sel)))
                if b >= warm:
                    per_shard[s] += len(sel)
            ray.get(refs, timeout=60)
            if b >= warm:
                lat_ms.append((time.perf_counter() - t0) * 1e3)
        wall = time.perf_counter() - t_start
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()
    rate = batches * n / wall
    note = (
        f"{batches} batches of {n:,} pings (the whole fleet, every 4 s) routed by RegionMap owner and sent as one "
        f"numpy batch per shard per batch to {N_SHARDS} actors (num_cpus=0.5 each, local Ray with 2 CPUs), gathered "
        f"with ray.get: {median(lat_ms):.1f} ms per batch median, p90 {pct(lat_ms, 90):.1f} ms; pings per shard "
        f"{(per_shard // batches).tolist()} per batch; actor: {which}"
    )
    return {"ingest_pings_per_s_ray": figure(rate, unit, target, "higher", note)}
