"""Independent areas of a trace: parts of the world that nothing connects.

A replay of a planet-scale day cannot run in one process, but dispatch is local:
a rider in Tokyo is never matched to a driver in Lagos. :func:`detect` cuts the
points of a trace (pickups, dropoffs, driver starts) into *areas* such that

1. every trip's pickup and dropoff lie in the same area;
2. every driver starts in exactly one area;
3. any two points of different areas are more than ``join_m`` apart
   (``join_m`` = candidate radius + a margin), and so is everything a driver of
   one area can reach by driving between points of its own area (see below).

So no trip, driver or candidate edge crosses an area, and each area can be
replayed on its own (``matcher.sim.areas``).

How (pure numpy/scipy, one pass over the points):

* **Coarse cells.** Every point gets its geohash cell at ``precision`` (4 by
  default: about 39 x 20 km at the equator, still 7 x 20 km at 80 degrees).
  Occupied cells that touch (the 8 geohash neighbours, across the
  antimeridian) are joined, and so are the pickup and dropoff cells of every
  trip (connected components of that cell graph, i.e. union-find).
* **Caps.** Each component gets a bounding spherical cap: the normalised sum
  of its points' unit vectors and the largest angle from it to a point (taken
  per cell, so the cap of a component encloses the caps of its cells). Two
  components whose caps come within ``join_m`` of each other are joined, and
  this repeats until no two caps are that close. By the triangle inequality,
  two points closer than ``join_m`` always have caps closer than ``join_m``, so
  rule 3 holds for points whatever the cell sizes (near the poles touching
  cells can be narrower than ``join_m``). A cap is convex (radius < 90
  degrees), so a driver moving in a straight line between two points of its
  area stays inside its area's cap: rule 3 holds for every position a driver
  takes, up to the gap between a straight lat/lng segment and the great circle
  and the staleness of a GPS fix, which the margin covers.
* **Names.** An area is named after its first cell (the smallest geohash of
  its cells): ``gh-dr5r``. The prefix keeps a name a string for readers that
  infer hive partition types (``area=0123`` would read as the integer 123).
  Areas are numbered in name order, so the partition and its names depend only
  on the set of points, not on their order.

Over-joining is always safe (an area is then simply bigger than it needs to
be); a trace whose caps overlap everywhere is one area, and replays as today.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from matcher.core import geo

__all__ = ["NAME_PREFIX", "Areas", "detect"]

NAME_PREFIX = "gh-"
_MAX_PAIRS = 4_000_000  # cap pairs compared at once (memory of one block)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Areas:
    """A partition of a trace into independent areas (see the module docstring)."""

    names: tuple[str, ...]  # sorted; area i is names[i]
    cells: tuple[tuple[str, ...], ...]  # the occupied coarse cells of each area, sorted
    request_area: NDArray[np.int32]  # area of each request (by its pickup)
    driver_area: NDArray[np.int32]  # area of each driver (by its start)
    precision: int
    join_m: float

    def __len__(self) -> int:
        return len(self.names)


def _f64(x: ArrayLike) -> F64:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _components(n: int, a: I64, b: I64) -> tuple[int, I64]:
    """Connected components of an undirected graph on n nodes with edges (a[i], b[i])."""
    if n == 0:
        return 0, np.empty(0, np.int64)
    g = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    k, labels = connected_components(g, directed=False)
    return int(k), labels.astype(np.int64)


def _caps(labels: I64, k: int, vsum: F64, cell_center: F64, cell_radius: F64) -> tuple[F64, F64]:
    """(unit centres (k, 3), angular radii (k,)) of the components' caps from their cells' caps."""
    s = np.zeros((k, 3))
    np.add.at(s, labels, vsum)
    norm = np.linalg.norm(s, axis=1)
    center = s / np.where(norm > 0, norm, 1.0)[:, None]
    cos = np.clip(np.einsum("ij,ij->i", center[labels], cell_center), -1.0, 1.0)
    reach = np.arccos(cos) + cell_radius
    radius = np.zeros(k)
    np.maximum.at(radius, labels, reach)
    radius[norm <= 1e-12] = np.pi  # points all around the sphere: the cap is everything
    return center, np.minimum(radius, np.pi)


def _close_caps(center: F64, radius: F64, join_rad: float) -> tuple[I64, I64]:
    """Pairs (i < j) of caps whose gap is at most ``join_rad`` (radians), in blocks of rows."""
    k = len(radius)
    rows = max(1, _MAX_PAIRS // max(k, 1))
    out_a, out_b = [], []
    for i0 in range(0, k, rows):
        c = center[i0 : i0 + rows]
        ang = np.arccos(np.clip(c @ center.T, -1.0, 1.0))
        gap = ang - radius[i0 : i0 + rows, None] - radius[None, :]
        ii, jj = np.nonzero(gap <= join_rad)
        ii = ii + i0
        keep = ii < jj
        out_a.append(ii[keep])
        out_b.append(jj[keep])
    if not out_a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64)


def detect(
    pickup_lat: ArrayLike,
    pickup_lng: ArrayLike,
    dropoff_lat: ArrayLike,
    dropoff_lng: ArrayLike,
    driver_lat: ArrayLike,
    driver_lng: ArrayLike,
    join_m: float,
    precision: int = 4,
) -> Areas:
    """The independent areas of a trace (module docstring).

    Coordinates must be valid (``geo.valid_coords``); a NaN dropoff means "none
    given" and joins nothing. ``join_m`` > 0 is the distance below which two
    points must share an area (candidate radius + margin).
    """
    if not join_m > 0:
        raise ValueError(f"join_m must be > 0, got {join_m!r}")
    plat, plng = _f64(pickup_lat), _f64(pickup_lng)
    dlat, dlng = _f64(dropoff_lat), _f64(dropoff_lng)
    vlat, vlng = _f64(driver_lat), _f64(driver_lng)
    n, m = len(plat), len(vlat)
    if not (len(plng) == len(dlat) == len(dlng) == n and len(vlng) == m):
        raise ValueError("detect: pickup, dropoff and driver arrays must have matching lengths")
    has_drop = ~(np.isnan(dlat) | np.isnan(dlng))
    drop_idx = np.flatnonzero(has_drop)
    lat = np.concatenate([plat, dlat[drop_idx], vlat])
    lng = np.concatenate([plng, dlng[drop_idx], vlng])
    if len(lat) == 0:
        return Areas((), (), np.empty(0, np.int32), np.empty(0, np.int32), precision, float(join_m))

    cell = geo.encode_int(lat, lng, precision)
    uniq, inv = np.unique(cell, return_inverse=True)
    inv = inv.astype(np.int64).reshape(-1)
    u = len(uniq)
    # edges: touching occupied cells, and each trip's pickup cell to its dropoff cell
    nb = geo.neighbors_int(uniq, precision)  # (u, 8)
    pos = np.searchsorted(uniq, nb)
    pos_c = np.minimum(pos, u - 1)
    hit = (pos < u) & (uniq[pos_c] == nb)
    a_nb = np.repeat(np.arange(u, dtype=np.int64), 8).reshape(u, 8)[hit]
    b_nb = pos_c[hit].astype(np.int64)
    a_trip = inv[drop_idx]
    b_trip = inv[n : n + len(drop_idx)]
    k, labels = _components(u, np.concatenate([a_nb, a_trip]), np.concatenate([b_nb, b_trip]))

    # per-cell caps from the points
    xyz = geo.to_unit_xyz(lat, lng).reshape(-1, 3)
    vsum = np.zeros((u, 3))
    np.add.at(vsum, inv, xyz)
    vnorm = np.linalg.norm(vsum, axis=1)
    cell_center = vsum / np.where(vnorm > 0, vnorm, 1.0)[:, None]
    cos = np.clip(np.einsum("ij,ij->i", cell_center[inv], xyz), -1.0, 1.0)
    cell_radius = np.zeros(u)
    np.maximum.at(cell_radius, inv, np.arccos(cos))
    cell_radius[vnorm <= 1e-12] = np.pi

    join_rad = float(join_m) / geo.EARTH_RADIUS_M
    while k > 1:
        center, radius = _caps(labels, k, vsum, cell_center, cell_radius)
        a, b = _close_caps(center, radius, join_rad)
        if len(a) == 0:
            break
        k2, merged = _components(k, a, b)
        labels = merged[labels]
        if k2 == k:  # pragma: no cover - a close pair always merges two components
            break
        k = k2

    # name each area after its smallest cell; number areas in name order
    first = np.full(k, np.iinfo(np.int64).max, np.int64)
    order_key = np.argsort(uniq)  # uniq is sorted already; ranks are positions
    np.minimum.at(first, labels, order_key.astype(np.int64))
    rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")  # component -> area index
    area_of_cell = rank[labels].astype(np.int32)
    names_str = geo.int_to_str(uniq, precision)
    by_area: list[list[str]] = [[] for _ in range(k)]
    for c, a_i in zip(names_str.tolist(), area_of_cell.tolist()):
        by_area[a_i].append(str(c))
    cells = tuple(tuple(sorted(cs)) for cs in by_area)
    names = tuple(NAME_PREFIX + cs[0] for cs in cells)
    point_area = area_of_cell[inv]
    return Areas(
        names=names,
        cells=cells,
        request_area=point_area[:n].astype(np.int32),
        driver_area=point_area[n + len(drop_idx) :].astype(np.int32),
        precision=precision,
        join_m=float(join_m),
    )
