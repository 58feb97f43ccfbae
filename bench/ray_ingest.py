"""Pings end to end through the real path: the Coordinator (routing by RegionMap, per-shard
batches, merge) driving the RayBackend's 4 ShardActors on a private local Ray (2 CPUs).

No stand-in: if the Ray backend cannot be built or a tick fails, the figure fails with the reason."""

from __future__ import annotations

import os
import time

import numpy as np

from matcher.config import MatchConfig, Policy, ShardConfig
from matcher.core.candidates import RequestBatch
from matcher.dist.backend import keep_embedded_ray_on_loopback, make_backend
from matcher.dist.coordinator import Coordinator, make_router
from matcher.dist.ring import popcount64

from .common import Context, driver_pings, failed, figure, load_pool, median, pct

N_SHARDS = 4


def ingest_pings_per_s_ray(ctx: Context) -> dict:
    unit, target = "pings/s", 200_000
    if ctx.quick:
        return {"ingest_pings_per_s_ray": failed(unit, target, "higher", "skipped with --quick (starts Ray)")}
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
    match = MatchConfig()
    shard = ShardConfig(shards=N_SHARDS, backend="ray", num_cpus=0.5)
    keep_embedded_ray_on_loopback()  # before ray is imported
    import ray

    started = False
    if not ray.is_initialized():
        t0 = time.perf_counter()
        # a private Ray (address="local"): never one another process started on this machine
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
        started = True
        ctx.log(f"  ray.init {time.perf_counter() - t0:.1f} s")
    backend = None
    try:
        backend = make_backend(shard, match, f"bench-ingest-{os.getpid()}")
        coord = Coordinator(backend, make_router(shard, match), n, match, shard)
        none = RequestBatch.empty()
        lat_ms: list[float] = []
        t_start = 0.0
        for b, p in enumerate(prepared):
            if b == warm:
                t_start = time.perf_counter()
            t0 = time.perf_counter()
            # a tick with the whole fleet's pings and no pending requests: routing; no shard need answer, so
            # the reports are held, and sync sends them (fan-out, apply_pings, gather): every ping reaches a shard
            coord.tick(b + 1, 4.0 * (b + 1), p, none, Policy.BATCH)
            coord.sync(b + 1, 4.0 * (b + 1))
            if b >= warm:
                lat_ms.append((time.perf_counter() - t0) * 1e3)
        refused = sum(coord.refusals.values())
        wall = time.perf_counter() - t_start
        per_shard = np.bincount(coord.owner, minlength=N_SHARDS).tolist()
        shared = float((popcount64(coord.member) > 1).mean())
    finally:
        if backend is not None:
            backend.close()
        if started:
            ray.shutdown()
    if refused:
        raise RuntimeError(f"{refused} pings refused: the bench's pings must all be valid")
    rate = batches * n / wall
    note = (
        f"{batches} ticks of {n:,} pings (the whole fleet, every 4 s) through Coordinator.tick (memberships "
        f"with halos) and Coordinator.sync (one batch per shard) with RayBackend.tick to {N_SHARDS} ShardActors (num_cpus=0.5 each, private "
        f"local Ray with 2 CPUs), no pending requests: {median(lat_ms):.1f} ms per tick median, p90 "
        f"{pct(lat_ms, 90):.1f} ms; drivers owned per shard {per_shard}, held by more than one shard {shared:.1%}"
    )
    return {"ingest_pings_per_s_ray": figure(rate, unit, target, "higher", note)}
