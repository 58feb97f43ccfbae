"""Shared plumbing of the benchmarks: figures, timing, core pinning, machine facts,
cached synthetic inputs and realistic tick snapshots (drivers + pending requests).

Nothing here is timed itself; the figure functions live in the small modules
beside it (core, sharded, ray_ingest, replay).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from matcher.config import RIDE_TYPES, VEHICLE_TYPES, MatchConfig
from matcher.core.assignment import unmatched_penalty
from matcher.core.candidates import RequestBatch
from matcher.core.driver_table import DriverTable, Pings
from matcher.core.states import DriverStatus

KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LNG = 111.320
NOW = 10_000.0  # simulated "now" of every synthetic snapshot


# ---------------------------------------------------------------- run context


@dataclass
class Context:
    quick: bool
    cache: Path  # synthetic inputs and scratch run folders (git-ignored)
    results: Path  # where plots go (the folder of --out)
    log_lines: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    def log(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f}s] {msg}"
        self.log_lines.append(line)
        print(line, file=sys.stderr, flush=True)

    def path(self, *parts: str) -> Path:
        p = self.cache.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


# ---------------------------------------------------------------- figures


def figure(value, unit: str, target, better: str | None, note: str = "", ok: bool | None = None) -> dict:
    """One entry of results["figures"]. ``ok`` defaults to the comparison of value and target."""
    v = None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)
    if ok is None:
        if v is None or target is None or better is None:
            ok = False
        else:
            ok = v <= target if better == "lower" else v >= target
    return {"value": _sig(v), "unit": unit, "target": target, "better": better, "ok": bool(ok), "note": note}


def failed(unit: str, target, better: str | None, why: str) -> dict:
    return figure(None, unit, target, better, note=f"not measured: {why}", ok=False)


def _sig(v: float | None, digits: int = 4):
    if v is None or v == 0:
        return v
    return float(f"{v:.{digits}g}")


def median(xs) -> float:
    return float(statistics.median(xs))


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, float), q))


# ---------------------------------------------------------------- cores and machine


@contextmanager
def one_core():
    """Pin the calling thread (the benchmark's) to core 0 for a single-core figure."""
    old = os.sched_getaffinity(0)
    core = 0 if 0 in old else min(old)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, old)


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = None
    from . import _threads

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "ray": _version("ray"),
        "pyarrow": _version("pyarrow"),
        "polars": _version("polars"),
        "platform": platform.platform(),
        "thread_limits": _threads.METHOD,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- synthetic inputs (cached)


def synth_files(ctx: Context, drivers: int, requests_per_s: float, hours: float, seed: int = 0) -> tuple[Path, Path]:
    """A synthetic city from ``matcher.sim.synth`` in the cache (generated once per parameter set)."""
    from matcher.sim.synth import synthesize

    tag = f"synth-d{drivers}-r{requests_per_s:g}-h{hours:g}-s{seed}"
    trace, drv = ctx.path("inputs", f"{tag}.parquet"), ctx.path("inputs", f"{tag}-drivers.parquet")
    if not (trace.exists() and drv.exists()):
        ctx.log(f"generating {tag} into {trace.parent}")
        synthesize(out=trace, drivers_out=drv, drivers=drivers, requests_per_s=requests_per_s, hours=hours, seed=seed)
    return trace, drv


def synth_files_multi(
    ctx: Context, cities: int, drivers: int, requests_per_s: float, hours: float, seed: int = 0
) -> tuple[Path, Path]:
    """A synthetic world of ``cities`` cities (``matcher synth --cities``) in the cache."""
    from matcher.sim.synth import synthesize

    tag = f"synth-c{cities}-d{drivers}-r{requests_per_s:g}-h{hours:g}-s{seed}"
    trace, drv = ctx.path("inputs", f"{tag}.parquet"), ctx.path("inputs", f"{tag}-drivers.parquet")
    if not (trace.exists() and drv.exists()):
        ctx.log(f"generating {tag} into {trace.parent}")
        synthesize(trace, drv, drivers=drivers, requests_per_s=requests_per_s, hours=hours, seed=seed, cities=cities)
    return trace, drv


def metro_files(ctx: Context) -> tuple[Path, Path]:
    """The synthetic metro hour (50,000 drivers, 55 requests/s, 1 h); a small city with --quick."""
    if ctx.quick:
        return synth_files(ctx, drivers=2_000, requests_per_s=2.0, hours=0.25)
    return synth_files(ctx, drivers=50_000, requests_per_s=55.0, hours=1.0)


