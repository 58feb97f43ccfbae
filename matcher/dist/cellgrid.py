"""A dense window of per-cell routing answers (owner, member mask) on the grid of halo cells.

Why: a tick routes the few hundred drivers that moved since the last one, and each lands in a
cell whose answer is known (a city has a few thousand halo cells). Looking the answer up by
(row, column) in a dense window costs a handful of array operations per tick; encoding the cell
as a geohash integer and searching a sorted cache for it cost several times more (measured on a
500-driver city day on 4 shards: 6.5 s of the coordinator's 50 s went to routing moving drivers).

The window covers the cells seen (grown to their bounding box, with a margin), up to
``max_cells``; the owner (`LoadRouter`) fills all of it at once (`Halo.window`) and again
whenever the regions move. Cells outside it answer `UNKNOWN`. Pure numpy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["UNKNOWN", "CellGrid"]

UNKNOWN = -2  # owner of a cell outside the window (-1 is an answer: the cell has several owners)
MARGIN = 8  # cells added on every side when the window grows (drivers wander out of it)

I32Array = npt.NDArray[np.int32]
I64Array = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]
Ints = npt.NDArray[np.integer]


class CellGrid:
    """(owner int32, mask uint64) of every cell (row, col) in a window of rows r0..r0+h-1 and
    columns c0..c0+w-1; empty (h = w = 0) until `fill`."""

    def __init__(self, max_cells: int = 1 << 17) -> None:
        self.max_cells = int(max_cells)
        self.r0 = self.c0 = self.h = self.w = 0
        self.owner = np.empty(0, np.int32)
        self.mask = np.empty(0, np.uint64)

    def clear(self) -> None:
        """Drop the window and its answers."""
        self.r0 = self.c0 = self.h = self.w = 0
        self.owner, self.mask = np.empty(0, np.int32), np.empty(0, np.uint64)

    def fill(self, r0: int, c0: int, owner: I32Array, mask: U64Array) -> None:
        """The answers of every cell of the window starting at (r0, c0), shaped (h, w)."""
        self.r0, self.c0 = r0, c0
        self.h, self.w = owner.shape
        self.owner, self.mask = owner.reshape(-1), mask.reshape(-1)

    def get(self, row: Ints, col: Ints) -> tuple[I32Array, U64Array]:
        """(owner, mask) of each cell; owner `UNKNOWN` (and mask 0) outside the window."""
        r = row.astype(np.int64) - self.r0
        c = col.astype(np.int64) - self.c0
        inside = (r >= 0) & (r < self.h) & (c >= 0) & (c < self.w)
        r *= self.w
        r += c
        if inside.all():
            return self.owner[r], self.mask[r]
        if not self.h:
            return np.full(row.size, UNKNOWN, np.int32), np.zeros(row.size, np.uint64)
        r[~inside] = 0
        own, mask = self.owner[r], self.mask[r]
        own[~inside] = UNKNOWN
        mask[~inside] = 0
        return own, mask

    def grown(self, row: Ints, col: Ints) -> tuple[int, int, int, int] | None:
        """(r0, c0, h, w) of a window holding the current one and cells (row, col), with a
        margin; None if that would pass ``max_cells``."""
        r_lo, r_hi = int(row.min()), int(row.max()) + 1
        c_lo, c_hi = int(col.min()), int(col.max()) + 1
        if self.h:
            r_lo, r_hi = min(r_lo, self.r0), max(r_hi, self.r0 + self.h)
            c_lo, c_hi = min(c_lo, self.c0), max(c_hi, self.c0 + self.w)
        r_lo, c_lo = max(r_lo - MARGIN, 0), max(c_lo - MARGIN, 0)
        h, w = r_hi + MARGIN - r_lo, c_hi + MARGIN - c_lo
        return None if h * w > self.max_cells else (r_lo, c_lo, h, w)
