"""Columnar driver state of one shard: numpy arrays plus a key -> row index.

Drivers are identified on hot paths by an integer key (their row in the run's
fleet table); string ids live only at the edges. A batch of pings is applied
with array operations, never a Python loop per ping.

Guarantees:
- a key occupies at most one row;
- a ping batch is applied atomically per row: a refused ping changes nothing,
  and every refused ping is counted under exactly one reason.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from matcher.config import VEHICLE_TYPES
from matcher.core import geo
from matcher.core.arrays import AnyArray, ArrayLike, BoolArray, F32Array, F64Array, I8Array, I64Array
from matcher.core.states import DriverStatus

_N_STATUS = len(DriverStatus)
_N_VEHICLE = len(VEHICLE_TYPES)

# Ping refusal reasons, in the order they are checked.
PING_REASONS = ("bad_coordinate", "unknown_status", "unknown_vehicle", "duplicate_in_batch", "out_of_order")


@dataclass
class Pings:
    """A batch of driver location/status reports (one row per ping), columnar.

    ``owned`` says the receiving shard owns the driver (else it is a read-only
    halo copy); ``shared`` says the driver is also visible to another shard.
    """

    key: I64Array
    lat: F64Array
    lng: F64Array
    heading: F32Array  # degrees clockwise from north
    speed: F32Array  # m/s
    status: I8Array  # DriverStatus
    vehicle: I8Array  # index into VEHICLE_TYPES
    rating: F32Array
    ts: F64Array  # simulated seconds
    owned: BoolArray
    shared: BoolArray

    def __len__(self) -> int:
        return len(self.key)

    def take(self, idx: Any) -> Pings:
        return Pings(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Pings]) -> Pings:
        if not parts:
            return Pings.empty()
        return Pings(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Pings)})

    @staticmethod
    def empty() -> Pings:
        return Pings(
            key=np.empty(0, np.int64),
            lat=np.empty(0),
            lng=np.empty(0),
            heading=np.empty(0, np.float32),
            speed=np.empty(0, np.float32),
            status=np.empty(0, np.int8),
            vehicle=np.empty(0, np.int8),
            rating=np.empty(0, np.float32),
            ts=np.empty(0),
            owned=np.empty(0, bool),
            shared=np.empty(0, bool),
        )


_COLUMNS = {
    "key": np.int64,
    "lat": np.float64,
    "lng": np.float64,
    "heading": np.float32,
    "speed": np.float32,
    "status": np.int8,
    "vehicle": np.int8,
    "rating": np.float32,
    "last_ping": np.float64,
    "owned": np.bool_,
    "shared": np.bool_,
    # unit-sphere position, kept in step with lat/lng for the spatial index
    "x": np.float64,
    "y": np.float64,
    "z": np.float64,
}


class DriverTable:
    """The drivers one shard knows about (owned rows and halo copies).

    Each column is an array of ``capacity`` rows of which the first ``n`` are live
    (dtypes in ``_COLUMNS``); read them through :meth:`col` or slice ``[: n]``.
    """

    key: I64Array
    lat: F64Array
    lng: F64Array
    heading: F32Array
    speed: F32Array
    status: I8Array
    vehicle: I8Array
    rating: F32Array
    last_ping: F64Array
    owned: BoolArray
    shared: BoolArray
    x: F64Array
    y: F64Array
    z: F64Array

    def __init__(self, capacity: int = 1024) -> None:
        self.n = 0
        for name, dt in _COLUMNS.items():
            setattr(self, name, np.zeros(capacity, dt))
        self._row_of_key = np.full(capacity, -1, np.int64)

    # -- views ---------------------------------------------------------------
    def col(self, name: str) -> AnyArray:
        col: AnyArray = getattr(self, name)
        return col[: self.n]

    def rows_of(self, keys: ArrayLike) -> I64Array:
        """Row of each key, -1 where the key is not here."""
        keys = np.asarray(keys, np.int64)
        out: I64Array = np.full(len(keys), -1, np.int64)
        inside = (keys >= 0) & (keys < len(self._row_of_key))
        out[inside] = self._row_of_key[keys[inside]]
        return out

    def eligible(self, now: float, gps_timeout_s: float) -> BoolArray:
        """Rows that may be offered now: available and heard from within the GPS timeout."""
        ok: BoolArray = (self.col("status") == DriverStatus.AVAILABLE) & (now - self.col("last_ping") <= gps_timeout_s)
        return ok

    # -- writes --------------------------------------------------------------
    def _grow(self, need: int) -> None:
        cap = len(self.key)
        if need > cap:
            new = max(need, 2 * cap)
            for name in _COLUMNS:
                old = getattr(self, name)
                arr = np.zeros(new, old.dtype)
                arr[: self.n] = old[: self.n]
                setattr(self, name, arr)

    def _grow_keys(self, max_key: int) -> None:
        if max_key >= len(self._row_of_key):
            m = np.full(max(max_key + 1, 2 * len(self._row_of_key)), -1, np.int64)
            m[: len(self._row_of_key)] = self._row_of_key
            self._row_of_key = m

    def apply_pings(self, p: Pings) -> dict[str, int]:
        """Apply a batch: known keys are updated, unknown keys are inserted.

        Refused (counted by reason, the rest applied): non-finite or
        out-of-range coordinates, unknown status or vehicle codes, a key seen
        earlier in the same batch, and a ping older than the driver's last one.
        """
        n = len(p)
        counts = dict.fromkeys(PING_REASONS, 0)
        if n == 0:
            return counts
        ok = geo.valid_coords(p.lat, p.lng) & np.isfinite(p.ts)
        counts["bad_coordinate"] = int(n - ok.sum())
        for reason, good in (
            ("unknown_status", (p.status >= 0) & (p.status < _N_STATUS)),
            ("unknown_vehicle", (p.vehicle >= 0) & (p.vehicle < _N_VEHICLE)),
        ):
            bad = ok & ~good
            counts[reason] = int(bad.sum())
            ok &= good
        # duplicate keys: the first ping of the batch stays
        order = np.argsort(p.key, kind="stable")
        sk = p.key[order]
        dup = np.zeros(n, bool)
        dup[order[1:][sk[1:] == sk[:-1]]] = True
        counts["duplicate_in_batch"] = int((ok & dup).sum())
        ok &= ~dup
        if (p.key < 0).any():
            raise ValueError("driver keys must be >= 0")

        self._grow_keys(int(p.key.max()))
        rows = self._row_of_key[p.key]
        known = rows >= 0
        stale = np.zeros(n, bool)
        stale[known] = p.ts[known] < self.last_ping[rows[known]]
        counts["out_of_order"] = int((ok & stale).sum())
        ok &= ~stale

        new_idx = np.flatnonzero(ok & ~known)
        if len(new_idx):
            self._grow(self.n + len(new_idx))
            new_rows = np.arange(self.n, self.n + len(new_idx))
            rows[new_idx] = new_rows
            self._row_of_key[p.key[new_idx]] = new_rows
            self.key[new_rows] = p.key[new_idx]
            self.n += len(new_idx)
        sel = np.flatnonzero(ok)
        r = rows[sel]
        self.lat[r] = p.lat[sel]
        self.lng[r] = p.lng[sel]
        self.heading[r] = p.heading[sel]
        self.speed[r] = p.speed[sel]
        self.status[r] = p.status[sel]
        self.vehicle[r] = p.vehicle[sel]
        self.rating[r] = p.rating[sel]
        self.last_ping[r] = p.ts[sel]
        xyz = geo.to_unit_xyz(p.lat[sel], p.lng[sel])
        self.x[r], self.y[r], self.z[r] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        self.owned[r] = p.owned[sel]
        self.shared[r] = p.shared[sel]
        return counts

    def remove(self, keys: ArrayLike) -> int:
        """Drop these drivers (handoff out, halo exit); unknown keys are ignored. Returns rows removed."""
        rows = self.rows_of(keys)
        rows = np.unique(rows[rows >= 0])  # a key listed twice is one row
        if len(rows) == 0:
            return 0
        keep = np.ones(self.n, bool)
        keep[rows] = False
        self._row_of_key[self.key[rows]] = -1
        m = int(keep.sum())
        for name in _COLUMNS:
            arr = getattr(self, name)
            arr[:m] = arr[: self.n][keep]
        self.n = m
        self._row_of_key[self.key[:m]] = np.arange(m)
        return len(rows)

    def set_status(self, rows: I64Array, status: DriverStatus) -> None:
        self.status[rows] = status

    def snapshot(self) -> dict[str, AnyArray]:
        """Copies of the live columns (for checkpoints and tests)."""
        return {name: getattr(self, name)[: self.n].copy() for name in _COLUMNS}

    @classmethod
    def from_snapshot(cls, snap: dict[str, AnyArray]) -> DriverTable:
        n = len(snap["key"])
        t = cls(max(n, 16))
        for name in _COLUMNS:
            getattr(t, name)[:n] = snap[name]
        t.n = n
        if n:
            t._grow_keys(int(snap["key"].max()))
            t._row_of_key[snap["key"]] = np.arange(n)
        return t
