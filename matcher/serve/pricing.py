"""Price estimates and the read-only supply index of the live service (pure numpy/scipy).

The index answers "which available drivers are near this point, and how far in time"
for ``eta_to_pickup_seconds`` and ``POST /v1/dispatch/match``. It is built from the
dispatcher's latest driver reports (never from the shards, so a query changes
nothing), at most once per tick, and uses the matcher's own candidate rules: within
the candidate radius, not stale, vehicle compatible with the ride type, ETA from the
heading-aware model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from matcher.config import MatchConfig, ServeConfig
from matcher.core import geo
from matcher.core.candidates import compat_matrix
from matcher.core.cost import StraightLineEta


def price_estimate(
    cfg: ServeConfig,
    match: MatchConfig,
    ride_type: str,
    plat: float,
    plng: float,
    dlat: float,
    dlng: float,
    surge: float,
) -> dict:
    """{low_cents, high_cents, surge_multiplier}: base + per km + per minute of the straight-line
    trip (times the detour factor, at city speed), times surge, -/+ ``price_spread``."""
    table = {name: (b, km, mi) for name, b, km, mi in cfg.base_cents}
    base, per_km, per_min = table[ride_type]
    d_m = float(geo.haversine_m(plat, plng, dlat, dlng)) * match.eta.detour_factor
    minutes = d_m / match.eta.city_speed_mps / 60.0
    price = (base + per_km * d_m / 1000.0 + per_min * minutes) * surge
    return {
        "low_cents": round(price * (1.0 - cfg.price_spread)),
        "high_cents": round(price * (1.0 + cfg.price_spread)),
        "surge_multiplier": float(surge),
    }


@dataclass
class Candidate:
    key: int
    distance_m: float
    eta_s: float


class SupplyIndex:
    """A KD-tree over the eligible drivers of one moment (see the module docstring)."""

    def __init__(self, match: MatchConfig, keys, lat, lng, heading, speed, vehicle):
        self.match = match
        self.eta = StraightLineEta(match.eta)
        self.keys = np.asarray(keys, np.int64)
        self.lat, self.lng = np.asarray(lat, np.float64), np.asarray(lng, np.float64)
        self.heading, self.speed = np.asarray(heading, np.float32), np.asarray(speed, np.float32)
        self.vehicle = np.asarray(vehicle, np.int8)
        self.compat = compat_matrix(match.compat)
        self.tree = cKDTree(geo.to_unit_xyz(self.lat, self.lng)) if len(self.keys) else None
        self.chord = float(geo.chord_for_distance(match.radius_m)) * (1 + 1e-9)

    def __len__(self) -> int:
        return len(self.keys)

    def nearest(self, lat: float, lng: float, ride_type: int, k: int, exclude=()) -> list[Candidate]:
        """Up to ``k`` eligible drivers within the radius, cheapest ETA first (ties by key)."""
        if self.tree is None:
            return []
        kq = min(len(self.keys), max(self.match.k_search, 2 * k))
        xyz = geo.to_unit_xyz(np.array([lat]), np.array([lng]))[0]
        chd, nn = self.tree.query(xyz, k=kq, distance_upper_bound=self.chord)
        chd, nn = np.atleast_1d(chd), np.atleast_1d(nn)
        hit = nn < len(self.keys)
        rows = nn[hit]
        dist = (2.0 * geo.EARTH_RADIUS_M) * np.arcsin(np.minimum(chd[hit] * 0.5, 1.0))
        ok = (dist <= self.match.radius_m) & self.compat[ride_type][self.vehicle[rows]]
        if len(exclude):
            ok &= ~np.isin(self.keys[rows], np.asarray(list(exclude), np.int64))
        rows, dist = rows[ok], dist[ok]
        if len(rows) == 0:
            return []
        bearing = geo.bearing_deg(self.lat[rows], self.lng[rows], np.full(len(rows), lat), np.full(len(rows), lng))
        eta = self.eta.pickup_eta_s(dist, bearing, self.heading[rows], self.speed[rows])
        order = np.lexsort((self.keys[rows], eta))[:k]
        return [Candidate(int(self.keys[rows[i]]), float(dist[i]), float(eta[i])) for i in order]
