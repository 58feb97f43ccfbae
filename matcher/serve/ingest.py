"""Driver location updates into the dispatcher's columnar state: one ping, or a batch.

A mixin of :class:`matcher.serve.dispatcher.Dispatcher` (it uses the dispatcher's arrays, lock
and transitions). Bad rows of a batch are refused and counted by reason, never applied.
"""

from __future__ import annotations

import numpy as np

from matcher.config import VEHICLE_TYPES
from matcher.core import geo
from matcher.core.states import DriverStatus as D

REPORTED = ("available", "on_trip", "offline")  # what a driver app may report
_AVAIL_R, _ONTRIP_R, _OFFLINE_R = 0, 1, 2


class PingIngest:
    def ping_one(self, k: int, lat: float, lng: float, heading: float, speed: float, reported: int) -> None:
        with self.lock:
            t = self.now()
            self.lat[k], self.lng[k], self.heading[k], self.speed[k] = lat, lng, heading, speed
            self.last_ts[k] = t
            self.dirty[k] = True
            self.pings += 1
            self._reported(k, reported, t)
            self.logs.location_one(k, self._ts_ms(t), lat, lng, heading, speed, int(self.status[k]))

    def _reported(self, k: int, reported: int, t: float) -> None:
        off = self.status[k] == int(D.OFFLINE)
        if reported == _OFFLINE_R:
            self.self_busy[k] = False
            if not off:
                self._do_offline(k, t, log=True)
        else:
            self.self_busy[k] = reported == _ONTRIP_R
            if off:
                self._do_online(k, t, log=True)

    def ping_batch(self, ids: list[str], lat, lng, heading, speed, reported, vehicle=None, rating=None) -> dict:
        """PUT /v1/drivers/locations: a columnar batch. Bad rows are refused and counted by reason."""
        n = len(ids)
        lat, lng = np.asarray(lat, np.float64), np.asarray(lng, np.float64)
        heading = np.zeros(n, np.float32) if heading is None else np.asarray(heading, np.float64)
        speed = np.zeros(n, np.float32) if speed is None else np.asarray(speed, np.float64)
        rep = np.zeros(n, np.int8) if reported is None else np.asarray(reported, np.int8)
        refused: dict[str, int] = {}

        def refuse(mask: np.ndarray, reason: str) -> np.ndarray:
            c = int(mask.sum())
            if c:
                refused[reason] = refused.get(reason, 0) + c
            return ~mask

        ok = refuse(~geo.valid_coords(lat, lng), "bad_coordinate")
        ok &= refuse(ok & ~(np.isfinite(heading) & (heading >= 0) & (heading <= 360)), "bad_heading")
        ok &= refuse(ok & ~(np.isfinite(speed) & (speed >= 0) & (speed <= 100)), "bad_speed")
        ok &= refuse(ok & (rep < 0), "unknown_status")
        with self.lock:
            t = self.now()
            keys = np.full(n, -1, np.int64)
            get = self.key_of.get
            for i, d in enumerate(ids):
                kk = get(d)
                if kk is None and not self.fixed_fleet and len(self.driver_ids) < self.cfg.max_drivers:
                    kk = self._register(d)
                    if vehicle is not None and vehicle[i] in VEHICLE_TYPES:
                        self.vehicle[kk] = VEHICLE_TYPES.index(vehicle[i])
                    if rating is not None and rating[i] is not None and 1 <= rating[i] <= 5:
                        self.rating[kk] = rating[i]
                keys[i] = -1 if kk is None else kk
            ok &= refuse(ok & (keys < 0), "unknown_driver")
            sel = np.flatnonzero(ok)
            kk = keys[sel]
            self.lat[kk], self.lng[kk] = lat[sel], lng[sel]
            self.heading[kk], self.speed[kk] = heading[sel], speed[sel]
            self.last_ts[kk] = t
            self.dirty[kk] = True
            self.pings += len(sel)
            r = rep[sel]
            off = self.status[kk] == int(D.OFFLINE)
            slow = np.flatnonzero((r == _OFFLINE_R) != off)  # going offline or coming online: rare
            self.self_busy[kk] = r == _ONTRIP_R
            for j in slow:
                self._reported(int(kk[j]), int(r[j]), t)
            self.logs.location_many(kk, self._ts_ms(t), lat[sel], lng[sel], heading[sel], speed[sel], self.status[kk])
            for reason, c in refused.items():
                self.refused[reason] = self.refused.get(reason, 0) + c
        return {"accepted": len(sel), "refused": refused}
