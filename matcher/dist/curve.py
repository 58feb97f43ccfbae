"""A Hilbert curve over geohash cells: the one-dimensional order in which the
load-balanced regions (`matcher.dist.balance`) are cut into runs.

Pure numpy. A point's key is the Hilbert index of its geohash cell at
``KEY_PRECISION`` (8 characters: 20 bits of longitude and 20 of latitude, cells
of about 38 x 19 m), a uint64 below 2**40. The grid is the geohash grid itself
(x = the cell's longitude bits, y = its latitude bits, read out of the geohash
integer), so a key and a geohash always agree on which cell a point is in.

Why Hilbert and not the geohash (Z-order) itself: both visit every aligned
square block of cells contiguously, but consecutive Hilbert cells always touch,
so a run of the curve is one connected piece of the map with a short border,
while a Z-order run can jump across the map (two or more pieces, more border).

Property used by the halo (tested): a geohash cell of even precision p is an
aligned square block of the key grid, so its points' keys form exactly the
range ``[lo, lo + 4**(20 - 5p/2))`` given by `cell_ranges`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from matcher.core import geo

__all__ = ["KEY_BITS", "KEY_PRECISION", "NO_KEY", "cell_ranges", "hilbert_index", "keys_of_cells", "point_keys"]

#: Keys are Hilbert indices of the cells of this geohash precision.
KEY_PRECISION = 8
#: Bits per axis of the key grid (5 * 8 / 2).
KEY_BITS = 20
#: The key of an invalid point (larger than every real key).
NO_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)

_U64 = np.uint64
U64Array = npt.NDArray[np.uint64]

_MASKS = (
    (_U64(1), _U64(0x3333333333333333)),
    (_U64(2), _U64(0x0F0F0F0F0F0F0F0F)),
    (_U64(4), _U64(0x00FF00FF00FF00FF)),
    (_U64(8), _U64(0x0000FFFF0000FFFF)),
    (_U64(16), _U64(0x00000000FFFFFFFF)),
)


def _compact(x: U64Array) -> U64Array:
    """The even bits of `x` (bit 2i -> bit i)."""
    x = x & _U64(0x5555555555555555)
    for shift, mask in _MASKS:
        x = (x | (x >> shift)) & mask
    return x


def _grid(cells: U64Array, precision: int) -> tuple[U64Array, U64Array, int]:
    """(x = longitude bits, y = latitude bits, bits per axis) of geohash cells of even `precision`."""
    if precision % 2:
        raise ValueError(f"a cell on the key grid needs an even geohash precision, got {precision}")
    # 5p bits, the first (most significant) is longitude: longitude bits sit at the odd positions
    return _compact(cells >> _U64(1)), _compact(cells), 5 * precision // 2


def _build_tables() -> tuple[U64Array, npt.NDArray[np.uint8]]:
    """Hilbert digits of 4 levels at once: (state, 4 bits of x, 4 bits of y) -> (8 index bits, next state).

    The state is the transform the levels above left on the coordinates:
    bit 0 complement both, bit 1 swap x and y (they commute).
    """
    digits = np.zeros(4 * 256, dtype=np.uint64)
    nxt = np.zeros(4 * 256, dtype=np.uint8)
    for state in range(4):
        for xb in range(16):
            for yb in range(16):
                c, sw, d = state & 1, state >> 1, 0
                for lvl in range(3, -1, -1):
                    rx, ry = (xb >> lvl) & 1, (yb >> lvl) & 1
                    if sw:
                        rx, ry = ry, rx
                    rx, ry = rx ^ c, ry ^ c
                    d = 4 * d + ((3 * rx) ^ ry)
                    if ry == 0:
                        c ^= rx
                        sw ^= 1
                i = state * 256 + xb * 16 + yb
                digits[i], nxt[i] = d, c | (sw << 1)
    return digits, nxt


def _widen(digits: U64Array, nxt: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The 4-level table composed with itself: (state, 8 bits of x, 8 bits of y) -> (16 index bits, next state).

    Index = state << 16 | x8 << 8 | y8. Half the lookups of the 4-level table for the
    20-bit key grid (3 instead of 5), each a few numpy calls on the whole batch.
    """
    i = np.arange(4 << 16, dtype=np.int64)
    state, x8, y8 = i >> 16, (i >> 8) & 255, i & 255
    first = state * 256 + (x8 >> 4) * 16 + (y8 >> 4)
    second = nxt[first].astype(np.int64) * 256 + (x8 & 15) * 16 + (y8 & 15)
    return ((digits[first] << _U64(8)) | digits[second]).astype(np.int64), nxt[second].astype(np.int64) << 16


