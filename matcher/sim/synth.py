"""A synthetic city (or world) of requests and drivers: `matcher synth`.

Deterministic for a seed (numpy ``Generator`` streams spawned from one
``SeedSequence``: the city layout, the fleet and the requests each have their
own stream, so the requests do not change with the fleet size).

The city (one by default, centred on ``center``, New York by default):

* space: a mixture of Gaussians in km around the centre: a downtown core
  (sd 1.6 km), five neighbourhoods 3-9 km out, an airport 15 km out (sd 0.35 km:
  one hot geohash-5 cell) and a wide background (sd 7 km). Drivers use the same
  places with more weight on neighbourhoods and background.
* time: a daily demand curve in the city's local solar time (UTC offset =
  round(lng / 15) h) with a morning rush (~08:30), a midday plateau, an evening
  rush (~18:00, the highest) and a late-evening shoulder; minute by minute
  Poisson counts with uniform times inside the minute (a nonhomogeneous Poisson
  process). ``requests_per_s`` is the mean rate over the generated window: a
  1-hour run gives about ``3600 * requests_per_s`` requests whatever the hour.
* trips: lognormal length (median 4 km, capped 0.4..40 km) heading to another
  hotspot (60 %) or anywhere; airport pickups go downtown. ``trip_duration_s`` =
  length x 1.3 (detour) / speed, speed 8.5 m/s slowed by up to 35 % at the rush
  peaks, with 15 % lognormal noise, at least 60 s.
* ride types uberx 80 %, pool 8 %, xl 8 %, black 4 %; vehicles uberx 80 %,
  xl 12 %, black 8 %; ratings 5 - Gamma(1.3, 0.12), within 1..5.
* shifts: lognormal length (median 7 h, 2..12 h) centred on a demand-weighted
  (70 %) or uniform (30 %) moment, cut to the window, at least 10 minutes online
  (less for very short windows); for a short window most drivers are online
  throughout.

``cities=N`` (N > 1) spreads the same total rate and fleet over N cities (sizes
Zipf-like): 44 real city centres first (including ones near the antimeridian:
Taveuni at 179.97 E, whose city straddles it, Suva, Anadyr, Apia, Nuku'alofa, Auckland, and at high latitude: Longyearbyen,
Tromsø, Norilsk, Murmansk, Nuuk, Fairbanks, Ushuaia), then seeded random
centres. Output is streamed in chunks (at most ~500k rows in memory) through
atomic Parquet writers, requests in time order.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from matcher.config import RIDE_TYPES, VEHICLE_TYPES
from matcher.io.schemas import DRIVERS, REQUESTS, TS
from matcher.io.trace import AtomicParquetWriter

__all__ = ["DEFAULT_CENTER", "WORLD_CITIES", "SynthReport", "demand_curve", "synthesize"]

DEFAULT_CENTER = (40.7128, -74.0060)  # lower Manhattan
CHUNK_ROWS = 500_000
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LNG = 111.320

RIDE_MIX = (0.80, 0.08, 0.08, 0.04)  # RIDE_TYPES order: uberx, pool, xl, black
VEHICLE_MIX = (0.80, 0.12, 0.08)  # VEHICLE_TYPES order: uberx, xl, black

WORLD_CITIES: tuple[tuple[str, float, float], ...] = (
    ("new-york", 40.7128, -74.0060),
    ("london", 51.5074, -0.1278),
    ("tokyo", 35.6762, 139.6503),
    ("sao-paulo", -23.5505, -46.6333),
    ("mumbai", 19.0760, 72.8777),
    ("mexico-city", 19.4326, -99.1332),
    ("lagos", 6.5244, 3.3792),
    ("paris", 48.8566, 2.3522),
    ("jakarta", -6.2088, 106.8456),
    ("los-angeles", 34.0522, -118.2437),
    ("cairo", 30.0444, 31.2357),
    ("shanghai", 31.2304, 121.4737),
    ("delhi", 28.6139, 77.2090),
    ("istanbul", 41.0082, 28.9784),
    ("moscow", 55.7558, 37.6173),
    ("seoul", 37.5665, 126.9780),
    ("buenos-aires", -34.6037, -58.3816),
    ("sydney", -33.8688, 151.2093),
    ("chicago", 41.8781, -87.6298),
    ("toronto", 43.6532, -79.3832),
    ("berlin", 52.5200, 13.4050),
    ("singapore", 1.3521, 103.8198),
    ("nairobi", -1.2921, 36.8219),
    ("johannesburg", -26.2041, 28.0473),
    ("lima", -12.0464, -77.0428),
    ("bogota", 4.7110, -74.0721),
    ("helsinki", 60.1699, 24.9384),
    ("auckland", -36.8485, 174.7633),
    ("honolulu", 21.3069, -157.8583),
    ("anchorage", 61.2181, -149.9003),
    ("reykjavik", 64.1466, -21.9426),
    ("suva", -18.1248, 178.4501),
    ("taveuni", -16.7725, 179.9700),
    ("anadyr", 64.7337, 177.5089),
    ("apia", -13.8507, -171.7514),
    ("nukualofa", -21.1394, -175.2049),
    ("petropavlovsk", 53.0452, 158.6483),
    ("tromso", 69.6492, 18.9553),
    ("murmansk", 68.9585, 33.0827),
    ("norilsk", 69.3558, 88.1893),
    ("nuuk", 64.1814, -51.6941),
    ("fairbanks", 64.8378, -147.7164),
    ("ushuaia", -54.8019, -68.3030),
    ("longyearbyen", 78.2232, 15.6267),
)

# mixture components per city: core, 5 neighbourhoods, airport, background
_K = 8
_AIRPORT = 6
_REQ_W = np.array([0.36, 0.076, 0.076, 0.076, 0.076, 0.076, 0.09, 0.17])
_DRV_W = np.array([0.28, 0.09, 0.09, 0.09, 0.09, 0.09, 0.04, 0.23])


def demand_curve(hour) -> np.ndarray:
    """Relative demand at local hour(s) ``hour`` (0..24, periodic): ~0.2 at 03:00, peaks ~1.4 at 08:30 and ~1.5 at 18:00."""
    h = np.asarray(hour, dtype=np.float64) % 24.0

    def bump(mu: float, sd: float) -> np.ndarray:
        d = (h - mu + 12.0) % 24.0 - 12.0
        return np.exp(-0.5 * (d / sd) ** 2)

    return 0.12 + 0.45 * bump(13.0, 4.5) + 1.0 * bump(8.5, 1.1) + 1.15 * bump(18.0, 1.6) + 0.35 * bump(23.5, 1.8)


@dataclass
class SynthReport:
    out: str
    drivers_out: str
    requests: int
    drivers: int
    cities: int
    start: datetime
    hours: float
    requests_per_s: float
    seed: int
    seconds: float
    center: tuple[float, float]

    def __str__(self) -> str:
        where = (
            f"1 city centred at {self.center[0]:.4f},{self.center[1]:.4f}"
            if self.cities == 1
            else f"{self.cities} cities"
        )
        return (
            f"synth: {self.requests:,} requests ({self.requests / max(self.hours * 3600, 1e-9):.2f}/s over "
            f"{self.hours:g} h from {self.start:%Y-%m-%d %H:%M}Z) and {self.drivers:,} drivers in {where}, "
            f"seed {self.seed}, written to {self.out} and {self.drivers_out} in {self.seconds:.1f} s."
        )


# --------------------------------------------------------------------------- the world


@dataclass
class _World:
    lat: np.ndarray  # (C,) centre
    lng: np.ndarray
    utc_offset_h: np.ndarray  # (C,) local solar time offset
    share: np.ndarray  # (C,) share of demand and fleet
    mux: np.ndarray  # (C, K) component centres, km east
    muy: np.ndarray  # (C, K) km north
    sd: np.ndarray  # (C, K) km
    req_cw: np.ndarray  # (C, K) cumulative weights
    drv_cw: np.ndarray


def _world(rng: np.random.Generator, cities: int, center: tuple[float, float]) -> _World:
    if cities == 1:
        lat, lng = np.array([center[0]], float), np.array([center[1]], float)
    else:
        known = WORLD_CITIES[: min(cities, len(WORLD_CITIES))]
        lat = np.array([c[1] for c in known], float)
        lng = np.array([c[2] for c in known], float)
        extra = cities - len(known)
        if extra > 0:  # seeded random centres, uniform on the sphere between 50 S and 70 N
            z = rng.uniform(math.sin(math.radians(-50)), math.sin(math.radians(70)), extra)
            lat = np.concatenate([lat, np.degrees(np.arcsin(z))])
            lng = np.concatenate([lng, rng.uniform(-180, 180, extra)])
    c = len(lat)
    share = 1.0 / np.arange(1, c + 1) ** 0.9
    share /= share.sum()
    scale = np.clip((share / share[0]) ** 0.3, 0.35, 1.0)
    mux, muy, sd = np.zeros((c, _K)), np.zeros((c, _K)), np.zeros((c, _K))
    sd[:, 0] = 1.6 * scale
    dist = rng.uniform(3.0, 9.0, (c, 5)) * scale[:, None]
    ang = rng.uniform(0, 2 * np.pi, (c, 5))
    mux[:, 1:6], muy[:, 1:6] = dist * np.cos(ang), dist * np.sin(ang)
    sd[:, 1:6] = rng.uniform(0.8, 1.6, (c, 5)) * scale[:, None]
    a_ang = rng.uniform(0, 2 * np.pi, c)
    a_dist = 15.0 * np.clip(scale, 0.6, 1.0)
    mux[:, _AIRPORT], muy[:, _AIRPORT], sd[:, _AIRPORT] = a_dist * np.cos(a_ang), a_dist * np.sin(a_ang), 0.35
    sd[:, 7] = 7.0 * scale
    jitter = rng.dirichlet(np.full(5, 8.0), c) * _REQ_W[1:6].sum()
    req_w = np.tile(_REQ_W, (c, 1))
    req_w[:, 1:6] = jitter
    drv_w = np.tile(_DRV_W, (c, 1))
    return _World(
        lat=lat,
        lng=lng,
        utc_offset_h=np.round(lng / 15.0),
        share=share,
        mux=mux,
        muy=muy,
        sd=sd,
        req_cw=np.cumsum(req_w / req_w.sum(1, keepdims=True), 1),
        drv_cw=np.cumsum(drv_w / drv_w.sum(1, keepdims=True), 1),
    )


def _component(rng: np.random.Generator, cw: np.ndarray, city: np.ndarray) -> np.ndarray:
    u = rng.random(len(city))
    return np.minimum((u[:, None] > cw[city]).sum(1), _K - 1)


def _to_latlng(w: _World, city: np.ndarray, x_km: np.ndarray, y_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clat = w.lat[city]
    lat = np.clip(clat + y_km / KM_PER_DEG_LAT, -89.9, 89.9)
    lng = w.lng[city] + x_km / (KM_PER_DEG_LNG * np.cos(np.radians(clat)))
    lng = (lng + 180.0) % 360.0 - 180.0  # across the antimeridian
    return np.round(lat, 6), np.round(lng, 6)  # ~0.1 m, as GPS fixes are recorded


def _ids(prefix: str, first: int, n: int, width: int) -> pa.Array:
    num = pa.array(np.arange(first, first + n, dtype=np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), pc.utf8_lpad(num, width=width, padding="0"), "")


def _parse_start(start) -> datetime:
    if isinstance(start, datetime):
        dt = start
    else:
        dt = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# --------------------------------------------------------------------------- generation


def _rates(w: _World, start: datetime, minutes: int, requests_per_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(expected requests per (city, minute), local demand factor per (city, minute))."""
    utc_h = (start.hour + start.minute / 60 + start.second / 3600) + (np.arange(minutes) + 0.5) / 60.0
    local_h = utc_h[None, :] + w.utc_offset_h[:, None]
    f = demand_curve(local_h)  # (C, M)
    lam = w.share[:, None] * f
    lam *= requests_per_s * 60.0 * minutes / lam.sum()
    return lam, f


