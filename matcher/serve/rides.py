"""Rides and their transitions: every state change of a ride or a driver in the live
service is one of these functions, used live (``log=True``: the change is journaled)
and by recovery (``log=False``: the journal is replayed through the same functions, so
a restarted service holds exactly the state that was acknowledged). Each one goes
through :mod:`matcher.core.states`, so an illegal change raises instead of happening.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from matcher.config import RIDE_TYPES
from matcher.core.states import DriverStatus as D
from matcher.core.states import RideState as R
from matcher.core.states import check_driver, is_terminal

_log = logging.getLogger("matcher.serve")
Callback = Callable[[BaseException | None], None]


class DispatchError(Exception):
    status = 400

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message, self.extra = message, extra


class NotFound(DispatchError):
    status = 404


class Forbidden(DispatchError):
    status = 403


class Conflict(DispatchError):
    """An illegal transition: carries the ride's current state."""

    status = 409


class Invalid(DispatchError):
    status = 422


class Unavailable(DispatchError):
    status = 503


def state_name(s: int) -> str:
    return R(s).name.lower()


@dataclass(slots=True)
class Ride:
    idx: int
    ride_id: str
    rider: str
    idem: str | None
    t: float  # request time, seconds since the run's t0
    plat: float
    plng: float
    dlat: float
    dlng: float
    ride_type: int
    price: dict
    eta_est: float | None
    state: int = int(R.SEARCHING)
    driver: int = -1
    attempt: int = 0
    barred: list[int] = field(default_factory=list)
    offers: list[int] = field(default_factory=list)  # the driver of each attempt
    offer_deadline: float = math.inf
    offer_eta: float = math.nan
    offer_dist: float = math.nan
    offer_t: float = math.nan  # when the current offer was made

    @property
    def offer_id(self) -> str:
        return f"{self.ride_id}.{self.attempt}"


