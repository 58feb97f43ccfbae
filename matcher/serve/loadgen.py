"""``matcher loadgen``: replay a trace against a live service in accelerated real time.

Riders post the trace's requests at the trace's times divided by ``--speed`` (with an
``Idempotency-Key``: a retried request after a timeout or a restart is the same ride),
from a process of their own (:class:`Riders`), starting ``WARMUP_S`` after the fleet.
Simulated driver apps ping every 4 s of wall time, through the batched endpoint as
Arrow IPC (``--single-share`` of them one by one through ``PUT /v1/drivers/location``),
long-poll ``GET /v1/drivers/offer``, answer with the replay's response model (accept
with ``--accept-prob`` after an exponential response time of mean 6 s, keyed by
request and attempt as in :mod:`matcher.sim.rand`; an answer later than the offer
timeout is never sent), drive to the pickup at the offer's ETA, report ``arrived``,
``in_progress`` after 30 s of boarding, drive the trip, report ``completed``. Every
duration of the trace's world is divided by ``--speed``. Drivers are online for the
whole run (the driver file's shifts are not replayed).

At the end it waits for every ride to end (polling the rides it did not finish itself)
and writes ``OUT/loadgen.json``: counts by HTTP status per endpoint, achieved pings/s
and requests/s, and p50/p99 of ``request_post_ms``, ``location_put_ms``,
``batch_put_ms`` and ``request_to_offer_ms`` (from the moment the request was sent to
the moment its first offer reached a driver app).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

from matcher.config import VEHICLE_TYPES, SimConfig
from matcher.core import geo
from matcher.errors import MatcherError
from matcher.io import trace as trace_mod
from matcher.serve.auth import issue, load_secret
from matcher.sim import fleet as fleet_mod
from matcher.sim import rand

PING_INTERVAL_S = 4.0
PING_SLOTS = 20  # the fleet's pings are spread over this many batches per interval
# HTTP connection pools: httpcore scans every connection of a pool for each request it
# assigns (a socket syscall per connection), so many small pools cost far less CPU than a
# few big ones. A driver app has at most one call in flight (its long poll, or the answer
# and status calls that follow it), so a pool of DRIVERS_PER_POOL drivers needs that many
# connections; riders' posts go round-robin over RIDER_POOLS pools of CONNS_PER_POOL.
DRIVERS_PER_POOL = 8
RIDER_POOLS = 16
CONNS_PER_POOL = 8
# ping calls in flight at most; a slot's pings beyond it are dropped (and counted), as a
# gateway drops a ping that the next one supersedes: a queue of waiting calls in one
# httpcore pool costs time quadratic in its length, and a service slower than the pings
# once made such a queue take the generator's whole CPU
MAX_PING_CALLS = 16
# riders start once the fleet is online: every driver has pinged and holds its first poll
WARMUP_S = PING_INTERVAL_S + 4.0
_TERMINAL = {"completed", "cancelled", "expired"}


@dataclass(frozen=True)
class LoadgenConfig:
    trace: str
    url: str
    out: str
    drivers: str | int | None = None
    speed: float = 1.0
    secret_file: str | None = None
    duration_s: float | None = None  # post the requests of this many wall seconds (None: the whole trace)
    seed: int = 0
    accept_prob: float = SimConfig.accept_prob
    response_s: float = SimConfig.response_s
    offer_timeout_s: float = SimConfig.offer_timeout_s  # the service's; a later answer is never sent
    dwell_s: float = SimConfig.dwell_s
    trip_speed_mps: float = SimConfig.trip_speed_mps
    single_share: float = 0.05
    drain_timeout_s: float = 600.0
    long_poll_s: float = 20.0
    retry_s: float = 120.0  # keep retrying a call that fails (connection error, 5xx) this long


class Stats:
    def __init__(self):
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.pings_sent = 0
        self.pings_accepted = 0
        self.pings_dropped = 0  # not sent: MAX_PING_CALLS were in flight

    def record(self, what: str, status: int | str, ms: float | None = None) -> None:
        self.status[what][str(status)] += 1
        if ms is not None:
            self.ms[what].append(ms)

    def pct(self, name: str) -> dict:
        v = np.asarray(self.ms.get(name, []), np.float64)
        if v.size == 0:
            return {"n": 0, "p50": None, "p99": None, "max": None}
        p50, p99 = np.percentile(v, [50, 99])
        return {"n": int(v.size), "p50": float(p50), "p99": float(p99), "max": float(v.max())}


@dataclass(frozen=True)
class Rides:
    """The trace's requests as the riders post them: row i at wall second ``t[i]`` after the warm-up."""

    ids: list[str]
    t: np.ndarray
    plat: np.ndarray
    plng: np.ndarray
    dlat: np.ndarray
    dlng: np.ndarray
    ride_type: list[str]
    trip_s: np.ndarray


