"""Routers: where each driver and request goes. The coordinator talks to the `Router` protocol only.

- `SingleRouter`: one shard, no borders.
- `LoadRouter` (:mod:`matcher.dist.loadmap`, the default): regions placed by
  measured load, rebalanced as the load moves.
- `GeoRouter`: regions placed by hash (:class:`matcher.dist.sharding.RegionMap`),
  hot regions split by load (``placement="hash"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from matcher.config import MatchConfig, ShardConfig
from matcher.errors import RunStopped

__all__ = ["DriverPositions", "GeoRouter", "Router", "SingleRouter", "make_router"]

I32Array = npt.NDArray[np.int32]
U64Array = npt.NDArray[np.uint64]
F64Array = npt.NDArray[np.float64]
#: () -> (lat, lng) of the online drivers, computed only if a router asks
DriverPositions = Callable[[], tuple[F64Array, F64Array]]


class Router(Protocol):
    """Where drivers and requests go. ``version`` changes whenever any answer may change.

    ``per_cell``: the router keeps its answers per cell, so asking it for a driver that moved
    costs about as much as a lookup of the driver's last answer (the coordinator then keeps no
    memo of its own in front of it)."""

    per_cell: bool

    @property
    def version(self) -> int: ...

    def memberships(self, lat: Any, lng: Any) -> tuple[I32Array, U64Array]:
        """(owner shard, membership mask) of drivers at (lat, lng)."""
        ...

    def route_requests(self, lat: Any, lng: Any) -> I32Array:
        """Shard of each request (the owner of its pickup point)."""
        ...

    def observe(self, lat: Any, lng: Any, drivers: DriverPositions) -> None:
        """The pending pickups of a tick and the online drivers (the load that may move regions).

        Called before the tick is routed; may change `version`.
        """
        ...


    def remove_shard(self, shard: int) -> None:
        """A shard is lost for good: its regions go to the living shards (RunStopped if none is left)."""
        ...


class SingleRouter:
    """Everything on shard 0 (one shard: no borders)."""

    version = 0
    per_cell = False

    def memberships(self, lat: Any, lng: Any) -> tuple[I32Array, U64Array]:
        n = len(lat)
        return np.zeros(n, np.int32), np.ones(n, np.uint64)

    def route_requests(self, lat: Any, lng: Any) -> I32Array:
        return np.zeros(len(lat), np.int32)

    def observe(self, lat: Any, lng: Any, drivers: DriverPositions) -> None:
        return None

    def remove_shard(self, shard: int) -> None:
        raise RunStopped(f"shard {shard}, the only one, is lost (its restarts are used up)")


class GeoRouter:
    """Geohash regions on a consistent-hash ring (:class:`matcher.dist.sharding.RegionMap`),
    with hot regions split when their smoothed load passes ``hot_split_load``."""

    per_cell = False  # tight halos depend on the point within its cell

    def __init__(self, shard: ShardConfig, match: MatchConfig) -> None:
        from matcher.dist.sharding import RegionMap

        self.map = RegionMap.from_config(shard, radius_m=match.radius_m)
        self.split_at = float(shard.hot_split_load)
        self.load: dict[str, float] = {}

    @property
    def version(self) -> int:
        return self.map.version

    def memberships(self, lat: Any, lng: Any) -> tuple[I32Array, U64Array]:
        return self.map.memberships(lat, lng, tight=True)

    def route_requests(self, lat: Any, lng: Any) -> I32Array:
        return self.map.route_requests(lat, lng)

    def observe(self, lat: Any, lng: Any, drivers: DriverPositions) -> None:
        """Pending requests of a tick: smoothed per-region load drives splits and merges."""
        if self.split_at <= 0:
            return
        now = self.map.load_by_region(lat, lng)
        for r in set(self.load) | set(now):
            self.load[r] = 0.9 * self.load.get(r, 0.0) + 0.1 * now.get(r, 0)
        self.map.rebalance(self.load, self.split_at, self.split_at / 4)

    def remove_shard(self, shard: int) -> None:
        """The ring moves only the lost shard's regions, to the living shards."""
        if len(self.map.shards) <= 1:
            raise RunStopped(f"shard {shard}, the last living one, is lost (its restarts are used up)")
        self.map.remove_shard(shard)


class _LoadRouterAdapter:
    """`LoadRouter` behind the `Router` protocol (drivers' positions asked for lazily)."""

    per_cell = True  # its `CellGrid`

    def __init__(self, shard: ShardConfig, match: MatchConfig) -> None:
        from matcher.dist.loadmap import LoadRouter

        self.map = LoadRouter(
            shard.shards,
            radius_m=match.radius_m,
            halo_precision=shard.load_halo_precision,
            request_weight=shard.request_weight,
            rebalance_ticks=shard.rebalance_ticks,
            rebalance_tolerance=shard.rebalance_tolerance,
            rebalance_min_excess=shard.rebalance_min_excess,
        )

    @property
    def version(self) -> int:
        return self.map.version

    def memberships(self, lat: Any, lng: Any) -> tuple[I32Array, U64Array]:
        return self.map.memberships(lat, lng)

    def route_requests(self, lat: Any, lng: Any) -> I32Array:
        return self.map.route_requests(lat, lng)

    def observe(self, lat: Any, lng: Any, drivers: DriverPositions) -> None:
        self.map.observe(lat, lng, *(drivers() if self.map.due() else (None, None)))

    def remove_shard(self, shard: int) -> None:
        """The lost shard's run collapses to empty (its load goes to a living neighbour on the curve)."""
        if self.map.living() <= 1:
            raise RunStopped(f"shard {shard}, the last living one, is lost (its restarts are used up)")
        self.map.remove_shard(shard)


def make_router(shard: ShardConfig, match: MatchConfig) -> Router:
    """One shard: `SingleRouter`; else by ``shard.placement``: "load" (default) or "hash"."""
    if shard.shards == 1:
        return SingleRouter()
    if shard.placement == "load":
        return _LoadRouterAdapter(shard, match)
    if shard.placement == "hash":
        return GeoRouter(shard, match)
    raise ValueError(f"unknown placement {shard.placement!r} (load or hash)")