class Transitions:
    """Mixed into the Dispatcher: the state it changes lives there (see its __init__)."""

    # ------------------------------------------------------------ transitions
    # Each transition is used live (log=True: journaled) and by recovery (log=False).
    def _do_request(self, ride: Ride) -> None:
        self.rides.append(ride)
        self.by_id[ride.ride_id] = ride
        if ride.idem:
            self.idem[(ride.rider, ride.idem)] = ride
        self.searching[ride.idx] = ride
        self.counters["requests"] += 1

    def _do_match(self, ride: Ride, k: int, t: float, eta: float, dist: float, log: bool, shard=None) -> None:
        self._ride(ride, R.MATCHED)
        self.status[k] = check_driver(D(int(self.status[k])), D.OFFERED)
        self.dirty[k] = True
        ride.driver, ride.attempt = k, ride.attempt + 1
        ride.offers.append(k)
        ride.offer_deadline, ride.offer_t = t + self.cfg.offer_timeout_s, t
        ride.offer_eta, ride.offer_dist = eta, dist
        self.ride_of[k] = ride.idx
        self.searching.pop(ride.idx, None)
        self.offered[ride.idx] = ride
        self.counters["matches"] += 1
        if log:
            self._event(t, "match", ride, k, lat=self.lat[k], lng=self.lng[k], shard=shard, eta=eta, dist=dist)
            offer = self._offer_view(ride)
            for w in self.waiters.pop(k, []):
                w(offer)

    def _do_accept(self, ride: Ride, t: float, log: bool, cb: Callback | None = None) -> None:
        k = ride.driver
        self._ride(ride, R.ACCEPTED)
        self._drv(k, D.EN_ROUTE)
        self.offered.pop(ride.idx, None)
        self.counters["accepts"] += 1
        if log:
            self.store.event(
                self._ts_ms(t), max(self.k, 0), "accept", ride.ride_id, self.driver_ids[k],
                self.lat[k], self.lng[k], callback=cb,
            )  # fmt: skip

    def _do_decline(self, ride: Ride, t: float, log: bool, timeout: bool = False, cb: Callback | None = None) -> None:
        k = ride.driver
        self._ride(ride, R.SEARCHING)
        self._drv(k, D.AVAILABLE)
        self.ride_of[k] = -1
        ride.barred.append(k)
        ride.driver, ride.offer_deadline = -1, math.inf
        self.offered.pop(ride.idx, None)
        self.searching[ride.idx] = ride
        self.counters["timeouts" if timeout else "declines"] += 1
        if log:
            self.store.event(
                self._ts_ms(t), max(self.k, 0), "decline", ride.ride_id, self.driver_ids[k],
                self.lat[k], self.lng[k], callback=cb,
            )  # fmt: skip

    def _do_state(self, ride: Ride, new: R, t: float, log: bool, cb: Callback | None = None) -> None:
        """en_route / arrived: no event kind, a journal state line."""
        self._ride(ride, new)
        if log:
            self.store.append({"t": "st", "ride": ride.ride_id, "state": new.name.lower(), "ts": self._ts_ms(t)}, cb)

    def _do_pickup(self, ride: Ride, t: float, log: bool, cb: Callback | None = None) -> None:
        k = ride.driver
        self._ride(ride, R.IN_PROGRESS)
        self._drv(k, D.ON_TRIP)
        self.counters["pickups"] += 1
        if log:
            self.store.event(
                self._ts_ms(t), max(self.k, 0), "pickup", ride.ride_id, self.driver_ids[k],
                self.lat[k], self.lng[k], callback=cb,
            )  # fmt: skip

    def _do_dropoff(self, ride: Ride, t: float, log: bool, cb: Callback | None = None) -> None:
        k = ride.driver
        self._ride(ride, R.COMPLETED)
        self._drv(k, D.AVAILABLE)
        self.ride_of[k] = -1
        self.counters["dropoffs"] += 1
        if log:
            self.store.event(
                self._ts_ms(t), max(self.k, 0), "dropoff", ride.ride_id, self.driver_ids[k],
                self.lat[k], self.lng[k], callback=cb,
            )  # fmt: skip

    def _do_cancel(self, ride: Ride, t: float, log: bool, cb: Callback | None = None) -> None:
        k = ride.driver if ride.state != int(R.SEARCHING) else -1
        self._ride(ride, R.CANCELLED)
        if k >= 0:
            if self.status[k] != int(D.OFFLINE):
                self._drv(k, D.AVAILABLE)
            self.ride_of[k] = -1
        self.searching.pop(ride.idx, None)
        self.offered.pop(ride.idx, None)
        self.counters["cancels"] += 1
        if log:
            self.store.event(
                self._ts_ms(t), max(self.k, 0), "cancel", ride.ride_id,
                self.driver_ids[k] if k >= 0 else None, callback=cb,
            )  # fmt: skip

    def _do_expire(self, ride: Ride, t: float, log: bool) -> None:
        self._ride(ride, R.EXPIRED)
        self.searching.pop(ride.idx, None)
        self.counters["expires"] += 1
        if log:
            self._event(t, "expire", ride)

    def _do_online(self, k: int, t: float, log: bool) -> None:
        self._drv(k, D.AVAILABLE)
        if log:
            self._event(t, "driver_online", None, k, lat=self.lat[k], lng=self.lng[k])

    def _do_offline(self, k: int, t: float, log: bool) -> None:
        i = int(self.ride_of[k])
        if i >= 0 and log:  # a driver going offline with a ride: an offer is declined, a ride cancelled
            ride = self.rides[i]
            if ride.state == int(R.MATCHED):
                self._do_decline(ride, t, log)
            elif not is_terminal(R(ride.state)):
                self._do_cancel(ride, t, log)
        self._drv(k, D.OFFLINE)
        if log:
            self._event(t, "driver_offline", None, k, lat=self.lat[k], lng=self.lng[k])

    # --------------------------------------------------------------- recovery
    def _recover(self) -> None:
        """Replay the journal of an earlier session through the transition functions."""
        for rec in self.store.recovered:
            t = rec.get("t")
            if t == "ev":
                self._replay_event(rec)
            elif t == "st":
                ride = self.by_id[rec["ride"]]
                self._do_state(ride, R[rec["state"].upper()], (rec["ts"] - self.t0_ms) / 1000.0, log=False)
            elif t == "start" and rec is not self.store.start_record():
                self.sessions += 1
        self.recovered_rides = sum(1 for r in self.rides if not is_terminal(R(r.state)))
        if self.store.recovered:
            _log.warning(
                "recovered %d rides (%d open) from %s", len(self.rides), self.recovered_rides, self.store.journal.path
            )

    def _replay_event(self, rec: dict) -> None:
        kind, t = rec["kind"], (rec["ts"] - self.t0_ms) / 1000.0
        self.k = max(self.k, int(rec["tick"]))
        ride = self.by_id.get(rec["request_id"]) if rec.get("request_id") else None
        k = self._register(rec["driver_id"]) if rec.get("driver_id") else -1
        if kind == "request":
            x = rec["x"]
            self._do_request(
                Ride(
                    len(self.rides), rec["request_id"], x["rider"], x.get("idem"), t, rec["lat"], rec["lng"],
                    x["dlat"], x["dlng"], RIDE_TYPES.index(x["ride_type"]), x["price"], x.get("eta_est"),
                )
            )  # fmt: skip
        elif kind == "match":
            self._do_match(ride, k, t, rec["eta"] or math.nan, rec["dist"] or math.nan, log=False)
        elif kind == "accept":
            self._do_accept(ride, t, log=False)
        elif kind == "decline":
            self._do_decline(ride, t, log=False)
        elif kind == "pickup":
            self._do_pickup(ride, t, log=False)
        elif kind == "dropoff":
            self._do_dropoff(ride, t, log=False)
        elif kind == "cancel":
            self._do_cancel(ride, t, log=False)
        elif kind == "expire":
            self._do_expire(ride, t, log=False)
        elif kind == "driver_online":
            if self.status[k] == int(D.OFFLINE):
                self._do_online(k, t, log=False)
        elif kind == "driver_offline":
            self._do_offline(k, t, log=False)
