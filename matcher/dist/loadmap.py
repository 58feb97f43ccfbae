"""The load-balanced router: regions as weighted runs of a Hilbert curve
(`matcher.dist.balance`), halos on geohash cells (`matcher.dist.halo`), the
load measured from the ticks it routes.

Load model: a shard's work per tick grows with the drivers it holds (pings
applied, the spatial index) and with its pending requests (candidate search,
the solve). A driver weighs 1 and a pending request weighs
``request_weight`` (the drivers it is compared with: about ``k_search``);
requests are counted on every tick they stay pending (a request waiting ten
ticks costs ten solves) and averaged over the ticks since the last rebalance.

Rebalancing: on the first tick the cuts are placed from scratch; afterwards,
every ``rebalance_ticks`` ticks, if the busiest shard carries more than
``rebalance_tolerance`` times the mean load, the cuts slide toward equal load,
moving at most ``1 / shards`` of it (`CurveRegions.rebalance`). Only the
drivers whose owner or halo changed are sent again (see the coordinator).

A rebalance also needs the busiest shard to carry more than
``rebalance_min_excess`` load units above the mean (ShardConfig: 250, about
250 drivers). A rebalance costs the coordinator a re-route of every driver and
the answers of its cell grid computed again (1.3 ms for the 132 x 105 halo cells
of a 500-driver city), and the shards the resent drivers, while a few dozen
drivers more on one shard add little to its tick. On a small city the ratio alone is noise: 4 shards of 125 drivers cross 1.1
when 13 drivers drive over a cut, and a 3 h night of a 500-driver city
rebalanced 148 times in 185 checks (2 times with 250). On a metro (12,500
drivers per shard at 4 shards) the ratio binds first and nothing changes.

Routing a driver: its halo cell's (owner, mask) is read from a dense window of
halo cells (`CellGrid`), all of it answered at once by `Halo.window` when it
grows and when the cuts move; the point's own key is computed only in a cell a
cut crosses. Cells outside the window (it holds at most ``CellGrid.max_cells``;
near a pole or the antimeridian it holds none) are answered by the halo cache
cell by cell. The answers are the same either way (tests/test_balance.py).

Guarantees: partition (every point has exactly one owner) and halo (the shard
of any request within ``radius_m`` of a driver has the driver's bit), after
any sequence of rebalances (property-tested in tests/test_balance.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from matcher.core import geo
from matcher.dist.balance import CurveRegions
from matcher.dist.cellgrid import UNKNOWN, CellGrid
from matcher.dist.curve import KEY_BITS, KEY_PRECISION, NO_KEY, cell_ranges, hilbert_index, point_keys
from matcher.dist.halo import Halo

__all__ = ["LoadRouter"]

_U64 = np.uint64
U64Array = npt.NDArray[np.uint64]
I32Array = npt.NDArray[np.int32]
F64Array = npt.NDArray[np.float64]


class LoadRouter:
    """Regions by measured load on `n_shards` shards; halo cells of geohash precision `halo_precision` (even).

    `radius_m`: the candidate radius the halo covers. `request_weight`,
    `rebalance_ticks`, `rebalance_tolerance`, `max_move`: see the module.
    """

    def __init__(
        self,
        n_shards: int,
        *,
        radius_m: float = 2000.0,
        halo_precision: int = 6,
        request_weight: float = 40.0,
        rebalance_ticks: int = 30,
        rebalance_tolerance: float = 1.1,
        rebalance_min_excess: float = 0.0,
        max_move: float | None = None,
    ) -> None:
        if halo_precision % 2 or not 2 <= halo_precision <= KEY_PRECISION:
            raise ValueError(f"halo_precision must be even and 2..{KEY_PRECISION}, got {halo_precision}")
        if not (np.isfinite(radius_m) and radius_m > 0):
            raise ValueError(f"radius_m must be a positive number, got {radius_m}")
        self.regions = CurveRegions(n_shards)
        self.k = n_shards
        self._hp = halo_precision
        self.request_weight = float(request_weight)
        self.rebalance_ticks = int(rebalance_ticks)
        self.tolerance = float(rebalance_tolerance)
        self.min_excess = float(rebalance_min_excess)
        self.max_move = 1.0 / n_shards if max_move is None else float(max_move)
        self.halo = Halo(halo_precision, radius_m, self._cell_masks, self._cell_owners)
        self._halo_version = self.regions.version
        self._grid = CellGrid()  # each halo cell's (owner, mask) under the current regions
        self._placed = False
        # the pending pickups of each tick since the last rebalance, keyed only when a rebalance
        # reads them (one call for all ticks, not one per tick); `_demand`: keys, in checkpoints
        # of an older release
        self._demand_pts: list[tuple[F64Array, F64Array]] = []
        self._demand: list[U64Array] = []
        self._ticks = 0
        self.moves: list[float] = []  # share of the load each rebalance moved (for the run's record)

    # ---------------------------------------------------------- Router protocol

    @property
    def _half(self) -> np.uint64:
        """Bits per axis between the key grid and the halo grid (derived: older checkpoints lack it)."""
        return _U64(5 * (KEY_PRECISION - self._hp) // 2)

    @property
    def version(self) -> int:
        return self.regions.version

    def _sync(self) -> None:
        if self._halo_version != self.regions.version:
            self.halo.refresh()
            self._halo_version = self.regions.version
            g = self._grid
            if g.h:  # the same window, answered again under the new regions
                self._fill((g.r0, g.c0, g.h, g.w))

    def _fill(self, window: tuple[int, int, int, int] | None) -> bool:
        """Answer every cell of ``window`` (r0, c0, h, w) in the grid. False, and the grid as it
        was, if there is no window (too wide) or the halo cannot compute it at once (near a
        pole or across the antimeridian)."""
        got = None if window is None else self.halo.window(*window)
        if got is None:
            return False
        self._grid.fill(window[0], window[1], *got)  # type: ignore[index]  # got is not None: neither is window
        return True

    def _cell_masks(self, cells: U64Array) -> U64Array:
        lo, hi = cell_ranges(cells, self._hp)
        return self.regions.range_masks(lo, hi)

    def _cell_owners(self, cells: U64Array) -> I32Array:
        """The shard owning every key of each halo cell; -1 where a cut crosses the cell (its
        points are resolved one by one). A cut crosses one cell of each precision, so almost
        every driver's owner is its cell's."""
        lo, hi = cell_ranges(cells, self._hp)
        first, last = self.regions.owners(lo), self.regions.owners(hi - _U64(1))
        return np.where(first == last, first, -1).astype(np.int32)

    def route_requests(self, lat: Any, lng: Any) -> I32Array:
        """Shard of each point: the run of the curve its key falls in; -1 for invalid coordinates.

        The owner of the point's halo cell where the cell grid holds the cell (`CellGrid`) and
        no cut crosses it; the run of the point's own key elsewhere. Same answer either way."""
        self._sync()
        shape = np.broadcast_shapes(np.shape(lat), np.shape(lng))
        la, ln = (a.reshape(-1) for a in np.broadcast_arrays(np.asarray(lat, np.float64), np.asarray(lng, np.float64)))
        valid = geo.valid_coords(la, ln)
        if not valid.all():
            la, ln = np.where(valid, la, 0.0), np.where(valid, ln, 0.0)
        ilat, ilng = geo.cell_indices(la, ln, KEY_PRECISION)
        own, _ = self._grid.get(ilat >> self._half, ilng >> self._half)
        todo = np.flatnonzero(own < 0)
        if todo.size:
            own[todo] = self.regions.owners(hilbert_index(ilng[todo], ilat[todo], KEY_BITS))
        own[~valid] = -1
        return own.reshape(shape)

    def memberships(self, lat: Any, lng: Any) -> tuple[I32Array, U64Array]:
        """(owner int32, member_mask uint64) of drivers; invalid coordinates give (-1, 0).

        member_mask is the OR of the owner masks of the halo cells within
        reach of the driver's cell (`Halo`), so it has the bit of every shard
        that owns a point within ``radius_m`` of the driver.
        """
        self._sync()
        la, ln = np.broadcast_arrays(np.asarray(lat, np.float64), np.asarray(lng, np.float64))
        shape = la.shape
        la, ln = la.reshape(-1), ln.reshape(-1)
        own = np.full(la.shape, -1, np.int32)
        mask = np.zeros(la.shape, np.uint64)
        valid = geo.valid_coords(la, ln)
        if not valid.all():
            la, ln = la[valid], ln[valid]
        if la.size:
            # the key grid's cell of each point, then its halo cell (the same bits, fewer of them):
            # the owner is the halo cell's, and a point's own key is computed only in a cell
            # that a cut crosses
            ilat, ilng = geo.cell_indices(la, ln, KEY_PRECISION)
            hlat, hlng = ilat >> self._half, ilng >> self._half
            cell_own, m = self._grid.get(hlat, hlng)
            new = np.flatnonzero(cell_own == UNKNOWN)
            if new.size and self._fill(self._grid.grown(hlat[new], hlng[new])):  # outside the window: widen it
                cell_own[new], m[new] = self._grid.get(hlat[new], hlng[new])
                new = new[cell_own[new] == UNKNOWN]
            if new.size:  # no window holds them: from the halo, cell by cell
                cells = geo.interleave(hlat[new], hlng[new], self._hp)
                cell_own[new], m[new] = self.halo.memberships(cells, la[new], ln[new])
            split = np.flatnonzero(cell_own < 0)
            if split.size:
                cell_own[split] = self.regions.owners(hilbert_index(ilng[split], ilat[split], KEY_BITS))
            own[valid], mask[valid] = cell_own, m
        return own.reshape(shape), mask.reshape(shape)

    def due(self) -> bool:
        """True if the next `observe` may place or move the cuts (it then needs the drivers' positions)."""
        return not self._placed or self._ticks + 1 >= self.rebalance_ticks

    def observe(self, req_lat: Any, req_lng: Any, drv_lat: Any = None, drv_lng: Any = None) -> None:
        """One tick's pending pickups, and the online drivers' positions: the load that places the cuts.

        Called before the tick is routed. The first call with any load places
        the cuts; then every ``rebalance_ticks`` calls a rebalance may slide them.
        """
        pts = (np.array(req_lat, np.float64).reshape(-1), np.array(req_lng, np.float64).reshape(-1))
        self._demand_pts.append(pts)
        self._ticks += 1
        if self._placed and self._ticks < self.rebalance_ticks:
            return
        if drv_lat is None or self.k == 1:
            return
        dk, _ = point_keys(drv_lat, drv_lng)
        dk = dk[dk != NO_KEY]
        req = self._demand_keys()
        keys = np.concatenate([dk, req])
        w_req = self.request_weight / max(self._ticks, 1)
        weights = np.concatenate([np.ones(dk.size), np.full(req.size, w_req)])
        if keys.size == 0:
            return
        if not self._placed:
            self.regions.place(keys, weights)
            self._placed = True
        elif (
            self.regions.imbalance(keys, weights) > self.tolerance
            and self.regions.excess(keys, weights) > self.min_excess
        ):
            self.moves.append(self.regions.rebalance(keys, weights, self.max_move))
        self._demand, self._demand_pts, self._ticks = [], [], 0

    def __setstate__(self, d: dict[str, Any]) -> None:
        d.setdefault("_demand_pts", [])  # a checkpoint of an older release: its demand is keyed
        d.setdefault("min_excess", 0.0)  # ... and it rebalanced on the ratio alone
        d.setdefault("_grid", CellGrid())  # ... and had no grid of cell answers
        self.__dict__.update(d)

    def _demand_keys(self) -> U64Array:
        """Keys of the valid pending pickups since the last rebalance, tick after tick."""
        parts = list(self._demand)
        if self._demand_pts:
            rk, _ = point_keys(
                np.concatenate([p[0] for p in self._demand_pts]), np.concatenate([p[1] for p in self._demand_pts])
            )
            parts.append(rk[rk != NO_KEY])
        return np.concatenate(parts) if parts else np.empty(0, np.uint64)

    def living(self) -> int:
        """Shards not lost."""
        return self.regions.living()

    def remove_shard(self, shard: int) -> None:
        """A lost shard: its run collapses to empty and it is left out of every later rebalance target."""
        self.regions.remove_shard(shard)
        self._sync()

    def shard_loads(self, lat: Any, lng: Any) -> F64Array:
        """Count of points per shard (diagnostics)."""
        own = self.route_requests(lat, lng).reshape(-1)
        return np.bincount(own[own >= 0], minlength=self.k).astype(np.float64)

    def cuts(self) -> list[int]:
        return [int(c) for c in self.regions.cuts]

    def __repr__(self) -> str:
        return f"LoadRouter(shards={self.k}, halo_precision={self._hp}, version={self.version}, cuts={self.cuts()})"