def read_rides(cfg: LoadgenConfig) -> tuple[Rides, pa.Table, int]:
    """The rides of ``cfg.trace`` (within ``--duration``), its table and its first request time (ms)."""
    table, _ = trace_mod.read_requests(cfg.trace)
    ms = table.column("request_time").cast(pa.int64()).to_numpy()
    t0_ms = int(ms[0])
    t = (ms - t0_ms) / 1000.0 / cfg.speed  # wall seconds after start
    if cfg.duration_s is not None:
        keep = t <= cfg.duration_s
        table, t = table.filter(pa.array(keep)), t[keep]
    if table.num_rows == 0:
        raise MatcherError("loadgen: no request to post within --duration")

    def f(c):
        return table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)

    plat, plng, dlat, dlng = f("pickup_lat"), f("pickup_lng"), f("dropoff_lat"), f("dropoff_lng")
    n = table.num_rows
    # a trace without dropoffs: the dropoff is another request's pickup (as the replay does)
    other = np.minimum((rand.uniform(cfg.seed, rand.RandStream.TRIP_DIR, np.arange(n), 0) * n).astype(np.int64), n - 1)
    miss = ~np.isfinite(dlat) | ~np.isfinite(dlng)
    dlat[miss], dlng[miss] = plat[other[miss]], plng[other[miss]]
    rides = Rides(
        table.column("request_id").to_pylist(), t, plat, plng, dlat, dlng, table.column("ride_type").to_pylist(),
        f("trip_duration_s"),
    )  # fmt: skip
    return rides, table, t0_ms


