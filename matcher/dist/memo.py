"""Routing answers remembered per id (a driver key, a request index), so a tick routes only
the points that moved.

A router's answer for a point depends on the point and on the router's ``version`` alone
(the `Router` protocol: ``version`` changes whenever any answer may change). So an answer
is reused for an id only while its point is bit-for-bit the same and the version is the
one it was computed under; anything else is computed again. An idle driver pings from
where it stands and a request waits at its pickup for many ticks: most of a tick's points
are answered from the memo. Pure numpy; the answers are exactly those of the router.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["RouteMemo"]

Arr = npt.NDArray[np.generic]


class RouteMemo:
    """Per id: the point last routed, the router version then, and the answers (one array each).

    ``dtypes`` are the answers' types, e.g. ``(np.int32, np.uint64)`` for (owner, member
    mask). Ids are non-negative integers; the arrays grow to the largest id seen.
    """

    def __init__(self, dtypes: tuple[type, ...]) -> None:
        self.lat = np.empty(0)
        self.lng = np.empty(0)
        self.version = np.empty(0, np.int64)  # -1: never computed
        self.out: list[Arr] = [np.empty(0, d) for d in dtypes]
        self.hits = 0
        self.misses = 0

    def _grow(self, n: int) -> None:
        size = max(n, 2 * len(self.lat), 1024)
        old = len(self.lat)
        self.lat = np.concatenate([self.lat, np.full(size - old, np.nan)])
        self.lng = np.concatenate([self.lng, np.full(size - old, np.nan)])
        self.version = np.concatenate([self.version, np.full(size - old, -1, np.int64)])
        self.out = [np.concatenate([a, np.zeros(size - old, a.dtype)]) for a in self.out]

    def get(
        self,
        ids: npt.NDArray[np.int64],
        lat: npt.NDArray[np.float64],
        lng: npt.NDArray[np.float64],
        version: int,
        compute: Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], tuple[Arr, ...]],
    ) -> tuple[Arr, ...]:
        """The answers for the points (``compute(lat, lng)`` for those not remembered)."""
        ids = np.asarray(ids, np.int64)
        lat, lng = np.asarray(lat, np.float64), np.asarray(lng, np.float64)
        if ids.size and int(ids.max()) >= len(self.lat):
            self._grow(int(ids.max()) + 1)
        # equal as bits: a NaN point is remembered like any other (the router answers it too)
        same = (self.lat[ids].view(np.int64) == lat.view(np.int64)) & (self.lng[ids].view(np.int64) == lng.view(np.int64))
        miss = np.flatnonzero(~same | (self.version[ids] != version))
        self.misses += miss.size
        self.hits += ids.size - miss.size
        got = tuple(a[ids] for a in self.out)  # copies: the hits' answers, before any update below
        if miss.size:
            fresh = compute(lat[miss], lng[miss])
            for g, f in zip(got, fresh, strict=True):
                g[miss] = f
            # an id twice in one call with two points: each gets its own answer, the last is remembered
            at = ids[miss]
            self.lat[at], self.lng[at], self.version[at] = lat[miss], lng[miss], version
            for a, f in zip(self.out, fresh, strict=True):
                a[at] = f
        return got