@dataclass
class Pool:
    """Where drivers and pickups are in the synthetic city, as km offsets from its centre:
    the spatial distribution every tick snapshot is drawn from (scaled for other densities)."""

    lat0: float
    lng0: float
    dx: np.ndarray
    dy: np.ndarray
    vehicle: np.ndarray  # int8
    rx: np.ndarray
    ry: np.ndarray
    ride_type: np.ndarray  # int8

    def to_latlng(self, x, y):
        return self.lat0 + y / KM_PER_DEG_LAT, self.lng0 + x / (KM_PER_DEG_LNG * math.cos(math.radians(self.lat0)))


def load_pool(ctx: Context) -> Pool:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from matcher.sim.synth import DEFAULT_CENTER

    trace, drv = metro_files(ctx)
    r = pq.read_table(trace, columns=["pickup_lat", "pickup_lng", "ride_type"])
    d = pq.read_table(drv, columns=["lat", "lng", "vehicle_type"])
    lat0, lng0 = DEFAULT_CENTER
    kx = KM_PER_DEG_LNG * math.cos(math.radians(lat0))

    def codes(col, names):
        return np.asarray(pc.index_in(col, value_set=pa.array(names)).fill_null(0).to_numpy(), np.int8)

    return Pool(
        lat0,
        lng0,
        (d["lng"].to_numpy() - lng0) * kx,
        (d["lat"].to_numpy() - lat0) * KM_PER_DEG_LAT,
        codes(d["vehicle_type"], VEHICLE_TYPES),
        (r["pickup_lng"].to_numpy() - lng0) * kx,
        (r["pickup_lat"].to_numpy() - lat0) * KM_PER_DEG_LAT,
        codes(r["ride_type"], RIDE_TYPES),
    )


def _draw(rng, n: int, size: int, jitter_km: float, x, y):
    """n points of the pool (without replacement when possible, else with a small jitter)."""
    if n <= size:
        i = rng.choice(size, n, replace=False)
        return i, x[i], y[i]
    i = rng.integers(0, size, n)
    return i, x[i] + rng.normal(0, jitter_km, n), y[i] + rng.normal(0, jitter_km, n)


def driver_pings(pool: Pool, n: int, rng, scale: float = 1.0, available: float = 0.6, now: float = NOW) -> Pings:
    """A full report of ``n`` drivers: ``available`` of them AVAILABLE, the rest offered/en route/on trip;
    half moving (heading matters), every fix fresh (< 4 s old)."""
    i, x, y = _draw(rng, n, len(pool.dx), 0.05, pool.dx, pool.dy)
    lat, lng = pool.to_latlng(x * scale, y * scale)
    status = np.where(
        rng.random(n) < available,
        int(DriverStatus.AVAILABLE),
        rng.integers(int(DriverStatus.OFFERED), int(DriverStatus.ON_TRIP) + 1, n),
    ).astype(np.int8)
    return Pings(
        key=np.arange(n, dtype=np.int64),
        lat=lat,
        lng=lng,
        heading=rng.uniform(0, 360, n).astype(np.float32),
        speed=np.where(rng.random(n) < 0.5, 0.0, rng.uniform(2.0, 12.0, n)).astype(np.float32),
        status=status,
        vehicle=pool.vehicle[i],
        rating=np.full(n, 4.8, np.float32),
        ts=now - rng.uniform(0.0, 4.0, n),
        owned=np.ones(n, bool),
        shared=np.zeros(n, bool),
    )


def driver_table(pings: Pings) -> DriverTable:
    t = DriverTable(max(len(pings), 16))
    t.apply_pings(pings)
    return t


def request_batch(pool: Pool, n: int, rng, scale: float = 1.0, first_idx: int = 0) -> RequestBatch:
    """``n`` pending requests at pickups of the synthetic trace, waiting 0-60 s so far."""
    i, x, y = _draw(rng, n, len(pool.rx), 0.05, pool.rx, pool.ry)
    lat, lng = pool.to_latlng(x * scale, y * scale)
    e = np.empty(0, np.int64)
    return RequestBatch(
        np.arange(first_idx, first_idx + n, dtype=np.int64),
        lat,
        lng,
        pool.ride_type[i].copy(),
        rng.uniform(0.0, 60.0, n),
        e,
        e,
    )


def objective(cost_of_matched: np.ndarray, matched: np.ndarray, wait_s: np.ndarray, cfg: MatchConfig) -> float:
    """sum of matched pickup ETAs + the stay-unmatched penalty of every unmatched request."""
    pen = unmatched_penalty(wait_s, cfg.unmatched_base_s, cfg.unmatched_per_wait)
    return float(np.where(matched, np.nan_to_num(cost_of_matched), pen).sum())
