"""Pickup cost: an ETA in seconds, not a straight-line distance.

The model is chosen by configuration: ``EtaConfig.model`` names one of
:data:`ETA_MODELS`, and :func:`make_eta` builds it. The shards (what the matcher
believes) and the world (how long driving really takes, at the world's driving
speed) both build their model here, so a new model is one class plus one entry
in the table. The default knows that a driver heading away from the pickup has
to turn around first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from matcher.config import EtaConfig
from matcher.core.arrays import ArrayLike, F64Array


class EtaModel(Protocol):
    """What the matcher and the world ask of an ETA model."""

    @property
    def cfg(self) -> EtaConfig:
        """The configuration the model was built from."""
        ...

    def pickup_eta_s(
        self, dist_m: ArrayLike, bearing_deg: ArrayLike, heading_deg: ArrayLike, speed_mps: ArrayLike
    ) -> F64Array:
        """Seconds for a driver at ``dist_m`` (great circle), heading ``heading_deg`` at ``speed_mps``,
        to reach a pickup at bearing ``bearing_deg``. Broadcasts over arrays."""
        ...

    def drive_s(self, dist_m: float) -> float:
        """Seconds to drive ``dist_m`` of great-circle distance, from a standing start."""
        ...


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

    def drive_s(self, dist_m: float) -> float:
        return dist_m * self.cfg.detour_factor / self.cfg.city_speed_mps


ETA_MODELS: dict[str, Callable[[EtaConfig], EtaModel]] = {"straight_line": StraightLineEta}


def make_eta(cfg: EtaConfig, speed_mps: float | None = None) -> EtaModel:
    """The ETA model ``cfg.model`` names, optionally at another speed (the world's driving speed).

    Raises ValueError naming the known models for an unknown name.
    """
    try:
        cls = ETA_MODELS[cfg.model]
    except KeyError:
        raise ValueError(f"unknown ETA model {cfg.model!r} (known: {', '.join(sorted(ETA_MODELS))})") from None
    if speed_mps is not None:
        cfg = replace(cfg, city_speed_mps=speed_mps)
    return cls(cfg)