def _requests(rng, w: _World, writer: AtomicParquetWriter, start_ms: int, lam: np.ndarray, f: np.ndarray) -> int:
    c, minutes = lam.shape
    per_min = lam.sum(0)
    written = 0
    m0 = 0
    while m0 < minutes:
        # as many minutes as fit in CHUNK_ROWS expected rows (at least one)
        m1 = m0 + 1
        acc = per_min[m0]
        while m1 < minutes and acc + per_min[m1] <= CHUNK_ROWS:
            acc += per_min[m1]
            m1 += 1
        counts = rng.poisson(lam[:, m0:m1])  # (C, M')
        grid_city = np.repeat(np.arange(c, dtype=np.int32), m1 - m0)
        grid_min = np.tile(np.arange(m0, m1, dtype=np.int64), c)
        flat = counts.ravel()
        city = np.repeat(grid_city, flat)
        minute = np.repeat(grid_min, flat)
        n = len(city)
        m0 = m1
        if not n:
            continue
        t_ms = start_ms + minute * 60_000 + (rng.random(n) * 60_000).astype(np.int64)
        order = np.argsort(t_ms, kind="stable")
        city, minute, t_ms = city[order], minute[order], t_ms[order]
        comp = _component(rng, w.req_cw, city)
        sd = w.sd[city, comp]
        px = w.mux[city, comp] + sd * rng.standard_normal(n)
        py = w.muy[city, comp] + sd * rng.standard_normal(n)
        # destination: toward another hotspot (60 %) or any direction; airport pickups go downtown
        dcomp = _component(rng, w.req_cw, city)
        dsd = w.sd[city, dcomp]
        tx = w.mux[city, dcomp] + dsd * rng.standard_normal(n)
        ty = w.muy[city, dcomp] + dsd * rng.standard_normal(n)
        toward = rng.random(n) < 0.6
        ang = np.where(toward, np.arctan2(ty - py, tx - px), rng.uniform(0, 2 * np.pi, n))
        length = np.clip(rng.lognormal(math.log(4.0), 0.6, n), 0.4, 40.0)
        airport = comp == _AIRPORT
        cx = w.sd[city, 0] * rng.standard_normal(n)
        cy = w.sd[city, 0] * rng.standard_normal(n)
        dx = np.where(airport, cx, px + length * np.cos(ang))
        dy = np.where(airport, cy, py + length * np.sin(ang))
        length = np.where(airport, np.hypot(dx - px, dy - py), length)
        plat, plng = _to_latlng(w, city, px, py)
        dlat, dlng = _to_latlng(w, city, dx, dy)
        fac = f[city, minute]
        congestion = np.clip((fac - 0.2) / 1.3, 0.0, 1.0)
        speed = 8.5 * (1.0 - 0.35 * congestion) * rng.lognormal(0.0, 0.15, n)
        duration = np.maximum(np.round(length * 1000.0 * 1.3 / speed), 60.0)
        ride = rng.choice(len(RIDE_TYPES), size=n, p=RIDE_MIX)
        batch = pa.table(
            {
                "request_id": _ids("req-", written, n, 9),
                "request_time": pa.array(t_ms, pa.int64()).cast(TS),
                "pickup_lat": plat,
                "pickup_lng": plng,
                "dropoff_lat": dlat,
                "dropoff_lng": dlng,
                "ride_type": pa.array(RIDE_TYPES, pa.string()).take(pa.array(ride)),
                "trip_duration_s": duration,
            }
        )
        writer.write(batch)
        written += n
    return written


