"""Halo geometry: which shards must see a driver so that every request within
the candidate radius of it finds it (pure numpy, no Ray).

A `Halo` is built on a grid of halo cells (geohash cells of one precision) and a
function that gives, for any set of halo cells, the mask of the shards owning
some point of each (one bit for a cell wholly inside one region; several when
a region border cuts through the cell). A driver's membership mask is the OR
of the cell masks over the block of cells its radius can reach from anywhere
in its own cell:

- rows: ``a = ceil(radius / cell height)`` rows above and below (a = 1 when a
  cell is at least ``radius_m`` tall, as at precision 5 for 2 km);
- columns: ``k`` columns each side, the smallest k >= 1 with ``k * cell width
  >= dlng_max``, the widest longitude span of the radius cap at the cell's
  poleward edge (`halo_columns`); a cap that reaches a pole takes whole rows.

Guarantee (with the owner lookup of the caller): for any request point q and
driver point d with ``haversine_m(q, d) <= radius_m``, the shard owning q has
its bit in ``memberships(d)[1]`` (also with ``tight=True``). The mask is
conservative: a bit means "may be within reach", never "is".

Masks are computed once per halo cell and cached, so a batch of pings costs one
encode and one sorted lookup per driver; `window` answers a whole window of
cells at once (the load router keeps one, `matcher.dist.cellgrid`). When ownership changes, `refresh`
computes the cached cells again in one call (`invalidate` drops them): a
rebalance of a small city every minute would otherwise make the next ticks
compute their cells again a few at a time, each call paying the fixed cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from matcher.core import geo

__all__ = ["Halo"]

_U64 = np.uint64
_HALO_CACHE_MAX = 1 << 21
_HALO_REFRESH_MAX = 1 << 16  # cached cells computed again at once on an ownership change; more are dropped
_BLOCK_CHUNK = 1 << 20  # halo block cells expanded at once (memory bound near the poles)

U64Array = npt.NDArray[np.uint64]
I32Array = npt.NDArray[np.int32]
I64Array = npt.NDArray[np.int64]
F64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
#: cells (uint64, valid, at the halo precision) -> mask (uint64) of the shards owning some point of each
CellMasks = Callable[[U64Array], U64Array]


class Halo:
    """Halo memberships on the cells of geohash precision `precision`, for candidate radius `radius_m`.

    `cell_masks` gives the owner mask of valid cells; `cell_owners` gives the
    owner of valid cells, -1 where a cell has several owners (the caller then
    resolves the owner per point, see `memberships`).
    """

    def __init__(
        self,
        precision: int,
        radius_m: float,
        cell_masks: CellMasks,
        cell_owners: Callable[[U64Array], I32Array],
    ) -> None:
        self._hp = precision
        self._cell_masks = cell_masks
        self._cell_owners = cell_owners
        nbits = 5 * precision
        self._nrows, self._ncols = 1 << (nbits // 2), 1 << (nbits - nbits // 2)
        self._h_deg = 180.0 / self._nrows
        self._w_deg = 360.0 / self._ncols
        self._theta = radius_m / geo.EARTH_RADIUS_M  # radius as an angle, radians
        self._theta_deg = math.degrees(self._theta * (1 + 1e-9))  # with a safety margin
        self._rows = max(1, math.ceil(self._theta_deg / self._h_deg))  # rows each side
        self.invalidate()

    @property
    def rows(self) -> int:
        """Rows of cells each side of a driver's cell in its halo (1: the plain 3-row block)."""
        return self._rows

    def invalidate(self) -> None:
        """Forget every cached halo (ownership changed)."""
        self._hc: dict[str, npt.NDArray[Any]] = {
            "cell": np.empty(0, np.uint64),
            "owner": np.empty(0, np.int32),
            "mask": np.empty(0, np.uint64),
            "table": np.empty((0, 16), np.uint64),
            "lat0": np.empty(0),
            "lng0": np.empty(0),
            "dl": np.empty(0),
        }

    def refresh(self) -> None:
        """Ownership changed: the cached cells' halos, computed again (the same answers as
        computing them on demand: `_compute` is a function of the cell and the ownership);
        a cache of more than ``_HALO_REFRESH_MAX`` cells is dropped instead."""
        cells = self._hc["cell"]
        if 0 < cells.size <= _HALO_REFRESH_MAX:
            self._hc = self._compute(cells)
        else:
            self.invalidate()

    def cached_cells(self) -> int:
        return int(self._hc["cell"].size)

    # ---------------------------------------------------------- geometry

    def dlng_max_deg(self, lat: Any) -> tuple[F64Array, BoolArray]:
        """(dlng_max degrees, reaches_pole bool) of the radius cap around points at `lat`.

        ``dlng_max = asin(sin(R/Re) / cos(lat))`` is the widest longitude
        span of a spherical cap of angular radius R/Re centred at `lat`
        (exact spherical geometry; both R and the result carry a 1e-9
        relative safety margin). A cap that reaches a pole spans every
        longitude (then dlng_max is 180).
        """
        phi = np.radians(np.abs(np.asarray(lat, dtype=np.float64)))
        th = self._theta * (1 + 1e-9)
        polar = phi + th >= math.pi / 2 - 1e-12
        s = np.sin(th) / np.cos(np.where(polar, 0.0, phi))
        polar |= s >= 1.0
        dl = np.degrees(np.arcsin(np.clip(s, 0.0, 1.0))) * (1 + 1e-9)
        return np.where(polar, 180.0, dl), polar

    def halo_columns(self, lat: Any) -> I64Array:
        """Halo half-width k (int64) in cell columns for drivers at latitudes `lat`.

        A driver's halo is the (2a+1) rows x (2k+1) columns of halo cells
        around its own (a = `rows`; k = 1, a = 1: the cell and its 8
        neighbours). k is the smallest integer >= 1 with ``k * cell width
        (deg) >= dlng_max(lat)``, the widest longitude span of the radius cap
        (see `dlng_max_deg`); a cap that reaches a pole gets whole rows
        (k = number of columns). Rows: a great-circle distance is never less
        than the north-south one, so a rows of cells at least cover the
        radius north and south.
        """
        dl, polar = self.dlng_max_deg(lat)
        k = np.maximum(np.ceil(dl / self._w_deg), 1.0)
        return np.where(polar, self._ncols, k).astype(np.int64)

    def halo_lat_limit(self) -> float:
        """Latitude (degrees) up to which one column each side (k = 1) suffices.

        A halo cell whose poleward edge lies beyond it gets wider halos
        (`halo_columns`). About 65.8 degrees for 2 km at precision 5.
        """
        th = self._theta * (1 + 1e-9)
        ratio = math.sin(th) / math.sin(math.radians(self._w_deg / (1 + 1e-9)))
        return math.degrees(math.acos(ratio)) if ratio < 1 else 0.0

    # ---------------------------------------------------------- per-cell halos

    def _compute(self, u: U64Array) -> dict[str, npt.NDArray[Any]]:
        """Halo of unique valid halo cells `u`, as cache columns.

        owner int32: the cell's owner (-1 if several). mask uint64: OR of the
        cell masks over the (2a+1) x (2k+1) block around the cell, k from
        `halo_columns` at the cell's poleward edge (the widest need of any
        point in the cell, so one mask serves every driver in it). Longitude
        wraps; rows beyond a pole do not exist.

        For ``memberships(tight=True)``: lat0, lng0 (the cell's SW corner),
        dl (`dlng_max_deg` at the poleward edge) and table (n, 16) uint64:
        for each combination of reachable neighbours (bit 0 south row, 1
        north row, 2 west column, 3 east column) the OR of the masks of the
        3x3 block cells it allows (corners need their row and their column).
        Where the block is wider than 3x3 every entry is the whole mask.
        """
        a = self._rows
        lat0, lat1, lng0, _ = geo.bounds_int(u, self._hp)
        row = np.rint((lat0 + 90.0) / self._h_deg).astype(np.int64)  # exact: dyadic edges
        col = np.rint((lng0 + 180.0) / self._w_deg).astype(np.int64)
        edge = np.maximum(np.abs(lat0), np.abs(lat1))
        k = self.halo_columns(edge)
        full = 2 * k + 1 >= self._ncols
        width = np.where(full, self._ncols, 2 * k + 1)
        first = np.where(full, 0, col - k)
        k1 = (k == 1) & (a == 1)
        mask = np.empty(u.size, dtype=np.uint64)
        block = np.empty((int(k1.sum()), 9), dtype=np.uint64)
        # expand the blocks in chunks of at most _BLOCK_CHUNK cells (polar rows are 3 x 8192)
        m = (2 * a + 1) * width
        ends = np.cumsum(m)
        lo, nb = 0, 0
        while lo < u.size:
            hi = max(int(np.searchsorted(ends, ends[lo] - m[lo] + _BLOCK_CHUNK, side="right")), lo + 1)
            bits, starts = self._block_masks(row[lo:hi], first[lo:hi], width[lo:hi])
            mask[lo:hi] = np.bitwise_or.reduceat(bits, starts)
            kk = k1[lo:hi]
            if kk.any():
                # 3x3 block, row-major from the SW corner: rows S, mid, N x columns W, mid, E
                sel = np.repeat(kk, m[lo:hi])
                block[nb : nb + int(kk.sum())] = bits[sel].reshape(-1, 9)
                nb += int(kk.sum())
            lo = hi
        table = np.repeat(mask[:, None], 16, axis=1)
        if k1.any():
            combo = np.arange(16)
            row_ok = np.stack([combo & 1 > 0, np.ones(16, bool), combo & 2 > 0])  # (3, 16)
            col_ok = np.stack([combo & 4 > 0, np.ones(16, bool), combo & 8 > 0])
            keep = (row_ok[:, None, :] & col_ok[None, :, :]).reshape(9, 16)
            sub = np.where(keep[None, :, :], block[:, :, None], _U64(0))
            table[k1] = np.bitwise_or.reduce(sub, axis=1)
        dl, _ = self.dlng_max_deg(edge)
        return {
            "cell": u,
            "owner": self._cell_owners(u),
            "mask": mask,
            "table": table,
            "lat0": lat0,
            "lng0": lng0,
            "dl": dl,
        }

    def window(self, r0: int, c0: int, h: int, w: int) -> tuple[I32Array, U64Array] | None:
        """(owner int32, mask uint64), each (h, w), of the halo cells in rows r0..r0+h-1 and
        columns c0..c0+w-1 of the grid: the same answers as `memberships` gives them (non-tight),
        computed for the whole window at once. None for a window whose halos reach a pole or
        wrap around the antimeridian (then ask `memberships`).

        A cell's mask is the OR of the cell masks over its (2a+1) x (2k+1) block, with k taken
        at the row's poleward edge (`_compute`); the blocks of a window are shifted copies of
        one another, so the window costs a few array operations per row and column of a block
        instead of an expansion of every block.
        """
        a = self._rows
        if r0 - a < 0 or r0 + h + a > self._nrows or c0 < 0:
            return None
        rows = np.arange(r0, r0 + h, dtype=np.uint64)
        edge_cells = geo.interleave(rows, np.full(h, c0, np.uint64), self._hp)
        lat0, lat1, _, _ = geo.bounds_int(edge_cells, self._hp)
        k = self.halo_columns(np.maximum(np.abs(lat0), np.abs(lat1)))
        kmax = int(k.max())
        if c0 - kmax < 0 or c0 + w + kmax > self._ncols or 2 * kmax + 1 >= self._ncols:
            return None
        # the cell masks of the window and its margin: a rows above and below, kmax columns each side
        rr = np.arange(r0 - a, r0 + h + a, dtype=np.uint64)
        cc = np.arange(c0 - kmax, c0 + w + kmax, dtype=np.uint64)
        R, C = np.meshgrid(rr, cc, indexing="ij")
        cells = geo.interleave(R.reshape(-1), C.reshape(-1), self._hp)
        own_masks = self._cell_masks(cells).reshape(rr.size, cc.size)
        mask = np.zeros((h, w), np.uint64)
        for kk in np.unique(k).tolist():
            across = np.zeros((rr.size, w), np.uint64)  # OR over columns c-kk .. c+kk
            for dc in range(-kk, kk + 1):
                across |= own_masks[:, kmax + dc : kmax + dc + w]
            block = np.zeros((h, w), np.uint64)  # ... and over rows r-a .. r+a
            for dr in range(2 * a + 1):
                block |= across[dr : dr + h]
            at = k == kk
            mask[at] = block[at]
        inner = (slice(a, a + h), slice(kmax, kmax + w))
        owner = self._cell_owners(geo.interleave(R[inner].reshape(-1), C[inner].reshape(-1), self._hp))
        return owner.reshape(h, w), mask

    def _block_masks(self, row: I64Array, first: I64Array, width: I64Array) -> tuple[U64Array, I64Array]:
        """Owner masks (uint64) of the (2a+1) x width cell blocks, flat, and each block's start.

        Block i: rows row[i]-a .. row[i]+a (rows beyond a pole: no bit) x
        columns first[i] .. first[i]+width[i]-1 (mod the column count),
        row-major from the south-west.
        """
        a = self._rows
        m = (2 * a + 1) * width
        starts = np.zeros(row.size, dtype=np.int64)
        np.cumsum(m[:-1], out=starts[1:])
        which = np.repeat(np.arange(row.size), m)
        local = np.arange(int(m.sum()), dtype=np.int64) - starts[which]
        w = width[which]
        r = row[which] + local // w - a
        c = np.mod(first[which] + local % w, self._ncols)
        inside = (r >= 0) & (r < self._nrows)
        clat = (r + 0.5) * self._h_deg - 90.0  # cell centres: exact, so encode is exact
        clng = (c + 0.5) * self._w_deg - 180.0
        cells = geo.encode_int(np.where(inside, clat, 0.0), clng, self._hp)
        out = np.zeros(cells.size, dtype=np.uint64)
        if inside.any():
            # a block overlaps its neighbours' blocks: look each distinct cell up once
            u, inv = np.unique(cells[inside], return_inverse=True)
            out[inside] = self._cell_masks(u)[inv]
        return out, starts

    def _lookup(self, cells: U64Array) -> tuple[dict[str, npt.NDArray[Any]], I64Array]:
        """(cache columns, row index of each cell) for valid halo cells (1-d)."""
        H = self._hc
        K = H["cell"]
        if K.size:
            i = np.searchsorted(K, cells)
            np.minimum(i, K.size - 1, out=i)
            hit = K[i] == cells
            if hit.all():
                return H, i
            miss = np.unique(cells[~hit])
        else:
            miss = np.unique(cells)
        if K.size + miss.size > _HALO_CACHE_MAX:  # start over with just this call's cells
            K, miss = K[:0], np.unique(cells)
        new = self._compute(miss)
        if K.size:
            order = np.argsort(np.concatenate([K, miss]), kind="stable")
            new = {name: np.concatenate([H[name], col])[order] for name, col in new.items()}
        self._hc = new
        return new, np.searchsorted(new["cell"], cells)

    def memberships(
        self, cells: U64Array, lat: F64Array, lng: F64Array, *, tight: bool = False
    ) -> tuple[I32Array, U64Array]:
        """(cell owner int32, member_mask uint64) of drivers in valid halo `cells` at (lat, lng), all 1-d.

        The owner is that of the driver's cell, -1 where the cell has several
        owners (the caller resolves those per point). member_mask: see the
        module; ``tight=True`` keeps a neighbour cell's bits only if the
        radius can reach that cell from the driver's position: the row
        above/below if the cell's top/bottom edge is within ``radius_m``
        north-south (a great-circle distance is never less than the
        north-south one), the column east/west if its edge is within the
        cap's longitude span (`dlng_max_deg` at the cell's poleward edge), a
        corner if both. Same guarantee, a subset of the plain mask. Halos
        wider than 3x3 (finer cells, or near the poles) stay whole.
        """
        H, i = self._lookup(cells)
        own = H["owner"][i]
        if not tight:
            return own, H["mask"][i]
        lat0, lng0, dl = H["lat0"][i], H["lng0"][i], H["dl"][i]
        th = self._theta_deg
        dlat = lat - lat0
        dlng = lng - lng0
        combo = (dlat <= th).astype(np.intp)
        combo |= (self._h_deg - dlat <= th) << 1
        combo |= (dlng <= dl) << 2
        combo |= (self._w_deg - dlng <= dl) << 3
        return own, H["table"][i, combo]
