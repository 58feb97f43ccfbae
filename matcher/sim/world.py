"""The world a replay runs the matcher against: where drivers are, what riders and
drivers do. Pure Python/numpy, no Ray.

State is columnar (one numpy slot per driver key and per request index). Timed
happenings (offer answers, arrivals, cancels, expiries, shifts, faults) sit in
one heap and are handled strictly in time order, so the event log is ordered
by time and every request's terminal event is its last. Every driver and ride
state change goes through :mod:`matcher.core.states` (illegal ones raise).

Randomness comes from :mod:`matcher.sim.rand` keyed by what it is about (request,
attempt, driver), so a run is a pure function of trace, fleet, options and seed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from matcher.config import MatchConfig, SimConfig
from matcher.core import geo
from matcher.core.cost import make_eta
from matcher.core.driver_table import Pings
from matcher.core.states import DriverStatus as D
from matcher.core.states import RideState as R
from matcher.core.states import check_driver, check_ride
from matcher.io.eventlog import EventLog
from matcher.sim import kinematics, rand
from matcher.sim.rand import RandStream

# plain ints: enum attribute lookups cost more than the rest of an event's handling
_AVAILABLE = int(D.AVAILABLE)
_EN_ROUTE = int(D.EN_ROUTE)
_OFFERED = int(D.OFFERED)
_OFFLINE = int(D.OFFLINE)
_ON_TRIP = int(D.ON_TRIP)
_R_ACCEPTED = int(R.ACCEPTED)
_R_ARRIVED = int(R.ARRIVED)
_R_CANCELLED = int(R.CANCELLED)
_R_COMPLETED = int(R.COMPLETED)
_R_DRIVER_EN_ROUTE = int(R.DRIVER_EN_ROUTE)
_R_EXPIRED = int(R.EXPIRED)
_R_IN_PROGRESS = int(R.IN_PROGRESS)
_R_MATCHED = int(R.MATCHED)
_R_SEARCHING = int(R.SEARCHING)


class Happening(IntEnum):
    """Kinds of heap entries (the index of each one's handler in ``World._HANDLERS``).

    The values are stored in checkpoints: never renumber them.
    """

    ARRIVAL = 0
    RESPOND = 1
    AT_PICKUP = 2
    AT_DROPOFF = 3
    RIDER_CANCEL = 4
    EXPIRE = 5
    SHIFT_START = 6
    SHIFT_END = 7
    FAULT = 8
    BACK = 9


_RESPOND, _AT_PICKUP, _AT_DROPOFF = int(Happening.RESPOND), int(Happening.AT_PICKUP), int(Happening.AT_DROPOFF)
_RIDER_CANCEL, _EXPIRE, _SHIFT_START = int(Happening.RIDER_CANCEL), int(Happening.EXPIRE), int(Happening.SHIFT_START)
_SHIFT_END, _FAULT, _BACK = int(Happening.SHIFT_END), int(Happening.FAULT), int(Happening.BACK)


@dataclass
class Requests:
    """The trace's valid requests as arrays, sorted by request time (sim seconds)."""

    t: np.ndarray
    plat: np.ndarray
    plng: np.ndarray
    dlat: np.ndarray  # nan when the trace has no dropoff (one is drawn)
    dlng: np.ndarray
    ride_type: np.ndarray  # int8
    trip_s: np.ndarray  # nan when unknown

    def __len__(self) -> int:
        return len(self.t)


@dataclass
class Fleet:
    lat: np.ndarray
    lng: np.ndarray
    vehicle: np.ndarray  # int8
    rating: np.ndarray  # float32
    online_from: np.ndarray  # sim seconds (-inf: from the start)
    online_until: np.ndarray  # sim seconds (inf: to the end)

    def __len__(self) -> int:
        return len(self.lat)


class World:
    def __init__(self, reqs: Requests, fleet: Fleet, sim: SimConfig, match: MatchConfig, log: EventLog):
        self.r, self.f, self.sim, self.log = reqs, fleet, sim, log
        self.seed = sim.seed
        self.eta = make_eta(match.eta)  # what the matcher believes
        self.drive = make_eta(match.eta, speed_mps=sim.trip_speed_mps)  # how long driving really takes
        n, m = len(reqs), len(fleet)
        self._fill_dropoffs()
        # rides
        self.state = np.full(n, -1, np.int8)  # -1: not requested yet
        self.driver = np.full(n, -1, np.int64)
        self.attempt = np.zeros(n, np.int32)
        self.barred: dict[int, list[int]] = {}
        self.pending: set[int] = set()
        self.open = 0  # requested and not yet ended
        self.next_arrival = 0
        self.clock = 0.0  # time of the latest thing that happened
        # drivers
        self.status = np.full(m, _OFFLINE, np.int8)
        self.ride = np.full(m, -1, np.int64)
        self.lat0, self.lng0 = fleet.lat.astype(np.float64).copy(), fleet.lng.astype(np.float64).copy()
        self.lat1, self.lng1 = self.lat0.copy(), self.lng0.copy()
        self.t0 = np.zeros(m)
        self.t1 = np.zeros(m)
        self.heading = np.zeros(m, np.float32)
        self.shift_over = np.zeros(m, bool)
        self.changed = np.full(m, -np.inf)  # time of the latest status change
        # GPS: pings every interval at a per-driver phase; silent inside a dropout window
        keys = np.arange(m)
        self.phase = rand.uniform(self.seed, RandStream.GPS_GAP, keys, -1) * sim.ping_interval_s
        self.gps_n = np.zeros(m, np.int64)
        self.gps_from = np.full(m, np.inf)
        self.gps_until = np.full(m, np.inf)
        # faults: each online driver's chain of fault times (a renewal process keyed by
        # (driver, n)); only the next fault of a busy driver sits in the heap (see _schedule_fault)
        self.fault_n = np.zeros(m, np.int64)
        self.fault_at = np.full(m, np.inf)  # the chain's next fault (inf: no chain)
        self.fault_queued = np.zeros(m, bool)  # ... and it is in the heap
        self._heap: list = []
        self._hseq = 0
        self._offer_t: dict[tuple[int, int], float] = {}
        for k in range(m):
            self._push(max(float(fleet.online_from[k]), 0.0), _SHIFT_START, k)
            if np.isfinite(fleet.online_until[k]):
                self._push(float(fleet.online_until[k]), _SHIFT_END, k)
        self._schedule_gps(keys, 0.0)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["log"] = None  # the event log is re-opened by a resume
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        if "drive" not in d:  # a checkpoint from before the driving model (the CLI set both speeds equal)
            self.drive = make_eta(self.eta.cfg, speed_mps=self.sim.trip_speed_mps)
        if "fault_at" not in d:  # a checkpoint from before parked fault chains: every chain is in the heap
            m = len(self.status)
            self.fault_at, self.fault_queued = np.full(m, np.inf), np.zeros(m, bool)
            for t, _, kind, a, _b, _c in self._heap:
                if kind == _FAULT:
                    self.fault_at[a], self.fault_queued[a] = t, True

    # ------------------------------------------------------------------ setup
    def _fill_dropoffs(self) -> None:
        """A trace without dropoffs (e.g. Uber 2014: pickups only) gets, for each such
        request, the pickup point of another request of the trace as its dropoff: trips
        then run between real demand points, as the city's trips do."""
        r = self.r
        miss = np.flatnonzero(np.isnan(r.dlat) | np.isnan(r.dlng))
        if len(miss):
            j = np.minimum((rand.uniform(self.seed, RandStream.TRIP_LEN, miss) * len(r)).astype(np.int64), len(r) - 1)
            r.dlat[miss], r.dlng[miss] = r.plat[j], r.plng[j]

    def _schedule_gps(self, keys: np.ndarray, after: np.ndarray | float) -> None:
        rate = self.sim.gps_dropout_rate_per_h / 3600.0
        if rate <= 0 or len(keys) == 0:
            return
        n = self.gps_n[keys]
        gap = rand.exponential(1.0 / rate, self.seed, RandStream.GPS_GAP, keys, n)
        dur = rand.exponential(self.sim.gps_dropout_mean_s, self.seed, RandStream.GPS_LEN, keys, n)
        self.gps_from[keys] = after + gap
        self.gps_until[keys] = after + gap + dur
        self.gps_n[keys] = n + 1

    def _roll_gps(self, t: float) -> None:
        """Draw the dropout windows that are over by t, until each driver's current or next one.

        The same windows as drawing them one by one (:meth:`_schedule_gps`), but in blocks
        that grow 8x per round: a long stretch of empty time (years without a request) costs
        a few vector operations, not one per dropout.
        """
        over = np.flatnonzero(self.gps_until <= t)
        if len(over):
            self._schedule_gps(over, self.gps_until[over])  # the common case: one window per driver
            over = over[self.gps_until[over] <= t]
        rate = self.sim.gps_dropout_rate_per_h / 3600.0
        block = 8
        while len(over):
            n = self.gps_n[over][:, None] + np.arange(block)
            gap = rand.exponential(1.0 / rate, self.seed, RandStream.GPS_GAP, over[:, None], n)
            dur = rand.exponential(self.sim.gps_dropout_mean_s, self.seed, RandStream.GPS_LEN, over[:, None], n)
            steps = np.empty((len(over), 1 + 2 * block))
            steps[:, 0], steps[:, 1::2], steps[:, 2::2] = self.gps_until[over], gap, dur
            acc = np.add.accumulate(steps, axis=1)  # sequential: ((until + gap) + dur) + gap ..., as one by one
            froms, untils = acc[:, 1::2], acc[:, 2::2]
            live = untils > t
            found = live.any(axis=1)
            j = np.where(found, np.argmax(live, axis=1), block - 1)
            rows = np.arange(len(over))
            self.gps_from[over], self.gps_until[over] = froms[rows, j], untils[rows, j]
            self.gps_n[over] += j + 1
            over = over[~found]
            block = min(block * 8, 4096)

    def _schedule_fault(self, k: int, t: float) -> None:
        """Start or continue driver k's fault chain after time t (the start of its shift or its last fault).

        Empty time is free: a fault only matters to a busy driver (mid-ride it cancels the
        ride; otherwise it is a no-op that draws the next one), so the chain is queued in
        the heap only while the driver is busy. :meth:`_wake_faults` catches a parked chain
        up when the driver becomes busy, drawing exactly the faults that would have fired
        meanwhile: the same faults at the same times as firing each one, without a heap
        entry (or a loop turn and a checkpoint) per idle fault.
        """
        rate = self.sim.driver_fault_rate_per_h
        if rate > 0:
            gap = rand.exponential1(3600.0 / rate, self.seed, RandStream.FAULT, k, int(self.fault_n[k]))
            self.fault_at[k] = t + gap
            if self.status[k] in (_EN_ROUTE, _ON_TRIP):
                self._queue_fault(k)

    def _wake_faults(self, k: int, t: float) -> None:
        """Driver k becomes busy at t: the idle faults of its chain up to t fire (as no-ops), the next is queued."""
        if self.fault_queued[k] or not np.isfinite(self.fault_at[k]):
            return
        mean = 3600.0 / self.sim.driver_fault_rate_per_h
        at, n = float(self.fault_at[k]), int(self.fault_n[k])
        while at <= t:
            n += 1
            at = at + rand.exponential1(mean, self.seed, RandStream.FAULT, k, n)
        self.fault_at[k], self.fault_n[k] = at, n
        self._queue_fault(k)

    def _queue_fault(self, k: int) -> None:
        if not self.fault_queued[k]:
            self.fault_queued[k] = True
            self._push(float(self.fault_at[k]), _FAULT, k)

    def _push(self, t: float, kind: int, a: int, b: int = -1, c: int = -1) -> None:
        heapq.heappush(self._heap, (t, self._hseq, kind, a, b, c))
        self._hseq += 1

    # -------------------------------------------------------------- positions
    def position(self, keys: np.ndarray, ts):
        """(lat, lng, heading, speed) of drivers at time(s) ts, along their segment (see kinematics)."""
        return position_on(self.segments(keys), ts)

    def segments(self, keys: np.ndarray) -> tuple[np.ndarray, ...]:
        """The current segments of drivers ``keys`` (copies): what :func:`position_on` reads."""
        return (
            self.t0[keys],
            self.t1[keys],
            self.lat0[keys],
            self.lng0[keys],
            self.lat1[keys],
            self.lng1[keys],
            self.heading[keys],
        )

    def _state1(self, k: int, t: float) -> tuple[float, float, float, float]:
        """:meth:`position` of one driver, in plain floats (same numbers, no numpy overhead)."""
        t0, t1 = float(self.t0[k]), float(self.t1[k])
        lat0, lng0, lat1, lng1 = float(self.lat0[k]), float(self.lng0[k]), float(self.lat1[k]), float(self.lng1[k])
        span = t1 - t0
        a = min(max((t - t0) / span, 0.0), 1.0) if span > 0 else 1.0
        dist = geo.haversine1(lat0, lng0, lat1, lng1)
        speed = dist / span if span > 0 and t0 <= t < t1 else 0.0
        lat, lng, hd = kinematics.interpolate1(lat0, lng0, lat1, lng1, a, float(self.heading[k]), dist)
        return lat, lng, hd, speed

    def _pos1(self, k: int, t: float) -> tuple[float, float]:
        lat, lng, _, _ = self._state1(k, t)
        return lat, lng

    def _stop(self, k: int, t: float) -> None:
        lat, lng = self._pos1(k, t)
        self.lat0[k] = self.lat1[k] = lat
        self.lng0[k] = self.lng1[k] = lng
        self.t0[k] = self.t1[k] = t

    def _drive(self, k: int, t: float, lat: float, lng: float, dur: float) -> None:
        self._stop(k, t)
        self.heading[k] = geo.bearing1(float(self.lat0[k]), float(self.lng0[k]), lat, lng)
        self.lat1[k], self.lng1[k] = lat, lng
        self.t1[k] = t + max(dur, 0.0)

    # ------------------------------------------------------------ transitions
    def _drv(self, k: int, new: D, t: float) -> None:
        self.status[k] = check_driver(self.status[k], new)
        self.changed[k] = t

    def _ride(self, i: int, new: R) -> None:
        self.state[i] = check_ride(self.state[i], new)

    def _end_ride(self, i: int) -> None:
        self.pending.discard(i)
        self.open -= 1

    # ---------------------------------------------------------------- stepping
    def done(self) -> bool:
        return self.next_arrival >= len(self.r) and self.open == 0

    def next_time(self) -> float:
        """When something next happens on its own (inf: nothing)."""
        t = self.r.t[self.next_arrival] if self.next_arrival < len(self.r) else np.inf
        return min(float(t), self._heap[0][0] if self._heap else np.inf)

    def advance(self, until: float, tick: int) -> None:
        """Handle everything that happens at or before ``until``, in time order."""
        r = self.r
        while True:
            ta = r.t[self.next_arrival] if self.next_arrival < len(r) else np.inf
            th = self._heap[0][0] if self._heap else np.inf
            if min(ta, th) > until:
                return
            self.clock = max(self.clock, float(min(ta, th)))
            if ta <= th:
                i = self.next_arrival
                self.next_arrival += 1
                self.state[i] = _R_SEARCHING
                self.open += 1
                self.pending.add(i)
                self.log.add(float(ta), tick, "request", req=i, lat=r.plat[i], lng=r.plng[i])
                self._push(float(ta) + self.sim.patience_s, _EXPIRE, i)
                continue
            t, _, kind, a, b, c = heapq.heappop(self._heap)
            self._HANDLERS[kind](self, t, a, b, c, tick)

    # ------------------------------------------------------------- handlers
    # One handler per kind of heap entry, called as handler(self, t, a, b, c, tick); the
    # dispatch table _HANDLERS is indexed by the kind (see Happening).

    def _on_expire(self, t: float, i: int, _b: int, _c: int, tick: int) -> None:
        """The rider's patience ran out: a request still searching expires."""
        if self.state[i] == _R_SEARCHING:
            self._ride(i, _R_EXPIRED)
            self._end_ride(i)
            self.log.add(t, tick, "expire", req=i, lat=self.r.plat[i], lng=self.r.plng[i])

    def _on_respond(self, t: float, k: int, i: int, c: int, tick: int) -> None:
        """Driver k answers offer attempt c of request i: accept (and drive off) or decline."""
        if self.ride[k] != i or self.attempt[i] != c or self.state[i] != _R_MATCHED:
            return  # the offer ended before the answer (rider cancelled)
        sim = self.sim
        lat, lng, hd, sp = self._state1(k, t)
        accept = rand.uniform1(self.seed, RandStream.ACCEPT, i, c) < sim.accept_prob
        answered = (t - self._offer_t.pop((k, i), t)) < sim.offer_timeout_s
        if not (accept and answered):
            self._decline(k, i, t, tick, lat, lng)
            return
        self._ride(i, _R_ACCEPTED)
        self._ride(i, _R_DRIVER_EN_ROUTE)
        self._drv(k, _EN_ROUTE, t)
        self._wake_faults(k, t)
        self.log.add(t, tick, "accept", req=i, key=k, lat=lat, lng=lng)
        plat, plng = float(self.r.plat[i]), float(self.r.plng[i])
        dist = geo.haversine1(lat, lng, plat, plng)
        brg = geo.bearing1(lat, lng, plat, plng)
        travel = float(self.drive.pickup_eta_s(dist, brg, hd, sp))
        self._drive(k, t, plat, plng, travel)
        self._push(t + travel, _AT_PICKUP, k, i)

    def _on_at_pickup(self, t: float, k: int, i: int, _c: int, tick: int) -> None:
        """Driver k reaches request i's pickup: the rider boards and the trip starts."""
        if self.ride[k] != i or self.state[i] != _R_DRIVER_EN_ROUTE:
            return
        self._ride(i, _R_ARRIVED)
        self._ride(i, _R_IN_PROGRESS)
        self._drv(k, _ON_TRIP, t)
        self.log.add(t, tick, "pickup", req=i, key=k, lat=self.r.plat[i], lng=self.r.plng[i])
        dur = self.r.trip_s[i]
        if not np.isfinite(dur):
            d = geo.haversine1(
                float(self.r.plat[i]), float(self.r.plng[i]), float(self.r.dlat[i]), float(self.r.dlng[i])
            )
            dur = self.drive.drive_s(d) + self.sim.dwell_s
        self._drive(k, t, float(self.r.dlat[i]), float(self.r.dlng[i]), float(dur))
        self._push(t + float(dur), _AT_DROPOFF, k, i)

    def _on_at_dropoff(self, t: float, k: int, i: int, _c: int, tick: int) -> None:
        """Driver k drops request i off: the ride completes and the driver is free."""
        if self.ride[k] != i or self.state[i] != _R_IN_PROGRESS:
            return
        self._ride(i, _R_COMPLETED)
        self._end_ride(i)
        self.log.add(t, tick, "dropoff", req=i, key=k, lat=self.r.dlat[i], lng=self.r.dlng[i])
        self._stop(k, t)
        self._free(k, t, tick)

    def _on_rider_cancel(self, t: float, i: int, _b: int, c: int, tick: int) -> None:
        """The rider of request i cancels match attempt c before the pickup."""
        if self.attempt[i] != c or self.state[i] not in (_R_MATCHED, _R_ACCEPTED, _R_DRIVER_EN_ROUTE):
            return
        k = int(self.driver[i])
        self._ride(i, _R_CANCELLED)
        self._end_ride(i)
        self._offer_t.pop((k, i), None)
        self.log.add(t, tick, "cancel", req=i, key=k, lat=self.r.plat[i], lng=self.r.plng[i])
        self._stop(k, t)
        self._free(k, t, tick)

    def _on_shift_start(self, t: float, k: int, _b: int, _c: int, tick: int) -> None:
        """Driver k comes online (shift start, or back after a fault)."""
        if self.status[k] == _OFFLINE and not self.shift_over[k]:
            self._drv(k, _AVAILABLE, t)
            self.t0[k] = self.t1[k] = t
            self.log.add(t, tick, "driver_online", key=k, lat=self.lat0[k], lng=self.lng0[k])
            self._schedule_fault(k, t)

    def _on_shift_end(self, t: float, k: int, _b: int, _c: int, tick: int) -> None:
        """Driver k's shift is over: offline now if idle, else after the ride (see _free)."""
        self.shift_over[k] = True
        if self.status[k] == _AVAILABLE:
            self._offline(k, t, tick)

    def _on_fault(self, t: float, k: int, _b: int, _c: int, tick: int) -> None:
        """Driver k drops off the network: a ride under way is lost, the driver is back later."""
        if not self.fault_queued[k] or t != self.fault_at[k]:
            return  # the chain ended while this entry was queued (the shift ended)
        self.fault_queued[k] = False
        self.fault_n[k] += 1
        if self.status[k] in (_EN_ROUTE, _ON_TRIP):
            i = int(self.ride[k])
            self._ride(i, _R_CANCELLED)
            self._end_ride(i)
            lat, lng = self._pos1(k, t)
            self.log.add(t, tick, "cancel", req=i, key=k, lat=lat, lng=lng)
            self._stop(k, t)
            self.ride[k] = -1
            self._offline(k, t, tick)
            self._push(t + self.sim.fault_offline_s, _BACK, k)
        elif self.status[k] != _OFFLINE:
            self._schedule_fault(k, t)  # idle: a no-op, the chain goes on (parked)
        else:
            self.fault_at[k] = np.inf

    def _on_back(self, t: float, k: int, _b: int, _c: int, tick: int) -> None:
        """Driver k's fault downtime is over: online again unless the shift ended meanwhile."""
        if self.status[k] == _OFFLINE and not self.shift_over[k]:
            self._push(t, _SHIFT_START, k)

    _HANDLERS: tuple[Callable[..., None] | None, ...] = (
        None,  # ARRIVAL: requests arrive from the trace, not from the heap
        _on_respond,
        _on_at_pickup,
        _on_at_dropoff,
        _on_rider_cancel,
        _on_expire,
        _on_shift_start,
        _on_shift_end,
        _on_fault,
        _on_back,
    )

    def _decline(self, k: int, i: int, t: float, tick: int, lat: float, lng: float) -> None:
        self._ride(i, _R_SEARCHING)
        self.barred.setdefault(i, []).append(k)
        self.log.add(t, tick, "decline", req=i, key=k, lat=lat, lng=lng)
        self._drv(k, _AVAILABLE, t)
        self.ride[k] = -1
        self.driver[i] = -1
        if self.shift_over[k]:
            self._offline(k, t, tick)
        if t >= self.r.t[i] + self.sim.patience_s:
            self._ride(i, _R_EXPIRED)
            self._end_ride(i)
            self.log.add(t, tick, "expire", req=i, lat=self.r.plat[i], lng=self.r.plng[i])
        else:
            self.pending.add(i)

    def _free(self, k: int, t: float, tick: int) -> None:
        self.ride[k] = -1
        self._drv(k, _AVAILABLE, t)
        if self.shift_over[k]:
            self._offline(k, t, tick)
        elif self.sim.reposition:
            self._reposition(k, t)

    def _reposition(self, k: int, t: float) -> None:
        """An idle driver heads, still available, to where riders asked lately: the pickup
        point of one of the last ``reposition_lookback`` requests (demand-weighted)."""
        n = self.sim.reposition_lookback
        u = rand.uniform1(self.seed, RandStream.REPOSITION, k, int(t * 1000))
        j = max(0, self.next_arrival - 1 - int(u * n))
        lat, lng = self._pos1(k, t)
        d = geo.haversine1(lat, lng, float(self.r.plat[j]), float(self.r.plng[j]))
        if d > 300.0:
            self._drive(
                k,
                t,
                float(self.r.plat[j]),
                float(self.r.plng[j]),
                self.drive.drive_s(d),
            )

    def _offline(self, k: int, t: float, tick: int) -> None:
        self._drv(k, _OFFLINE, t)
        self.fault_at[k] = np.inf  # the fault chain ends (a fault's downtime starts a new one at _on_back)
        self.log.add(t, tick, "driver_offline", key=k, lat=self.lat0[k], lng=self.lng0[k])

    # ---------------------------------------------------------------- matching
    def apply_matches(self, t: float, tick: int, req, key, eta, dist, lat, lng, shard) -> None:
        """Offers decided this tick (sorted by request). Drivers must be available in truth."""
        sim = self.sim
        order = np.argsort(req, kind="stable")
        for j in order:
            i, k = int(req[j]), int(key[j])
            if self.status[k] != _AVAILABLE or self.state[i] != _R_SEARCHING:
                raise AssertionError(
                    f"matcher offered driver {k} (status {D(int(self.status[k])).name}) "
                    f"to request {i} ({R(int(self.state[i])).name})"
                )
            self.attempt[i] += 1
            c = int(self.attempt[i])
            self._ride(i, _R_MATCHED)
            self._drv(k, _OFFERED, t)
            self.pending.discard(i)
            self.ride[k], self.driver[i] = i, k
            self.log.add(
                t,
                tick,
                "match",
                req=i,
                key=k,
                lat=float(lat[j]),
                lng=float(lng[j]),
                shard=int(shard[j]),
                eta=float(eta[j]),
                dist=float(dist[j]),
            )
            resp = rand.exponential1(sim.response_s, self.seed, RandStream.RESPONSE, i, c)
            self._offer_t[(k, i)] = t
            self._push(t + min(resp, sim.offer_timeout_s), _RESPOND, k, i, c)
            p = min(0.5, sim.cancel_base + sim.cancel_per_min * float(eta[j]) / 60.0)
            if rand.uniform1(self.seed, RandStream.CANCEL, i, c) < p:
                at = t + rand.uniform1(self.seed, RandStream.CANCEL_AT, i, c) * (float(eta[j]) + 30.0)
                self._push(at, _RIDER_CANCEL, i, -1, c)

    # ------------------------------------------------------------------ pings
    def pings(self, t: float, last_sent: np.ndarray) -> tuple[np.ndarray, Pings]:
        """Driver reports due by ``t``: a new GPS fix (every ping interval, none inside a
        dropout) or a status change (status travels even without GPS, with the last fix).
        ``last_sent`` (per driver, updated here) is when each driver last reported."""
        iv = self.sim.ping_interval_s
        self._roll_gps(t)
        fix_at = np.minimum(t, np.where(self.gps_from <= t, self.gps_from, t))
        fix = self.phase + np.floor((fix_at - self.phase) / iv) * iv
        fix = np.where(fix <= fix_at, fix, fix - iv)
        # GPS fixes come from online drivers only; a status change is reported at once
        # (>=: a change made at the tick time itself, e.g. an offer, went out after that tick's pings)
        due = ((fix > last_sent) & (self.status != _OFFLINE)) | (self.changed >= last_sent)
        keys = np.flatnonzero(due)
        if len(keys) == 0:
            return keys, Pings.empty()
        last_sent[keys] = t
        ts = fix[keys]
        lat, lng, hd, sp = self.position(keys, ts)  # where the driver was at the fix
        n = len(keys)
        p = Pings(
            key=keys.astype(np.int64),
            lat=lat,
            lng=lng,
            heading=hd,
            speed=sp,
            status=self.status[keys].copy(),
            vehicle=self.f.vehicle[keys],
            rating=self.f.rating[keys],
            ts=ts,
            owned=np.ones(n, bool),
            shared=np.zeros(n, bool),
        )
        return keys, p

    def pending_batch(self, t: float):
        idx = np.fromiter(sorted(self.pending), np.int64, len(self.pending))
        return idx, t - self.r.t[idx]


def position_on(segments: tuple[np.ndarray, ...], ts):
    """(lat, lng, heading, speed) at time(s) ts along segments (``World.segments``; see kinematics)."""
    t0, t1, lat0, lng0, lat1, lng1, heading = segments
    span = t1 - t0
    safe = np.where(span > 0, span, 1.0)
    a = np.where(span > 0, np.clip((ts - t0) / safe, 0.0, 1.0), 1.0)
    dist = geo.haversine_m(lat0, lng0, lat1, lng1)
    lat, lng, hd = kinematics.interpolate(lat0, lng0, lat1, lng1, a, heading, dist)
    moving = (span > 0) & (ts < t1) & (ts >= t0)
    speed = np.where(moving, dist / safe, 0.0).astype(np.float32)
    return lat, lng, hd, speed