def _drivers(
    rng, w: _World, writer: AtomicParquetWriter, n_drivers: int, start_ms: int, minutes: int, lam: np.ndarray
) -> int:
    c = len(w.lat)
    counts = rng.multinomial(n_drivers, w.share) if c > 1 else np.array([n_drivers])
    all_city = np.repeat(np.arange(c, dtype=np.int32), counts)
    hours = minutes / 60.0
    min_on = min(10.0 / 60.0, hours / 4.0)  # hours
    cdf = np.cumsum(lam, 1)
    cdf /= cdf[:, -1:]
    stacked = (cdf + np.arange(c)[:, None]).ravel()  # row c lives in (c, c+1]
    for i0 in range(0, n_drivers, CHUNK_ROWS):
        city = all_city[i0 : i0 + CHUNK_ROWS]
        n = len(city)
        comp = _component(rng, w.drv_cw, city)
        sd = w.sd[city, comp] * 1.3
        x = w.mux[city, comp] + sd * rng.standard_normal(n)
        y = w.muy[city, comp] + sd * rng.standard_normal(n)
        lat, lng = _to_latlng(w, city, x, y)
        veh = rng.choice(len(VEHICLE_TYPES), size=n, p=VEHICLE_MIX)
        length = np.clip(rng.lognormal(math.log(7.0), 0.35, n), 2.0, 12.0)
        k = np.searchsorted(stacked, city + rng.random(n) * (1 - 1e-12), side="left") - city.astype(np.int64) * minutes
        busy_mid = (np.clip(k, 0, minutes - 1) + rng.random(n)) / 60.0
        any_mid = rng.uniform(-length / 2, hours + length / 2)
        mid = np.where(rng.random(n) < 0.7, busy_mid, any_mid)
        s = mid - length / 2
        on = np.clip(s, 0.0, hours - min_on)
        off = np.clip(s + length, on + min_on, hours)
        rating = np.round(np.clip(5.0 - rng.gamma(1.3, 0.12, n), 1.0, 5.0), 2)
        batch = pa.table(
            {
                "driver_id": _ids("drv-", i0, n, 8),
                "lat": lat,
                "lng": lng,
                "vehicle_type": pa.array(VEHICLE_TYPES, pa.string()).take(pa.array(veh)),
                "online_from": pa.array(start_ms + np.round(on * 3_600_000).astype(np.int64)).cast(TS),
                "online_until": pa.array(start_ms + np.round(off * 3_600_000).astype(np.int64)).cast(TS),
                "rating": rating,
            }
        )
        writer.write(batch)
    return n_drivers


