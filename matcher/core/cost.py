"""Pickup cost: an ETA in seconds, not a straight-line distance.

The model is pluggable: anything with ``pickup_eta_s(dist_m, bearing_deg,
heading_deg, speed_mps)`` works. The default knows that a driver heading away
from the pickup has to turn around first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from matcher.config import EtaConfig
from matcher.core.arrays import ArrayLike, F64Array


class EtaModel(Protocol):
    def pickup_eta_s(
        self, dist_m: ArrayLike, bearing_deg: ArrayLike, heading_deg: ArrayLike, speed_mps: ArrayLike
    ) -> F64Array: ...


@dataclass(frozen=True)
class StraightLineEta:
    """distance x detour / city speed, plus ``turnaround_s`` x (1 - cos(angle)) / 2 for a moving driver.

    ``angle`` is between the driver's heading and the bearing to the pickup: a
    driver facing the pickup pays nothing, one facing straight away pays the
    full turnaround. A stopped driver (below ``moving_mps``) can leave in any direction.
    """

    cfg: EtaConfig = field(default_factory=EtaConfig)

    def pickup_eta_s(
        self, dist_m: ArrayLike, bearing_deg: ArrayLike, heading_deg: ArrayLike, speed_mps: ArrayLike
    ) -> F64Array:
        c = self.cfg
        travel = np.asarray(dist_m, np.float64) * (c.detour_factor / c.city_speed_mps)
        away = 0.5 * (1.0 - np.cos(np.radians(np.asarray(bearing_deg, np.float64) - np.asarray(heading_deg))))
        return travel + np.where(np.asarray(speed_mps) >= c.moving_mps, c.turnaround_s * away, 0.0)
