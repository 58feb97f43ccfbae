"""The replay loop: one code path for local runs, Ray runs and the Ray job.

Each tick (every ``--window`` seconds for batch, every second for greedy):
the world advances to the tick time in event order, the drivers that have
something to report send their pings, the pending requests go to the shards
through the coordinator, and the offers come back to the world. Ticks with
nothing pending are skipped. The run drains: it goes on past the last request
until every request has ended.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import fleet as fleet_mod
from . import metrics, trace
from .backend import make_backend
from .candidates import RequestBatch
from .config import RIDE_TYPES, RunConfig
from .coordinator import Coordinator, make_router
from .eventlog import EventLog, LocationLog
from .errors import MatcherError
from .world import Requests, World

TICKS_SCHEMA = pa.schema([
    ("tick", pa.int64()), ("ts", pa.timestamp("ms", tz="UTC")), ("wall_ms", pa.float64()),
    ("pending", pa.int32()), ("matched", pa.int32()), ("deferred", pa.int32()), ("fallbacks", pa.int32()),
    ("solve_ms", pa.float64()),
])


def _requests(table: pa.Table) -> tuple[Requests, pa.Array, int]:
    ms = table.column("request_time").cast(pa.int64()).to_numpy()
    t0 = int(ms[0])

    def f(col):
        return table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)

    rt = pa.compute.index_in(table.column("ride_type"), pa.array(RIDE_TYPES)).to_numpy(zero_copy_only=False)
    reqs = Requests(
        t=(ms - t0) / 1000.0, plat=f("pickup_lat"), plng=f("pickup_lng"),
        dlat=np.nan_to_num(f("dropoff_lat"), nan=np.nan), dlng=f("dropoff_lng"),
        ride_type=np.asarray(rt, np.int8), trip_s=f("trip_duration_s"),
    )
    return reqs, table.column("request_id").combine_chunks(), t0


def _prepare_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("events", "locations"):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in ("summary.json", "run.json", "ticks.parquet", "quarantine.parquet"):
        (out / name).unlink(missing_ok=True)


def run_replay(cfg: RunConfig, progress=None) -> dict:
    """Replay ``cfg.trace`` and write the run folder ``cfg.out``; returns the summary."""
    wall0 = time.perf_counter()
    sim = cfg.sim
    if sim.policy not in ("batch", "greedy"):
        raise MatcherError(f"unknown policy {sim.policy!r}")
    table, quarantine = trace.read_requests(cfg.trace)
    reqs, request_ids, t0_ms = _requests(table)
    fleet, driver_ids, drv_quarantine = fleet_mod.load(cfg.drivers, table, t0_ms, sim.seed)
    out = Path(cfg.out)
    _prepare_out(out)
    trace.write_quarantine([q for q in (quarantine, drv_quarantine) if q is not None], out / "quarantine.parquet")
    n_quarantined = quarantine.num_rows + (drv_quarantine.num_rows if drv_quarantine is not None else 0)

    log = EventLog(out / "events", request_ids, driver_ids, t0_ms)
    locations = LocationLog(out / "locations", driver_ids, t0_ms) if cfg.record_locations else None
    world = World(reqs, fleet, sim, cfg.match, log)
    backend = make_backend(cfg.shard, cfg.match, run_name=f"matcher-{out.name}-{int(time.time())}")
    try:
        coord = Coordinator(backend, make_router(cfg.shard, cfg.match), len(fleet), cfg.match, cfg.shard)
        ticks = _loop(cfg, world, coord, locations, progress)
    finally:
        backend.close()
    log.flush()
    if locations is not None:
        locations.flush()
    tick_table = pa.table({k: v for k, v in ticks.items()}, schema=TICKS_SCHEMA) if ticks["tick"] else TICKS_SCHEMA.empty_table()
    if len(tick_table):
        tick_table = tick_table.set_column(1, "ts", pa.array(t0_ms + np.asarray(ticks["ts"]) * 1000.0).cast(pa.int64()).cast(TICKS_SCHEMA.field("ts").type))
    trace.write_table(tick_table, out / "ticks.parquet", TICKS_SCHEMA)
    meta = {
        "policy": sim.policy, "window_s": sim.window_s if sim.policy == "batch" else None,
        "shards": cfg.shard.shards, "backend": cfg.shard.backend, "seed": sim.seed,
        "drivers": len(fleet), "quarantined": n_quarantined, "label": cfg.label,
        "sim_seconds": float(ticks["ts"][-1]) if ticks["ts"] else 0.0,
        "wall_seconds": time.perf_counter() - wall0,
        "handoffs": coord.handoffs, "refused_pings": dict(coord.refusals),
        "trace": str(cfg.trace), "config": _jsonable(asdict(cfg)),
    }
    (out / "run.json").write_text(json.dumps(meta, indent=2))
    return metrics.write_summary(out, meta)


def _jsonable(d):
    return json.loads(json.dumps(d, default=str))


def _loop(cfg: RunConfig, world: World, coord: Coordinator, locations, progress) -> dict:
    sim = cfg.sim
    step = sim.step_s
    last_sent = np.full(len(world.f), -np.inf)
    ticks = {name: [] for name in TICKS_SCHEMA.names}
    k = -1
    last_rec = -np.inf
    bar = _progress(cfg, world) if progress is None else progress
    while not world.done():
        if world.pending:
            k += 1
        else:
            nt = world.next_time()
            if not np.isfinite(nt):
                break
            k = max(k + 1, math.ceil(nt / step))
        t = k * step
        if locations is not None:
            last_rec = _record(world, locations, last_rec, t, k)
        world.advance(t, k)
        if world.pending:
            w0 = time.perf_counter()
            _, pings = world.pings(t, last_sent)
            idx, wait = world.pending_batch(t)
            b_req, b_key = _barred(world, idx)
            rb = RequestBatch(idx, world.r.plat[idx], world.r.plng[idx], world.r.ride_type[idx], wait, b_req, b_key)
            m, shard_of, st = coord.tick(k, t, pings, rb, sim.policy)
            world.apply_matches(t, k, m.req, m.key, m.eta, m.dist, m.lat, m.lng, shard_of)
            for name, v in (("tick", k), ("ts", t), ("wall_ms", (time.perf_counter() - w0) * 1e3), ("pending", st.pending),
                            ("matched", st.matched), ("deferred", st.deferred), ("fallbacks", st.fallbacks),
                            ("solve_ms", st.solve_ms_max)):
                ticks[name].append(v)
        if bar is not None:
            bar.update(world)
    if bar is not None:
        bar.close()
    return ticks


def _barred(world: World, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not world.barred:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pairs = [(i, k) for i in idx.tolist() if i in world.barred for k in world.barred[i]]
    if not pairs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a = np.array(pairs, np.int64)
    return a[:, 0], a[:, 1]


def _record(world: World, locations: LocationLog, last_rec: float, t: float, k: int) -> float:
    """Driver positions at every ping interval up to t (the location history)."""
    iv = world.sim.ping_interval_s
    b = (math.floor(last_rec / iv) + 1) * iv if np.isfinite(last_rec) else 0.0
    while b <= t:
        world.advance(b, k)
        keys = np.flatnonzero(world.status != 4)  # online drivers
        lat, lng, hd, sp = world.position(keys, b)
        locations.add(b, keys, lat, lng, hd, sp, world.status[keys])
        last_rec = b
        b += iv
    return last_rec


class _Bar:
    """Progress on stderr: requests ended out of the total."""

    def __init__(self, total: int, label: str):
        from tqdm import tqdm

        self.t = tqdm(total=total, desc=label, unit="req", leave=False, mininterval=0.5)
        self.done = 0

    def update(self, world: World) -> None:
        ended = world.next_arrival - world.open
        if ended - self.done >= 1000 or world.done():
            self.t.update(ended - self.done)
            self.done = ended

    def close(self) -> None:
        self.t.close()


def _progress(cfg: RunConfig, world: World):
    if cfg.quiet:
        return None
    return _Bar(len(world.r), cfg.label or cfg.sim.policy)