def synthesize(
    out,
    drivers_out,
    drivers: int = 5000,
    requests_per_s: float = 5.0,
    hours: float = 1.0,
    seed: int = 0,
    start="2026-01-05T06:00:00Z",
    cities: int = 1,
    center: tuple[float, float] = DEFAULT_CENTER,
) -> SynthReport:
    """Write a synthetic trace to ``out`` and its fleet to ``drivers_out`` (both atomic Parquet).

    ``requests_per_s`` is the mean rate over the window of ``hours`` from ``start`` (UTC);
    ``cities`` > 1 spreads rate and fleet over that many cities around the world.
    """
    if drivers < 0 or requests_per_s <= 0 or hours <= 0 or cities < 1:
        raise ValueError("synthesize: drivers >= 0, requests_per_s > 0, hours > 0 and cities >= 1 required")
    t0 = time.perf_counter()
    start_dt = _parse_start(start)
    start_ms = int(start_dt.timestamp() * 1000)
    minutes = max(1, int(round(hours * 60)))
    world_ss, drv_ss, req_ss = np.random.SeedSequence(seed).spawn(3)
    w = _world(np.random.default_rng(world_ss), cities, center)
    lam, f = _rates(w, start_dt, minutes, requests_per_s)
    with AtomicParquetWriter(out, REQUESTS) as rw:
        n_req = _requests(np.random.default_rng(req_ss), w, rw, start_ms, lam, f)
        with AtomicParquetWriter(drivers_out, DRIVERS) as dw:
            n_drv = _drivers(np.random.default_rng(drv_ss), w, dw, drivers, start_ms, minutes, lam)
    return SynthReport(
        out=os.fspath(out),
        drivers_out=os.fspath(drivers_out),
        requests=n_req,
        drivers=n_drv,
        cities=len(w.lat),
        start=start_dt,
        hours=minutes / 60.0,
        requests_per_s=requests_per_s,
        seed=seed,
        seconds=time.perf_counter() - t0,
        center=(float(w.lat[0]), float(w.lng[0])),
    )