class ApiCaller:
    """API calls with retries and a gate per connection pool (the drivers' and the riders' side)."""

    def __init__(self, cfg: LoadgenConfig):
        self.cfg = cfg
        self._gates: dict[int, asyncio.Semaphore] = {}  # per connection pool (`_gate`)
        self.stats = Stats()

    def pool(self, n: int) -> httpx.AsyncClient:
        """A connection pool of ``n`` connections whose calls wait at its gate beyond them."""
        limits = httpx.Limits(max_connections=n, keepalive_expiry=120.0)  # no reconnects between polls
        c = httpx.AsyncClient(base_url=self.cfg.url, limits=limits, timeout=httpx.Timeout(30.0, connect=10.0))
        self._gates[id(c)] = asyncio.Semaphore(n)
        return c

    def _gate(self, client: httpx.AsyncClient) -> asyncio.Semaphore:
        """At most as many calls of a pool in flight as it has connections: the others wait here,
        not in httpcore's queue, whose scan on every event costs time quadratic in its length (a
        service slower than the offered load once made it take the generator's whole CPU)."""
        return self._gates.setdefault(id(client), asyncio.Semaphore(64))

    async def call(self, client: httpx.AsyncClient, what: str, method: str, url: str, **kw) -> httpx.Response | None:
        """One API call, retried on connection errors and 5xx (a restarting service) for retry_s."""
        deadline = time.monotonic() + self.cfg.retry_s
        delay = 0.2
        while True:
            t0 = time.perf_counter()
            try:
                async with self._gate(client):
                    r = await client.request(method, url, **kw)
            except httpx.HTTPError as e:
                self.stats.record(what, type(e).__name__)
                r = None
            else:
                self.stats.record(
                    what, r.status_code, (time.perf_counter() - t0) * 1e3 if r.status_code < 500 else None
                )
                if r.status_code < 500:
                    return r
            if time.monotonic() > deadline:
                return r
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class Loadgen(ApiCaller):
    def __init__(self, cfg: LoadgenConfig):
        super().__init__(cfg)
        rides, table, t0_ms = read_rides(cfg)
        self.ids, self.trip_s = rides.ids, rides.trip_s  # the riders' process posts them at their times
        fleet, dids, _ = fleet_mod.load(cfg.drivers, table, t0_ms, cfg.seed)
        self.driver_ids = [str(x) for x in dids.to_pylist()]
        m = len(self.driver_ids)
        self.vehicle = [VEHICLE_TYPES[int(v)] for v in fleet.vehicle]
        self.rating = np.asarray(fleet.rating, np.float64)
        # driver kinematics: a straight line from (lat0, lng0) at t0 to (lat1, lng1) at t1 (wall seconds)
        self.lat0, self.lng0 = np.asarray(fleet.lat, np.float64).copy(), np.asarray(fleet.lng, np.float64).copy()
        self.lat1, self.lng1 = self.lat0.copy(), self.lng0.copy()
        self.kt0, self.kt1 = np.zeros(m), np.zeros(m)
        self.heading = np.zeros(m)
        self.on_trip = np.zeros(m, bool)
        self.single = rand.uniform(cfg.seed, rand.RandStream.FLEET, np.arange(m), 7) < cfg.single_share
        secret = load_secret(cfg.secret_file)
        self.service_token = issue(secret, "service", "loadgen")
        self.driver_tokens = [
            issue(secret, "driver", d, vehicle=v, rating=float(r) if np.isfinite(r) else None)
            for d, v, r in zip(self.driver_ids, self.vehicle, self.rating)
        ]
        self.ride_row: dict[str, int] = {}  # ride id -> trace row
        self.sent_at: dict[int, float] = {}
        self.first_offer: dict[str, float] = {}
        self.attempts: Counter = Counter()
        self.ignored: set[str] = set()
        self.ended: dict[str, str] = {}
        self.start = 0.0
        self.stop: asyncio.Event | None = None  # created in the running loop

    # ---------------------------------------------------------------- helpers
    def now(self) -> float:
        return time.perf_counter() - self.start

    def position(self, keys: np.ndarray, t: float):
        span = np.maximum(self.kt1[keys] - self.kt0[keys], 1e-9)
        a = np.clip((t - self.kt0[keys]) / span, 0.0, 1.0)
        lat = self.lat0[keys] + a * (self.lat1[keys] - self.lat0[keys])
        lng = self.lng0[keys] + a * (self.lng1[keys] - self.lng0[keys])
        moving = (t < self.kt1[keys]) & (self.kt1[keys] > self.kt0[keys])
        return lat, lng, np.where(moving, self.heading[keys], 0.0), moving

    def drive(self, k: int, lat: float, lng: float, dur: float) -> None:
        t = self.now()
        la, ln, _, _ = self.position(np.array([k]), t)
        self.lat0[k], self.lng0[k], self.kt0[k] = la[0], ln[0], t
        self.lat1[k], self.lng1[k], self.kt1[k] = lat, lng, t + max(dur, 1e-3)
        self.heading[k] = float(geo.bearing_deg(la[0], ln[0], lat, lng))

    def speed_mps(self, k: int, moving: bool) -> float:
        if not moving:
            return 0.0
        d = float(geo.haversine_m(self.lat0[k], self.lng0[k], self.lat1[k], self.lng1[k]))
        return min(d / max(self.kt1[k] - self.kt0[k], 1e-3) / self.cfg.speed, 99.0)

    # ----------------------------------------------------------------- riders
    async def riders(self) -> None:
        """Post the trace's requests from the riders' own process (`Riders`); take in each acknowledged
        ride as it comes, so that the drivers know its trace row and when it was sent."""
        # a fresh interpreter (`python -m matcher.serve.riders`), whatever script runs this one;
        # its messages come on a pipe of their own, one JSON line each
        rfd, wfd = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-m", "matcher.serve.riders", str(wfd), repr(self.start)],
            stdin=subprocess.PIPE, pass_fds=(wfd,), text=True,
        )  # fmt: skip
        os.close(wfd)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(asdict(self.cfg)))
        proc.stdin.close()
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def read() -> None:
            try:
                with os.fdopen(rfd, "r") as lines:
                    for line in lines:
                        loop.call_soon_threadsafe(self._from_riders, json.loads(line), done)
                loop.call_soon_threadsafe(self._from_riders, ["gone"], done)
            except RuntimeError:
                pass  # the loop closed: nobody waits any more

        threading.Thread(target=read, name="matcher-loadgen-riders", daemon=True).start()
        try:
            await done
        finally:
            try:
                await asyncio.to_thread(proc.wait, 10.0)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _from_riders(self, msg: list, done: asyncio.Future) -> None:
        kind = msg[0]
        if kind == "ack":
            _, i, rid, sent_at, auth = msg
            self.sent_at[i] = sent_at
            self.ride_row[rid] = i
            self.rider_headers[rid] = {"Authorization": auth}
        elif done.done():
            return
        elif kind == "done":
            _, self.posting_s, status, ms = msg
            for what, counts in status.items():
                self.stats.status[what].update(counts)
            for what, values in ms.items():
                self.stats.ms[what].extend(values)
            done.set_result(None)
        else:
            why = msg[1] if kind == "error" else "it ended without a word (its error is above)"
            done.set_exception(MatcherError(f"loadgen: the riders' process failed: {why}"))

    # ------------------------------------------------------------------ pings
    async def pinger(self, client: httpx.AsyncClient) -> None:
        m = len(self.driver_ids)
        slot_of = np.arange(m) % PING_SLOTS
        batch_keys = [np.flatnonzero((slot_of == s) & ~self.single) for s in range(PING_SLOTS)]
        single_keys = [np.flatnonzero((slot_of == s) & self.single) for s in range(PING_SLOTS)]
        period = PING_INTERVAL_S / PING_SLOTS
        s = 0
        nxt = self.now()
        pending: set[asyncio.Task] = set()
        while not self.stop.is_set():
            t = self.now()
            work = [(self.batch, batch_keys[s])] if len(batch_keys[s]) else []
            work += [(self.single_ping, int(k)) for k in single_keys[s]]
            for send, keys in work:
                if len(pending) >= MAX_PING_CALLS:
                    self.stats.pings_dropped += np.size(keys)
                    continue
                task = asyncio.create_task(send(client, keys, t))
                pending.add(task)
                task.add_done_callback(pending.discard)
            s = (s + 1) % PING_SLOTS
            nxt += period
            # a plain sleep, not wait_for(stop.wait()): on Python 3.11, wait_for swallows a
            # cancel that comes as its inner wait ends, and a cancelled pinger went on to wait
            # for its stuck calls forever; a stop is seen within one slot (0.2 s)
            await asyncio.sleep(max(0.0, nxt - self.now()))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def batch(self, client: httpx.AsyncClient, keys: np.ndarray, t: float) -> None:
        lat, lng, heading, moving = self.position(keys, t)
        speed = [self.speed_mps(int(k), bool(mv)) for k, mv in zip(keys, moving)]
        table = pa.table({
            "driver_id": pa.array([self.driver_ids[k] for k in keys], pa.string()),
            "lat": lat, "lng": lng, "heading": np.mod(heading, 360.0), "speed_mps": np.asarray(speed),
            "status": pa.array(np.where(self.on_trip[keys], "on_trip", "available").tolist(), pa.string()),
            "vehicle": pa.array([self.vehicle[k] for k in keys], pa.string()),
            "rating": self.rating[keys],
        })  # fmt: skip
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        headers = {"Authorization": f"Bearer {self.service_token}",
                   "Content-Type": "application/vnd.apache.arrow.stream"}  # fmt: skip
        self.stats.pings_sent += len(keys)
        r = await self.call(client, "batch_put", "PUT", "/v1/drivers/locations", content=sink.getvalue().to_pybytes(),
                            headers=headers)  # fmt: skip
        if r is not None and r.status_code == 200:
            self.stats.pings_accepted += int(r.json().get("accepted", 0))

    async def single_ping(self, client: httpx.AsyncClient, k: int, t: float) -> None:
        lat, lng, heading, moving = self.position(np.array([k]), t)
        body = {"lat": float(lat[0]), "lng": float(lng[0]), "heading": float(np.mod(heading[0], 360.0)),
                "speed_mps": self.speed_mps(k, bool(moving[0])),
                "status": "on_trip" if self.on_trip[k] else "available"}  # fmt: skip
        self.stats.pings_sent += 1
        r = await self.call(client, "location_put", "PUT", "/v1/drivers/location", json=body,
                            headers={"Authorization": f"Bearer {self.driver_tokens[k]}"})  # fmt: skip
        if r is not None and r.status_code == 200:
            self.stats.pings_accepted += 1

    # ---------------------------------------------------------------- drivers
    async def driver(self, client: httpx.AsyncClient, k: int) -> None:
        h = {"Authorization": f"Bearer {self.driver_tokens[k]}"}
        m = len(self.driver_ids)
        # the first ping goes before the first poll; the fleet's first polls open over a second
        await asyncio.sleep(PING_INTERVAL_S + 0.5 + k / m)
        # The first poll of driver k waits (k + 1) / m of a long poll: the fleet's polls then end
        # spread over the period, as real apps' do, not all at once every long_poll_s (measured:
        # 2,500 polls ending together stalled the generator's event loop for 2.5 s).
        wait = self.cfg.long_poll_s * (k + 1) / m
        while not self.stop.is_set():
            r = await self.call(client, "offer_get", "GET", "/v1/drivers/offer",
                                params={"wait_s": wait}, headers=h, timeout=self.cfg.long_poll_s + 30)  # fmt: skip
            wait = self.cfg.long_poll_s
            if r is None or r.status_code != 200:
                if r is None or r.status_code != 204:
                    await asyncio.sleep(0.5)
                continue
            offer = r.json()
            if offer["offer_id"] in self.ignored:  # an offer left to time out, polled again
                await asyncio.sleep(min(max(offer.get("expires_in_seconds", 1.0), 0.1), 5.0))
                continue
            try:
                await self.answer(client, k, offer, h)
            except Exception as e:  # noqa: BLE001 - counted; the simulated app goes on
                self.stats.record("driver_error", type(e).__name__)
                self.on_trip[k] = False

    async def answer(self, client: httpx.AsyncClient, k: int, offer: dict, h: dict) -> None:
        cfg = self.cfg
        rid = offer["ride_id"]
        now = self.now()
        for _ in range(100):  # the offer may arrive before the POST's answer does
            if rid in self.ride_row:
                break
            await asyncio.sleep(0.05)
        i = self.ride_row.get(rid, -1)
        if rid not in self.first_offer and i >= 0:
            self.first_offer[rid] = now
            self.stats.ms["request_to_offer_ms"].append((now - self.sent_at[i]) * 1e3)
        self.attempts[rid] += 1
        c = self.attempts[rid]
        key = i if i >= 0 else abs(hash(rid)) % (1 << 31)
        resp = rand.exponential1(cfg.response_s, cfg.seed, rand.RandStream.RESPONSE, key, c)
        accept = rand.uniform1(cfg.seed, rand.RandStream.ACCEPT, key, c) < cfg.accept_prob
        if resp >= cfg.offer_timeout_s:  # would answer too late: the offer times out at the service
            self.ignored.add(offer["offer_id"])
            return
        await asyncio.sleep(resp / cfg.speed)
        verb = "accept" if accept else "decline"
        r = await self.call(client, f"offer_{verb}", "POST", f"/v1/offers/{offer['offer_id']}/{verb}", headers=h)
        if not accept or r is None or r.status_code != 200:
            return
        # drive to the pickup, board, drive the trip
        eta = float(offer.get("eta_seconds") or 60.0)
        self.drive(k, offer["pickup_lat"], offer["pickup_lng"], eta / cfg.speed)
        await asyncio.sleep(eta / cfg.speed)
        for status, wait in (("arrived", cfg.dwell_s / cfg.speed), ("in_progress", None)):
            r = await self.call(client, "ride_status", "PUT", f"/v1/rides/{rid}/status", json={"status": status},
                                headers=h)  # fmt: skip
            if r is None or r.status_code != 200:  # cancelled meanwhile
                self.note_end(rid, r)
                return
            if wait:
                await asyncio.sleep(wait)
        self.on_trip[k] = True
        trip = self.trip_s[i] if i >= 0 and np.isfinite(self.trip_s[i]) else None
        if trip is None:
            d = float(geo.haversine_m(offer["pickup_lat"], offer["pickup_lng"], offer["destination_lat"],
                                      offer["destination_lng"]))  # fmt: skip
            trip = d * 1.3 / cfg.trip_speed_mps
        self.drive(k, offer["destination_lat"], offer["destination_lng"], trip / cfg.speed)
        await asyncio.sleep(trip / cfg.speed)
        r = await self.call(client, "ride_status", "PUT", f"/v1/rides/{rid}/status", json={"status": "completed"},
                            headers=h)  # fmt: skip
        self.on_trip[k] = False
        if r is not None and r.status_code == 200:
            self.ended[rid] = "completed"
        else:
            self.note_end(rid, r)

    def note_end(self, rid: str, r: httpx.Response | None) -> None:
        if r is not None and r.status_code == 409:
            state = r.json().get("state")
            if state in _TERMINAL:
                self.ended[rid] = state

    # ------------------------------------------------------------------- end
    async def drain(self, pools: list[httpx.AsyncClient]) -> None:
        """After the last request: poll the rides not known to have ended until all have."""
        deadline = self.now() + self.cfg.drain_timeout_s
        while self.now() < deadline:
            open_ = [rid for rid in self.ride_row if rid not in self.ended]
            if not open_:
                break
            for j in range(0, len(open_), 50):
                rs = await asyncio.gather(*[
                    self.call(pools[n % len(pools)], "ride_get", "GET", f"/v1/rides/{rid}",
                              headers=self.rider_headers[rid])
                    for n, rid in enumerate(open_[j:j + 50])
                ])  # fmt: skip
                for rid, r in zip(open_[j : j + 50], rs):
                    if r is not None and r.status_code == 200 and r.json()["status"] in _TERMINAL:
                        self.ended.setdefault(rid, r.json()["status"])
            await asyncio.sleep(1.0)

    async def main(self) -> dict:
        self.stop = asyncio.Event()
        self.rider_headers: dict[str, dict] = {}
        m = len(self.driver_ids)
        pool = self.pool
        per = DRIVERS_PER_POOL
        driver_pools = [pool(per) for _ in range((m + per - 1) // per)]
        ping_pool = pool(MAX_PING_CALLS)
        rider_pools = [pool(CONNS_PER_POOL) for _ in range(RIDER_POOLS)]
        async with rider_pools[0] as client:
            try:
                r = await client.get("/healthz")
                r.raise_for_status()
            except httpx.HTTPError as e:
                raise MatcherError(f"loadgen: the service at {self.cfg.url} does not answer /healthz ({e})") from None
            self.start = time.perf_counter()
            pinger = asyncio.create_task(self.pinger(ping_pool))
            drivers = [asyncio.create_task(self.driver(driver_pools[k // per], k)) for k in range(m)]
            await self.riders()
            await self.drain(rider_pools)
            self.stop.set()
            end = self.now()
            for t in drivers:
                t.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)
            await pinger
            for c in [*driver_pools, ping_pool, *rider_pools[1:]]:
                await c.aclose()
        return self.result(end)

    def result(self, end: float) -> dict:
        s = self.stats
        posted = len(self.ids)
        outcomes = Counter(self.ended.values())
        out = {
            "config": {k: v for k, v in asdict(self.cfg).items() if k != "secret_file"},
            "drivers": len(self.driver_ids),
            "drivers_single_ping": int(self.single.sum()),
            "requests_posted": posted,
            "requests_acknowledged": len(self.ride_row),
            "rides_ended": len(self.ended),
            "rides_open": len(self.ride_row) - len(self.ended),
            "outcomes": dict(outcomes),
            "wall_seconds": end,
            "posting_seconds": getattr(self, "posting_s", end),
            "requests_per_s": posted / max(getattr(self, "posting_s", end), 1e-9),
            "pings_sent": s.pings_sent,
            "pings_accepted": s.pings_accepted,
            "pings_dropped": s.pings_dropped,
            "pings_per_s": s.pings_accepted / max(end, 1e-9),
            "http_status": {k: dict(v) for k, v in sorted(s.status.items())},
            "request_post_ms": s.pct("request_post"),
            "location_put_ms": s.pct("location_put"),
            "batch_put_ms": s.pct("batch_put"),
            "request_to_offer_ms": s.pct("request_to_offer_ms"),
        }
        return out


def run_loadgen(cfg: LoadgenConfig) -> dict:
    from matcher.serve.gcpolicy import rare_full_collections

    lg = Loadgen(cfg)
    rare_full_collections()  # its thousands of driver coroutines made full collections pause every call
    result = asyncio.run(lg.main())
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    from matcher.io.atomic import write_json

    path = out / "loadgen.json"
    write_json(path, _clean(result))
    result["path"] = str(path)
    return result


def _clean(o):
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, np.generic):
        return o.item()
    return o


def dumps(result: dict) -> str:
    return json.dumps(_clean(result), indent=2)
