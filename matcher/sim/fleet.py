"""The fleet of a run: from a driver file, or synthesised from the trace itself."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from matcher.config import RIDE_TYPES, VEHICLE_TYPES
from matcher.errors import MatcherError
from matcher.io import trace
from matcher.sim import rand
from matcher.sim.rand import RandStream
from matcher.sim.world import Fleet


def default_size(request_ms: np.ndarray) -> int:
    """One driver per 10 requests of the trace's busiest hour (docs/cli.md)."""
    hours = request_ms // 3_600_000
    _, counts = np.unique(hours, return_counts=True)
    return max(1, math.ceil(int(counts.max()) / 10))


def synthesize(n: int, reqs: pa.Table, seed: int) -> tuple[Fleet, pa.Array]:
    """``n`` drivers, online for the whole run, placed at sampled pickup points.

    Vehicle types follow the trace's ride types (xl and black rides get xl and
    black cars in the same shares; everything else is uberx).
    """
    m = reqs.num_rows
    pick = np.minimum((rand.uniform(seed, RandStream.FLEET, np.arange(n), 0) * m).astype(np.int64), m - 1)
    lat = reqs.column("pickup_lat").to_numpy()[pick]
    lng = reqs.column("pickup_lng").to_numpy()[pick]
    rt = (
        np.array([RIDE_TYPES.index(x) for x in reqs.column("ride_type").to_pylist()], np.int8)
        if m
        else np.empty(0, np.int8)
    )
    share = np.bincount(rt, minlength=len(RIDE_TYPES)) / max(m, 1)
    p_xl, p_black = share[RIDE_TYPES.index("xl")], share[RIDE_TYPES.index("black")]
    u = rand.uniform(seed, RandStream.FLEET, np.arange(n), 1)
    vehicle = np.where(
        u < p_black,
        VEHICLE_TYPES.index("black"),
        np.where(u < p_black + p_xl, VEHICLE_TYPES.index("xl"), VEHICLE_TYPES.index("uberx")),
    ).astype(np.int8)
    rating = (4.5 + 0.5 * rand.uniform(seed, RandStream.FLEET, np.arange(n), 2)).astype(np.float32)
    ids = pa.array([f"d{i:06d}" for i in range(n)], pa.string())
    inf = np.full(n, np.inf)
    return Fleet(lat, lng, vehicle, rating, -inf, inf), ids


def from_table(drivers: pa.Table, t0_ms: int) -> tuple[Fleet, pa.Array]:
    n = drivers.num_rows
    if n == 0:
        raise MatcherError("the driver file holds no valid driver")
    veh = np.array([VEHICLE_TYPES.index(v) for v in drivers.column("vehicle_type").to_pylist()], np.int8)
    rating = drivers.column("rating").fill_null(5.0).to_numpy().astype(np.float32)

    def secs(col, default):
        ms = drivers.column(col).cast(pa.int64()).to_numpy(zero_copy_only=False)
        null = drivers.column(col).is_null().to_numpy(zero_copy_only=False)
        return np.where(null, default, (np.nan_to_num(ms.astype(np.float64)) - t0_ms) / 1000.0)

    fleet = Fleet(
        drivers.column("lat").to_numpy(),
        drivers.column("lng").to_numpy(),
        veh,
        rating,
        secs("online_from", -np.inf),
        secs("online_until", np.inf),
    )
    return fleet, drivers.column("driver_id").combine_chunks()


def load(spec, reqs: pa.Table, t0_ms: int, seed: int) -> tuple[Fleet, pa.Array, pa.Table | None]:
    """(fleet, driver ids, quarantined driver rows or None) for ``--drivers`` (FILE, N or None)."""
    if spec is None or isinstance(spec, int):
        req_ms = reqs.column("request_time").cast(pa.int64()).to_numpy()
        n = default_size(req_ms) if spec is None else spec
        if n <= 0:
            raise MatcherError("--drivers must be at least 1")
        fleet, ids = synthesize(n, reqs, seed)
        return fleet, ids, None
    valid, quarantine = trace.read_drivers(spec)
    fleet, ids = from_table(valid, t0_ms)
    return fleet, ids, quarantine
