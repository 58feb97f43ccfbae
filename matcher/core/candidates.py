"""Candidate drivers for a batch of pending requests.

For each request: the eligible drivers (available, not stale, vehicle
compatible with the ride type, not barred by an earlier decline) within
``radius_m`` great-circle metres, of which the ``k`` cheapest by ETA are kept
(among the ``k_search`` nearest). The spatial index is a KD-tree on unit-sphere
vectors, so the radius test is exact anywhere on the globe, poles and
antimeridian included (measured faster than geohash cell buckets: see bench/).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from matcher.config import RIDE_TYPES, VEHICLE_TYPES, MatchConfig
from matcher.core import geo
from matcher.core.arrays import BoolArray, F64Array, I8Array, I64Array
from matcher.core.cost import EtaModel
from matcher.core.driver_table import DriverTable

_BIG = np.int64(1) << 40  # packs (request position, driver key) into one int64


@dataclass
class RequestBatch:
    """Pending (searching) requests handed to a solver, columnar."""

    idx: I64Array  # the run's request index (stable across ticks)
    lat: F64Array
    lng: F64Array
    ride_type: I8Array  # index into RIDE_TYPES
    wait_s: F64Array  # seconds since the request was made
    barred_req: I64Array  # request idx ...
    barred_key: I64Array  # ... driver key it must not be offered again

    def __len__(self) -> int:
        return len(self.idx)

    def take(self, sel: Any) -> RequestBatch:
        sel = np.asarray(sel)
        keep = np.isin(self.barred_req, self.idx[sel])
        return RequestBatch(
            self.idx[sel],
            self.lat[sel],
            self.lng[sel],
            self.ride_type[sel],
            self.wait_s[sel],
            self.barred_req[keep],
            self.barred_key[keep],
        )

    @staticmethod
    def empty() -> RequestBatch:
        f, i = np.empty(0), np.empty(0, np.int64)
        return RequestBatch(i, f, f, np.empty(0, np.int8), f, i, i)

    @staticmethod
    def concat(parts: list[RequestBatch]) -> RequestBatch:
        if not parts:
            return RequestBatch.empty()
        return RequestBatch(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(RequestBatch)))


@dataclass
class CandidateEdges:
    req: I64Array  # position in the RequestBatch
    row: I64Array  # driver row in the DriverTable
    cost: F64Array  # pickup ETA, s
    dist: F64Array  # great-circle metres

    def __len__(self) -> int:
        return len(self.req)


def compat_matrix(compat: Iterable[tuple[str, Iterable[str]]]) -> BoolArray:
    """bool[ride type, vehicle type]: may this vehicle serve this ride type."""
    m = np.zeros((len(RIDE_TYPES), len(VEHICLE_TYPES)), bool)
    for ride, vehicles in compat:
        for v in vehicles:
            m[RIDE_TYPES.index(ride), VEHICLE_TYPES.index(v)] = True
    return m


def find_candidates(
    table: DriverTable, reqs: RequestBatch, now: float, cfg: MatchConfig, eta: EtaModel
) -> CandidateEdges:
    """Edges sorted by (request, cost), at most ``cfg.k`` per request, all within the radius."""
    n = len(reqs)
    empty = CandidateEdges(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0))
    if n == 0 or table.n == 0:
        return empty
    ok = table.eligible(now, cfg.gps_timeout_s)
    comp = compat_matrix(cfg.compat)
    vehicle = table.col("vehicle")
    req_xyz = geo.to_unit_xyz(reqs.lat, reqs.lng)
    chord = float(geo.chord_for_distance(cfg.radius_m)) * (1 + 1e-9)
    barred = None
    if len(reqs.barred_req):
        # (request position, driver key) pairs barred by an earlier decline
        srt = np.argsort(reqs.idx)
        p = np.minimum(np.searchsorted(reqs.idx, reqs.barred_req, sorter=srt), n - 1)
        b_pos = np.where(reqs.idx[srt[p]] == reqs.barred_req, srt[p], -1)
        barred = (b_pos * _BIG + reqs.barred_key)[b_pos >= 0]
    out_r, out_d, out_c, out_m = [], [], [], []
    # One index per distinct set of compatible vehicles (uberx+pool share one).
    pools: dict[bytes, list[int]] = {}
    for rt in np.unique(reqs.ride_type):
        pools.setdefault(comp[rt].tobytes(), []).append(int(rt))
    for key, ride_types in pools.items():
        vmask = np.frombuffer(key, dtype=bool)
        rows = np.flatnonzero(ok & vmask[vehicle])
        if len(rows) == 0:
            continue
        rsel = np.flatnonzero(np.isin(reqs.ride_type, ride_types))
        tree = cKDTree(
            np.column_stack((table.x[rows], table.y[rows], table.z[rows])),
            leafsize=32,
            balanced_tree=False,
            compact_nodes=False,
        )
        kq = min(cfg.k_search, len(rows))
        chd, nn = tree.query(req_xyz[rsel], k=kq, distance_upper_bound=chord)
        chd, nn = chd.reshape(len(rsel), kq), nn.reshape(len(rsel), kq)
        hit = nn < len(rows)
        drow = rows[np.where(hit, nn, 0)]  # (requests, kq) driver rows; misses masked below
        # great-circle metres from the chord the index measured
        dist = (2.0 * geo.EARTH_RADIUS_M) * np.arcsin(np.minimum(np.where(hit, chd, 0.0) * 0.5, 1.0))
        hit &= dist <= cfg.radius_m
        if barred is not None:
            hit &= ~np.isin(rsel[:, None] * _BIG + table.key[drow], barred)
        # heading only matters for moving drivers: skip the trig for the rest
        speed = table.speed[drow]
        mv = hit & (speed >= cfg.eta.moving_mps)
        bearing = np.zeros(dist.shape)
        rr = np.broadcast_to(rsel[:, None], dist.shape)
        bearing[mv] = geo.bearing_deg(table.lat[drow[mv]], table.lng[drow[mv]], reqs.lat[rr[mv]], reqs.lng[rr[mv]])
        cost = np.where(hit, eta.pickup_eta_s(dist, bearing, table.heading[drow], speed), np.inf)
        # the k cheapest per request; ties by driver key for determinism
        order = np.lexsort((table.key[drow], cost), axis=1)[:, : cfg.k]
        cost = np.take_along_axis(cost, order, 1)
        keep = np.isfinite(cost)
        out_r.append(rr[:, : order.shape[1]][keep])
        out_d.append(np.take_along_axis(drow, order, 1)[keep])
        out_c.append(cost[keep])
        out_m.append(np.take_along_axis(dist, order, 1)[keep])
    if not out_r:
        return empty
    req = np.concatenate(out_r).astype(np.int64)
    by_req: I64Array | slice = np.argsort(req, kind="stable") if len(out_r) > 1 else slice(None)
    return CandidateEdges(
        req[by_req],
        np.concatenate(out_d)[by_req].astype(np.int64),
        np.concatenate(out_c)[by_req],
        np.concatenate(out_m)[by_req],
    )