_DIGITS, _NEXT = _build_tables()
_DIGITS16, _NEXT16 = _widen(_DIGITS, _NEXT)  # _NEXT16: the next state, already shifted into place


def hilbert_index(x: Any, y: Any, bits: int) -> U64Array:
    """Hilbert index (uint64, < 4**bits) of cells (x, y) of a 2**bits x 2**bits grid.

    The classic ``xy2d`` from the top bit down (at each level the quadrant
    gives two bits of the index and the cell is rotated into the quadrant's
    frame), four levels per table lookup. The top 2j bits of the index depend
    only on the top j bits of x and y, so ``hilbert_index(x, y, b) >> 2k ==
    hilbert_index(x >> k, y >> k, b - k)`` (the block property).
    """
    # int64 throughout (cells < 2**20 per axis on the key grid, < 2**32 in any use): the
    # table indices need no casts
    xs = np.asarray(x, dtype=np.uint64).astype(np.int64)
    ys = np.asarray(y, dtype=np.uint64).astype(np.int64)
    pad = -bits % 8
    # padding levels of zeros each toggle the swap: start toggled so that the real levels start plain
    i = np.full(xs.shape, ((pad % 2) << 1) << 16, dtype=np.int64)  # state << 16
    d = np.zeros(xs.shape, dtype=np.int64)
    for top in range(bits + pad - 8, -1, -8):
        i |= ((xs >> top) & 255) << 8
        i |= (ys >> top) & 255
        d <<= 16
        d |= _DIGITS16[i]
        i = _NEXT16[i]
    return d.view(np.uint64)


def keys_of_cells(cells: U64Array) -> U64Array:
    """Keys of geohash cells at ``KEY_PRECISION`` (`NO_CELL` gives `NO_KEY`).

    The definition of a key; `point_keys` takes a shorter path to the same keys (tested)."""
    c = np.asarray(cells, dtype=np.uint64)
    bad = c == geo.NO_CELL
    x, y, bits = _grid(np.where(bad, _U64(0), c), KEY_PRECISION)
    return np.where(bad, NO_KEY, hilbert_index(x, y, bits))


def point_keys(lat: Any, lng: Any) -> tuple[U64Array, U64Array]:
    """(keys, geohash cells at ``KEY_PRECISION``) of points, flat; invalid points give (`NO_KEY`, `NO_CELL`)."""
    la = np.asarray(lat, dtype=np.float64).reshape(-1)
    ln = np.asarray(lng, dtype=np.float64).reshape(-1)
    ok = geo.valid_coords(la, ln)
    some_bad = not ok.all()
    if some_bad:
        la, ln = np.where(ok, la, 0.0), np.where(ok, ln, 0.0)
    # the key grid is the geohash grid: x = the cell's longitude bits, y = its latitude bits,
    # taken before they are interleaved into the geohash (as `keys_of_cells` reads them back out)
    ilat, ilng = geo.cell_indices(la, ln, KEY_PRECISION)
    cells = geo.interleave(ilat, ilng, KEY_PRECISION)
    keys = hilbert_index(ilng, ilat, KEY_BITS)
    if some_bad:
        cells[~ok] = geo.NO_CELL
        keys[~ok] = NO_KEY
    return keys, cells


def cell_ranges(cells: U64Array, precision: int) -> tuple[U64Array, U64Array]:
    """[lo, hi) key ranges (uint64) of valid geohash cells of even `precision` <= ``KEY_PRECISION``.

    Every point of such a cell has a key in its range and every key of the
    range is in the cell (the block property of `hilbert_index`).
    """
    x, y, bits = _grid(np.asarray(cells, dtype=np.uint64), precision)
    shift = 2 * (KEY_BITS - bits)
    lo = hilbert_index(x, y, bits) << _U64(shift)
    return lo, lo + (_U64(1) << _U64(shift))
