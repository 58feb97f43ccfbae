"""The live dispatcher: ride and driver state, the wall-clock tick loop, recovery.

It drives the SAME coordinator and shard backends as the replay
(:mod:`matcher.dist.coordinator`, :mod:`matcher.dist.backend`): every ``window_s``
seconds of wall time, the drivers that reported since the last tick go to the
shards as one columnar ping batch, the searching rides as one request batch, and
the merged matches come back as offers. The backend is injected: Ray shard actors
in ``matcher serve``, the in-process backend in tests.

Guarantees:
- every ride and driver state change goes through :mod:`matcher.core.states`; an
  API call asking for an illegal one gets :class:`Conflict` (409) with the current
  state and changes nothing;
- a driver holds at most one ride: a match is applied only if its ride is still
  searching and its driver still available (the state may have moved while the
  shards solved), otherwise it is dropped and the driver's true status goes back
  to the shards at the next tick;
- a change that a caller is told about is in the journal first (:mod:`.durability`):
  the API answers after the journal's group commit. Recovery replays the journal
  through the same transition functions, so a restarted service holds exactly the
  rides it acknowledged, in their last acknowledged state.

Thread model: HTTP handlers and the tick thread share one lock; the shards' solve
runs outside it, so API calls are never blocked by a solve.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from matcher.config import RIDE_TYPES, VEHICLE_TYPES, MatchConfig, ServeConfig, ShardConfig, SurgeConfig
from matcher.core import surge
from matcher.core.candidates import RequestBatch
from matcher.core.driver_table import Pings
from matcher.core.states import DriverStatus as D
from matcher.core.states import RideState as R
from matcher.core.states import check_driver, check_ride, is_terminal
from matcher.dist.backend import ShardBackend
from matcher.dist.coordinator import Coordinator, make_router
from matcher.serve import pricing
from matcher.serve.durability import Store
from matcher.serve.ingest import PingIngest
from matcher.serve.livelog import LiveLogs
from matcher.serve.rides import (
    Conflict,
    DispatchError,
    Forbidden,
    Invalid,
    NotFound,
    Ride,
    Transitions,
    Unavailable,
    state_name,
)

_log = logging.getLogger("matcher.serve")
Callback = Callable[[BaseException | None], None]


__all__ = ["Conflict", "DispatchError", "Dispatcher", "Forbidden", "Invalid", "NotFound", "Unavailable"]


@dataclass
class TickJob:
    k: int
    t: float
    pings: Pings
    reqs: RequestBatch
    t_wall0: float
    demand_cells: np.ndarray  # surge: the cells of the rides pending at this tick ...
    supply_cells: np.ndarray  # ... and of the drivers available at it (before the solve)


class Dispatcher(PingIngest, Transitions):
    def __init__(
        self,
        cfg: ServeConfig,
        backend: ShardBackend,
        match: MatchConfig | None = None,
        surge_cfg: SurgeConfig | None = None,
        clock: Callable[[], float] = time.time,
        fleet: dict | None = None,
    ):
        self.cfg, self.match = cfg, match or MatchConfig()
        self.surge_cfg = surge_cfg or SurgeConfig()
        self.clock = clock
        self.lock = threading.RLock()
        self.out = Path(cfg.out)
        self.store = Store(self.out, cfg.commit_interval_s)
        n = cfg.max_drivers
        # drivers: one slot per key (keys are handed out on first sight)
        self.key_of: dict[str, int] = {}
        self.driver_ids: list[str] = []
        self.status = np.full(n, int(D.OFFLINE), np.int8)
        self.ride_of = np.full(n, -1, np.int64)
        self.vehicle = np.zeros(n, np.int8)
        self.rating = np.full(n, 5.0, np.float32)
        self.lat, self.lng = np.zeros(n), np.zeros(n)
        self.heading, self.speed = np.zeros(n, np.float32), np.zeros(n, np.float32)
        self.last_ts = np.full(n, -np.inf)
        self.self_busy = np.zeros(n, bool)  # reports on_trip without a ride of ours
        self.dirty = np.zeros(n, bool)  # the shards must hear about this driver next tick
        self.fixed_fleet = fleet is not None
        for did, (veh, rating) in (fleet or {}).items():
            k = self._register(did)
            self.vehicle[k], self.rating[k] = veh, rating
        # rides
        self.rides: list[Ride] = []
        self.by_id: dict[str, Ride] = {}
        self.idem: dict[tuple[str, str], Ride] = {}
        self.searching: dict[int, Ride] = {}
        self.offered: dict[int, Ride] = {}
        self.waiters: dict[int, list[Callable[[dict], None]]] = {}
        self.k = -1
        self.surge = surge.SurgeState.empty()
        self._surge_t = math.nan
        self._index: pricing.SupplyIndex | None = None
        self._index_tick = -2
        self.counters = dict.fromkeys(
            ("requests", "matches", "accepts", "declines", "timeouts", "pickups", "dropoffs", "cancels", "expires"), 0
        )
        self.pings = 0
        self.refused: dict[str, int] = {}
        self.tick_ms: list[float] = []
        self.ping_samples: list[tuple[float, int]] = []  # (monotonic time, pings so far) at each tick
        self.last_tick: dict = {}
        self.failed_ticks = 0
        self.late_ticks = 0
        self.sessions = 1
        start = self.store.start_record()
        self.t0_ms = int(start["t0_ms"]) if start else int(clock() * 1000)
        self.t0 = self.t0_ms / 1000.0
        self.recovered_rides = 0
        self._recover()
        self.store.append({"t": "start", "t0_ms": self.t0_ms, "at_ms": int(clock() * 1000), "config": _cfg_json(cfg)})
        self.logs = LiveLogs(self.out, self.driver_ids, self.t0_ms, cfg.record_locations)
        shard_cfg = ShardConfig(shards=backend.n_shards)
        self.coord = Coordinator(backend, make_router(shard_cfg, self.match), n, self.match, shard_cfg)
        self.backend = backend
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_wall = time.perf_counter()
        self.closed = False

    # ---------------------------------------------------------------- helpers
    def now(self) -> float:
        return self.clock() - self.t0

    def _ts_ms(self, t: float) -> int:
        return self.t0_ms + round(t * 1000.0)

    def _register(self, did: str) -> int:
        k = self.key_of.get(did)
        if k is None:
            k = len(self.driver_ids)
            if k >= self.cfg.max_drivers:
                raise Unavailable(f"the service is sized for {self.cfg.max_drivers} drivers (max_drivers)")
            self.key_of[did] = k
            self.driver_ids.append(did)
        return k

    def driver_key(self, did: str, vehicle: str | None = None, rating: float | None = None) -> int:
        """The key of a driver (registered on first sight unless the fleet is fixed by a file)."""
        with self.lock:
            k = self.key_of.get(did)
            if k is None:
                if self.fixed_fleet:
                    raise Forbidden(f"driver {did!r} is not in the service's driver file")
                k = self._register(did)
                if vehicle is not None:
                    self.vehicle[k] = VEHICLE_TYPES.index(vehicle)
                if rating is not None:
                    self.rating[k] = rating
            return k

    def _event(self, t: float, kind: str, ride: Ride | None = None, key: int = -1, **kw) -> None:
        self.store.event(
            self._ts_ms(t),
            max(self.k, 0),
            kind,
            request_id=ride.ride_id if ride is not None else None,
            driver_id=self.driver_ids[key] if key >= 0 else None,
            **kw,
        )

    def _drv(self, k: int, new: D) -> None:
        old = int(self.status[k])
        if old != int(new):
            self.status[k] = check_driver(D(old), new)
            self.dirty[k] = True

    def _ride(self, ride: Ride, new: R) -> None:
        ride.state = int(check_ride(R(ride.state), new))

    # -------------------------------------------------------------------- API
    def ride_view(self, ride: Ride) -> dict:
        k = ride.driver
        v = {
            "ride_id": ride.ride_id,
            "status": state_name(ride.state),
            "ride_type": RIDE_TYPES[ride.ride_type],
            "pickup_lat": ride.plat,
            "pickup_lng": ride.plng,
            "destination_lat": ride.dlat,
            "destination_lng": ride.dlng,
            "eta_to_pickup_seconds": ride.eta_est,
            "price_estimate": ride.price,
            "requested_at_ms": self._ts_ms(ride.t),
            "driver_id": self.driver_ids[k] if k >= 0 and ride.state != int(R.CANCELLED) else None,
        }
        return v

    def _offer_view(self, ride: Ride) -> dict:
        return {
            "offer_id": ride.offer_id,
            "ride_id": ride.ride_id,
            "pickup_lat": ride.plat,
            "pickup_lng": ride.plng,
            "destination_lat": ride.dlat,
            "destination_lng": ride.dlng,
            "ride_type": RIDE_TYPES[ride.ride_type],
            "eta_seconds": None if math.isnan(ride.offer_eta) else ride.offer_eta,
            "distance_meters": None if math.isnan(ride.offer_dist) else ride.offer_dist,
            "expires_in_seconds": max(0.0, ride.offer_deadline - self.now()),
        }

    def _supply(self, t: float) -> pricing.SupplyIndex:
        if self._index is None or self._index_tick != self.k:
            n = len(self.driver_ids)
            ok = self._eligible(n, t)
            keys = np.flatnonzero(ok)
            self._index = pricing.SupplyIndex(
                self.match,
                keys,
                self.lat[keys],
                self.lng[keys],
                self.heading[keys],
                self.speed[keys],
                self.vehicle[keys],
            )
            self._index_tick = self.k
        return self._index

    def _eligible(self, n: int, t: float) -> np.ndarray:
        return (
            (self.status[:n] == int(D.AVAILABLE))
            & ~self.self_busy[:n]
            & (t - self.last_ts[:n] <= self.match.gps_timeout_s)
        )

    def request_ride(self, rider: str, body, idem: str | None, cb: Callback) -> dict:
        """POST /v1/rides/request. ``cb`` runs once the ride's request event is durable."""
        with self.lock:
            if idem:
                old = self.idem.get((rider, idem))
                if old is not None:
                    same = (old.plat, old.plng, old.dlat, old.dlng, RIDE_TYPES[old.ride_type]) == (
                        body.pickup_lat, body.pickup_lng, body.destination_lat, body.destination_lng, body.ride_type,
                    )  # fmt: skip
                    if not same:
                        raise Invalid("this Idempotency-Key was used for a different request")
                    self.store.journal.barrier(cb)  # answered once the original is durable
                    return self.ride_view(old)
            t = self.now()
            rt = RIDE_TYPES.index(body.ride_type)
            cell = surge.cells_of(np.array([body.pickup_lat]), np.array([body.pickup_lng]), self.surge_cfg)
            mult = float(surge.multiplier_at(self.surge, cell)[0])
            price = pricing.price_estimate(
                self.cfg, self.match, body.ride_type, body.pickup_lat, body.pickup_lng,
                body.destination_lat, body.destination_lng, mult,
            )  # fmt: skip
            near = self._supply(t).nearest(body.pickup_lat, body.pickup_lng, rt, 1)
            eta = round(near[0].eta_s, 1) if near else None
            ride = Ride(
                len(self.rides), uuid.uuid4().hex[:20], rider, idem, t, body.pickup_lat, body.pickup_lng,
                body.destination_lat, body.destination_lng, rt, price, eta,
            )  # fmt: skip
            extra = {
                "rider": rider, "idem": idem, "dlat": ride.dlat, "dlng": ride.dlng,
                "ride_type": body.ride_type, "price": price, "eta_est": eta,
            }  # fmt: skip
            self.store.event(
                self._ts_ms(t), max(self.k, 0), "request", ride.ride_id, None, ride.plat, ride.plng,
                extra=extra, callback=cb,
            )  # fmt: skip
            self._do_request(ride)
            return self.ride_view(ride)

    def get_ride(self, ride_id: str, role: str, sub: str) -> dict:
        with self.lock:
            ride = self._ride_for(ride_id, role, sub, drivers_too=True)
            return self.ride_view(ride)

    def _ride_for(self, ride_id: str, role: str, sub: str, drivers_too: bool = False) -> Ride:
        ride = self.by_id.get(ride_id)
        if ride is None:
            raise NotFound(f"no ride {ride_id!r}")
        if role == "service":
            return ride
        if role == "rider" and ride.rider == sub:
            return ride
        if drivers_too and role == "driver" and ride.driver >= 0 and self.driver_ids[ride.driver] == sub:
            return ride
        raise Forbidden("this ride is not yours")

    def cancel(self, ride_id: str, role: str, sub: str, cb: Callback) -> dict:
        with self.lock:
            ride = self._ride_for(ride_id, role, sub)
            if ride.state == int(R.CANCELLED):
                self.store.journal.barrier(cb)
                return self.ride_view(ride)
            if is_terminal(R(ride.state)):
                raise Conflict(f"the ride is {state_name(ride.state)}", state=state_name(ride.state))
            self._do_cancel(ride, self.now(), log=True, cb=cb)
            return self.ride_view(ride)

    def current_offer(self, k: int) -> dict | None:
        with self.lock:
            i = int(self.ride_of[k])
            if i >= 0 and self.rides[i].state == int(R.MATCHED):
                return self._offer_view(self.rides[i])
            return None

    def wait_offer(self, k: int, notify: Callable[[dict], None]) -> dict | None:
        """The driver's pending offer now, or None after registering ``notify`` for the next one."""
        with self.lock:
            offer = self.current_offer(k)
            if offer is None:
                self.waiters.setdefault(k, []).append(notify)
            return offer

    def cancel_wait(self, k: int, notify) -> None:
        with self.lock:
            ws = self.waiters.get(k)
            if ws and notify in ws:
                ws.remove(notify)
                if not ws:
                    del self.waiters[k]

    def _offer_for(self, offer_id: str, k: int) -> Ride:
        ride_id, _, attempt = offer_id.rpartition(".")
        ride = self.by_id.get(ride_id)
        if ride is None or not attempt.isdigit() or not 1 <= int(attempt) <= ride.attempt:
            raise NotFound(f"no offer {offer_id!r}")
        if ride.offers[int(attempt) - 1] != k:
            raise Forbidden("this offer is not yours")
        if int(attempt) != ride.attempt or ride.driver != k:
            raise Conflict("the offer is no longer open", state=state_name(ride.state))
        return ride

    def answer_offer(self, offer_id: str, k: int, accept: bool, cb: Callback) -> dict:
        with self.lock:
            ride = self._offer_for(offer_id, k)
            if ride.state != int(R.MATCHED):
                if accept and ride.state == int(R.ACCEPTED):  # a retried accept
                    self.store.journal.barrier(cb)
                    return self.ride_view(ride)
                raise Conflict(f"the ride is {state_name(ride.state)}", state=state_name(ride.state))
            if accept:
                self._do_accept(ride, self.now(), log=True, cb=cb)
            else:
                self._do_decline(ride, self.now(), log=True, cb=cb)
                ride_view = self.ride_view(ride)
                ride_view["status"] = "declined"
                return ride_view
            return self.ride_view(ride)

    def ride_status(self, ride_id: str, k: int, status: str, cb: Callback) -> dict:
        with self.lock:
            ride = self.by_id.get(ride_id)
            if ride is None:
                raise NotFound(f"no ride {ride_id!r}")
            if ride.driver != k:
                raise Forbidden("this ride is not yours")
            s, t = R(ride.state), self.now()
            want = {"en_route": R.DRIVER_EN_ROUTE, "arrived": R.ARRIVED, "in_progress": R.IN_PROGRESS,
                    "completed": R.COMPLETED}[status]  # fmt: skip
            if s == want:  # a retried report
                self.store.journal.barrier(cb)
                return self.ride_view(ride)
            if want == R.ARRIVED and s == R.ACCEPTED:  # arriving implies having driven there
                self._do_state(ride, R.DRIVER_EN_ROUTE, t, log=True)
                s = R.DRIVER_EN_ROUTE
            if want not in _NEXT.get(s, ()):
                raise Conflict(f"a {state_name(s)} ride cannot become {state_name(want)}", state=state_name(ride.state))
            if want in (R.DRIVER_EN_ROUTE, R.ARRIVED):
                self._do_state(ride, want, t, log=True, cb=cb)
            elif want == R.IN_PROGRESS:
                self._do_pickup(ride, t, log=True, cb=cb)
            else:
                self._do_dropoff(ride, t, log=True, cb=cb)
            return self.ride_view(ride)

    def candidates(self, ride_id: str, lat: float, lng: float, ride_type: str) -> list[dict]:
        """POST /v1/dispatch/match: read-only; never changes a driver or a ride."""
        with self.lock:
            ride = self.by_id.get(ride_id)
            barred = ride.barred if ride is not None else []
            near = self._supply(self.now()).nearest(lat, lng, RIDE_TYPES.index(ride_type), self.match.k, barred)
            return [
                {
                    "driver_id": self.driver_ids[c.key],
                    "distance_meters": round(c.distance_m, 1),
                    "eta_seconds": round(c.eta_s, 1),
                    "rating": round(float(self.rating[c.key]), 2),
                }
                for c in near
            ]

    # ----------------------------------------------------------------- ticks
    def _shard_status(self, keys: np.ndarray) -> np.ndarray:
        st = self.status[keys].copy()
        st[(st == int(D.AVAILABLE)) & self.self_busy[keys]] = int(D.ON_TRIP)
        return st

    def _prepare(self) -> TickJob | None:
        with self.lock:
            t = self.now()
            w0 = time.perf_counter()
            self.k += 1
            for ride in [r for r in self.offered.values() if r.offer_deadline <= t]:
                self._do_decline(ride, t, log=True, timeout=True)
            for ride in [r for r in self.searching.values() if t - r.t >= self.cfg.patience_s]:
                self._do_expire(ride, t, log=True)
            pend = list(self.searching.values())
            if not pend:
                return None  # nothing to solve: the shards hear about moved drivers at the next busy tick
            n = len(self.driver_ids)
            keys = np.flatnonzero(self.dirty[:n] & np.isfinite(self.last_ts[:n]))
            self.dirty[keys] = False
            pings = Pings(
                key=keys, lat=self.lat[keys].copy(), lng=self.lng[keys].copy(), heading=self.heading[keys].copy(),
                speed=self.speed[keys].copy(), status=self._shard_status(keys), vehicle=self.vehicle[keys].copy(),
                rating=self.rating[keys].copy(), ts=self.last_ts[keys].copy(), owned=np.ones(len(keys), bool),
                shared=np.zeros(len(keys), bool),
            )  # fmt: skip
            pairs = [(r.idx, b) for r in pend for b in r.barred]
            bp = np.array(pairs, np.int64).reshape(-1, 2)
            reqs = RequestBatch(
                np.array([r.idx for r in pend], np.int64), np.array([r.plat for r in pend]),
                np.array([r.plng for r in pend]), np.array([r.ride_type for r in pend], np.int8),
                np.array([t - r.t for r in pend]), bp[:, 0].copy(), bp[:, 1].copy(),
            )  # fmt: skip
            demand = surge.cells_of(reqs.lat, reqs.lng, self.surge_cfg)
            return TickJob(self.k, t, pings, reqs, w0, demand, self._supply_cells(t))

    def tick(self) -> dict:
        """One tick: time-outs and expiries, the shards' solve, offers, surge. Returns the tick's figures."""
        w0 = time.perf_counter()
        job = self._prepare()
        result = None
        if job is not None:
            try:
                result = self.coord.tick(job.k, job.t, job.pings, job.reqs, "batch")
            except Exception as e:  # noqa: BLE001 - one bad tick must not stop the service
                self.coord.failed(job.k, e)
                self.failed_ticks += 1
                _log.warning("tick %d failed (%s: %s); its rides wait for the next tick", job.k, type(e).__name__, e)
        with self.lock:
            t = self.now() if job is None else job.t
            matched = 0
            if result is not None:
                m, shard_of, stats = result
                for j in range(len(m)):
                    ride, k = self.rides[int(m.req[j])], int(m.key[j])
                    if (
                        ride.state == int(R.SEARCHING)
                        and self.status[k] == int(D.AVAILABLE)
                        and not self.self_busy[k]
                        and k not in ride.barred
                    ):
                        self._do_match(ride, k, t, float(m.eta[j]), float(m.dist[j]), True, int(shard_of[j]))
                        matched += 1
                    else:
                        self.dirty[k] = True  # the shard holds it as offered: send its real status
            if job is None:
                self._surge_step(t, np.empty(0, np.uint64), self._supply_cells(t))
            else:
                self._surge_step(t, job.demand_cells, job.supply_cells)
            wall_ms = (time.perf_counter() - w0) * 1e3
            row = {"tick": self.k, "t": t, "wall_ms": wall_ms, "pending": len(job.reqs) if job else 0,
                   "matched": matched}  # fmt: skip
            if job is not None and result is not None:
                stats = result[2]
                self.logs.tick_row(self.k, self._ts_ms(t), wall_ms, matched, stats)
            self.tick_ms.append(wall_ms)
            self.ping_samples.append((time.monotonic(), self.pings))
            if len(self.ping_samples) > 64:
                del self.ping_samples[:32]
            if len(self.tick_ms) > 2000:
                del self.tick_ms[:1000]
            self.last_tick = row
            return row

    def _supply_cells(self, t: float) -> np.ndarray:
        avail = np.flatnonzero(self._eligible(len(self.driver_ids), t))
        return surge.cells_of(self.lat[avail], self.lng[avail], self.surge_cfg)

    def _surge_step(self, t: float, demand_cells: np.ndarray, supply_cells: np.ndarray) -> None:
        """The same pure step as the replay's (matcher.core.surge), on this tick's pending rides and free drivers."""
        dt = t - self._surge_t if math.isfinite(self._surge_t) else math.inf
        self._surge_t = t
        self.surge, cells = surge.step(self.surge, demand_cells, supply_cells, dt, self.surge_cfg)
        self.logs.cells(self.k, self._ts_ms(t), cells, self.surge_cfg.precision)

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Run the tick loop on the wall clock in a thread (``matcher serve``; tests call tick())."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="matcher-ticks", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        w = self.cfg.window_s
        nxt = math.ceil(time.time() / w) * w
        last_flush = time.monotonic()
        while not self._stop.wait(max(0.0, nxt - time.time())):
            try:
                self.tick()
                if time.monotonic() - last_flush >= self.cfg.flush_s:
                    self.flush()
                    last_flush = time.monotonic()
            except Exception:  # noqa: BLE001 - logged; the loop goes on
                _log.exception("tick loop error")
            nxt += w
            if nxt < time.time():  # the tick overran its window: skip the missed ones
                self.late_ticks += 1
                nxt = math.ceil(time.time() / w) * w

    def flush(self) -> None:
        """Write what is buffered: the event log (once durable), locations, ticks, cells."""
        self.store.flush_events()
        with self.lock:  # only the taking: 10 s of a metro's pings took ~0.2 s to write, under it
            taken = self.logs.take_locations(self.driver_ids)
        self.logs.flush(taken)

    def close(self) -> dict:
        """Drain: stop ticking, flush everything, write ticks.parquet, cells.parquet, run.json, summary.json."""
        from matcher.analysis import metrics

        if self.closed:
            return {}
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.closed = True
        with self.lock:
            self.store.close()
            if not any((self.out / "events").glob("*.parquet")):  # nothing happened: an empty, readable log
                from matcher.serve.durability import events_table

                self.store.events.write_empty(events_table([]))
            self.logs.finish(self.driver_ids)
            try:
                self.backend.close()
            except Exception:  # noqa: BLE001 - shards already gone
                pass
            meta = self.run_meta()
        metrics.write_json_atomic(self.out / "run.json", meta)
        return metrics.write_summary(self.out, meta)

    def pings_per_s(self, over_s: float = 10.0) -> float:
        """Pings accepted per second over about the last ``over_s`` seconds (from the tick samples)."""
        if len(self.ping_samples) < 2:
            return 0.0
        t1, n1 = self.ping_samples[-1]
        t0, n0 = next(((t, n) for t, n in self.ping_samples if t1 - t <= over_s), self.ping_samples[0])
        if t1 - t0 <= 0:
            t0, n0 = self.ping_samples[-2]
        return (n1 - n0) / max(t1 - t0, 1e-9)

    def run_meta(self) -> dict:
        return {
            "policy": "batch",
            "window_s": self.cfg.window_s,
            "shards": self.backend.n_shards,
            "backend": "live",
            "seed": None,
            "drivers": len(self.driver_ids),
            "quarantined": 0,
            "label": "live",
            "sim_seconds": max(0.0, self.now()),
            "wall_seconds": time.perf_counter() - self.started_wall,
            "sessions": self.sessions,
            "recovered_open_rides": self.recovered_rides,
            "failed_ticks": self.failed_ticks,
            "late_ticks": self.late_ticks,
            "refused_pings": dict(self.refused),
            "handoffs": self.coord.handoffs,
            "shard_restarts": self.coord.restarts,
            "config": _cfg_json(self.cfg),
        }


_NEXT = {
    R.ACCEPTED: (R.DRIVER_EN_ROUTE,),
    R.DRIVER_EN_ROUTE: (R.ARRIVED,),
    R.ARRIVED: (R.IN_PROGRESS,),
    R.IN_PROGRESS: (R.COMPLETED,),
}


def _cfg_json(cfg: ServeConfig) -> dict:
    d = asdict(cfg)
    d.pop("secret_file", None)  # a path only, but nothing about the secret goes into outputs
    return {k: v for k, v in d.items() if k != "base_cents"}
